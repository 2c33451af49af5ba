"""The character rule of declared text (datasets.shown_text): which characters free text may hold."""

from __future__ import annotations

import re

import pytest

from datasets.shown_text import escape_unshown, refuse_unshown, unshown_character

_GOODS = "سنگ\u200cآهن"  # "iron ore" in Persian: the non-joiner keeps سنگ from joining آهن

# (id, text, breaks: free text, what is refused: None where it is taken)
_TABLE = [
    # the joiners: Persian, Arabic-script and Indic words and emoji sequences are written with them
    ("persian-zwnj", _GOODS, True, None),
    ("devanagari-zwj", "क्\u200dष", True, None),  # the joiner asks for the half form
    ("emoji-zwj", "\U0001f469\u200d\U0001f52c", True, None),  # woman scientist
    ("tab-crlf", "a\tb\r\nc", True, None),
    # an id, a tier or a key is not free text: no joiner there either
    ("zwnj-in-id", _GOODS, False, "U+200C (ZERO WIDTH NON-JOINER)"),
    ("zwj-in-id", "T\u200d42", False, "U+200D (ZERO WIDTH JOINER)"),
    ("tab-in-id", "T\t42", False, "U+0009"),
    # the bidi controls reorder the text around them, in free text too
    ("lre", "ore\u202a", True, "U+202A (LEFT-TO-RIGHT EMBEDDING)"),
    ("rle", "ore\u202b", True, "U+202B (RIGHT-TO-LEFT EMBEDDING)"),
    ("pdf", "ore\u202c", True, "U+202C (POP DIRECTIONAL FORMATTING)"),
    ("lro", "ore\u202d", True, "U+202D (LEFT-TO-RIGHT OVERRIDE)"),
    ("rlo", "\u202e24-T", True, "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("lri", "ore\u2066", True, "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
    ("rli", "ore\u2067", True, "U+2067 (RIGHT-TO-LEFT ISOLATE)"),
    ("fsi", "ore\u2068", True, "U+2068 (FIRST STRONG ISOLATE)"),
    ("pdi", "ore\u2069", True, "U+2069 (POP DIRECTIONAL ISOLATE)"),
    ("lrm", "ore\u200e", True, "U+200E (LEFT-TO-RIGHT MARK)"),
    ("rlm", "ore\u200f", True, "U+200F (RIGHT-TO-LEFT MARK)"),
    ("alm", "ore\u061c", True, "U+061C (ARABIC LETTER MARK)"),
    # other format characters hide text or split it unseen
    ("zero-width-space", "2601\u200b", True, "U+200B (ZERO WIDTH SPACE)"),
    ("word-joiner", "T\u206042", True, "U+2060 (WORD JOINER)"),
    ("bom", "\ufeffabc", True, "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
    ("soft-hyphen", "AEO\u00ad", True, "U+00AD (SOFT HYPHEN)"),
    ("escape", "ore\x1b[2J", True, "U+001B"),
    ("line-separator", "ore\u2028", True, "U+2028 (LINE SEPARATOR)"),
]


@pytest.mark.parametrize(
    ("text", "breaks", "refused"), [case[1:] for case in _TABLE], ids=[case[0] for case in _TABLE]
)
def test_unshown_character(text: str, breaks: bool, refused: str | None) -> None:
    assert unshown_character(text, breaks=breaks) == refused


_NAMES = [
    # (id, text, what is refused): a name (a cargo type, an officer) takes the joiners, nothing else
    ("persian-cargo", "لوله\u200cها", None),  # pipes: a model card took it, a manifest refused it
    ("persian-officer", "حسن\u200cزاده", None),
    ("devanagari-zwj", "क्\u200dष", None),
    ("rlo", "\u202ebulk_ore", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("rlm", "بار\u200f", "U+200F (RIGHT-TO-LEFT MARK)"),
    ("zero-width-space", "bulk\u200bore", "U+200B (ZERO WIDTH SPACE)"),
    ("newline", "bulk\nore", "U+000A"),
    ("tab", "bulk\tore", "U+0009"),
    ("line-separator", "bulk\u2028ore", "U+2028 (LINE SEPARATOR)"),
]


@pytest.mark.parametrize(("text", "refused"), [case[1:] for case in _NAMES], ids=[case[0] for case in _NAMES])
def test_a_name_takes_the_joiners_and_no_break(text: str, refused: str | None) -> None:
    assert unshown_character(text, name=True) == refused
    if refused is None:
        refuse_unshown(text, "cargo_type", name=True)
    else:
        with pytest.raises(ValueError, match=f"^cargo_type holds {re.escape(refused)}: control"):
            refuse_unshown(text, "cargo_type", name=True)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"declared_goods": _GOODS, "x_lines": ["\U0001f469\u200d\U0001f52c"]}, None),
        ({"x_goods\u200c": "ore"}, "extra key 'x_goods\\u200c' holds U+200C (ZERO WIDTH NON-JOINER)"),
        (
            {"x_goods": {"x_part\u200d": "ore"}},
            "extra['x_goods'] key 'x_part\\u200d' holds U+200D (ZERO WIDTH JOINER)",
        ),
        ({"origin": "\u2067IR"}, "extra['origin'] holds U+2067 (RIGHT-TO-LEFT ISOLATE)"),
    ],
    ids=["values-taken", "key-refused", "nested-key-refused", "bidi-value-refused"],
)
def test_extra_values_may_hold_the_joiners_and_keys_may_not(value: object, message: str | None) -> None:
    """A declaration's extra, as checked (``breaks``): the joiners in its text values, never in its keys."""
    if message is None:
        refuse_unshown(value, "extra", breaks=True)
        return
    with pytest.raises(ValueError) as info:
        refuse_unshown(value, "extra", breaks=True)
    assert str(info.value).startswith(message + ": control and format characters")


# (id, text, flavour, printed): a backslash is doubled where the value holds anything escaped, so that
# what is printed reads back one way: the literal ASCII id "\\u202e24-S" is not shown as the id U+202E 2 4 - S
_ID: dict[str, bool] = {}
_NAME = {"name": True}
_TEXT = {"breaks": True}
_ESCAPED = [
    ("plain", "S-42", _ID, "S-42"),
    ("bidi", "\u202e24-S", _ID, "\\u202e24-S"),
    ("bidi-typed-out", "\\u202e24-S", _ID, "\\\\u202e24-S"),
    ("escape", "wiped \x1b[2J", _TEXT, "wiped \\x1b[2J"),
    ("escape-typed-out", "wiped \\x1b[2J", _TEXT, "wiped \\\\x1b[2J"),
    ("astral-typed-out", "\\U000e0001", _ID, "\\\\U000e0001"),
    ("breaks", "two\nlines\tand\u2028", _TEXT, "two\\nlines\\tand\\u2028"),
    ("break-typed-out", "two\\nlines", _TEXT, "two\\\\nlines"),
    # a joiner between letters or marks shapes them and moves none: a Persian note or name is printed
    # as typed, its backslashes too
    ("joiner", _GOODS, _TEXT, _GOODS),
    ("joiner-in-name", "حسن\u200cزاده", _NAME, "حسن\u200cزاده"),
    ("joiner-after-mark", "\u0915\u094d\u200d\u0937", _NAME, "\u0915\u094d\u200d\u0937"),
    ("joiners-and-path", "اسکن در C:\\scans\\ می\u200cشود", _TEXT, "اسکن در C:\\scans\\ می\u200cشود"),
    ("joiner-beside-bidi", "می\u200cشود \u202e3", _TEXT, "می\u200cشود \\u202e3"),
    # a joiner elsewhere shapes nothing and shows nothing: "alice\u200d" was printed as "alice", the
    # legacy id "SHP\u200d-7" as "SHP-7"; an id takes none at all
    ("joiner-in-id", "SHP\u200d-7", _ID, "SHP\\u200d-7"),
    ("joiner-between-letters-in-id", "T\u200d42x\u200cy", _ID, "T\\u200d42x\\u200cy"),
    ("joiner-ending-name", "alice\u200d", _NAME, "alice\\u200d"),
    ("joiner-starting-name", "\u200calice", _NAME, "\\u200calice"),
    ("joiner-beside-digit", "bay\u200d3", _NAME, "bay\\u200d3"),
    ("joiner-beside-space", "seal \u200cok", _TEXT, "seal \\u200cok"),
    ("joiners-in-a-row", "a\u200c\u200db", _NAME, "a\\u200c\\u200db"),
    # between two Latin letters a joiner shapes nothing either: "ali\u200cce" was printed as "alice"
    ("joiner-between-latin-letters", "ali\u200cce", _NAME, "ali\\u200cce"),
    ("joiner-between-latin-in-text", "seal\u200dok", _TEXT, "seal\\u200dok"),
    ("joiner-after-arabic-before-latin", "\u0645\u200cA", _NAME, "\u0645\u200cA"),
    ("emoji-sequence", "C:\\x \U0001f468\u200d\U0001f527", _TEXT, "C:\\\\x \U0001f468\\u200d\U0001f527"),
    # where a value holds an escape its backslashes are doubled: a backslash then ESC read as "\\\\x1b"
    ("backslash-and-escape", "C:\\scans\\ \x1b[2J", _TEXT, "C:\\\\scans\\\\ \\x1b[2J"),
    ("backslash-pair", "\\\\server\\scans", _TEXT, "\\\\\\\\server\\\\scans"),
    # a backslash that reads as no escape: a Windows path in notes is shown as typed
    ("path", "C:\\scans\\a.png", _TEXT, "C:\\scans\\a.png"),
    ("path-ending-in-backslash", "C:\\Users\\scans\\", _TEXT, "C:\\Users\\scans\\"),
    ("not-hex", "C:\\xray\\u20g", _TEXT, "C:\\xray\\u20g"),
]


@pytest.mark.parametrize(
    ("text", "flavour", "printed"), [case[1:] for case in _ESCAPED], ids=[case[0] for case in _ESCAPED]
)
def test_escape_unshown(text: str, flavour: dict[str, bool], printed: str) -> None:
    assert escape_unshown(text, **flavour) == printed


def test_escape_unshown_tells_every_value_apart() -> None:
    """No two values of the table are printed alike (the literal and the real U+202E above all), in
    any flavour."""
    texts = [case[1] for case in _ESCAPED]
    for flavour in (_ID, _NAME, _TEXT):
        assert len({escape_unshown(text, **flavour) for text in texts}) == len(texts)
