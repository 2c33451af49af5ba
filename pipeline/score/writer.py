"""Crash-safe output: rows appended in flushed, fsynced chunks, and read back for ``--resume``.

Formats by the output's suffix:

- ``.jsonl``: one :class:`ImageVerdict` JSON object per line.
- ``.csv``: a header, then one row per image; nested fields (``type_probabilities``,
  ``declaration``, ``signal_log_odds``) are JSON strings and ``None`` is an empty cell. A CSV
  written by an earlier version, whose header lacks columns added since, is rewritten with
  today's header when a run resumes it (its rows kept, the new cells empty).
- ``.parquet``: Parquet cannot be appended, so rows are journalled beside it (:func:`journal_path`)
  and converted (streamed, in row groups) when the run ends; the journal is removed only after the
  Parquet file is complete and renamed into place.

One run at a time writes an output: it holds an exclusive lock (:mod:`pipeline.score.output_lock`) on a file
beside it from before the output is opened until its decisions are written; a second run into the
same output is refused before it touches anything.

A ``kill -9`` can leave at most one torn row at the end of a file. :func:`open_output` with
``resume=True`` cuts the file back to its last complete row and returns the paths already done, so
that the resumed run appends exactly the missing images; it first takes out the rows whose picture's
file is another picture now (:mod:`pipeline.score.kept_content`), so that those are scored again.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

from datasets.csv_lines import csv_line
from datasets.errors import DatasetFormatError, InputError
from datasets.whole_files import keep_mode_and_owner, name_start, temporary_beside, written_whole
from pipeline import row_seal, verdict_rows
from pipeline.score.done import Done, row_state
from pipeline.score.kept_content import KeptContent
from pipeline.verdicts import RUN_ID_PATTERN, ImageVerdict

__all__ = [
    "FIELDS",
    "OUTPUT_SUFFIXES",
    "OutputFormat",
    "RowWriter",
    "finish_output",
    "iter_rows",
    "check_output",
    "journal_path",
    "open_output",
    "output_format",
    "refuse_other_models",
]

OutputFormat = Literal["jsonl", "csv", "parquet"]
FIELDS = verdict_rows.FIELDS
_NESTED = verdict_rows.NESTED
_FLOATS = verdict_rows.FLOATS


# the output suffixes, in any case (rows.CSV is a CSV output), and the format each names
OUTPUT_SUFFIXES: dict[str, OutputFormat] = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def output_format(out: Path) -> OutputFormat:
    """The format named by ``out``'s suffix (:data:`OUTPUT_SUFFIXES`, in any case).

    Raises:
        InputError: a suffix other than ``.jsonl``, ``.csv`` or ``.parquet``.
    """
    suffix = out.suffix.lower()
    if suffix in OUTPUT_SUFFIXES:
        return OUTPUT_SUFFIXES[suffix]
    raise InputError(f"output {str(out)!r} has suffix {suffix!r}; use .jsonl, .csv or .parquet")


def journal_path(out: Path) -> Path:
    """Where a Parquet output's rows are journalled until the run ends:
    ``.{start of OUT's name}-{12 hex digits}.journal.jsonl`` beside it.

    At most 60 bytes long, whatever ``out``'s name: ``OUT.journal.jsonl`` was 14 bytes longer than
    it, and for a name near the file system's limit the run failed on the journal ("File name too
    long") once the models had loaded. The start of the name (:func:`name_start`) says whose
    journal it is; the hash of the whole name keeps apart two outputs whose names start alike.
    Hidden, as a temporary file is, so that no folder walk takes it for an input.
    """
    digest = hashlib.sha256(os.fsencode(out.name)).hexdigest()[:12]
    return out.with_name(f".{name_start(out.name)}-{digest}.journal.jsonl")


def _earlier_journal(out: Path) -> Path | None:
    """The journal an earlier version kept, ``OUT.journal.jsonl``, where a run it left unfinished
    left one: resumed from, not taken for a fresh start. None where that name is longer than the
    file system takes (no run can have made it)."""
    earlier = out.with_name(out.name + ".journal.jsonl")
    try:
        return earlier if earlier.exists() else None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return None
        raise


def _journal_in_use(out: Path) -> Path:
    """The journal a run into the Parquet ``out`` appends to: :func:`journal_path`, unless only an
    earlier version's is there (:func:`_earlier_journal`)."""
    journal = journal_path(out)
    if journal.exists():
        return journal
    return _earlier_journal(out) or journal


# ---------------------------------------------------------------------------------------- rows


# -------------------------------------------------------------------------- scanning / resume


_MODEL_ID = FIELDS.index("model_id")
_SHIPMENT_ID = FIELDS.index("shipment_id")
_CARGO_TYPE = FIELDS.index("cargo_type")
_ERROR = FIELDS.index("error")
_SCORE = FIELDS.index("score")
_HEATMAP = FIELDS.index("heatmap")
_DECLARATION = FIELDS.index("declaration")
_SHA256 = FIELDS.index("sha256")
_RUN_ID = FIELDS.index("run_id")


def _note(
    done: Done | None,
    path: str,
    shipment_id: str | None,
    declaration: Any,
    cargo_type: str | None,
    state: int,
    sha256: str | None = None,
    content: KeptContent | None = None,
    verdict: ImageVerdict | None = None,
    run_id: str | None = None,
) -> None:
    if done is not None:
        identity = done.add(path, shipment_id, declaration, cargo_type, state)
        if content is not None:
            unsealed = (
                row_seal.fault(content.seal_key, verdict)
                if content.seal_key is not None and verdict is not None
                else None
            )
            content.note(identity, path, sha256, state, unsealed=unsealed, run_id=run_id)


def _csv_verdict(content: KeptContent | None, cells: list[str], where: str) -> ImageVerdict | None:
    """The verdict of a CSV row whose seal ``content`` checks (parsed for it alone); None if none."""
    if content is None or content.seal_key is None:
        return None
    return verdict_rows.from_csv(dict(zip(FIELDS, cells, strict=True)), where)


def _run_id(cells: list[str], where: str) -> str | None:
    """The run id of a CSV row not parsed whole (no seal to check): checked as parsing would, or a
    resume would adopt text no row may hold and write it into every row it scores."""
    text = verdict_rows.csv_unescape(cells[_RUN_ID]) or None
    if text is not None and (len(text) > 64 or not re.fullmatch(RUN_ID_PATTERN, text)):
        raise DatasetFormatError(
            f"{where}: run_id {text!r} is not a score run's id (the row was edited); score into a new "
            "--out, or pass --overwrite to score every image again"
        )
    return text


def _complete_jsonl(
    path: Path, *, collect: Done | None, models: set[str] | None = None, content: KeptContent | None = None
) -> int:
    """Byte length of ``path``'s complete rows; notes each in ``collect`` (:data:`Done`) and ``content``,
    their model ids to ``models``.

    Streams the file. Only the last line may be torn (a crash mid-write); a bad line with rows
    after it is corruption, not a crash, and is refused.
    """
    good = 0
    bad: DatasetFormatError | None = None
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if bad is not None:
                raise bad
            if not line.endswith(b"\n"):
                if not good and not _starts_a_row(line):
                    raise _not_torn(path, line, "the start of a score row")
                break  # torn tail: the write never finished
            try:
                verdict = verdict_rows.from_json_line(line, f"{path}:{number}")
            except DatasetFormatError as exc:
                bad = exc
                continue
            # a row that holds an error keeps no cargo type: a typo's, which no model has, must not
            # bind the resume to it (--retry-errors scores it again)
            cargo = verdict.cargo_type if verdict.error is None else None
            state = row_state(verdict.error, verdict.score, verdict.heatmap)
            _note(
                collect,
                verdict.path,
                verdict.shipment_id,
                verdict.declaration,
                cargo,
                state,
                verdict.sha256,
                content,
                verdict,
                verdict.run_id,
            )
            if models is not None and verdict.model_id:
                models.add(verdict.model_id)
            good += len(line)
    if bad is not None:  # a whole last line that does not parse is no torn write: never cut it
        raise bad
    return good


_ROW_START = b'{"path":"'
"""How every JSONL row the writer has written starts (``model_dump_json``, ``path`` first)."""


def _starts_a_row(torn: bytes) -> bool:
    """Whether ``torn``, a last line without its newline, can be a row the writer began to write."""
    return torn.startswith(_ROW_START) or _ROW_START.startswith(torn)


def _not_torn(path: Path, line: bytes, what: str) -> DatasetFormatError:
    """The refusal of a file whose only line lacks its newline and is not ``what`` a crash can leave.

    Such a line was taken for a torn write and cut, the file with it: ``--resume`` into a one-line
    note or JSON document named by mistake emptied it instead of refusing it. A torn tail is cut
    only after a whole row (or the header), or where it is the start of one (:func:`_starts_a_row`,
    :func:`_starts_a_header`)."""
    return DatasetFormatError(
        f"{path}: not a Clearsight score output: its only line, without a final newline, is not "
        f"{what} ({line[:60]!r}); give another --out, or pass --overwrite to replace the file"
    )


def _starts_a_header(torn: bytes) -> bool:
    """Whether ``torn``, a CSV output's only line without its newline, can be a score header (today's
    or an earlier version's, :func:`_older_header`) whose write never finished."""
    try:
        names = torn.decode("ascii").split(",")
    except UnicodeDecodeError:
        return False
    *whole, last = names
    if not whole:
        return FIELDS[0].startswith(last)
    positions = [FIELDS.index(name) if name in FIELDS else -1 for name in whole]
    return (
        whole[0] == FIELDS[0]
        and -1 not in positions
        and positions == sorted(set(positions))
        and any(name.startswith(last) for name in FIELDS[positions[-1] + 1 :])
    )


class _CountingLines:
    """Feeds ``csv.reader`` whole lines and remembers how many bytes it has handed out.

    A last line without its newline is a torn write and is never handed out.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.consumed = 0

    def __iter__(self) -> Iterator[str]:
        for line in self._fh:
            if not line.endswith(b"\n"):
                return
            self.consumed += len(line)
            yield line.decode("utf-8")


def _open_csv(fh: IO[bytes]) -> tuple[_CountingLines, Iterator[list[str]], list[str] | None]:
    """A CSV output's line counter, its row reader past the header, and the header (``None`` when
    not even a whole header was written)."""
    lines = _CountingLines(fh)
    reader = csv.reader(lines, strict=True)
    try:
        return lines, reader, next(reader)
    except (StopIteration, csv.Error):
        return lines, reader, None


def _complete_csv(
    path: Path, *, collect: Done | None, models: set[str] | None = None, content: KeptContent | None = None
) -> int:
    """Byte length of ``path``'s header and complete rows; notes each in ``collect`` (:data:`Done`) and
    ``content``, their model ids to ``models``.

    A file under an earlier version's header (:func:`_older_header`) is first rewritten under
    today's (:func:`_rewrite_under_todays_header`), so that rows of today's shape can follow.
    """
    with path.open("rb") as fh:
        lines, reader, header = _open_csv(fh)
        if header is None:
            fh.seek(0)
            first = fh.readline(4096)
            if first.endswith(b"\n"):  # whole, and no CSV: no crash of ours wrote it
                raise DatasetFormatError(
                    f"{path}:1: not a Clearsight score output: its first line is not CSV ({first[:60]!r}); "
                    "give another --out, or pass --overwrite to replace the file"
                )
            if first and not _starts_a_header(first):
                raise _not_torn(path, first, "the start of the score header")
            return 0  # not even a whole header: start the file again
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            # an older header naming a column twice was taken, and the last cell of the two kept
            raise DatasetFormatError(
                f"{path}:1: duplicate column {repeated[0]!r} (which cell holds the row's value cannot be "
                "told); pass --overwrite to replace the file"
            )
        if tuple(header) == FIELDS:
            good = lines.consumed
            for number, cells in enumerate(_whole_rows(reader, len(FIELDS), path), start=2):
                if collect is not None:
                    declaration = json.loads(cells[_DECLARATION]) if cells[_DECLARATION] else {}
                    shipment = verdict_rows.csv_unescape(cells[_SHIPMENT_ID]) or None
                    cargo = None if cells[_ERROR] else verdict_rows.csv_unescape(cells[_CARGO_TYPE]) or None
                    state = row_state(cells[_ERROR], cells[_SCORE], cells[_HEATMAP])
                    sha256 = verdict_rows.csv_unescape(cells[_SHA256]) or None
                    path_text = verdict_rows.csv_unescape(cells[0])
                    verdict = _csv_verdict(content, cells, f"{path}:{number}")
                    run_id = verdict.run_id if verdict is not None else _run_id(cells, f"{path}:{number}")
                    _note(
                        collect,
                        path_text,
                        shipment,
                        declaration,
                        cargo,
                        state,
                        sha256,
                        content,
                        verdict,
                        run_id,
                    )
                if models is not None and cells[_MODEL_ID]:
                    models.add(verdict_rows.csv_unescape(cells[_MODEL_ID]))
                good = lines.consumed
            return good
        if not _older_header(header):
            raise DatasetFormatError(
                f"{path}: header {header!r} is not Clearsight's score header {list(FIELDS)!r}; "
                "pass --overwrite to replace the file"
            )
        _rewrite_under_todays_header(path, header, reader)
    return _complete_csv(path, collect=collect, models=models, content=content)


def _older_header(header: list[str]) -> bool:
    """Whether ``header`` is an earlier version's score header: some of today's columns, each once,
    in order."""
    positions = [FIELDS.index(name) for name in header if name in FIELDS]
    return (
        len(positions) == len(header) < len(FIELDS)
        and bool(header)
        and header[0] == FIELDS[0]
        and positions == sorted(set(positions))
    )


def _rewrite_under_todays_header(path: Path, header: list[str], reader: Iterator[list[str]]) -> None:
    """Rewrite a CSV output with an earlier version's ``header`` under today's, from ``reader`` (its
    rows past the header), so that a resumed run can append rows of today's shape without losing the
    old ones. Complete rows are kept (columns added since are empty, i.e. ``None``); a torn last row
    is dropped, and its image is scored again. Written whole beside it, then renamed over
    (:func:`~datasets.whole_files.written_whole`): on an error the original is untouched."""
    with written_whole(path) as out:
        out.write(RowWriter.csv_line(list(FIELDS)))
        for number, cells in enumerate(_whole_rows(reader, len(header), path), start=2):
            record = dict(zip(header, cells, strict=True))
            verdict = verdict_rows.from_csv(record, f"{path}:{number}")
            out.write(RowWriter.csv_line(verdict_rows.to_cells(verdict)))


def _whole_rows(reader: Iterator[list[str]], width: int, path: Path) -> Iterator[list[str]]:
    """The complete rows of a CSV reader, stopping at a torn last row (a crash mid-write).

    Raises:
        DatasetFormatError: a row of the wrong width with rows after it (corruption, not a crash).
    """
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            try:
                next(reader)
            except (StopIteration, csv.Error):
                return  # a quoted cell cut at an embedded newline: the torn last row
            raise DatasetFormatError(f"{path}: a row that does not parse before the end ({exc})") from exc
        if len(cells) != width:
            try:
                next(reader)
            except (StopIteration, csv.Error):
                return  # the torn last row, cut exactly at a line end inside it
            raise DatasetFormatError(
                f"{path}: a row with {len(cells)} cells before the end, expected {width}"
            )
        yield cells


def _parquet_to_journal(parquet: Path, journal: Path) -> None:
    """Rewrite a finished Parquet output as a journal, so that a resumed run can append to it; the
    journal holds the same rows, and is made with the output's mode and owner, plus the owner's
    write permission: the run appends to it. With the output's exact mode, a read-only (0444)
    output gave a read-only journal that no run could open to append (``Permission denied``), and
    that stayed, so every later ``--resume`` failed the same way. The finished Parquet file gets
    the output's exact mode back (:func:`finish_output`)."""

    with written_whole(journal, like=parquet) as fh:
        os.fchmod(fh.fileno(), stat.S_IMODE(os.fstat(fh.fileno()).st_mode) | stat.S_IWUSR)
        for batch in _parquet_batches(parquet, 4096):
            for record in batch.to_pylist():
                verdict = verdict_rows.from_flat(record, str(parquet))
                fh.write(verdict_rows.row_json(verdict))


def _parquet_batches(parquet: Path, size: int, columns: list[str] | None = None) -> Iterator[Any]:
    """``parquet``'s record batches; a file pyarrow cannot read (garbage, cut short) is no score
    output: said as one, where pyarrow's own error reached the CLI as an "unexpected" one (exit 1).

    Raises:
        DatasetFormatError: naming the file and what to do."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        yield from pq.ParquetFile(parquet).iter_batches(batch_size=size, columns=columns)
    except (pyarrow.ArrowException, OSError) as exc:
        raise _unreadable_parquet(parquet, exc) from exc


def _unreadable_parquet(parquet: Path, exc: Exception) -> DatasetFormatError:
    return DatasetFormatError(
        f"{parquet}: not a readable Parquet score output ({exc}); score into a new --out, or pass "
        "--overwrite to replace it"
    )


def _too_long(out: Path) -> InputError:
    """What is too long in ``out``, for which the file system said "File name too long": its name,
    a folder name in it, or, every name short, its whole path (over ``PATH_MAX``), which was blamed
    on the name."""
    for name in reversed(out.parts):
        size = len(os.fsencode(name))
        if size > 255:  # NAME_MAX of every common Linux file system
            which = "its name" if name == out.name else f"the folder name {name!r} in it"
            return InputError(
                f"output {str(out)!r}: {which} is {size} bytes long, longer than the file system "
                "takes; give a shorter name"
            )
    return InputError(
        f"output {str(out)!r}: its whole path is {len(os.fsencode(os.path.abspath(out)))} bytes long, "
        "longer than the file system takes; give a shorter path"
    )


def _refuse_two_journals(out: Path, journal: Path, earlier: Path) -> None:
    """Refuse a Parquet output that has both this version's journal and an earlier version's.

    A resumed run continued this version's, and its end removed only that one: the next
    ``--resume`` took the earlier version's, stale, for the unfinished run, and wrote the Parquet
    file over from it, losing every row only the finished file held. Which journal holds the run to
    keep cannot be told, so the user is asked; removing one loses no image for good, as ``--resume``
    scores again the images only it held.

    Raises:
        InputError: always, naming both journals.
    """
    raise InputError(
        f"output {str(out)!r} has two unfinished journals: {str(journal)!r} (this version's) and "
        f"{str(earlier)!r} (an earlier version's), and a run would continue one and leave the other to "
        f"be taken for the output later; remove one, most likely the earlier version's {str(earlier)!r} "
        "(--resume scores again the images only it held), or pass --overwrite to score everything again"
    )


def check_output(out: Path, *, resume: bool, overwrite: bool) -> list[Path]:
    """Refuse to touch an existing output unless told how; returns the existing files (OUT, journal).

    Raises:
        InputError: a bad suffix; ``out`` (or its journal) exists and neither ``resume`` nor
            ``overwrite`` was given; or both were; or ``resume`` was and it is not a regular file; or
            a Parquet ``out`` has both this version's journal and an earlier version's
            (:func:`_refuse_two_journals`) and ``overwrite`` was not given; or ``out``'s folder
            cannot be made or written, or its name is longer than the file system takes.
    """
    fmt = output_format(out)
    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other: pick one")
    try:  # now, not after the models have loaded and the first rows are due
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise _too_long(out) from exc
        raise InputError(
            f"output {str(out)!r}: cannot make its folder {str(out.parent)!r} ({exc.strerror or exc})"
        ) from exc
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise InputError(f"output {str(out)!r}: its folder {str(out.parent)!r} is not writable")
    try:  # os.access says yes to /proc, and to a read-only mount for root: only making a file tells
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".clearsight-check-"):
            pass
    except OSError as exc:
        raise InputError(
            f"output {str(out)!r}: no file can be made in its folder {str(out.parent)!r} "
            f"({exc.strerror or exc})"
        ) from exc
    try:
        out.exists()
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise _too_long(out) from exc
    journal, earlier = (journal_path(out), _earlier_journal(out)) if fmt == "parquet" else (None, None)
    if journal is not None and earlier is not None and journal.exists() and not overwrite:
        _refuse_two_journals(out, journal, earlier)
    existing = [p for p in (out, journal, earlier) if p is not None and p.exists()]
    if existing and not (resume or overwrite):
        raise InputError(
            f"output {str(existing[0])!r} already exists; "
            "pass --resume to continue it or --overwrite to replace it"
        )
    for path in existing if resume else ():
        # no run writes anything but a regular file there, and whoever can write the folder can put
        # a FIFO (a resume blocked reading it, forever) or a link to a device (read as rows: /dev/zero
        # without end, /dev/null as an empty output the run then wrote its rows into)
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise InputError(
                f"output {str(path)!r} is not a regular file, so no run wrote it: nothing to resume; "
                "remove it, or pass --overwrite to replace it"
            )
    return existing


def open_output(
    out: Path,
    *,
    resume: bool,
    overwrite: bool,
    models: set[str] | None = None,
    retry_errors: bool = False,
    content: KeptContent | None = None,
    model_ids: Collection[str] | None = None,
    row_key: bytes | None = None,
) -> tuple[RowWriter, Done]:
    """Open ``out`` for appending rows, after checking what is already there.

    Args:
        out: the output file; its suffix picks the format.
        resume: keep the complete rows already in ``out`` (or its journal), cut a torn last row,
            and return their paths so that they are skipped.
        overwrite: replace an existing output.
        models: when resuming, filled with the model ids of the rows kept.
        retry_errors: when resuming, also drop the rows of images that could not be scored, so that
            they are tried again (a file share fixed since, a model added for their cargo type).
        content: when resuming, fed each complete row as it is read, it reads the scored rows' files
            again (:class:`~pipeline.score.kept_content.KeptContent`); the rows it finds of another
            picture than the file at their path now are taken out, so that they are scored again.
        model_ids: when resuming, the models loaded now: an output holding rows another model scored
            is refused as soon as its rows are read, before a torn row is cut or a row taken out, so
            that a refused resume leaves it as it was.
        row_key: each row written is sealed under it (:mod:`pipeline.row_seal`); with ``content``
            (whose ``seal_key`` it is) the kept rows whose seal is missing or does not verify are
            taken out, as those of another picture are, so that a resume never seals an edited row.

    Returns:
        The writer, and the rows already done (:data:`Done`; empty unless resuming).

    Raises:
        InputError: ``out`` exists and neither ``resume`` nor ``overwrite`` was given, or both were;
            or, with ``model_ids``, its rows came from other models.
        DatasetFormatError: the existing file is not a Clearsight score output.
    """
    fmt = output_format(out)
    existing = check_output(out, resume=resume, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = Done()
    if overwrite:
        for path in existing:
            path.unlink()
    target = _journal_in_use(out) if fmt == "parquet" else out
    if resume:
        if fmt == "parquet" and out.exists() and not target.exists():
            _parquet_to_journal(out, target)
        if target.exists():
            complete = _complete_csv if fmt == "csv" else _complete_jsonl
            if models is None and model_ids is not None:
                models = set()
            good = complete(target, collect=done, models=models, content=content)
            _refuse_other_models(out, models or set(), model_ids)
            with target.open("r+b") as fh:
                fh.truncate(good)
                fh.flush()
                os.fsync(fh.fileno())
            stale: Mapping[int, bytes] = {}
            if content is not None:
                content.finish()
                stale = content.stale

            def drop(number: int, row: ImageVerdict) -> bool:
                if number in stale:
                    if content is not None and row.heatmap:  # its overlay is of the old picture too
                        content.overlays.append(row)
                    return True
                if retry_errors and row.error is not None:
                    return True
                if content is not None and row.heatmap and content.took_out(row.path):
                    content.kept_overlays.add(row.heatmap)  # the picture's row of another shipment
                return False

            # taken out before any row is appended: the output never holds a picture's old row beside
            # the new one, and a run killed after this scores the picture on its next resume
            if (retry_errors or stale) and _drop_rows(target, csv_format=fmt == "csv", drop=drop):
                done.clear()
                complete(target, collect=done)
    return RowWriter(target, fmt="csv" if fmt == "csv" else "jsonl", seal_key=row_key), done


def refuse_other_models(out: Path, model_ids: Collection[str]) -> None:
    """Refuse resuming ``out`` where its rows name models other than ``model_ids``, from a read of
    their model ids alone, before anything of ``out`` is changed or removed: its completion record
    and decisions file went before :func:`open_output` read the rows and refused them, and a refused
    resume left rows that ``decide`` then refused as unfinished. Rows it cannot read are left to
    :func:`open_output`, which refuses them as it reads the output (and the model ids again).

    Raises:
        InputError: naming the output, the models of its rows and the ones loaded now."""
    _refuse_other_models(out, _models_of(out), model_ids)


def _models_of(out: Path) -> set[str]:
    """The model ids ``out``'s whole rows name (its journal's, for a Parquet output resumed), read
    without changing anything: an earlier version's CSV header is not rewritten, no journal made."""
    fmt = output_format(out)
    target = _journal_in_use(out) if fmt == "parquet" else out
    models: set[str] = set()
    if fmt == "parquet" and not target.exists():
        if out.exists():
            import pyarrow
            import pyarrow.parquet as pq

            try:  # refused here, before the completion record or any decisions are removed
                names = pq.read_schema(out).names
            except (pyarrow.ArrowException, OSError) as exc:
                raise _unreadable_parquet(out, exc) from exc
            if "model_id" in names:
                for batch in _parquet_batches(out, 65536, ["model_id"]):
                    models.update(m for m in batch.column(0).to_pylist() if m)
        return models
    if not target.exists():
        return models
    with target.open("rb") as fh:
        if fmt == "csv":
            reader = csv.reader(_CountingLines(fh), strict=True)
            try:
                header = next(reader, None)
                if header is None or "model_id" not in header:
                    return models
                column = header.index("model_id")
                for cells in reader:
                    if len(cells) > column and cells[column]:
                        models.add(verdict_rows.csv_unescape(cells[column]))
            except (csv.Error, UnicodeDecodeError):  # not a score output, or torn: open_output says
                pass
            return models
        for line in fh:
            if not line.endswith(b"\n"):
                break  # a torn last row
            try:
                record = json.loads(line)
            except ValueError:
                continue
            model = record.get("model_id") if isinstance(record, dict) else None
            if isinstance(model, str) and model:
                models.add(model)
    return models


def _refuse_other_models(out: Path, found: set[str], model_ids: Collection[str] | None) -> None:
    """Refuse resuming ``out``, whose rows ``found`` models scored, with other models loaded."""
    foreign = sorted(found - set(model_ids)) if model_ids is not None else []
    if foreign:
        raise InputError(
            f"{str(out)!r} holds rows scored by {', '.join(foreign)}, not by the models loaded now "
            f"({', '.join(sorted(model_ids or ()))}): resuming would mix two models' scores and "
            "thresholds in one output; resume with the same --model, or pass --overwrite to score "
            "every image again"
        )


def _drop_rows(path: Path, *, csv_format: bool, drop: Callable[[int, ImageVerdict], bool]) -> int:
    """Rewrite a complete JSONL or CSV output without the rows ``drop`` is true of (given each row's
    number, from 0, and the row); returns how many were dropped.

    Streamed to a temporary file (:func:`~datasets.whole_files.temporary_beside`) and renamed over,
    so a crash leaves the old file whole; not renamed when no row was dropped (written_whole would
    rename it regardless). The new file keeps the old one's mode and owner."""
    tmp, fd = temporary_beside(path)
    dropped = 0
    try:
        with os.fdopen(fd, "wb") as out:
            keep_mode_and_owner(out.fileno(), path)
            if csv_format:
                out.write(RowWriter.csv_line(list(FIELDS)))
            for number, row in enumerate(verdict_rows.read_verdicts(path)):
                if drop(number, row):
                    dropped += 1
                elif csv_format:
                    out.write(RowWriter.csv_line(verdict_rows.to_cells(row)))
                else:
                    out.write(verdict_rows.row_json(row))
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if dropped:
        os.replace(tmp, path)
    else:
        tmp.unlink()
    return dropped


# -------------------------------------------------------------------------------- writing


class RowWriter:
    """Appends rows to a JSONL or CSV file in chunks, each flushed and fsynced.

    A chunk is written when ``chunk_rows`` rows are buffered or ``flush_seconds`` have passed
    since the last write, so a crash loses at most that much work and never leaves more than one
    torn row. Use as a context manager; closing writes the last chunk.
    """

    def __init__(
        self,
        path: Path,
        *,
        fmt: Literal["jsonl", "csv"],
        chunk_rows: int = 64,
        flush_seconds: float = 1.0,
        seal_key: bytes | None = None,
        run_id: str | None = None,
    ) -> None:
        self.path = path
        self.fmt = fmt
        self.seal_key = seal_key  # each row written sealed under it (pipeline.row_seal); None: not
        # the run's id, put in each row written before it is sealed (scored rows and error rows
        # alike), so that its seal says which run wrote it; None: rows as they come
        self.run_id = run_id
        self.chunk_rows = chunk_rows
        self.flush_seconds = flush_seconds
        self._buffer: list[bytes] = []
        self._last_flush = time.monotonic()
        self._fh: IO[bytes] = path.open("ab")
        st = os.fstat(self._fh.fileno())
        self.written: tuple[int, int] = (st.st_dev, st.st_ino)
        """The device and inode of the file this writer appends to, whatever its name leads to later:
        rows renamed over ``path`` while it writes leave it appending to the file it opened, and only
        this says which file holds the rows it wrote (:func:`finish_output`)."""
        if fmt == "csv" and self._fh.tell() == 0:
            self._buffer.append(self.csv_line(list(FIELDS)))
            self.flush()

    @staticmethod
    def csv_line(cells: list[str]) -> bytes:
        """One CSV row, as the writer writes it (``\\n``-terminated, UTF-8; a cell holding a carriage
        return quoted: :func:`~datasets.csv_lines.csv_line`)."""
        return csv_line(cells).encode("utf-8")

    def write(self, verdict: ImageVerdict) -> None:
        """Buffer one row (of :attr:`run_id`, sealed under :attr:`seal_key`); write the chunk if it is
        full or old."""
        if self.run_id is None:
            verdict = row_seal.sealed(self.seal_key, verdict)
        else:  # one copy, this writer's own, sealed in place (a second copy cost a tenth of the rate)
            verdict = verdict.model_copy(update={"run_id": self.run_id})
            if self.seal_key is not None:
                verdict.row_seal = row_seal.seal(self.seal_key, verdict)
        if self.fmt == "csv":
            self._buffer.append(self.csv_line(verdict_rows.to_cells(verdict)))
        else:
            self._buffer.append(verdict_rows.row_json(verdict))
        if len(self._buffer) >= self.chunk_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows in one call, flush and fsync."""
        if self._buffer:
            self._fh.write(b"".join(self._buffer))
            self._buffer.clear()
            self._fh.flush()
            os.fsync(self._fh.fileno())
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            self.flush()
            self._fh.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parquet_schema() -> Any:
    import pyarrow as pa

    return pa.schema([(name, pa.float64() if name in _FLOATS else pa.string()) for name in FIELDS])


def finish_output(out: Path, written: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """Complete ``out`` once every row is written: for Parquet, convert the journal and remove it.
    Returns the device and inode of the finished file as this run wrote it, for its completion record
    to be written of that file only (:func:`~pipeline.score.completion.record_completion`): ``written``
    (:attr:`RowWriter.written`) for JSONL and CSV, the converted file for Parquet (None: a Parquet
    file without ``written``, its journal not checked, gives its own).

    The conversion streams the journal in row groups (constant memory), writes a temporary file,
    fsyncs it and renames it over ``out``; the journal is deleted last, so a crash at any point
    leaves either the journal or the finished file to resume from.

    Raises:
        InputError: with ``written``, the journal is no longer the file the writer appended to
            (another journal renamed over it while the run wrote): converted, its rows would be
            taken for this run's.
    """
    if output_format(out) != "parquet":
        return written
    journal = _journal_in_use(out)
    schema = _parquet_schema()
    with journal.open("rb") as fh, written_whole(out) as sink:
        found = os.fstat(fh.fileno())
        if written is not None and (found.st_dev, found.st_ino) != written:
            raise _replaced(journal, written, found)
        made = os.fstat(sink.fileno())  # the file the rename puts at OUT: a rename keeps its inode
        _journal_to_parquet(fh, sink, schema)
    journal.unlink()
    return made.st_dev, made.st_ino


def _replaced(path: Path, written: tuple[int, int], found: os.stat_result) -> InputError:
    """The refusal of rows at ``path`` that are not in the file a run wrote (``written``)."""
    return InputError(
        f"output {str(path)!r} is not the file this run wrote its rows into (device {written[0]}, inode "
        f"{written[1]}; it holds device {found.st_dev}, inode {found.st_ino}): another file was renamed "
        "over it while the run wrote, and its rows are not this run's; no completion record was written "
        "and nothing was decided; score the inputs again into an --out no one else can write"
    )


def _journal_to_parquet(fh: IO[bytes], sink: IO[bytes], schema: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetWriter(sink, schema) as pw:
        chunk: dict[str, list[Any]] = {name: [] for name in FIELDS}

        def write_chunk() -> None:
            pw.write_table(pa.table(chunk, schema=schema))
            for column in chunk.values():
                column.clear()

        for line in fh:
            verdict = ImageVerdict.model_validate_json(line)
            data = verdict_rows.row_data(verdict)
            for name in FIELDS:
                value = data[name]
                if name in _NESTED:
                    value = None if value is None else json.dumps(value, sort_keys=True)
                chunk[name].append(value)
            if len(chunk["path"]) >= 4096:
                write_chunk()
        write_chunk()


def iter_rows(path: Path) -> Iterator[ImageVerdict]:
    """Read a score output back (JSONL, CSV or Parquet), one verdict at a time."""
    return verdict_rows.read_verdicts(path)
