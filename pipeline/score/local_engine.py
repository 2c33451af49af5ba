"""The local engine: a pool decodes images while this thread runs the model on batches.

Memory is bounded by construction: at most ``max_in_flight`` images are being decoded or waiting
to be batched, plus at most one open batch per cargo type, and those images hold at most
``max_pixels_in_flight`` pixels (read from each file's header before it is decoded), so an archive
of 24-megapixel photographs costs no more memory than one of small scans. The task iterator is
pulled only when the window has room, so a generator of 100k tasks is never drained ahead of the
model.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from datasets.errors import ClearsightError, InputError
from pipeline.score.batch import Decoded, ScoredRow, decode_task, error_row, score_batch
from pipeline.score.routing import ModelRouter
from pipeline.score.sources import ImageTask

__all__ = ["LocalEngine", "Parallelism"]

Parallelism = Literal["threads", "processes"]


DEFAULT_MAX_PIXELS_IN_FLIGHT = 400_000_000
"""About 1.2 GB of 8-bit colour pixels (2.4 GB at 16 bits) decoded and waiting at once."""


@dataclass
class _Waiting:
    task: ImageTask
    cargo_type: str
    decoded: Future[Decoded]
    pixels: int


def _header_pixels(path: str, limits: Any) -> int:
    """width x height from the file's header, a 16-bit image's counted twice (it holds twice the
    bytes decoded); 0 where it cannot be read (decoding will say why)."""
    from datasets.decode import read_image_header

    try:
        header = read_image_header(path, limits=limits)
    except ClearsightError:
        return 0
    return header.budget_pixels


class LocalEngine:
    """Scores tasks in this process with a decode pool of ``workers``.

    Args:
        router: the loaded predictors by cargo type.
        workers: decode workers (threads by default: OpenCV and PIL release the GIL, and threads
            need no pickling of pixels; ``bench/bench_score.py`` measures both).
        batch_size: images per ``predict`` call.
        limits: the decoder's byte/pixel limits (``datasets.decode``), passed through.
        parallelism: ``"threads"`` or ``"processes"`` for the decode pool.
        max_in_flight: cap on images submitted to the pool but not yet batched; default
            ``2 * workers * batch_size`` keeps every worker busy while one batch is predicted.
        max_pixels_in_flight: cap on the pixels of the images held (decoding, waiting or in an
            open batch); a batch is scored early, short of ``batch_size``, rather than pass it.
            A single image larger than the cap is still scored, alone.

    Attributes:
        peak_in_flight: the largest number of images held (decoding, waiting or in an open
            batch) during the last :meth:`run`; never above :attr:`memory_bound`.
        peak_pixels_in_flight: the most pixels they held at once during the last :meth:`run`.
    """

    def __init__(
        self,
        router: ModelRouter,
        *,
        workers: int = 2,
        batch_size: int = 8,
        limits: Any = None,
        parallelism: Parallelism = "threads",
        max_in_flight: int | None = None,
        max_pixels_in_flight: int = DEFAULT_MAX_PIXELS_IN_FLIGHT,
    ) -> None:
        if workers < 1:
            raise InputError(f"workers must be at least 1, got {workers}")
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        if parallelism not in ("threads", "processes"):
            raise InputError(f"parallelism must be 'threads' or 'processes', got {parallelism!r}")
        self.router = router
        self.workers = workers
        self.batch_size = batch_size
        self.limits = limits
        self.parallelism = parallelism
        self.max_in_flight = max_in_flight or 2 * workers * batch_size
        if self.max_in_flight < 1:
            raise InputError(f"max_in_flight must be at least 1, got {self.max_in_flight}")
        if max_pixels_in_flight < 1:
            raise InputError(f"max_pixels_in_flight must be at least 1, got {max_pixels_in_flight}")
        self.max_pixels_in_flight = max_pixels_in_flight
        self.peak_in_flight = 0
        self.peak_pixels_in_flight = 0

    @property
    def memory_bound(self) -> int:
        """Most images ever held at once: the window plus one open batch per cargo type."""
        return self.max_in_flight + len(self.router.cargo_types) * self.batch_size

    def _pool(self) -> Executor:
        if self.parallelism == "processes":
            return ProcessPoolExecutor(max_workers=self.workers)
        return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="clearsight-decode")

    def run(self, tasks: Iterable[ImageTask], *, heatmaps: bool = False) -> Iterator[ScoredRow]:
        """Score ``tasks``, yielding one row per task (grouped by batch, not strictly input order).

        With ``heatmaps`` each scored row carries its overlay PNG.
        """
        self.peak_in_flight = 0
        self.peak_pixels_in_flight = 0
        decode: Callable[[str], Decoded] = functools.partial(decode_task, limits=self.limits)
        window: deque[_Waiting] = deque()
        open_batches: dict[str, list[tuple[ImageTask, Decoded, int]]] = {}
        open_count = 0
        held = 0  # pixels of the images in the window and the open batches

        def take_head() -> Iterator[ScoredRow]:
            nonlocal open_count, held
            waiting = window.popleft()
            decoded = waiting.decoded.result()
            if decoded.error is not None:
                held -= waiting.pixels
                yield error_row(
                    waiting.task, decoded.error, cargo_type=waiting.cargo_type, sha256=decoded.sha256
                )
                return
            batch = open_batches.setdefault(waiting.cargo_type, [])
            batch.append((waiting.task, decoded, waiting.pixels))
            open_count += 1
            if len(batch) >= self.batch_size:
                yield from flush(waiting.cargo_type)

        def flush(cargo_type: str) -> Iterator[ScoredRow]:
            nonlocal open_count, held
            batch = open_batches.pop(cargo_type, [])
            open_count -= len(batch)
            route = self.router.route(cargo_type)
            assert route.predictor is not None  # only routed images are batched
            yield from score_batch(route.predictor, [(t, d) for t, d, _ in batch], heatmaps=heatmaps)
            held -= sum(p for _, _, p in batch)

        def make_room(pixels: int) -> Iterator[ScoredRow]:
            """Take images out of the window, then score open batches early, until ``pixels`` fit."""
            while held + pixels > self.max_pixels_in_flight and (window or open_batches):
                if window:
                    yield from take_head()
                else:
                    yield from flush(max(open_batches, key=lambda c: sum(p for *_, p in open_batches[c])))

        with self._pool() as pool:
            try:
                for task in tasks:
                    route = self.router.route(task.cargo_type)
                    if route.predictor is None:
                        assert route.error is not None
                        yield error_row(task, route.error)
                        continue
                    assert route.cargo_type is not None
                    pixels = _header_pixels(task.path, self.limits)
                    yield from make_room(pixels)
                    held += pixels
                    window.append(_Waiting(task, route.cargo_type, pool.submit(decode, task.path), pixels))
                    self.peak_in_flight = max(self.peak_in_flight, len(window) + open_count)
                    self.peak_pixels_in_flight = max(self.peak_pixels_in_flight, held)
                    while len(window) >= self.max_in_flight:
                        yield from take_head()
                while window:
                    yield from take_head()
                for cargo_type in list(open_batches):
                    yield from flush(cargo_type)
            finally:
                # A consumer that stops early (or an exception) must not wait for queued decodes.
                for waiting in window:
                    waiting.decoded.cancel()
