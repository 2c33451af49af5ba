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


# (id, text, printed): a backslash is doubled where the value holds anything escaped, so that what is
# printed reads back one way: the literal ASCII id "\\u202e24-S" is not shown as the id U+202E 2 4 - S
_ESCAPED = [
    ("plain", "S-42", "S-42"),
    ("bidi", "\u202e24-S", "\\u202e24-S"),
    ("bidi-typed-out", "\\u202e24-S", "\\\\u202e24-S"),
    ("escape", "wiped \x1b[2J", "wiped \\x1b[2J"),
    ("escape-typed-out", "wiped \\x1b[2J", "wiped \\\\x1b[2J"),
    ("astral-typed-out", "\\U000e0001", "\\\\U000e0001"),
    ("breaks", "two\nlines\tand\u2028", "two\\nlines\\tand\\u2028"),
    ("break-typed-out", "two\\nlines", "two\\\\nlines"),
    # the joiners shape letters and move none: a Persian note is printed as typed, its backslashes too
    ("joiner", _GOODS, _GOODS),
    (
        "joiners-and-path",
        "اسکن در C:\\scans\\ می\u200cشود \U0001f468\u200d\U0001f527",
        "اسکن در C:\\scans\\ می\u200cشود \U0001f468\u200d\U0001f527",
    ),
    ("joiner-beside-bidi", "می\u200cشود \u202e3", "می\u200cشود \\u202e3"),
    # where a value holds an escape its backslashes are doubled: a backslash then ESC read as "\\\\x1b"
    ("backslash-and-escape", "C:\\scans\\ \x1b[2J", "C:\\\\scans\\\\ \\x1b[2J"),
    ("backslash-pair", "\\\\server\\scans", "\\\\\\\\server\\\\scans"),
    # a backslash that reads as no escape: a Windows path in notes is shown as typed
    ("path", "C:\\scans\\a.png", "C:\\scans\\a.png"),
    ("path-ending-in-backslash", "C:\\Users\\scans\\", "C:\\Users\\scans\\"),
    ("not-hex", "C:\\xray\\u20g", "C:\\xray\\u20g"),
]


@pytest.mark.parametrize(
    ("text", "printed"), [case[1:] for case in _ESCAPED], ids=[case[0] for case in _ESCAPED]
)
def test_escape_unshown(text: str, printed: str) -> None:
    assert escape_unshown(text) == printed


def test_escape_unshown_tells_every_value_apart() -> None:
    """No two values of the table are printed alike (the literal and the real U+202E above all)."""
    texts = [case[1] for case in _ESCAPED]
    assert len({escape_unshown(text) for text in texts}) == len(texts)
