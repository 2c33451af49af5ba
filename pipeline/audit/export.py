"""Export recorded decisions with their outcomes to CSV (one flat row each) or JSONL (full records)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

from datasets.errors import InputError
from datasets.whole_files import keep_mode_and_owner, temporary_beside
from pipeline.audit.records import AuditRecord

__all__ = ["CSV_COLUMNS", "flat_row", "replaced_whole", "spreadsheet_safe", "write_export"]

CSV_COLUMNS = [
    "seq",
    "record_hash",
    "created_at",
    "shipment_id",
    "cargo_type",
    "tier",
    "random_audit",
    "rules",
    "max_score",
    "images",
    "model_ids",
    "policy_version",
    "policy_sha256",
    "decided_at",
    "idempotency_key",
    "outcome",
    "outcome_found",
    "outcome_officer",
    "outcome_notes",
    "outcome_at",
]


def flat_row(record: AuditRecord) -> dict[str, Any]:
    """One CSV row: lists joined with ``;``, outcome ``clean``/``anomalous``/empty (pending)."""
    d, o = record.decision, record.outcome
    scores = [i.score for i in d.images if i.score is not None]
    return {
        "seq": record.seq,
        "record_hash": record.record_hash,
        "created_at": record.created_at,
        "shipment_id": d.shipment_id,
        "cargo_type": d.cargo_type,
        "tier": d.tier.value,
        "random_audit": d.random_audit,
        "rules": ";".join(dict.fromkeys(r.rule for r in d.reasons)),
        "max_score": max(scores) if scores else "",
        "images": len(d.images),
        "model_ids": ";".join(d.model_ids),
        "policy_version": d.policy_version,
        "policy_sha256": d.policy_sha256,
        "decided_at": d.decided_at,
        "idempotency_key": record.idempotency_key or "",
        "outcome": "" if o is None else ("clean" if o.found is None else "anomalous"),
        "outcome_found": "" if o is None or o.found is None else o.found,
        "outcome_officer": "" if o is None else o.officer,
        "outcome_notes": "" if o is None else o.notes,
        "outcome_at": "" if o is None else o.created_at,
    }


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet will show as text: one starting like a formula (``=``, ``+``, ``-``,
    ``@``, tab, CR) gets a leading apostrophe. Officers' notes and ids come from people and
    manifests, and an export opened in Excel must not run ``=HYPERLINK(...)`` or ``=cmd|...``."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


@contextmanager
def replaced_whole(path: Path) -> Iterator[IO[str]]:
    """A text file written beside ``path`` and renamed onto it only when the block ends without an
    error: an export cut off midway (a database gone between pages, a full disk, Ctrl-C) leaves any
    earlier file as it was and no partial one, which would otherwise pass for a complete copy.

    What a writer into the file itself kept is kept: a ``path`` that is a link has the file it names
    replaced (the link stays); a file replaced keeps its mode (an export of officers' notes made
    readable by its owner alone stays so) and, where the user may set it, its owner. In a folder
    the user may not write, beside a file the user may, the export is written whole to a
    temporary file elsewhere first and then copied over the file: an error while it is read (the
    database gone) leaves the earlier file as it was; only a failure of that last copy (a full
    disk) can leave it short.

    Raises:
        OSError: the file cannot be made, written or renamed (a temporary file is removed).
    """
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        earlier = target.stat()
    except FileNotFoundError:
        earlier = None
    try:
        tmp, fd = temporary_beside(target)
    except PermissionError:
        if earlier is None or not os.access(target, os.W_OK):
            raise
        with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as staged:
            yield staged
            staged.flush()
            staged.seek(0)
            with target.open("w", encoding="utf-8", newline="") as handle:
                shutil.copyfileobj(staged, handle)
                handle.flush()
                os.fsync(handle.fileno())
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            keep_mode_and_owner(handle.fileno(), target)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # whole on disk before the name points at it
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_export(
    records: Iterable[AuditRecord], path: Path, *, fmt: Literal["csv", "jsonl"] | None = None
) -> int:
    """Write ``records`` to ``path`` as CSV or JSONL (``fmt`` defaults to the suffix); returns the count.

    The file appears whole or not at all (:func:`replaced_whole`): an error while ``records`` are
    read leaves an earlier export at ``path`` untouched.

    Raises:
        InputError: a format other than csv/jsonl, or the file cannot be written.
    """
    chosen = fmt or path.suffix.lower().lstrip(".")
    if chosen not in ("csv", "jsonl"):
        raise InputError(f"export format {chosen!r} for {path} not accepted (csv or jsonl)")
    count = 0
    try:
        with replaced_whole(path) as handle:
            if chosen == "csv":
                writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
                writer.writeheader()
                for record in records:
                    writer.writerow({k: spreadsheet_safe(v) for k, v in flat_row(record).items()})
                    count += 1
            else:
                for record in records:
                    handle.write(json.dumps(json.loads(record.model_dump_json()), sort_keys=True) + "\n")
                    count += 1
    except OSError as exc:
        raise InputError(f"cannot write the export to {path} ({exc.strerror or exc})") from exc
    return count
