"""Inspection-archive manifests: one row per image, CSV or JSON Lines.

Columns (CSV header or JSON keys):

- required: ``path`` (relative to the manifest's folder, which it must not leave), ``shipment_id``,
  ``cargo_type``;
- optional: ``label`` (``good``/``anomalous``, may be empty), ``anomaly_type``, ``mask_path``;
- declaration: ``trader_id``, ``aeo_tier``, ``hs_code``, ``origin``, ``declared_goods``,
  ``container_id`` and the flags ``radiation_alarm``, ``suspected_solid_waste``,
  ``document_mismatch``, ``declared_foreign_inclusions`` (true/false/1/0/yes/no, empty = false);
- custom: any name starting ``x_``, carried through as a string.

Any other column is refused, so that a misspelt flag cannot silently read as "false".
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from datasets.csv_lines import csv_line
from datasets.errors import DatasetFormatError, UnsafePathError
from datasets.json_text import check_writable, unique_keys
from datasets.shown_text import refuse_unshown

__all__ = [
    "DECLARATION_COLUMNS",
    "FLAG_COLUMNS",
    "LABELS",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "ManifestRow",
    "iter_manifest",
    "read_manifest",
    "write_manifest",
]

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "shipment_id", "cargo_type")
OPTIONAL_COLUMNS: tuple[str, ...] = ("label", "anomaly_type", "mask_path")
FLAG_COLUMNS: tuple[str, ...] = (
    "radiation_alarm",
    "suspected_solid_waste",
    "document_mismatch",
    "declared_foreign_inclusions",
)
DECLARATION_COLUMNS: tuple[str, ...] = (
    "trader_id",
    "aeo_tier",
    "hs_code",
    "origin",
    "declared_goods",
    "container_id",
    *FLAG_COLUMNS,
)
LABELS: tuple[str, ...] = ("good", "anomalous")
CUSTOM_PREFIX = "x_"

_KNOWN = frozenset(REQUIRED_COLUMNS + OPTIONAL_COLUMNS + DECLARATION_COLUMNS)
_COLUMN_ORDER = {name: i for i, name in enumerate(REQUIRED_COLUMNS + OPTIONAL_COLUMNS + DECLARATION_COLUMNS)}
_DECLARED = frozenset(("shipment_id", "cargo_type", *DECLARATION_COLUMNS))
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})
_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class ManifestRow(NamedTuple):
    """One validated manifest row.

    Attributes:
        path: the image, absolute and resolved (symlinks followed).
        shipment_id, cargo_type: as written (whitespace stripped).
        label: ``"good"``, ``"anomalous"`` or ``None`` (not labelled).
        anomaly_type: only with label ``anomalous``; ``None`` otherwise.
        mask_path: absolute, resolved; ``None`` when not given.
        declaration: ``shipment_id``, ``cargo_type`` and every declaration or ``x_`` column the row
            has: flags as ``bool``, empty values as ``None``, everything else as ``str``.
        line: 1-based line of the row in the manifest (a CSV row's first line).
    """

    path: Path
    shipment_id: str
    cargo_type: str
    label: str | None
    anomaly_type: str | None
    mask_path: Path | None
    declaration: dict[str, Any]
    line: int


def iter_manifest(path: str | Path, *, check_files: bool = True) -> Iterator[ManifestRow]:
    """Stream and validate a manifest's rows.

    Memory stays constant apart from the set of paths seen (for the duplicate check).

    Args:
        path: a ``.csv``, ``.jsonl`` or ``.ndjson`` file.
        check_files: also require every image and mask to exist as a file.

    Raises:
        DatasetFormatError: unknown extension or column, malformed line, missing required value,
            bad label or flag, anomaly type on a good row, missing file, duplicate path, no rows.
            Messages name the manifest and line.
        UnsafePathError: a path or mask path that resolves outside the manifest's folder.
    """
    manifest = Path(path)
    kind = _FORMATS.get(manifest.suffix.lower())
    if kind is None:
        raise DatasetFormatError(
            f"{manifest}: unknown manifest extension {manifest.suffix!r} (accepted: .csv, .jsonl, .ndjson)"
        )
    if not manifest.is_file():
        raise DatasetFormatError(f"{manifest}: manifest not found")
    base = manifest.resolve().parent
    seen: dict[Path, int] = {}
    rows = 0
    try:
        with open(manifest, encoding="utf-8-sig", newline="") as fh:
            records = _csv_records(fh, manifest) if kind == "csv" else _jsonl_records(fh, manifest)
            for line, record in records:
                row = _validate(record, line=line, manifest=manifest, base=base, check_files=check_files)
                if row.path in seen:
                    raise DatasetFormatError(
                        f"{manifest}:{line}: duplicate path {row.path} (first on line {seen[row.path]})"
                    )
                seen[row.path] = line
                rows += 1
                yield row
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{manifest}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if rows == 0:
        raise DatasetFormatError(f"{manifest}: empty manifest, no rows")


def read_manifest(path: str | Path, *, check_files: bool = True) -> list[ManifestRow]:
    """All rows of a manifest (see :func:`iter_manifest`)."""
    return list(iter_manifest(path, check_files=check_files))


def write_manifest(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows as CSV or JSON Lines, chosen by ``path``'s extension; atomically replaces the file.

    Args:
        path: ``.csv``, ``.jsonl`` or ``.ndjson``.
        rows: mappings of column name to value. ``Path`` values inside the manifest's folder are
            written relative to it (POSIX separators); ``bool`` as ``true``/``false``; ``None``
            as empty (CSV) or ``null`` (JSONL). Columns follow the order of the module docstring,
            then ``x_`` columns sorted.

    Raises:
        DatasetFormatError: unknown extension, unknown column, or a row missing a required column.
    """
    manifest = Path(path)
    kind = _FORMATS.get(manifest.suffix.lower())
    if kind is None:
        raise DatasetFormatError(
            f"{manifest}: unknown manifest extension {manifest.suffix!r} (accepted: .csv, .jsonl, .ndjson)"
        )
    base = manifest.resolve().parent
    prepared = [_prepare(row, i, base) for i, row in enumerate(rows, start=1)]
    columns = sorted({key for row in prepared for key in row}, key=lambda c: (_COLUMN_ORDER.get(c, 999), c))
    buffer = io.StringIO()
    if kind == "csv":
        # quoted where a cell holds a carriage return: a declaration or file name with one was written
        # bare, and read_manifest refused the manifest it had just written (or split the row)
        buffer.write(csv_line(columns))
        for row in prepared:
            buffer.write(csv_line(_csv_text(row.get(column)) for column in columns))
    else:
        for row in prepared:
            buffer.write(json.dumps({k: row[k] for k in columns if k in row}, ensure_ascii=False) + "\n")
    manifest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{manifest.name}.", dir=manifest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(buffer.getvalue())
        os.replace(tmp, manifest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------------
# Reading


def _check_columns(columns: Iterable[str], where: str) -> None:
    for column in columns:
        if column not in _KNOWN and not column.startswith(CUSTOM_PREFIX):
            accepted = ", ".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS + DECLARATION_COLUMNS)
            raise DatasetFormatError(
                f"{where}: unknown column {column!r} (accepted: {accepted}, or a custom column "
                f"starting with {CUSTOM_PREFIX!r})"
            )


_SHOWN_AS_IDS = frozenset({"shipment_id", "trader_id", "aeo_tier"})
"""Declared columns that are ids, not free text: held to :func:`datasets.shown_text.refuse_unshown`
without the line breaks and joiners free text may hold (as ``pipeline.verdicts.Declaration`` holds
its fields)."""

_SHOWN_AS_NAMES = frozenset({"cargo_type"})
"""Declared columns that are names: held to :func:`datasets.shown_text.refuse_unshown` with the
joiners and without the line breaks, as a model card's cargo type is
(``models.artifact.cargo_type_problem``): a model trained for ``لوله\u200cها`` must find its rows."""


def _check_names_shown(columns: Iterable[str], where: str) -> None:
    """Refuse a column name (a custom ``x_`` one: the others are fixed) holding a character that does
    not show as itself: it becomes a key of the declaration's extra (:mod:`datasets.shown_text`)."""
    for column in columns:
        try:
            refuse_unshown(column, f"column name {column!r}")
        except ValueError as exc:
            raise DatasetFormatError(f"{where}: {exc}") from exc


def _check_declared_shown(declaration: Mapping[str, Any], where: str) -> None:
    """Refuse declared text that does not show as itself (:mod:`datasets.shown_text`): ``shipment_id``,
    ``trader_id`` and ``aeo_tier`` as ids, ``cargo_type`` as a name, the columns a declaration keeps
    under extra as free text.

    Checked here, where the line is known, because ``score`` without ``--policy`` builds no
    declaration: it wrote ``"\\u202e24-T"`` (shown as ``T-42``) into its rows, which
    ``decide --verdicts`` takes as written (``pipeline.verdicts.declarations_as_scored``). A shipment
    id ``"\\u202e24-S"`` (shown as ``S-42``) went into the rows and decisions with or without
    ``--policy``, which groups the rows by it. A cargo type ``"\\u202ebulk_ore"`` picks no model, but
    its error row was written and its shipment decided and recorded under it.
    """
    for column, value in declaration.items():
        if column in FLAG_COLUMNS:
            continue
        try:
            refuse_unshown(
                value,
                f"column {column!r}",
                breaks=column not in _SHOWN_AS_IDS | _SHOWN_AS_NAMES,
                name=column in _SHOWN_AS_NAMES,
            )
        except ValueError as exc:
            raise DatasetFormatError(f"{where}: {exc}") from exc


def _csv_records(fh: io.TextIOBase, manifest: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(fh)
    try:
        header = next(reader, None)
        if header is None:
            raise DatasetFormatError(f"{manifest}: empty manifest, no header")
        header = [name.strip() for name in header]
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            raise DatasetFormatError(f"{manifest}:1: duplicate column {duplicates[0]!r}")
        if "" in header:
            raise DatasetFormatError(f"{manifest}:1: a column has no name")
        _check_columns(header, f"{manifest}:1")
        _check_names_shown(header, f"{manifest}:1")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DatasetFormatError(f"{manifest}:1: missing required column {missing[0]!r}")
        end_of_previous = reader.line_num
        for fields in reader:
            line = end_of_previous + 1
            end_of_previous = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue  # blank line
            if len(fields) != len(header):
                raise DatasetFormatError(
                    f"{manifest}:{line}: row has {len(fields)} fields but the header has {len(header)}"
                )
            yield line, dict(zip(header, fields, strict=True))
    except csv.Error as exc:
        raise DatasetFormatError(f"{manifest}:{reader.line_num}: malformed CSV ({exc})") from exc


def _jsonl_records(fh: io.TextIOBase, manifest: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, text in enumerate(fh, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(
                text.rstrip("\r\n"), object_pairs_hook=unique_keys, parse_constant=_no_constant
            )
        except ValueError as exc:
            if not isinstance(exc, json.JSONDecodeError):  # a duplicate key or NaN, named by the hooks
                raise DatasetFormatError(f"{manifest}:{line}: {exc}") from exc
            raise DatasetFormatError(
                f"{manifest}:{line}: malformed JSON ({exc.msg}, column {exc.colno})"
            ) from exc
        except RecursionError as exc:
            raise DatasetFormatError(f"{manifest}:{line}: a value is nested too deeply") from exc
        if not isinstance(record, dict):
            raise DatasetFormatError(
                f"{manifest}:{line}: a line must be a JSON object, got {type(record).__name__}"
            )
        check_writable(record, f"{manifest}:{line}", text=text)
        _check_columns(record, f"{manifest}:{line}")
        _check_names_shown(record, f"{manifest}:{line}")
        yield line, record


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a value a manifest may hold (strict JSON has no NaN or Infinity)")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


_PATHS = ("path", "mask_path")
"""Columns that name a file: taken as typed, never stripped. Stripped, ``"photo.png "`` named
another file, ``photo.png``, which was scored for it (and its shipment released on that picture);
where the exact name is no file, its error says what the stripped spelling names
(:func:`datasets.decode.source.stripped_spelling`)."""


def _text(value: Any, column: str, where: str) -> str | None:
    """A cell as stripped text (a path as typed, :data:`_PATHS`); ``None`` when empty or blank. JSON
    numbers become their text.

    A NUL is refused in every column, and any control character (a newline inside a quoted CSV cell)
    in an id or a path: they break logs, CSV outputs and file system calls further on. Free text
    (``declared_goods``, ``x_`` columns) may span lines."""
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (int, float)):
        value = json.dumps(value)
    elif not isinstance(value, str):
        raise DatasetFormatError(f"{where}: column {column!r} must be a string, got {type(value).__name__}")
    if column not in _PATHS or not value.strip():
        value = value.strip()
    free_text = column == "declared_goods" or column.startswith("x_")
    if "\x00" in value or (not free_text and _CONTROL.search(value)):
        raise DatasetFormatError(f"{where}: column {column!r} = {value[:80]!r} holds a control character")
    return value or None


def _flag(value: Any, column: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = (_text(value, column, where) or "").lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DatasetFormatError(f"{where}: {column} must be true/false/1/0/yes/no or empty, got {value!r}")


def _spaces_hint(path: Path) -> str:
    """What a path not found would name with the spaces at the ends of its names stripped, where
    that is a file (empty otherwise), for the message."""
    from datasets.decode.source import stripped_spelling

    other = stripped_spelling(str(path))
    return "" if other is None else f" (the path has spaces at its ends; without them it names {other})"


def _inside(value: str, column: str, base: Path, where: str) -> Path:
    """``value`` resolved against ``base``; refused if it leaves ``base`` (also through a symlink)."""
    resolved = (base / value).resolve()
    if not resolved.is_relative_to(base):
        raise UnsafePathError(
            f"{where}: {column} {value!r} resolves to {resolved}, outside the manifest folder {base}"
        )
    return resolved


def _validate(
    record: Mapping[str, Any], *, line: int, manifest: Path, base: Path, check_files: bool
) -> ManifestRow:
    where = f"{manifest}:{line}"
    values = {
        column: _text(value, column, where) for column, value in record.items() if column not in FLAG_COLUMNS
    }
    for column in REQUIRED_COLUMNS:
        if not values.get(column):
            raise DatasetFormatError(f"{where}: missing required value {column!r}")
    label = values.get("label")
    if label is not None:
        label = label.lower()
        if label not in LABELS:
            raise DatasetFormatError(
                f"{where}: label must be good, anomalous or empty, got {values['label']!r}"
            )
    anomaly_type = values.get("anomaly_type")
    if anomaly_type == "good" and label == "good":
        anomaly_type = None  # the MVTec folder name for normal images, spelled out
    if anomaly_type is not None and label != "anomalous":
        raise DatasetFormatError(
            f"{where}: anomaly_type {anomaly_type!r} given with label {label or 'empty'!r} "
            "(an anomaly type needs label anomalous)"
        )
    if anomaly_type == "good":
        raise DatasetFormatError(f"{where}: anomaly_type 'good' on an anomalous row (use label good instead)")
    image = _inside(values["path"], "path", base, where)  # type: ignore[arg-type]
    if check_files and not image.is_file():
        raise DatasetFormatError(f"{where}: image not found: {image}{_spaces_hint(image)}")
    mask = None
    if values.get("mask_path"):
        if label == "good":
            raise DatasetFormatError(
                f"{where}: mask_path given for a good image (good images have no defects)"
            )
        mask = _inside(values["mask_path"], "mask_path", base, where)  # type: ignore[arg-type]
        if check_files and not mask.is_file():
            raise DatasetFormatError(f"{where}: mask not found: {mask}{_spaces_hint(mask)}")
    declaration: dict[str, Any] = {}
    for column, value in record.items():
        if column in FLAG_COLUMNS:
            declaration[column] = _flag(value, column, where)
        elif column in _DECLARED or column.startswith(CUSTOM_PREFIX):
            declaration[column] = values[column]
    _check_declared_shown(declaration, where)
    return ManifestRow(
        path=image,
        shipment_id=values["shipment_id"],  # type: ignore[arg-type]
        cargo_type=values["cargo_type"],  # type: ignore[arg-type]
        label=label,
        anomaly_type=anomaly_type,
        mask_path=mask,
        declaration=declaration,
        line=line,
    )


# --------------------------------------------------------------------------------------------------
# Writing


def _prepare(row: Mapping[str, Any], index: int, base: Path) -> dict[str, Any]:
    _check_columns(row, f"row {index}")
    for column in REQUIRED_COLUMNS:
        if row.get(column) in (None, ""):
            raise DatasetFormatError(f"row {index}: missing required value {column!r}")
    out: dict[str, Any] = {}
    for column, value in row.items():
        if isinstance(value, Path):
            value = _portable(value, base)
        out[column] = value
    return out


def _portable(path: Path, base: Path) -> str:
    """A path relative to the manifest folder when it lies inside it (so the manifest can move)."""
    if path.is_absolute():
        resolved = path.resolve()
        if resolved.is_relative_to(base):
            return resolved.relative_to(base).as_posix()
        return str(path)
    return path.as_posix()


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
