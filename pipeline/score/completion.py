"""The completion record of a score output: a run gave every one of its inputs a row.

A run killed partway, or still running, leaves rows of some pictures only, and nothing in the rows
says so: ``clearsight decide`` on them released a shipment whose other pictures were never scored
(and recorded the release in the audit store). A run that ends having given every input a row
(scored, or an error row) writes :func:`completion_path` beside its output: the output's byte size
and sha256, its number of rows and the finish time (:func:`record_completion`). Any run that opens
the output for writing removes the record first, under the output's lock, before it touches the
output (:func:`forget_completion`), so a record stands only beside the rows of a run that finished.
``clearsight decide`` decides a rows file only where the record matches it (:func:`incomplete`; the
bytes it checked are the bytes it reads, :class:`OpenRows`), or with a ``--manifest`` that lists
every shipment of the rows, where every listed picture without a row holds its shipment. Rows whose
bytes the record vouched for are no longer there as it says (edited, cut or replaced since the run
finished) are :attr:`Unvouched.altered`: refused even with a manifest, as their scores are not the
ones the run wrote; a file that only grew past those bytes (a run appending to it) is unfinished.

The byte size and sha256 are plain arithmetic: whoever may write the rows could edit them and write
the record again to match. A run that has the audit secret seals the record
(``seal = HMAC-SHA256(K, its rows_file, bytes, sha256, rows, finished_at and run_id)``, with
``K = HMAC-SHA256(audit_secret, COMPLETION_SEAL_LABEL)``: derived under its own label, as the audit
chain's seal key is, so that it is never that key nor the random-audit draws'), and ``decide``
holding the secret refuses a record whose seal does not verify. A record without a seal (an older
version's, or a run without the secret) is still taken, and said where the decisions are recorded.

The record names the run that wrote the rows (``run_id``, which each of its rows carries too,
:class:`pipeline.verdicts.ImageVerdict`), under its seal where it has one; a record of a version
before run ids has none, and its seal covers the other fields alone, as it did.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import hmac
import io
import json
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, TypeVar

from datasets.errors import InputError
from datasets.regular_files import open_regular
from datasets.whole_files import name_start, written_whole

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "COMPLETION_SEAL_LABEL",
    "OpenRows",
    "RowsChanged",
    "Unvouched",
    "completion_path",
    "completion_seal_key",
    "count_rows",
    "forget_completion",
    "forget_decisions",
    "incomplete",
    "record_completion",
    "record_decisions",
    "vouched_decisions",
    "vouched_for_another",
]

_CHUNK = 1 << 20

MAX_RECORD_BYTES = 256 * 1024
"""The most of a completion record read: a record holds two real paths (the rows' and the decisions'
where they lie elsewhere), each at most ``PATH_MAX`` (4096) bytes, each byte at most six characters in
JSON (a control character, ``\\u0001``), and a file name of at most 255 bytes: under 52 KiB with the
rest of its fields. Whoever can write the verdicts folder can put anything at the record's name, and a
record read whole however long it was (a link to ``/dev/zero``) ended in a MemoryError at 5 GB."""

COMPLETION_SEAL_LABEL = b"clearsight completion seal v1"
"""The label the completion records' seal key is derived under (:func:`completion_seal_key`)."""
_SEALED = ("rows_file", "bytes", "sha256", "rows", "finished_at")
"""What a record's seal covers: the fields the run wrote, not the decisions file named later
(:func:`record_decisions` writes the record again, keeping its seal, with no key); and ``run_id``
after them where the record has one (:func:`_seal`)."""


def completion_seal_key(secret: str | bytes) -> bytes:
    """``K = HMAC-SHA256(secret, COMPLETION_SEAL_LABEL)`` of the audit secret: the key that seals
    completion records (never the audit chain's seal key, derived under another label)."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(raw, COMPLETION_SEAL_LABEL, hashlib.sha256).digest()


def _seal(key: bytes, record: dict[str, object]) -> str:
    """The seal of ``record`` (its :data:`_SEALED` fields, in that order, then its ``run_id`` where it
    has one) under ``key``. Only where it has one: a record of a version before run ids verifies as
    it did, and one stripped of its run id no longer verifies (the sealed list is shorter)."""
    names = (*_SEALED, "run_id") if "run_id" in record else _SEALED
    sealed = json.dumps([record.get(name) for name in names], ensure_ascii=True, separators=(",", ":"))
    return hmac.new(key, sealed.encode("ascii"), hashlib.sha256).hexdigest()


def completion_path(out: Path) -> Path:
    """The completion record of the score output ``out``: ``.{start of OUT's name}-{12 hex
    digits}.complete.json`` beside it, named as the lock and the journal are (at most 54 bytes long,
    whatever ``out``'s name: ``OUT.complete.json`` failed for a name near the file system's limit;
    hidden, so that no folder walk counts it among the files it left out)."""
    digest = hashlib.sha256(os.fsencode(out.name)).hexdigest()[:12]
    return out.with_name(f".{name_start(out.name)}-{digest}.complete.json")


def forget_completion(out: Path) -> None:
    """Remove ``out``'s completion record (none: nothing to do): a run about to write ``out``
    calls it, holding the output's lock, before it opens, cuts or removes ``out``.

    Raises:
        OSError: the record is there and cannot be removed (the run must not go on: the record
            would vouch for the rows it is about to change).
    """
    completion_path(out).unlink(missing_ok=True)


def _read_record(path: Path) -> str:
    """The text of the completion record at ``path``: a regular file (:func:`open_regular`) of at
    most :data:`MAX_RECORD_BYTES`, read no further than that.

    Raises:
        OSError: it cannot be read (FileNotFoundError where nothing is there), it is not a regular
            file, or it holds more than :data:`MAX_RECORD_BYTES` (EFBIG: no record Clearsight writes).
        UnicodeDecodeError: it is not UTF-8.
    """
    with open_regular(path) as fh:
        data = bytearray()
        # one byte over the limit tells a file too long, or one that grew past it
        while len(data) <= MAX_RECORD_BYTES and (chunk := fh.read(MAX_RECORD_BYTES + 1 - len(data))):
            data += chunk
    if len(data) > MAX_RECORD_BYTES:
        raise OSError(
            errno.EFBIG,
            f"larger than any completion record Clearsight writes ({MAX_RECORD_BYTES} bytes)",
            str(path),
        )
    return data.decode("utf-8")


def _size_and_sha256(path: Path) -> tuple[int, str]:
    """The byte size and sha256 of the regular file at ``path`` (:func:`open_regular`): the decisions
    file a record names lies where whoever writes the verdicts folder may put a FIFO (a score run
    blocked on it before it began) or a link to ``/dev/zero`` (hashed without end).

    Raises:
        OSError: it cannot be read, or it is not a regular file.
    """
    with open_regular(path) as fh:
        return _hashed(fh)


def _hashed(fh: BinaryIO) -> tuple[int, str]:
    """The byte size and sha256 of what is left to read of ``fh``."""
    size, sha256, _ = _hashed_with_head(fh, None)
    return size, sha256


def _hashed_with_head(fh: BinaryIO, head: int | None) -> tuple[int, str, str | None]:
    """The byte size and sha256 of what is left to read of ``fh``, and the sha256 of its first
    ``head`` bytes (None: ``head`` is None, or there are fewer), hashed in the same one pass."""
    digest = hashlib.sha256()
    head_sha256 = digest.hexdigest() if head == 0 else None
    size = 0
    while chunk := fh.read(_CHUNK):
        if head is not None and size < head <= size + len(chunk):
            cut = memoryview(chunk)[: head - size]
            digest.update(cut)  # the rest of the chunk follows: each byte is hashed once
            head_sha256 = digest.hexdigest()
            digest.update(memoryview(chunk)[len(cut) :])
        else:
            digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest(), head_sha256


def count_rows(out: Path, opened: BinaryIO | None = None) -> int:
    """The rows of the finished score output ``out`` (JSONL: its lines; CSV: its records past the
    header, a quoted cell may hold a line break; Parquet: its metadata's count). ``opened``: the
    file, open, counted from its start instead of the file ``out`` names now."""
    suffix = out.suffix.lower()
    if opened is not None:
        opened.seek(0)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(out if opened is None else opened).metadata.num_rows)
    if suffix == ".csv":
        text = (
            out.open(newline="", encoding="utf-8", errors="replace")
            if opened is None
            else io.TextIOWrapper(opened, newline="", encoding="utf-8", errors="replace")
        )
        try:
            return max(sum(1 for _ in csv.reader(text)) - 1, 0)
        finally:
            if opened is None:
                text.close()
            else:
                text.detach()  # the caller's file stays open
    with out.open("rb") if opened is None else contextlib.nullcontext(opened) as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(_CHUNK), b""))


def record_completion(
    out: Path,
    *,
    seal_key: bytes | None = None,
    run_id: str | None = None,
    written: tuple[int, int] | None = None,
) -> Path:
    """Write ``out``'s completion record (whole: a reader finds none or all of it); returns its path.
    ``seal_key``: seal it (:func:`completion_seal_key`); None: unsealed (the run has no audit secret).
    ``run_id``: the run whose rows ``out`` holds, every one of them (None: rows without a run id, of
    an output an earlier version began and this run resumed). ``written``: the device and inode of
    the file the run wrote (:func:`pipeline.score.writer.finish_output`); the record is written only
    where ``out`` is still that file, hashed and counted through the one descriptor that was checked.
    Rows renamed over ``out`` while the run wrote (an earlier run's, of an older model) left the
    writer appending to the file it opened, and hashed by their name they were vouched for as this
    run's, under its seal.

    Call only once every input of the run has its row in the finished ``out``, still holding the
    output's lock.

    Raises:
        InputError: ``out`` is no longer the file ``written`` names; no record is written.
        OSError: ``out`` cannot be read, or the record cannot be written.
    """
    with out.open("rb") as fh:
        found = os.fstat(fh.fileno())
        if written is not None and (found.st_dev, found.st_ino) != written:
            raise InputError(
                f"output {str(out)!r} is not the file this run wrote its rows into (device {written[0]}, "
                f"inode {written[1]}; it is device {found.st_dev}, inode {found.st_ino}): another file "
                "was renamed over it while the run wrote, and its rows are not this run's; no completion "
                "record was written and nothing was decided; score the inputs again into an --out no "
                "one else can write"
            )
        size, sha256 = _hashed(fh)
        rows = count_rows(out, fh)
    record = {
        "rows_file": out.name,
        "bytes": size,
        "sha256": sha256,
        "rows": rows,
        "finished_at": datetime.now(UTC).isoformat(),
    }
    if run_id is not None:
        record["run_id"] = run_id
    if seal_key is not None:
        record["seal"] = _seal(seal_key, record)
    return _write_record(out, record)


def _write_record(out: Path, record: dict[str, object]) -> Path:
    """Write ``out``'s completion record whole (staged beside it, with ``out``'s mode and owner)."""
    path = completion_path(out)
    with written_whole(path, text=True, like=out) as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def forget_decisions(out: Path) -> None:
    """Take the decisions file out of ``out``'s completion record (none: nothing to do): a run stopped
    before its decisions were in place left their name pending, and the staged file it names is gone
    (its inode free to be reused by a file that comes to that path later, another output's decisions).

    Raises:
        OSError: the record cannot be written.
    """
    path = completion_path(out)
    try:
        record = json.loads(_read_record(path))
    except (FileNotFoundError, ValueError):
        return
    if not isinstance(record, dict) or not any(k.startswith("decisions_") for k in record):
        return
    for key in [k for k in record if k.startswith("decisions_")]:
        del record[key]
    _write_record(out, record)


def _identity(st: os.stat_result) -> dict[str, int]:
    """What names one file whatever its path: its device and inode, which a rename keeps, and its size
    and modification time, which a rename keeps too and a file that reuses a freed inode does not
    share."""
    return {"dev": st.st_dev, "ino": st.st_ino, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def record_decisions(out: Path, decisions: Path, *, staged: os.stat_result | None = None) -> bool:
    """Add to ``out``'s completion record the decisions file a ``score --policy`` run writes on its rows:
    its path (its name where it lies beside ``out``) and sha256; the record is written again whole.
    Returns False, adding nothing, where the run wrote no record (its rows are not a finished run's).

    ``staged``: the file is written whole under a temporary name, about to be renamed onto
    ``decisions`` (its name, marked pending, with the staged file's identity from this ``os.stat``
    result, no sha256): called before the run publishes the file, and again without ``staged`` once it
    is in place. A run killed between the rename and the record left ``out``'s own decisions unnamed,
    so the next run kept them (a RELEASE) beside rows that contradict them; named first, they are
    ``out``'s from the moment they exist. The name alone vouched for whatever file came there later:
    a run killed before the rename left it, and another output's decisions written to the same path
    were removed by the next run into ``out``.

    The next run into ``out`` removes that file while it still holds those bytes
    (:func:`vouched_decisions`): it is ``out``'s, and the rows are about to change. A file found by its
    name alone may be another output's (written there through its ``--decisions``, or by an older
    version, when ``rows.jsonl`` and ``rows.csv`` shared ``rows.decisions.jsonl``).

    Call holding the output's lock, once the decisions are written.

    Raises:
        OSError: the decisions file cannot be read, or the record cannot be written.
    """
    path = completion_path(out)
    try:
        record = json.loads(_read_record(path))
    except FileNotFoundError:
        return False
    if not isinstance(record, dict):
        return False
    beside = os.path.realpath(decisions.parent) == os.path.realpath(out.parent)
    # the record's own name hangs on OUT's file name only, so a copied folder (cp -a day1 day2)
    # carries it: OUT's real path says which output's decisions these are
    record["decisions_rows_path"] = os.path.realpath(out)
    record["decisions_file"] = decisions.name if beside else os.path.realpath(decisions)
    if staged is not None:
        record.pop("decisions_sha256", None)
        record["decisions_pending"] = True
        record["decisions_staged"] = _identity(staged)
    else:
        record.pop("decisions_pending", None)
        record.pop("decisions_staged", None)
        record["decisions_sha256"] = _size_and_sha256(decisions)[1]
    _write_record(out, record)
    return True


def vouched_decisions(out: Path, *, unvouched: Callable[[Path, str], None] | None = None) -> Path | None:
    """The decisions file ``out``'s completion record names (:func:`record_decisions`), where it
    still holds the bytes the record says; None where the record names none, cannot be read, or the
    file is gone or changed since (not the decisions that run wrote: left to whoever changed it).
    A file the record names as pending (the run that named it was killed before it recorded its
    sha256) is ``out``'s only where it is the very file that run staged (the identity the record
    holds): killed before its rename, the run left no file there, and one that comes there later
    (another output's decisions given the same ``--decisions``) is not ``out``'s. A pending name
    without an identity (written by an older version) vouches for nothing: that run may have been
    killed before its rename or after it, so the file there may be another output's or its own. It is
    left, and ``unvouched`` is told (a RELEASE of the old rows, if it is theirs, stays beside new rows).

    Only a record written for ``out`` itself (the real path it names is ``out``'s) vouches: a folder
    copied with its record (``cp -a day1 day2``) names day1's decisions, kept outside the folder by
    their absolute path, and a run into day2 removed them though day1's rows never changed. Such a
    record vouches for nothing; ``unvouched`` is told the file and why, in words, to warn.

    Read before a run forgets the record: the rows it vouched for may be gone (deleted by hand), the
    decisions made on them still stand beside the new rows until removed."""
    try:
        record = json.loads(_read_record(completion_path(out)))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    name, sha256 = record.get("decisions_file"), record.get("decisions_sha256")
    if not isinstance(name, str) or not name:
        return None
    decisions = out.parent / name  # an absolute path stays itself
    written_for = record.get("decisions_rows_path")
    if written_for != os.path.realpath(out):
        if unvouched is not None:
            unvouched(
                decisions,
                f"{str(decisions)!r}: named by the completion record {str(completion_path(out))!r}, which "
                f"was written for the rows of {str(written_for)!r}, not {str(out)!r} (copied with its "
                "folder?): left as it is",
            )
        return None
    if record.get("decisions_pending") is True:
        if "decisions_staged" not in record:
            if unvouched is not None and os.path.lexists(decisions):
                unvouched(
                    decisions,
                    f"{str(decisions)!r}: named as pending by the completion record "
                    f"{str(completion_path(out))!r}, which an older version wrote for a run stopped before "
                    "it recorded that file's sha256, so whether that run wrote it cannot be told: left as "
                    "it is; it may not match the new rows",
                )
            return None
        try:  # the file itself, not one a link there leads to: the rename put the file at that name
            found = os.lstat(decisions)
        except OSError:
            return None
        return decisions if record.get("decisions_staged") == _identity(found) else None
    if not isinstance(sha256, str):
        return None
    try:
        return decisions if _size_and_sha256(decisions)[1] == sha256 else None
    except OSError:
        return None


def vouched_for_another(decisions: Path, out: Path) -> tuple[Path, Path] | None:
    """The other score output whose completion record, beside ``decisions`` or beside ``out``, vouches
    for the decisions file ``decisions`` (its :func:`vouched_decisions`), and that record; None where
    no record there does.

    A file found by its name alone may be another output's: an older version named the decisions of
    ``rows.jsonl``, ``rows.csv`` and ``rows.parquet`` all ``rows.decisions.jsonl``, and a record of one
    of them still vouches for it."""
    real, mine = os.path.realpath(decisions), os.path.realpath(out)
    folders = {os.path.realpath(decisions.parent): decisions.parent, os.path.realpath(out.parent): out.parent}
    for folder in folders.values():
        try:
            names = [e.name for e in os.scandir(folder) if e.name.endswith(".complete.json")]
        except OSError:
            continue
        for name in sorted(names):
            try:
                record = json.loads(_read_record(folder / name))
            except (OSError, UnicodeDecodeError, ValueError):
                continue
            rows_file = record.get("rows_file") if isinstance(record, dict) else None
            if not isinstance(rows_file, str) or not rows_file or Path(rows_file).name != rows_file:
                continue
            other = folder / rows_file
            # the record of that output (not one copied to another name), and not this output's
            if completion_path(other).name != name or os.path.realpath(other) == mine:
                continue
            found = vouched_decisions(other)
            if found is not None and os.path.realpath(found) == real:
                return other, folder / name
    return None


class Unvouched(NamedTuple):
    """Why a rows file is not vouched for by its completion record (:func:`incomplete`)."""

    why: str
    """In words, naming the record."""
    altered: bool
    """The bytes the record vouched for are not there as it says (rows edited, cut or replaced since
    the run finished): their scores may not be the ones the run wrote, so no manifest makes up for
    them; the rows must be scored again. False: the run did not finish them (no record; or the file
    grew past the bytes vouched for, a run appending to it), or the record cannot be read."""


def incomplete(rows: Path) -> str | None:
    """Why the rows file ``rows`` cannot be taken for a finished run's, in words; None where its
    completion record matches it (the same byte size and sha256).

    ``rows`` is looked at where it leads (a link's target): the record lies beside the file the
    score run wrote. To read the rows this vouches for, check them through :class:`OpenRows`: the
    file its name leads to may be another by the time it is opened again."""
    unvouched = _incomplete(Path(os.path.realpath(rows)), None, None)[0]
    return None if unvouched is None else unvouched.why


def _incomplete(
    real: Path,
    opened: BinaryIO | None,
    seal_key: bytes | None,
    unsealed: list[str] | None = None,
    run_ids: list[str | None] | None = None,
) -> tuple[Unvouched | None, tuple[int, str] | None]:
    """Why the rows file ``real`` (a real path) is not vouched for (None: it is), and the byte size
    and sha256 its completion record vouches for (None: it vouches for none). ``opened``: the file,
    open, hashed from where it stands instead of the file ``real`` names now. ``seal_key``: check
    the record's seal (a wrong one: altered); None: not checked. ``unsealed``: told why the rows are
    not vouched for by a seal checked with ``seal_key`` (nothing: one is). ``run_ids``: told the run
    id of a record that vouches for the rows (None: a record without one)."""
    record_file = completion_path(real)
    tell = unsealed.append if unsealed is not None else (lambda why: None)
    try:
        text = _read_record(record_file)
        record = json.loads(text)
    except FileNotFoundError:
        tell("it has no completion record")
        return Unvouched(
            f"it has no completion record ({str(record_file)!r}): the score run that wrote it was stopped "
            "before its end, is still running, or ended before Clearsight wrote such records, so "
            "pictures it lists may have no row",
            altered=False,
        ), None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        tell("its completion record cannot be read")
        return Unvouched(f"its completion record {str(record_file)!r} cannot be read ({exc})", False), None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("bytes"), int)
        or not isinstance(record.get("sha256"), str)
        or not isinstance(record.get("run_id", ""), str)
    ):
        tell("its completion record is not one Clearsight writes")
        return Unvouched(
            f"its completion record {str(record_file)!r} is not one Clearsight writes", False
        ), None
    seal = record.get("seal")
    if seal is None:
        tell("its completion record carries no seal: the score run had no audit secret, or is older")
    elif seal_key is None:
        tell("its completion record's seal was not checked: no audit secret here, or a weak one")
    elif not isinstance(seal, str) or not hmac.compare_digest(_seal(seal_key, record), seal):
        # checked before the rows are hashed: a record written again to match edited rows
        return Unvouched(
            f"its completion record {str(record_file)!r} carries a seal that does not verify under "
            "the audit secret: the record was written again since the score run sealed it (rows "
            "edited and the record made to match them?), or that run had another audit secret",
            altered=True,
        ), None
    named = record.get("rows_file")
    if seal is not None and named != real.name:
        # the name is sealed: a finished output and its record copied under another name (an earlier
        # day's, over today's) vouched for rows no run wrote there
        return Unvouched(
            f"its completion record {str(record_file)!r} is of rows written as {named!r}, not "
            f"{real.name!r}: an output and its record copied under another name",
            altered=True,
        ), None
    vouched: int = record["bytes"]
    try:
        if opened is None:
            with real.open("rb") as fh:
                size, sha256, head = _hashed_with_head(fh, vouched)
        else:
            size, sha256, head = _hashed_with_head(opened, vouched)
    except OSError as exc:
        return Unvouched(f"it cannot be read ({exc.strerror or exc})", False), None
    if size == vouched and sha256 == record["sha256"]:
        if run_ids is not None:
            run_ids.append(record.get("run_id"))
        return None, (size, sha256)
    finished, said = record.get("finished_at", "?"), record["sha256"][:12]
    found = (
        f"it changed since the score run completed it ({finished}): its completion record "
        f"{str(record_file)!r} says {vouched} bytes of sha256 {said}..., the file has "
        f"{size} bytes of sha256 {sha256[:12]}..."
    )
    if size > vouched and head == record["sha256"]:
        # the bytes vouched for are all there as written, more after them: a run appended to it
        return Unvouched(
            f"{found}, its first {vouched} bytes as the record vouches for them and more after them (a "
            "score run appended to it since), so pictures it lists may have no row yet",
            altered=False,
        ), None
    try:
        again = _read_record(record_file)
    except (OSError, UnicodeDecodeError):
        again = None
    if again != text:
        # the record went (or was written again) while the file was hashed: a score run into it
        # started meanwhile (it removes the record before it touches the rows), not an edit
        return Unvouched(
            f"{found}; its completion record was removed or written again meanwhile (a score run into it "
            "started?), so pictures it lists may have no row yet",
            altered=False,
        ), None
    return Unvouched(
        f"{found}, and the bytes it vouched for are not all there as written (rows edited, cut or "
        "replaced since), so its scores may not be the ones the run gave",
        altered=True,
    ), None


_Row = TypeVar("_Row")


class RowsChanged(Exception):
    """The rows :meth:`OpenRows.read_all` read did not parse, and the file changed while they were
    read: the change is what went wrong (half a line a ``--resume`` appended), not the rows;
    ``why`` says it (:meth:`OpenRows.changed`), and the parse error is its cause."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class OpenRows:
    """A rows file opened once, checked against its completion record (:meth:`incomplete`) and read
    (:meth:`read`) from that one open file.

    Checked by its name and opened again by its name to be read, rows renamed over the file in
    between (another run's), or written into it (a score run into it started), were decided as if
    the record vouched for them. The open file stays the one hashed wherever its name leads later,
    and what :meth:`read` gives is hashed again as it is read: :meth:`changed` says whether those are
    the bytes the record vouched for, so that rows written into the file meanwhile are refused.

    ``rows`` is opened where it leads (a link's target), as :func:`incomplete` looks at it.

    Raises:
        OSError: ``rows`` cannot be opened.
    """

    def __init__(self, rows: Path) -> None:
        self.path = Path(os.path.realpath(rows))
        self._file = self.path.open("rb", buffering=0)
        opened = os.fstat(self._file.fileno())
        self.identity: tuple[int, int] = (opened.st_dev, opened.st_ino)
        """The device and inode of the file opened: the one checked and read, wherever its name leads."""
        self._vouched: tuple[int, str] | None = None  # the byte size and sha256 checked
        self._reading: _HashedRead | None = None
        self.unsealed: str | None = "it was not checked against its completion record"
        """Why no seal checked by :meth:`incomplete` vouches for the rows, in words; None: one does."""
        self.run_id: str | None = None
        """The run id of the completion record :meth:`incomplete` found vouching for the rows (None:
        none does, or it names no run: a version's before run ids)."""

    def incomplete(self, seal_key: bytes | None = None) -> Unvouched | None:
        """:func:`incomplete` of the open file: why it is not vouched for, None where it is.
        ``seal_key``: the record's seal is checked with it (:func:`completion_seal_key`), and a seal
        that does not verify is :attr:`Unvouched.altered`; None: not checked."""
        self._file.seek(0)
        unsealed: list[str] = []
        run_ids: list[str | None] = []
        unvouched, self._vouched = _incomplete(self.path, self._file, seal_key, unsealed, run_ids)
        self.unsealed = unsealed[0] if unsealed else None
        self.run_id = run_ids[0] if run_ids else None
        return unvouched

    def read(self) -> BinaryIO:
        """The open file's bytes from its start, each hashed once as it is read: read them in order
        (no seek), to the end, then ask :meth:`changed`."""
        self._file.seek(0)
        self._reading = _HashedRead(self._file)
        return io.BufferedReader(self._reading, _CHUNK)

    def read_all(self, parse: Callable[[BinaryIO], Iterable[_Row]]) -> list[_Row]:
        """Every row ``parse`` makes of :meth:`read`'s bytes; then ask :meth:`changed`.

        Raises:
            RowsChanged: they did not parse, and the file changed while they were read.
            Exception: what ``parse`` raised, the file as vouched for.
        """
        try:
            return list(parse(self.read()))
        except Exception as exc:
            changed = self.changed(stopped=True)
            if changed is None:
                raise
            raise RowsChanged(changed) from exc

    def changed(self, *, stopped: bool = False) -> str | None:
        """Why the bytes :meth:`read` gave are not the ones :meth:`incomplete` found vouched for
        (written into the file between the two), in words; None where they are, or where none were
        vouched for (the rows are decided as unfinished: nothing to keep to).

        ``stopped``: the read failed partway (a row that does not parse: a line a run appending to
        the file had written half of was told as not JSON, and a Parquet file appended to as not
        one). What was read then says nothing of the rest, so the open file is hashed again from its
        start instead; None too where it cannot be read again (the error that stopped the read is
        told)."""
        if self._vouched is None:
            return None
        found = "the rows read were"
        if stopped:
            self._file.seek(0)
            try:
                size, sha256 = _hashed(self._file)
            except OSError:
                return None
            found = "the file now holds"
        else:
            size, sha256 = (0, "") if self._reading is None else self._reading.size_and_sha256()
        if (size, sha256) == self._vouched:
            return None
        return (
            "it changed while it was read (a score run into it started?): its completion record vouches "
            f"for {self._vouched[0]} bytes of sha256 {self._vouched[1][:12]}..., {found} "
            f"{size} bytes of sha256 {sha256[:12] or '(none)'}..."
        )

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> OpenRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HashedRead(io.RawIOBase):
    """What is read of ``fh`` from where it stands, hashed once as it is read (the file itself is
    left open: :class:`OpenRows` closes it)."""

    def __init__(self, fh: io.FileIO) -> None:
        super().__init__()
        self._fh = fh
        self._digest = hashlib.sha256()
        self._size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        count = self._fh.readinto(buffer)
        if count:
            self._digest.update(memoryview(buffer).cast("B")[:count])
            self._size += count
        return count or 0

    def size_and_sha256(self) -> tuple[int, str]:
        return self._size, self._digest.hexdigest()
