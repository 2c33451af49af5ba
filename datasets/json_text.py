"""JSON text from files people hand us (manifests, verdict rows): read so that what is read can be
written again.

JSON may escape half a character (``"\\ud800"``, a lone UTF-16 surrogate). Python reads it as text,
and every UTF-8 writer after it (rows, decisions, the audit store) then fails, after the work is done.
And a value nested deeply enough makes the reader, or a writer later, overflow the stack: a
``RecursionError`` where a line-numbered error belongs.
"""

from __future__ import annotations

import json
import re
from typing import Any

from datasets.errors import DatasetFormatError

__all__ = ["check_writable", "might_hold_half_characters"]

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def might_hold_half_characters(text: str | bytes) -> bool:
    """Whether JSON ``text`` escapes a UTF-16 surrogate (half of a pair, or a lone half): only then
    need :func:`check_writable` look, which keeps the common line to one regex search."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return _SURROGATE_ESCAPE.search(text) is not None


def check_writable(value: Any, where: str) -> None:
    """Refuse a parsed JSON ``value`` that holds half a character, or that nests too deeply to be
    written again, naming ``where``.

    Raises:
        DatasetFormatError: naming the half character, or the depth.
    """
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except RecursionError as exc:  # writing recurses a little deeper than reading
        raise DatasetFormatError(f"{where}: a value is nested too deeply") from exc
    except UnicodeEncodeError as exc:
        half = exc.object[exc.start : exc.end] if isinstance(exc.object, str) else ""
        raise DatasetFormatError(
            f"{where}: {half!r} is half a character (a lone UTF-16 surrogate escape), which no file or "
            "database can store; write the character itself, or its full surrogate pair"
        ) from exc
