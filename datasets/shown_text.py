"""Declared text that must show as itself: a shipment id, a cargo type, a trader id, a tier, a
declaration's own keys and values, an officer's name and notes.

Three flavours of one rule: an id (a shipment id, a trader id, a tier, a key, a finding) holds no
unshown character; a name (a cargo type, an officer: :data:`TEXT_JOINERS`) may hold the two joiners
that shape the letters of Persian and Indic names; free text (extra's values, notes) the joiners and
line breaks (:data:`TEXT_BREAKS`).

A trader id ``"\\u202e24-T"`` reads as ``T-42`` (another trader, a trusted one) on the review page,
and an ESC in a value rewrites the terminal that prints it. One rule, held where declared text
enters: a manifest's rows when they are read (:mod:`datasets.manifest`) and a declaration when it is
built (``pipeline.verdicts.Declaration``), which earlier score runs' rows are decided again with
this check off; a model's cargo type when it is trained and its card loaded
(``models.artifact.cargo_type_problem``); an officer's outcome (officer, finding, notes) when it is
recorded (``pipeline.audit.writing.check_outcome``).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

__all__ = [
    "TEXT_BREAKS",
    "TEXT_JOINERS",
    "UNSHOWN_CATEGORIES",
    "escape_unshown",
    "refuse_unshown",
    "unshown_character",
]

UNSHOWN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
"""Unicode categories of characters that are not shown as themselves: controls (Cc: tab, newline,
ESC), format characters (Cf: the bidi overrides and isolates such as U+202E, zero-width spaces and
joiners, the soft hyphen) and line and paragraph separators (Zl, Zp)."""

TEXT_BREAKS = frozenset("\t\n\r")
"""The controls free text holds (a goods description from a quoted multi-line CSV cell, ``"2603\\n"``):
they reorder nothing, and the review page and ``repr`` show them escaped. Taken in extra's text
values only: an id, a tier or a key has no business holding one."""

TEXT_JOINERS = frozenset("\u200c\u200d")
"""ZERO WIDTH NON-JOINER and ZERO WIDTH JOINER (category Cf), which Persian, Arabic-script and Indic
words and emoji sequences are spelt with: a goods description in Persian was refused, and so were
the cargo type ``لوله\u200cها`` (pipes), which a model card took, and the officer ``حسن\u200cزاده``.
They join or part the letters beside them and move none; the bidi controls and marks
(U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C) and every other format character stay
refused. Taken in names (a cargo type, an officer) and free text (extra's text values, notes), not
in an id, a tier or a key: ``T\u200d42`` as a trader id is not ``T42``."""

_FREE_TEXT = TEXT_BREAKS | TEXT_JOINERS

_READS_AS_ESCAPE = re.compile(r"\\(?:[\\tnr]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})")
"""A backslash that reads as an escape :func:`escape_unshown` writes (``repr``'s ``\\\\``, ``\\t``,
``\\n``, ``\\r``, ``\\xHH``, ``\\uHHHH``, ``\\UHHHHHHHH``): text that holds one is escaped too, or
it would be printed as the text it spells out is."""


def _taken(*, breaks: bool, name: bool) -> frozenset[str]:
    """The unshown characters a flavour of text holds: free text (``breaks``) the line breaks and the
    joiners, a name (``name``) the joiners, an id none."""
    return _FREE_TEXT if breaks else TEXT_JOINERS if name else frozenset()


def unshown_character(text: str, *, breaks: bool = False, name: bool = False) -> str | None:
    """The first character of ``text`` in :data:`UNSHOWN_CATEGORIES` (with ``breaks``, other than
    :data:`TEXT_BREAKS` and :data:`TEXT_JOINERS`; with ``name``, other than the joiners), as
    ``U+202E (RIGHT-TO-LEFT OVERRIDE)`` (a control, which has no name, as ``U+001B``); None where
    there is none."""
    taken = _taken(breaks=breaks, name=name)
    for char in text:
        if unicodedata.category(char) in UNSHOWN_CATEGORIES and char not in taken:
            name = unicodedata.name(char, "")
            return f"U+{ord(char):04X}" + (f" ({name})" if name else "")
    return None


def refuse_unshown(value: Any, where: str, *, breaks: bool = False, name: bool = False) -> None:
    """Refuse an unshown character (:func:`unshown_character`) in ``value``'s text: itself, or the
    keys and values of the objects and lists it holds, at any depth. With ``breaks`` (free text: a
    declaration's extra values, notes), text may hold tabs and line breaks (:data:`TEXT_BREAKS`) and
    the zero-width joiner and non-joiner (:data:`TEXT_JOINERS`); with ``name`` (a cargo type, an
    officer), the joiners alone; keys never.

    Raises:
        ValueError: naming where (``where``, then the keys and indices down to it) and the character;
            a ValueError, so that a pydantic validator reports it as the field's.
    """
    if isinstance(value, str):
        char = unshown_character(value, breaks=breaks, name=name)
        if char is not None:
            raise ValueError(
                f"{where} holds {char}: control and format characters and line or paragraph separators "
                "are not accepted (they do not show as themselves, and hide or reorder the text around them)"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                refuse_unshown(key, f"{where} key {key!r}")
            refuse_unshown(item, f"{where}[{key!r}]", breaks=breaks, name=name)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            refuse_unshown(item, f"{where}[{index}]", breaks=breaks, name=name)


JOINING_SCRIPTS = frozenset(
    [
        "ARABIC",
        "SYRIAC",
        "NKO",
        "MONGOLIAN",
        "PHAGS-PA",
        "DEVANAGARI",
        "BENGALI",
        "GURMUKHI",
        "GUJARATI",
        "ORIYA",
        "TAMIL",
        "TELUGU",
        "KANNADA",
        "MALAYALAM",
        "SINHALA",
        "MYANMAR",
        "KHMER",
        "TIBETAN",
    ]
)
"""The scripts whose letters a zero-width joiner or non-joiner shapes (the first word of their
characters' Unicode names): between two Latin letters one shapes nothing, and ``ali\\u200cce``
printed raw read as ``alice``."""


def _between_letters(text: str, at: int) -> bool:
    """Whether ``text[at]`` stands between two letters or marks (categories L* and M*), one of them
    of a script the joiners shape (:data:`JOINING_SCRIPTS`), as a joiner that shapes a word does
    (``حسن\\u200cزاده``, ``क्\\u200dष``)."""
    if not 0 < at < len(text) - 1:
        return False
    beside = (text[at - 1], text[at + 1])
    return all(unicodedata.category(c)[0] in "LM" for c in beside) and any(
        unicodedata.name(c, "").split(" ", 1)[0] in JOINING_SCRIPTS for c in beside
    )


def escape_unshown(text: str, *, breaks: bool = False, name: bool = False) -> str:
    """``text`` for a terminal, in the flavour :func:`unshown_character` checks it in: an id by
    default, a name (``name``: a cargo type, an officer) or free text (``breaks``: notes). Where it
    holds anything to escape, each backslash is doubled and each character to escape written as
    ``repr`` writes it (``\\\\``, ``\\u202e``, ``\\x1b``, ``\\n``), the line breaks free text may hold
    included, so that what is printed reads back one way; every other character is written as it is.

    To escape: each character in :data:`UNSHOWN_CATEGORIES` but, in a name or free text, a joiner
    (:data:`TEXT_JOINERS`) between two letters or marks, one of a script it shapes
    (:data:`JOINING_SCRIPTS`): it shapes them and moves nothing, and
    Persian notes or an officer's name hold one in nearly every word (``می\\u200cشود`` was printed
    ``می\\\\u200cشود``, and every backslash of the notes doubled). A joiner elsewhere shapes nothing
    and shows nothing: printed raw, the legacy id ``SHP\\u200d-7`` read as ``SHP-7`` beside the real
    one, and the officers ``alice\\u200d`` and ``ali\\u200cce`` as ``alice``; an id takes none, so in an
    id each is escaped.

    Anything to escape is such a character, or a backslash that reads as one of those escapes
    (:data:`_READS_AS_ESCAPE`): the 10 ASCII characters ``\\u202e24-S`` were printed as the id that
    starts with U+202E was, and are printed ``\\\\u202e24-S``. Text with neither, a Windows path in
    notes (``C:\\scans\\``) included, is returned as it is.

    For what was stored without the rule (a record decided, or an outcome recorded, before it): printed
    raw, ``"\\u202e24-S"`` read as ``S-42`` and an ESC rewrote the terminal that printed it."""
    shaping = breaks or name
    escaped = {
        at
        for at, char in enumerate(text)
        if unicodedata.category(char) in UNSHOWN_CATEGORIES
        and not (shaping and char in TEXT_JOINERS and _between_letters(text, at))
    }
    if not escaped and _READS_AS_ESCAPE.search(text) is None:
        return text
    return "".join(
        "\\\\" if char == "\\" else repr(char)[1:-1] if at in escaped else char
        for at, char in enumerate(text)
    )
