"""Image verdicts as flat rows: the one codec for the scorer's JSONL/CSV/Parquet output and its readers.

The batch scorer writes these rows, ``--resume`` reads them back, and ``clearsight decide`` re-decides
them; all three go through this module so that a file written by one is read the same way by the others.
In CSV and Parquet the nested fields (``type_probabilities``, ``declaration``, ``signal_log_odds``) are
JSON strings, and an empty cell is ``None``. In CSV a text cell that a spreadsheet would run as a
formula (a file name or shipment id starting with ``=``, ``+``, ``-``, ``@``) gets a leading ``'``,
and so does one that starts with ``'`` itself, so that reading strips exactly one and nothing is lost.
Type probabilities holding a value that is no finite number (an image with NaN in it, written so
before the predictor gave none for it) are read as none (``{}``), as it gives them now.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from datasets.errors import DatasetFormatError, InputError
from datasets.json_text import check_writable, unique_keys
from pipeline.verdicts import ImageVerdict

__all__ = [
    "FIELDS",
    "FLOATS",
    "NESTED",
    "TEXT",
    "SUFFIXES",
    "csv_escape",
    "csv_unescape",
    "from_csv",
    "from_flat",
    "from_json_line",
    "read_verdicts",
    "row_data",
    "row_json",
    "to_cells",
]

CSV_FIELD_BYTES = 64 * 1024 * 1024
"""The longest cell a verdict CSV is read with (csv's own limit, 128 KiB, is less than a declaration
carried from a JSONL manifest may hold)."""
csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_BYTES))

FIELDS: tuple[str, ...] = (
    *(name for name, field in ImageVerdict.model_fields.items() if not field.exclude),
    "row_seal",
)
"""The columns of a verdict row: every field a verdict records (not the hashes it is looked up by),
and last the row's seal (:mod:`pipeline.row_seal`: no field the verdict dumps, as it is the row's)."""
NESTED = ("type_probabilities", "declaration", "signal_log_odds")
FLOATS = ("score", "threshold", "hold_threshold", "scale_vs_training")
TEXT = tuple(name for name in FIELDS if name not in NESTED and name not in FLOATS)
"""Columns of free text: escaped in CSV (:func:`csv_escape`)."""
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_escape(text: str) -> str:
    """A text cell a spreadsheet shows as text: a leading ``'`` before a formula start (or a ``'``)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_unescape(text: str) -> str:
    """The text :func:`csv_escape` escaped."""
    return text[1:] if text.startswith("'") else text


SUFFIXES = (".jsonl", ".csv", ".parquet")


def _validated(record: dict[str, Any], where: str) -> ImageVerdict:
    if "phash_turns" in record:
        # a scoring run's own lookups, never written to a row (so outside its seal): one in a file
        # was put there, and would feed the audit store's near-copy lookups unvouched
        record = {key: value for key, value in record.items() if key != "phash_turns"}
    probabilities = record.get("type_probabilities")
    if isinstance(probabilities, dict) and not all(map(_finite_or_not_a_number, probabilities.values())):
        # as the predictor gives them now (models.predictor, 3e6855d): a model's probabilities for
        # an image with NaN in it were all NaN, written so (CSV, Parquet) or as null (JSONL) before
        record = {**record, "type_probabilities": {}}
    try:
        return ImageVerdict.model_validate(record)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DatasetFormatError(f"{where}: not an image verdict row ({problems})") from exc


def _finite_or_not_a_number(value: Any) -> bool:
    """False for what a non-finite probability was written as (NaN, an infinity, JSON's null); true
    for anything else, a finite number or a value that is no number (refused by ImageVerdict)."""
    if value is None:
        return False
    return not isinstance(value, float) or math.isfinite(value)


def row_data(verdict: ImageVerdict) -> dict[str, Any]:
    """A verdict's row as JSON values, one for each of :data:`FIELDS`: its dump, its row seal (which the
    dump leaves out), and None for a field the dump leaves out where it is None (``run_id``)."""
    data = {**dict.fromkeys(FIELDS), **verdict.model_dump(mode="json")}
    data["row_seal"] = verdict.row_seal
    return data


def row_json(verdict: ImageVerdict) -> bytes:
    """A verdict's JSONL row, newline-terminated: ``path`` first, its row seal last where it has one
    (absent where not, as rows were before seals)."""
    line = verdict.model_dump_json().encode("utf-8")
    if verdict.row_seal is not None:  # spliced in: the dump's bytes as they were, one key more
        line = line[:-1] + b',"row_seal":' + json.dumps(verdict.row_seal).encode("utf-8") + b"}"
    return line + b"\n"


def to_cells(verdict: ImageVerdict) -> list[str]:
    """A verdict as CSV cells in :data:`FIELDS` order (floats by ``repr`` so they round-trip exactly)."""
    data = row_data(verdict)
    cells = []
    for name in FIELDS:
        value = data[name]
        if name in NESTED:
            cells.append("" if value is None else json.dumps(value, sort_keys=True))
        elif value is None:
            cells.append("")
        elif name in TEXT:
            cells.append(csv_escape(str(value)))
        else:
            cells.append(repr(value) if isinstance(value, float) else str(value))
    return cells


def from_csv(record: dict[str, Any], where: str) -> ImageVerdict:
    """A verdict from a CSV record (text cells unescaped, see :func:`csv_escape`)."""
    return from_flat(
        {k: csv_unescape(v) if k in TEXT and isinstance(v, str) else v for k, v in record.items()}, where
    )


def from_flat(record: dict[str, Any], where: str) -> ImageVerdict:
    """A verdict from a CSV/Parquet record: empty cells are None, nested fields JSON, numbers may be text."""
    data: dict[str, Any] = {}
    for key, value in record.items():
        if value == "" or value is None:
            continue
        if key in NESTED and isinstance(value, str):
            value = _loads(value, f"{where}: column {key}")
        elif key in FLOATS and isinstance(value, str):
            try:
                value = float(value)
            except ValueError as exc:
                raise DatasetFormatError(f"{where}: column {key} = {value!r} is not a number") from exc
        data[key] = value
    return _validated(data, where)


def _loads(text: str | bytes, where: str) -> Any:
    """JSON ``text`` as read from a row, refused (naming ``where``) where it would fail the writers
    after it: a value nested too deeply, or half a character (:mod:`datasets.json_text`), or where
    it would be read otherwise than written: a key twice in one object (json keeps the last)."""
    try:
        value = json.loads(text, object_pairs_hook=unique_keys)
    except ValueError as exc:
        if not isinstance(exc, json.JSONDecodeError):  # a duplicate key, named by the hook
            raise DatasetFormatError(f"{where}: {exc}") from exc
        raise DatasetFormatError(f"{where}: not JSON ({exc})") from exc
    except RecursionError as exc:
        raise DatasetFormatError(f"{where}: a value is nested too deeply") from exc
    check_writable(value, where, text=text)
    return value


def _no_duplicate_columns(names: list[str], where: str) -> None:
    """Refuse a header naming a column twice: a reader keeps one of them (the last), so that a row
    read would differ from what a spreadsheet shows in the first."""
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DatasetFormatError(f"{where}: duplicate column {duplicates[0]!r}")


def _no_duplicate_fields(schema: Any, where: str) -> None:
    """Refuse a Parquet column of nested values (a struct declaration, not JSON text) naming a field
    twice: pyarrow cannot make it a dict (an "unexpected ValueError"), and a reader that could would
    keep one of the two (``radiation_alarm`` true, then false)."""
    for column in schema:
        twice = _field_named_twice(column.type)
        if twice is not None:
            raise DatasetFormatError(f"{where}: column {column.name!r} names the field {twice!r} twice")


def _field_named_twice(kind: Any, prefix: str = "") -> str | None:
    """The first field (dotted below the column) that a nested Arrow type names twice; None if none."""
    import pyarrow as pa

    if pa.types.is_struct(kind):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        names = [field.name for field in fields]
        twice = next((name for name in names if names.count(name) > 1), None)
        if twice is not None:
            return prefix + twice
        children = [(field.type, f"{prefix}{field.name}.") for field in fields]
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        children = [(kind.value_type, prefix)]
    elif pa.types.is_map(kind):
        children = [(kind.key_type, prefix), (kind.item_type, prefix)]
    else:
        return None
    for child, below in children:
        twice = _field_named_twice(child, below)
        if twice is not None:
            return twice
    return None


def from_json_line(line: bytes | str, where: str) -> ImageVerdict:
    """A verdict from one JSONL line."""
    record = _loads(line, where)
    if not isinstance(record, dict):
        raise DatasetFormatError(f"{where}: a row must be a JSON object")
    return _validated(record, where)


def read_verdicts(path: Path, source: BinaryIO | None = None) -> Iterator[ImageVerdict]:
    """Stream verdict rows from ``.jsonl``, ``.csv`` or ``.parquet``, one at a time.

    ``source``: the file's bytes, open from their start, read instead of ``path`` (which names the
    file in errors and gives its format); read once, in order, to its end (a Parquet file into
    memory first: it is read footer first).

    Raises:
        InputError: a missing file or another suffix.
        DatasetFormatError: a row that is not an image verdict (file and row named), a column or a
            JSON key given twice, or a Parquet struct's field.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{str(path)!r}: suffix {suffix!r} not accepted (.jsonl, .csv or .parquet)")
    if source is None and not path.is_file():
        raise InputError(f"{str(path)!r}: no such file")
    if suffix == ".jsonl":
        with contextlib.nullcontext(source) if source is not None else path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    yield from_json_line(line, f"{path}:{number}")
    elif suffix == ".csv":
        opened = (
            io.TextIOWrapper(source, encoding="utf-8", newline="")
            if source is not None
            else path.open(newline="", encoding="utf-8")
        )
        with opened as fh:
            reader = csv.DictReader(fh)
            _no_duplicate_columns(list(reader.fieldnames or ()), f"{path}:1")
            unknown = sorted(set(reader.fieldnames or ()) - set(FIELDS))
            if unknown:
                raise DatasetFormatError(f"{path}: unknown columns {unknown}; accepted: {list(FIELDS)}")
            for number, record in enumerate(reader, start=2):
                yield from_csv(record, f"{path}:{number}")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(pa.BufferReader(source.read()) if source is not None else path)
            _no_duplicate_columns(parquet.schema_arrow.names, str(path))
            _no_duplicate_fields(parquet.schema_arrow, str(path))
            number = 0
            for batch in parquet.iter_batches(batch_size=4096):
                for record in batch.to_pylist():
                    number += 1
                    yield from_flat(record, f"{path} row {number}")
        except (pa.ArrowException, OSError) as exc:
            raise DatasetFormatError(f"{path}: not a readable Parquet file ({exc})") from exc
