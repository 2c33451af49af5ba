"""The scoring run: skip what is done, score the rest on an engine, write rows and heatmaps.

This is the programmatic API behind ``clearsight score``; tests drive it with fake predictors::

    router = ModelRouter([predictor])
    summary = score_to_file(iter_tasks(["images/"]), LocalEngine(router), Path("out.jsonl"))
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from datasets.errors import InputError
from datasets.whole_files import written_whole
from pipeline.score.batch import ScoredRow, printable_path
from pipeline.score.done import ERROR, HEATMAP, SCORED, Done, declaration_digest
from pipeline.score.sources import ImageTask
from pipeline.score.summary import ScoreSummary
from pipeline.score.writer import (
    OutputLock,
    check_output,
    finish_output,
    iter_rows,
    lock_output,
    open_output,
)

__all__ = ["Engine", "heatmap_name", "score_to_file"]


class Engine(Protocol):
    """Turns image tasks into rows (the local pool or Ray); exactly one row per task."""

    def run(self, tasks: Iterable[ImageTask], *, heatmaps: bool = False) -> Iterator[ScoredRow]: ...


def heatmap_name(path: str) -> str:
    """File name of an image's overlay: a hash of its path, so that names never collide and an
    image path (``../x``, absolute, odd characters) can never steer where the file is written."""
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".png"


def _write_heatmap(directory: Path, path: str, png: bytes) -> str:
    target = directory / heatmap_name(path)
    # Written whole and renamed, so a crash never leaves a truncated PNG under the final name (not
    # fsynced, as before: that would be one fsync per image)
    with written_whole(target, fsync=False) as fh:
        fh.write(png)
    return str(target)


def _pending(
    tasks: Iterable[ImageTask],
    done: Done,
    summary: ScoreSummary,
    advance: Callable[[], None] | None,
    kept: set[bytes] | None = None,
    seen: dict[bytes, bytes] | None = None,
) -> Iterator[ImageTask]:
    """``tasks`` without images already in the output or already given earlier in this run.

    An image is one row per shipment it is listed under: a picture in two days' manifests under two
    shipments is scored for each (the second used to vanish). Paths are compared absolute and
    normalised, so that a run resumed as ``/data/a.png`` after ``data/./a.png`` does not score the
    image twice, and their folders resolved through links. ``seen`` is filled with the identity of
    every task (:meth:`Done.key`), to the digest of its declaration.

    Raises:
        InputError: a manifest row whose declaration changed since its image was scored: the rows
            kept would decide its shipment on the old one (a radiation alarm raised since, say).
    """
    if seen is None:
        seen = {}  # identity (Done.key) -> the declaration's digest, this run
    for task in tasks:
        identity = done.key(printable_path(task.path), task.shipment_id)  # as the output's rows name it
        scored = done.get(identity)
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
            summary.skipped_done += 1
            if kept is not None:
                kept.add(identity)
        else:
            seen[identity] = declaration_digest(task.declaration)
            yield task
            continue
        if advance is not None:
            advance()


def _refuse_rows_not_listed(out: Path, done: Done, listed: Collection[bytes]) -> None:
    """Refuse an output that holds a row kept from the earlier run of an image this run's inputs do
    not list under the row's shipment: a manifest corrected since moved the picture to another
    shipment, or dropped it. The decisions are made from every row of the output, so the shipment
    it was scored under was decided on a picture no longer its own (and its audit record listed it),
    without a word; a changed declaration was already refused (:func:`_pending`).

    Raises:
        InputError: naming the picture, the shipment of its row and the one it is listed under now.
    """
    if all(identity in listed for identity in done):
        return
    rows = (row for row in iter_rows(out) if done.key(row.path, row.shipment_id) not in listed)
    stale = next(rows, None)
    if stale is None:  # pragma: no cover - every row done holds is in the output
        return
    now = sorted(  # where the inputs list the picture now: its rows this run scored or kept
        {
            row.shipment_id
            for row in iter_rows(out)
            if row.path == stale.path
            and row.shipment_id is not None
            and done.key(row.path, row.shipment_id) in listed
        }
    )
    before = f"shipment {stale.shipment_id!r}" if stale.shipment_id is not None else "no shipment"
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
) -> ScoreSummary:
    """Score ``tasks`` on ``engine`` and append one row per image to ``out``.

    Args:
        tasks: the images, usually :func:`~pipeline.score.sources.iter_tasks` (any iterable; it is
            pulled lazily).
        engine: :class:`~pipeline.score.local_engine.LocalEngine` or
            :class:`~pipeline.score.ray_engine.RayEngine`.
        out: ``.jsonl``, ``.csv`` or ``.parquet``.
        heatmap_dir: write each scored image's overlay PNG here and its path into the row.
        resume: keep the rows already in ``out`` and score only the missing images.
        overwrite: replace an existing ``out``.
        advance: called once per input task handled (for a progress bar).
        chunk_rows, flush_seconds: how often rows are flushed and fsynced.
        model_ids: the engine's models, when known before scoring: resuming an output whose rows
            another model scored (a retrained one, say) is refused rather than mixing two models'
            scores and thresholds in one output.
        retry_errors: with ``resume``, score again the images whose rows hold an error.
        lock: the lock on ``out`` (:func:`~pipeline.score.writer.lock_output`) the caller holds
            (``clearsight score`` holds it until the decisions are written); None: taken here, for
            the run, before ``out`` is opened.
        listed_only: with ``resume``, refuse (once the rows are written) an output that holds a row
            kept from the earlier run of an image this run's inputs do not list under the row's
            shipment (:func:`_refuse_rows_not_listed`): ``clearsight score --policy`` decides every
            row of ``out``.

    Returns:
        The run's counts and timing.

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
        found: set[str] = set()
        writer, done = open_output(
            out, resume=resume, overwrite=overwrite, models=found, retry_errors=retry_errors
        )
        foreign = sorted(found - set(model_ids)) if model_ids is not None else []
        if foreign:
            raise InputError(
                f"{str(out)!r} holds rows scored by {', '.join(foreign)}, not by the models loaded now "
                f"({', '.join(sorted(model_ids or ()))}): resuming would mix two models' scores and "
                "thresholds in one output; resume with the same --model, or pass --overwrite to score "
                "every image again"
            )
        writer.chunk_rows = chunk_rows
        writer.flush_seconds = flush_seconds
        summary = ScoreSummary()
        kept: set[bytes] = set()  # the rows this run keeps, by identity
        listed: dict[bytes, bytes] = {}  # every task of this run, by identity
        start = time.monotonic()
        with writer:
            pending = _pending(tasks, done, summary, advance, kept, listed)
            for row in engine.run(pending, heatmaps=heatmap_dir is not None):
                verdict = row.verdict
                if row.heatmap_png is not None and heatmap_dir is not None:
                    verdict = verdict.model_copy(
                        update={"heatmap": _write_heatmap(heatmap_dir, verdict.path, row.heatmap_png)}
                    )
                writer.write(verdict)
                summary.add_row(verdict)
                if advance is not None:
                    advance()
        finish_output(out)
        if resume and listed_only:  # the rows are complete: a --resume after this refusal has them
            _refuse_rows_not_listed(out, done, listed)
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
