"""The scoring run: skip what is done, score the rest on an engine, write rows and heatmaps.

This is the programmatic API behind ``clearsight score``; tests drive it with fake predictors::

    router = ModelRouter([predictor])
    summary = score_to_file(iter_tasks(["images/"]), LocalEngine(router), Path("out.jsonl"))
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol

from datasets.errors import InputError
from datasets.whole_files import written_whole
from pipeline.listed_content import MAX_BYTES, hash_files
from pipeline.score.batch import (
    ScoredRow,
    earlier_paths_of,
    earlier_printable_path,
    present_path_of_printable,
    printable_path,
)
from pipeline.score.completion import forget_completion, record_completion
from pipeline.score.done import ERROR, HEATMAP, SCORED, Done, declaration_digest
from pipeline.score.kept_content import KeptContent
from pipeline.score.output_lock import OutputLock, lock_output
from pipeline.score.sources import ImageTask
from pipeline.score.summary import ScoreSummary
from pipeline.score.writer import check_output, finish_output, iter_rows, open_output, refuse_other_models
from pipeline.verdicts import ImageVerdict

__all__ = ["Engine", "heatmap_name", "new_run_id", "score_to_file"]


def new_run_id() -> str:
    """A new score run's id (:data:`pipeline.verdicts.RUN_ID_PATTERN`): its start time, so that ids
    sort as the runs started (a resume keeps the latest run's rows), and 64 random bits."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(8)}"


class Engine(Protocol):
    """Turns image tasks into rows (the local pool or Ray); exactly one row per task."""

    def run(self, tasks: Iterable[ImageTask], *, heatmaps: bool = False) -> Iterator[ScoredRow]: ...


def heatmap_name(path: str, sha256: str, model_id: str, output: str) -> str:
    """File name of the overlay one model drew of one picture for one output: a hash of the row's
    path, the picture's sha256, the model id (as the service keys its heatmaps by picture and model,
    ``serve.storage.heatmap_key``) and the resolved ``--out`` path (``output``). The path alone named
    the file: two runs into other outputs sharing one ``--heatmaps`` folder (two models, or one after
    a new scan was written over the name), or one picture under two shipments scored by two cargo
    types' models in one run, wrote one file, and a row named an overlay another model drew, or of
    another picture. Without the output, two outputs of one model's run on one picture shared a file,
    and a ``--resume`` of one that took its row out (a new scan written over the name) removed the
    file the other's row still named: no two outputs share one now, so a resume's removal is of its
    own output's files. A hash, so that names never collide and an image path (``../x``, absolute,
    odd characters) can never steer where the file is written."""
    parts = (path, sha256, model_id, output)
    key = b"\0".join(part.encode("utf-8", "surrogateescape") for part in parts)
    return hashlib.sha256(key).hexdigest()[:32] + ".png"


def _path_heatmap_name(path: str) -> str:
    """The overlay's name as versions before the model and the picture were in it wrote it (a hash of
    the path alone): rows of their outputs name such files, which a resume removes with a row taken
    out, as those versions did (see :func:`_remove_overlays`)."""
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".png"


def _write_heatmap(directory: Path, verdict: ImageVerdict, output: str, png: bytes) -> str:
    target = directory / heatmap_name(verdict.path, verdict.sha256 or "", verdict.model_id or "", output)
    # Written whole and renamed, so a crash never leaves a truncated PNG under the final name (not
    # fsynced, as before: that would be one fsync per image)
    with written_whole(target, fsync=False) as fh:
        fh.write(png)
    return str(target)


def _remove_overlays(
    directory: Path, rows: Iterable[ImageVerdict], output: str, kept: Collection[str] = ()
) -> None:
    """Remove the overlay PNGs rows taken out of the output ``output`` named (``rows``), of the old
    picture: none named it now, and a picture not scored again (not listed, or an error now) would
    keep it under its name. Only a file this version would write for that row of this output in
    ``directory`` (:func:`heatmap_name`), or the oldest versions for its path
    (:func:`_path_heatmap_name`), as the row names it, is removed: a row's heatmap is text an output
    holds, never a path to follow elsewhere. Nor one a row left in the output names (``kept``): a
    picture under two shipments has one overlay name per model (one per path, as the oldest versions
    named them), and its row of the other shipment, kept, names the file.

    Whether another output names a path-only file cannot be told (those versions gave every output
    of a path one file); it is removed, as those versions removed it: each run of the path wrote
    over it, so another output's row of it named a map of whatever picture was scored last. The name
    the version just before wrote (path, sha256 and model, no output) is never removed: outputs of
    one model of one picture shared that file, each row naming the right map, and another output's
    row may name it still. Nor is a file this output's rows name under another ``--out`` path (the
    output moved): each is left, an overlay no row may name, never a row naming a file that is gone."""
    for row in rows:
        names = {_path_heatmap_name(row.path)}
        if row.sha256 and row.model_id:
            names.add(heatmap_name(row.path, row.sha256, row.model_id, output))
        if row.heatmap in kept or row.heatmap not in {str(directory / name) for name in names}:
            continue
        target = Path(row.heatmap or "")
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISDIR(os.lstat(target).st_mode):
                os.unlink(target)  # a link itself, never what it points to


class _EarlierNames:
    """What a resumed run learnt of the rows that name an image as an earlier version did
    (:func:`~pipeline.score.batch.earlier_printable_path`), for the message of a row it cannot keep.

    Only a name that holds a ``\\xNN`` itself, or is not UTF-8 and holds a backslash, is written
    otherwise today: a few names in an archive, if any."""

    def __init__(self) -> None:
        self.today: dict[str, str] = {}  # a row's text as an earlier version wrote it -> today's
        # identity of an earlier row not kept for an image listed -> why ("twice": the output holds a
        # row of today's text too; "alike": today's version gives its text to another file, which is
        # there), and the image's text today
        self.left: dict[bytes, tuple[str, str]] = {}
        # identities of rows taken out for their content (no row of the picture left), and those of
        # them an earlier version wrote of an image listed now: that image is scored again
        self.taken_out: set[bytes] = set()
        self.listed_taken_out: set[bytes] = set()


def _names_it_alone(before: str, path: str) -> bool:
    """Whether the text ``before``, as an earlier version wrote a name, is of the file at ``path`` and
    of no other: an earlier version wrote it so, and today's version gives it to no file that is there
    (a file named ``caf<0xE9>.png`` beside one typed ``caf\\xe9.png``: the earlier version gave both one
    row, and which it scored cannot be told). Where it holds, a row of that text is ``path``'s own."""
    # never path itself: today's text of it is not `before`; the content check reads the same file
    return path in earlier_paths_of(before) and present_path_of_printable(before) is None


def _earlier_row(
    task: ImageTask, text: str, today: bytes, done: Done, seen: dict[bytes, bytes], earlier: _EarlierNames
) -> bytes | None:
    """The identity of the row an earlier version wrote of ``task``'s image (``text``: its path as
    today's rows name it; ``today``: the identity of that), where this run is to keep that row for
    it; None where there is none, or the row is not the image's alone.

    An output of a version before backslashes were escaped names such an image as
    :func:`~pipeline.score.batch.earlier_printable_path` does; unknown by today's text, it was scored
    again (two rows of one picture), and ``--policy`` refused the old row as one no manifest lists.
    That text is not taken where today's version gives it to another file that is there (a file
    named ``caf<0xE9>.png`` beside one typed ``caf\\xe9.png``: the earlier version gave both one row,
    and which it scored cannot be told), nor where the output holds a row of today's text too."""
    if text == task.path or not done:  # a name written as it is, today as before; or nothing kept
        return None
    before = earlier_printable_path(task.path)
    if before == text or task.path not in earlier_paths_of(before):  # the names the content check reads
        return None
    identity = done.key(before, task.shipment_id)
    earlier.today.setdefault(before, text)
    if done.get(identity) is None or identity in seen:  # none, or another input keeps it
        return None
    if done.get(today) is not None:
        earlier.left[identity] = ("twice", text)
        return None
    if not _names_it_alone(before, task.path):
        earlier.left[identity] = ("alike", text)
        return None
    return identity


def _pending(
    tasks: Iterable[ImageTask],
    done: Done,
    summary: ScoreSummary,
    advance: Callable[[], None] | None,
    kept: set[bytes] | None = None,
    seen: dict[bytes, bytes] | None = None,
    earlier: _EarlierNames | None = None,
) -> Iterator[ImageTask]:
    """``tasks`` without images already in the output or already given earlier in this run.

    An image is one row per shipment it is listed under: a picture in two days' manifests under two
    shipments is scored for each (the second used to vanish). Paths are compared absolute and
    normalised, so that a run resumed as ``/data/a.png`` after ``data/./a.png`` does not score the
    image twice, and their folders resolved through links. A row an earlier version wrote of an image
    whose name it wrote otherwise is kept for it (:func:`_earlier_row`). ``seen`` is filled with the
    identity of every task (:meth:`Done.key`), and of every earlier row so kept, to the digest of its
    declaration; ``earlier`` with what :func:`_refuse_rows_not_listed` says of the earlier rows not kept.

    Raises:
        InputError: a manifest row whose declaration changed since its image was scored: the rows
            kept would decide its shipment on the old one (a radiation alarm raised since, say).
    """
    if seen is None:
        seen = {}  # identity (Done.key) -> the declaration's digest, this run
    if earlier is None:
        earlier = _EarlierNames()
    for task in tasks:
        text = printable_path(task.path)
        identity = done.key(text, task.shipment_id)  # as the output's rows name it
        if earlier.taken_out and text != task.path:  # a row taken out may name it as before
            before = earlier_printable_path(task.path)
            taken = done.key(before, task.shipment_id)
            # only a row _earlier_row would keep for it: one of another file it names alike is not
            # this task's, and that picture is not scored again
            if taken in earlier.taken_out and _names_it_alone(before, task.path):
                earlier.listed_taken_out.add(taken)
        scored = done.get(identity)
        found = _earlier_row(task, text, identity, done, seen, earlier) if identity not in seen else None
        if found is not None:  # its row as an earlier version named it
            scored = done.get(found)
        if identity in seen:
            if seen[identity] != declaration_digest(task.declaration):
                raise InputError(
                    f"{printable_path(task.path)} of shipment {task.shipment_id!r} is listed twice with two "
                    "declarations (two manifests?): say which holds, so that neither is dropped unseen"
                )
            summary.duplicates += 1  # a folder and a glob can name one image twice: scored once
        elif scored is not None:
            digest, cargo = scored
            if digest != declaration_digest(task.declaration):
                shipment = f" of shipment {task.shipment_id!r}" if task.shipment_id else ""
                raise InputError(
                    f"{printable_path(task.path)}{shipment}: its manifest row's declaration changed since "
                    "it was scored, and the output's rows would decide the shipment on the old one; "
                    "resume with the manifest as it was, then decide under the new one with "
                    "`clearsight decide --verdicts OUT --manifest MANIFEST` (nothing is scored again); "
                    "or score into a new --out, or pass --overwrite. A row that holds an error (a "
                    "cargo type's typo, say) is scored again, under the manifest as it is now, with "
                    "--retry-errors"
                )
            # a folder's or glob's image takes its cargo type from --cargo-type; a manifest row's is
            # its own (a corrected typo changes it; the declaration check covers the row)
            from_flag = task.shipment_id is None and not task.declaration
            if from_flag and task.cargo_type is not None and cargo is not None and cargo != task.cargo_type:
                raise InputError(
                    f"{printable_path(task.path)} was scored as cargo type {cargo!r}, and is "
                    f"{task.cargo_type!r} now: resuming would score the rest of the archive with another "
                    "cargo type's model "
                    f"and thresholds; resume with --cargo-type {cargo}, or score into a new --out, or "
                    "pass --overwrite"
                )
            seen[identity] = digest
            if found is not None:  # listed: the row stands for this image
                seen[found] = digest
            summary.skipped_done += 1
            if kept is not None:
                kept.add(identity if found is None else found)
        else:
            seen[identity] = declaration_digest(task.declaration)
            yield task
            continue
        if advance is not None:
            advance()


def _refuse_rows_not_listed(
    out: Path, done: Done, listed: Collection[bytes], earlier: _EarlierNames | None = None
) -> None:
    """Refuse an output that holds a row kept from the earlier run of an image this run's inputs do
    not list under the row's shipment: a manifest corrected since moved the picture to another
    shipment, or dropped it. The decisions are made from every row of the output, so the shipment
    it was scored under was decided on a picture no longer its own (and its audit record listed it),
    without a word; a changed declaration was already refused (:func:`_pending`).

    A row an earlier version named otherwise (:class:`_EarlierNames`) is found under today's name
    too, and one this run could not keep for an image it lists is refused saying why, not blamed
    on the manifest.

    Raises:
        InputError: naming the picture, the shipment of its row and the one it is listed under now.
    """
    if all(identity in listed for identity in done):
        return
    earlier = earlier or _EarlierNames()
    rows = (row for row in iter_rows(out) if done.key(row.path, row.shipment_id) not in listed)
    stale = next(rows, None)
    if stale is None:  # pragma: no cover - every row done holds is in the output
        return
    before = f"shipment {stale.shipment_id!r}" if stale.shipment_id is not None else "no shipment"
    left = earlier.left.get(done.key(stale.path, stale.shipment_id))
    if left is not None:
        why, today = left
        if why == "twice":
            raise InputError(
                f"{today}: the output holds two rows of it under {before}, {stale.path} as versions "
                "before this one wrote its name and one named as this version does (a version between "
                "them scored it again); the decisions, made from every row of the output, would count "
                "the picture twice; score into a new --out, or pass --overwrite to score every image again"
            )
        raise InputError(
            f"{stale.path}: a row of {before} that an earlier version wrote alike for {today} (listed "
            "under it now) and for the file this version names so, which is there too: which of the "
            "two it scored cannot be told, and the decisions, made from every row of the output, "
            "would count it; score into a new --out, or pass --overwrite to score every image again"
        )
    names = {stale.path, earlier.today.get(stale.path, stale.path)}  # an earlier version's and today's
    now = sorted(  # where the inputs list the picture now: its rows this run scored or kept
        {
            row.shipment_id
            for row in iter_rows(out)
            if row.path in names
            and row.shipment_id is not None
            and done.key(row.path, row.shipment_id) in listed
        }
    )
    where = (
        f"it is listed under shipment {', '.join(repr(s) for s in now)} now"
        if now
        else "no manifest given lists it under that shipment now"
    )
    raise InputError(
        f"{stale.path}: scored under {before}, {where} (a manifest corrected since?); the decisions, "
        f"made from every row of the output, would count the row --resume kept of it under {before}, "
        "a picture no longer its own; score into a new --out, or pass --overwrite to score every image "
        "again under the manifest as it is now"
    )


def score_to_file(
    tasks: Iterable[ImageTask],
    engine: Engine,
    out: Path,
    *,
    heatmap_dir: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    advance: Callable[[], None] | None = None,
    chunk_rows: int = 64,
    flush_seconds: float = 1.0,
    model_ids: Collection[str] | None = None,
    retry_errors: bool = False,
    lock: OutputLock | None = None,
    listed_only: bool = False,
    checked: Callable[[], None] | None = None,
    checked_all: Callable[[], None] | None = None,
    completion_key: bytes | None = None,
    row_key: bytes | None = None,
    max_image_bytes: int = MAX_BYTES,
) -> ScoreSummary:
    """Score ``tasks`` on ``engine`` and append one row per image to ``out``; once every task has
    its row, write ``out``'s completion record (:mod:`pipeline.score.completion`), which this call
    removes before it touches ``out``: not where ``resume`` kept a row of a picture the tasks do
    not list under its shipment (:attr:`ScoreSummary.kept_unlisted`), as the rows are then not all
    of one set of inputs that each has its row.

    Args:
        tasks: the images, usually :func:`~pipeline.score.sources.iter_tasks` (any iterable; it is
            pulled lazily).
        engine: :class:`~pipeline.score.local_engine.LocalEngine` or
            :class:`~pipeline.score.ray_engine.RayEngine`.
        out: ``.jsonl``, ``.csv`` or ``.parquet``.
        heatmap_dir: write each scored image's overlay PNG here and its path into the row.
        resume: keep the rows already in ``out`` and score only the missing images. Each scored row's
            file is read again first, and a row of another picture than the file at its path now (a
            new scan written over the name), of a file that cannot be read or is not there at all, or
            without a sha256, is taken out of ``out`` and its picture scored again
            (:mod:`pipeline.score.kept_content`).
        overwrite: replace an existing ``out``.
        advance: called once per input task handled (for a progress bar).
        checked: with ``resume``, called once per kept row whose file was read again (a progress bar).
        checked_all: called once ``out`` is open, its kept rows' files all read, before the first image
            is scored (a progress bar's line for the reading finished, the scoring's started).
        chunk_rows, flush_seconds: how often rows are flushed and fsynced.
        model_ids: the engine's models, when known before scoring: resuming an output whose rows
            another model scored (a retrained one, say) is refused rather than mixing two models'
            scores and thresholds in one output.
        retry_errors: with ``resume``, score again the images whose rows hold an error.
        lock: the lock on ``out`` (:func:`~pipeline.score.output_lock.lock_output`) the caller holds
            (``clearsight score`` holds it until the decisions are written); None: taken here, for
            the run, before ``out`` is opened.
        listed_only: with ``resume``, refuse (once the rows are written) an output that holds a row
            kept from the earlier run of an image this run's inputs do not list under the row's
            shipment (:func:`_refuse_rows_not_listed`): ``clearsight score --policy`` decides every
            row of ``out``.
        completion_key: seal the completion record with it
            (:func:`~pipeline.score.completion.completion_seal_key` of the audit secret), so that
            rows edited and the record made to match them are refused; None: unsealed.
        row_key: seal each row written with it (:func:`pipeline.row_seal.row_seal_key` of the audit
            secret), so that ``clearsight decide`` holds the shipment of a row edited since; with
            ``resume``, kept rows whose seal is missing or does not verify are taken out and scored
            again (:attr:`ScoreSummary.taken_out_unsealed`), never sealed anew. None: unsealed.
        max_image_bytes: with ``resume``, the largest kept row's file read again (the settings'
            ``max_image_bytes``, as the engine decodes): a larger one is unreadable, its row taken out.

    Every row the run writes, and its completion record, carry its run id (:func:`new_run_id`); a
    ``resume`` adopts the run id of the rows it keeps, and takes out (to score again) each row of
    another run (:attr:`ScoreSummary.taken_out_other_run`), so that an output is one run's.

    Returns:
        The run's counts and timing; its id, the file it wrote and whether it wrote that file's
        completion record (:attr:`ScoreSummary.run_id`, :attr:`~ScoreSummary.rows_file`,
        :attr:`~ScoreSummary.completed`), for :func:`~pipeline.score.decisions.decide_output`.

    Raises:
        InputError: ``out`` exists without ``resume``/``overwrite``, or has an unknown suffix; or
            its rows came from models other than ``model_ids``; or another run is writing it; or,
            with ``listed_only``, it holds a row of a picture no longer listed under its shipment.
        DatasetFormatError: ``out`` exists but is not a Clearsight score output.
    """
    if heatmap_dir is not None:
        if heatmap_dir.exists() and not heatmap_dir.is_dir():
            raise InputError(f"--heatmaps {str(heatmap_dir)!r} is a file; give a folder")
        heatmap_dir.mkdir(parents=True, exist_ok=True)
        # rows name their heatmaps absolutely: a path relative to where `score` ran breaks when the
        # rows are read from anywhere else
        heatmap_dir = heatmap_dir.resolve()
    if lock is None:
        check_output(out, resume=resume, overwrite=overwrite)  # its folder made, for the lock beside it
    with contextlib.nullcontext() if lock is not None else lock_output(out):
        if resume and model_ids is not None:  # a refused resume leaves the record as it was
            refuse_other_models(out, model_ids)
        # the record of an earlier finished run vouches for rows this run is about to change: gone
        # before the output is touched, written again only once this run has given every input a row
        forget_completion(out)
        # in each overlay's name, so that no two outputs share one (its folder exists now: the path is
        # the one a resume from anywhere, or through a link, resolves it to)
        output = str(out.resolve())
        # each kept row's picture read again: a new scan written over its name since is scored again
        # and, with a row key, each kept row's seal checked: an edited row is scored again, not kept
        content = (
            KeptContent(
                content=partial(hash_files, max_bytes=max_image_bytes), advance=checked, seal_key=row_key
            )
            if resume
            else None
        )
        # rows of other models refused as they are read, before a row is taken out or a torn one cut
        writer, done = open_output(
            out,
            resume=resume,
            overwrite=overwrite,
            retry_errors=retry_errors,
            content=content,
            model_ids=model_ids,
            row_key=row_key,
        )
        # one run per output: a resume goes on with the run of the rows it keeps (those of other runs
        # taken out above), so that its rows, and the record it writes, all name that one; a fresh id
        # where it keeps none of that run's rows
        run_id = content.run_id if content is not None and content.goes_on else new_run_id()
        writer.run_id = run_id
        if content is not None and heatmap_dir is not None:  # after the rows are gone: never named
            _remove_overlays(heatmap_dir, content.overlays, output, content.kept_overlays)
        if checked_all is not None:
            checked_all()
        # rows taken out for their content whose picture no row of the output names now
        taken_out = (
            {i for i in content.stale.values() if done.get(i) is None} if content is not None else set()
        )
        writer.chunk_rows = chunk_rows
        writer.flush_seconds = flush_seconds
        summary = ScoreSummary()
        kept: set[bytes] = set()  # the rows this run keeps, by identity
        listed: dict[bytes, bytes] = {}  # every task of this run, by identity
        earlier = _EarlierNames()  # rows named as an earlier version wrote names
        earlier.taken_out = taken_out
        start = time.monotonic()
        given = [0]  # tasks handed to the engine, each owed a row

        def counted(tasks: Iterator[ImageTask]) -> Iterator[ImageTask]:
            for task in tasks:
                given[0] += 1
                yield task

        with writer:
            pending = counted(_pending(tasks, done, summary, advance, kept, listed, earlier))
            for row in engine.run(pending, heatmaps=heatmap_dir is not None):
                verdict = row.verdict
                if row.heatmap_png is not None and heatmap_dir is not None:
                    verdict = verdict.model_copy(
                        update={"heatmap": _write_heatmap(heatmap_dir, verdict, output, row.heatmap_png)}
                    )
                writer.write(verdict)
                summary.add_row(verdict)
                if advance is not None:
                    advance()
        # the file the writer wrote, whatever OUT's name leads to now: only that file gets a record
        written = finish_output(out, writer.written)
        if resume and listed_only:  # the rows are complete: a --resume after this refusal has them
            _refuse_rows_not_listed(out, done, listed, earlier)
        # rows kept from the earlier run of pictures this run's inputs do not list under their shipment
        # (a run of other inputs, killed, resumed with these): this run cannot say every input of
        # theirs has its row, and a record vouched for a shipment's rows scored before the kill
        unlisted = sum(identity not in listed for identity in done) if resume else 0
        summary.kept_unlisted = unlisted
        # rows taken out for their content of pictures this run does not list: not scored again, so
        # this run cannot say every picture of the earlier run's inputs has its row
        summary.taken_out_unlisted = sum(
            identity not in listed and identity not in earlier.listed_taken_out for identity in taken_out
        )
        if content is not None:
            summary.taken_out = content.taken_out
            summary.taken_out_example = content.first_stale
            summary.taken_out_unsealed = content.unsealed
            summary.taken_out_other_run = content.other_run
            summary.taken_out_absent = content.absent
        if given[0] == summary.images and not unlisted and not summary.taken_out_unlisted:
            record_completion(out, seal_key=completion_key, run_id=run_id, written=written)
            summary.completed = True
        # what `score --policy` decides: the rows of this file, each naming this run (decide_output)
        summary.run_id, summary.rows_file = run_id, written
        if resume:
            # what the rows kept from the earlier run hold, which this run's counts leave out, as their
            # state was noted when the output was read: errors (a resumed output of nothing but errors
            # exited 0, and a cargo-type typo's error rows were kept without a word), rows drawn
            # without a heatmap where one is asked for now, and whether any row of the output holds a
            # score (rows of images no longer given count there, not among the kept), on every resume,
            # so that the exit code says the same of the same output
            states = [done.state(identity) for identity in kept]
            summary.kept_errors = sum(bool(state & ERROR) for state in states)
            unmapped = sum(state & (SCORED | HEATMAP) == SCORED for state in states)
            summary.kept_without_heatmap = unmapped if heatmap_dir is not None else 0
            summary.rows_scored_in_output = done.scored + summary.scored
    summary.seconds = time.monotonic() - start
    summary.peak_in_flight = int(getattr(engine, "peak_in_flight", 0))
    return summary
