"""JSON text from files people hand us (manifests, verdict rows): read so that what is read can be
written again.

JSON may escape half a character (``"\\ud800"``, a lone UTF-16 surrogate), and a file may hold one
as raw bytes or in UTF-16. Python reads it as text, and every UTF-8 writer after it (rows,
decisions, the audit store) then fails, after the work is done. And a value nested deeply enough
makes the reader, or a writer later, give up: Python's at about 1,000 levels with a
``RecursionError``, pydantic's at 255, where a line-numbered error belongs.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from datasets.errors import DatasetFormatError

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "check_writable", "loads_strict", "unique_keys"]

MAX_DEPTH = 64
"""The deepest a value read may nest (an object in a list in an object is 3 deep): far more than a
declaration needs, far less than any writer's limit."""

MAX_INT_DIGITS = 308
"""The most digits an integer read may have: every such integer is also a float (JSON's numbers are
read as floats by many readers), and Python refuses one past 4,300 digits with a message about
its own settings (``sys.set_int_max_str_digits``) and no word of where the number is."""

_HALF = re.compile("[\ud800-\udfff]")
_HALF_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_HALF_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def check_writable(
    value: Any, where: str, *, text: str | bytes | None = None, any_depth: bool = False
) -> None:
    """Refuse a parsed JSON ``value`` nested deeper than :data:`MAX_DEPTH` (unless ``any_depth``), or
    holding half a character in a key or a string, naming ``where``. One walk, without recursion,
    unless ``text`` (what ``value`` was parsed from) plainly holds neither.

    ``any_depth`` is for a value built from values read already (a decision holds each picture's
    row declaration two levels deeper than its file did): the readers bound the depth, and a second
    bound here would refuse, after the work is done, what they took.

    Raises:
        DatasetFormatError: naming the half character, or the depth.
    """
    if text is not None and _plainly_writable(text):
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH and not any_depth:
                raise DatasetFormatError(f"{where}: a value is nested more than {MAX_DEPTH} deep")
            if isinstance(item, dict):
                for key in item:
                    _check_text(key, where)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)


def _check_text(text: str, where: str) -> None:
    if not text.isascii() and (half := _HALF.search(text)):
        raise DatasetFormatError(
            f"{where}: {half.group()!r} is half a character (a lone UTF-16 surrogate), which no file or "
            "database can store; write the character itself"
        )


def _plainly_writable(text: str | bytes) -> bool:
    """ASCII JSON (no NUL: not UTF-16 or UTF-32) with no surrogate escape and at most
    :data:`MAX_DEPTH` opening brackets, inside strings or not, can hold no half character and nest
    no deeper: the common row, told at C speed (the walk costs a row about 6 us)."""
    if isinstance(text, bytes):
        escape = _HALF_ESCAPE_BYTES.search(text)
        opens = text.count(b"[") + text.count(b"{")
        plain = text.isascii() and b"\x00" not in text
    else:
        escape = _HALF_ESCAPE.search(text)
        opens = text.count("[") + text.count("{")
        plain = text.isascii() and "\x00" not in text
    return plain and escape is None and opens <= MAX_DEPTH


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (``json.loads``' ``object_pairs_hook``): json keeps
    the last of two silently, so that ``"radiation_alarm": true, "radiation_alarm": false`` would
    read as no alarm.

    Raises:
        ValueError: naming the key given twice (each reader adds its file and line).
    """
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def loads_strict(text: str | bytes) -> Any:
    """The value of JSON ``text`` a client sent (a declaration, an outcome), read only one way:

    - a key given twice in one object, at any depth, is refused, where ``json.loads`` (and
      pydantic's own parser) keep the last copy, so that ``"radiation_alarm": true,
      "radiation_alarm": false`` would be decided as no alarm;
    - so is a number no float holds: ``NaN`` and ``Infinity`` (Python's reader takes them, JSON has
      neither) and one past a float's range (``1e400`` reads as infinity). Each was recorded as
      null, as if nothing had been declared. An integer of more than :data:`MAX_INT_DIGITS` digits
      too: past 4,300 Python's own message came back, naming its settings, not the key;
    - so is half a character (``"\\ud800"``, a lone UTF-16 surrogate) in a key or a string
      (:func:`check_writable`), as pydantic's parser refused it: two keys apart only by one were
      written as one (each half becomes U+FFFD), the first value lost, and one in a value was
      refused only where the decision was written, after its pictures were scored.

    Raises:
        ValueError: a :class:`json.JSONDecodeError` for text that is not JSON; a plain ValueError
            naming the key given twice, the key holding the number or the half character (its
            object's, for one in a list), or the key holding half a character itself, or saying a
            value nests too deeply for the reader.
    """
    try:
        value = json.loads(text, object_pairs_hook=_strict_object, parse_int=_integer)
    except RecursionError as exc:  # thousands of brackets: Python's reader gives up
        raise ValueError("a value is nested too deeply") from exc
    _check_value(value, None)
    return value


class _LongInteger:
    """What an integer of more than :data:`MAX_INT_DIGITS` digits reads as: refused by
    :func:`_check_value`, which knows its key (a hook raising here could not name it)."""


_LONG_INTEGER = _LongInteger()


def _integer(digits: str) -> int | _LongInteger:
    if len(digits) - digits.startswith("-") > MAX_INT_DIGITS:
        return _LONG_INTEGER
    return int(digits)


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = unique_keys(pairs)
    for key, value in out.items():
        _check_text_read(key, f"key {key!r}")
        _check_value(value, key)
    return out


def _check_value(value: Any, key: str | None) -> None:
    """Refuse a non-finite number, an integer too long, or half a character in a string, in
    ``value`` or in the lists it holds (objects in them were checked by their own hook), naming
    ``key``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            _check_text_read(item, f"the value of key {key!r}" if key is not None else "the value")
        elif item is _LONG_INTEGER:
            where = f"key {key!r} holds" if key is not None else "the value is"
            raise ValueError(
                f"{where} a number of more than {MAX_INT_DIGITS} digits; send at most {MAX_INT_DIGITS}, "
                "or the number as text"
            )
        elif isinstance(item, float) and not math.isfinite(item):
            said = "NaN" if math.isnan(item) else "Infinity or a number past a float's range (1e400, say)"
            where = f"key {key!r} holds" if key is not None else "the value is"
            raise ValueError(f"{where} {said}, which is no JSON number; send a finite number, or null")


def _check_text_read(text: str, where: str) -> None:
    """:func:`check_writable` of one key or string, as the ValueError :func:`loads_strict` raises."""
    try:
        check_writable(text, where)
    except DatasetFormatError as exc:  # the files' error; here text that is no JSON a writer takes
        raise ValueError(str(exc)) from exc
