"""What is read from JSON people hand us can be written again: depth and half characters."""

from __future__ import annotations

import json
import re

import pytest

from datasets.errors import DatasetFormatError
from datasets.json_text import MAX_DEPTH, check_writable, loads_strict


def _nested(depth: int) -> str:
    return "[" * (depth - 1) + '{"a": 1}' + "]" * (depth - 1)


CASES = [
    ("flat", '{"a": "ore", "b": [1, 2.5, null, true], "c": {"d": "\u00e9t\u00e9"}}', None),
    ("at-the-limit", _nested(MAX_DEPTH), None),
    ("one-deeper", _nested(MAX_DEPTH + 1), f"a value is nested more than {MAX_DEPTH} deep"),
    # brackets in a string count towards the quick look, not the depth: the walk says it is fine
    ("brackets-in-text", json.dumps({"a": "[" * 200}), None),
    ("pair", '{"a": "\\ud83d\\ude00"}', None),  # a whole character, written as its surrogate pair
    ("escaped-backslash", '{"a": "\\\\ud800"}', None),  # a backslash, then the letters ud800
    ("half", '{"a": "x\\uD800"}', "'\\ud800' is half a character"),
    ("half-in-a-key", '{"\\udc00": 1}', "'\\udc00' is half a character"),
    ("half-deep-inside", '{"a": [{"b": ["\\udfff"]}]}', "'\\udfff' is half a character"),
]


@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
@pytest.mark.parametrize(("text", "said"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_writable(text: str, said: str | None, as_bytes: bool) -> None:
    raw: str | bytes = text.encode() if as_bytes else text
    value = json.loads(raw)
    for given in (None, raw):  # the walk alone, and behind the quick look at the text
        if said is None:
            check_writable(value, "m.jsonl:3", text=given)
        else:
            with pytest.raises(DatasetFormatError, match="^" + re.escape(f"m.jsonl:3: {said}")):
                check_writable(value, "m.jsonl:3", text=given)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16", "utf-32"])
def test_a_half_character_in_another_encoding_is_found(encoding: str) -> None:
    """json.loads(bytes) reads UTF-16 and UTF-32, whose escapes a look at ASCII text cannot see."""
    raw = '{"a": "\\ud800"}'.encode(encoding)
    with pytest.raises(DatasetFormatError, match="half a character"):
        check_writable(json.loads(raw), "rows.jsonl:1", text=raw)


def test_a_half_character_as_raw_bytes_is_found() -> None:
    raw = b'{"a": "\xed\xa0\x80"}'  # json.loads(bytes) reads it with surrogatepass
    with pytest.raises(DatasetFormatError, match="half a character"):
        check_writable(json.loads(raw), "rows.jsonl:1", text=raw)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"radiation_alarm": true, "radiation_alarm": false}', "key 'radiation_alarm' appears twice"),
        ('{"a": [{"extra": {"hs": 1, "hs": 2}}]}', "key 'hs' appears twice"),  # at any depth
        ("[" * 100_000, "a value is nested too deeply"),  # Python's reader gives up, a ValueError still
    ],
)
def test_loads_strict_refuses_what_json_would_read_otherwise(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=re.escape(said)):
        loads_strict(text)
    with pytest.raises(ValueError, match=re.escape(said)):
        loads_strict(text.encode())


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # two keys to json.loads, one as pydantic writes them (each half U+FFFD): the first value lost
        ('{"x_ref\\ud800": 1, "x_ref\\udc80": 2}', "key 'x_ref\\ud800': '\\ud800' is half a character"),
        ('{"x_note": "a\\udc80"}', "the value of key 'x_note': '\\udc80' is half a character"),
        ('{"a": {"b": ["ok", "\\uDFFF"]}}', "the value of key 'b': '\\udfff' is half a character"),
        ('["\\ud800"]', "the value: '\\ud800' is half a character"),
        ('"\\ud800"', "the value: '\\ud800' is half a character"),
    ],
)
def test_loads_strict_refuses_half_a_character_naming_its_key(text: str, said: str) -> None:
    """pydantic's parser, which read declarations before, refused a lone surrogate; json.loads reads it."""
    for given in (text, text.encode()):
        with pytest.raises(ValueError, match="^" + re.escape(said)):
            loads_strict(given)
    # a whole character written as its surrogate pair, and a backslash before the letters, are text
    assert loads_strict('{"\\ud83d\\ude00": "\\\\ud800"}') == {"\U0001f600": "\\ud800"}


def test_loads_strict_reads_plain_json_as_json_does() -> None:
    text = '{"a": {"b": [1, 2.5, null, true]}, "c": "ore"}'
    assert loads_strict(text) == json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        loads_strict("{not json")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"extra": {"declared_weight_t": NaN}}', "key 'declared_weight_t' holds NaN"),
        ('{"w": Infinity}', "key 'w' holds Infinity or a number past a float's range"),
        ('{"w": -Infinity}', "key 'w' holds Infinity"),
        ('{"w": 1e400}', "key 'w' holds Infinity"),  # past a float's range: read as infinity
        ('{"w": [1, [2, NaN]]}', "key 'w' holds NaN"),  # in a list, its object's key named
        ("[1, NaN]", "the value is NaN"),
        ("NaN", "the value is NaN"),
    ],
)
def test_loads_strict_refuses_a_number_no_float_holds(text: str, said: str) -> None:
    """json.loads takes NaN and Infinity, and 1e400 as infinity; each was recorded as null."""
    with pytest.raises(ValueError, match=re.escape(said)):
        loads_strict(text)
    assert loads_strict('{"w": 1e308, "n": null, "i": 7}') == {"w": 1e308, "n": None, "i": 7}


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"a": %s}' % ("9" * 5000), "key 'a' holds a number of more than 308 digits"),  # past Python's 4,300
        ('{"a": [1, -%s]}' % ("9" * 309), "key 'a' holds a number of more than 308 digits"),
        ("9" * 309, "the value is a number of more than 308 digits"),
    ],
)
def test_loads_strict_refuses_an_integer_too_long_naming_its_key(text: str, said: str) -> None:
    """Python's own message came back: "Exceeds the limit (4300 digits) for integer string
    conversion ... use sys.set_int_max_str_digits()", naming neither the key nor what is accepted."""
    for given in (text, text.encode()):
        with pytest.raises(
            ValueError, match="^" + re.escape(said) + "; send at most 308, or the number as text$"
        ):
            loads_strict(given)
    assert loads_strict('{"a": -%s}' % ("9" * 308)) == {"a": -int("9" * 308)}
