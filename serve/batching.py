"""Micro-batching: images from concurrent requests are scored together, off the event loop.

One :class:`MicroBatcher` per cargo type owns a bounded queue and a dedicated worker thread. A
request enqueues its images (all or none: a request never half-fits) and awaits their futures; the
worker takes the first waiting image, keeps collecting until ``max_batch_size`` images or
``max_wait_s`` have passed, and calls ``predictor.predict`` once for the whole batch. Under load the
predictor therefore sees full batches, which is what makes serving throughput approach offline batch
throughput. When a batch fails, each request's images are scored again apart, so that an image that
breaks the model fails its own request only (a model that fails on a flat grey picture too,
:data:`CANARY`, fails on everything: the batch fails at once; scoring again takes at most as long as
the failed call took, and stops at each request's deadline). A full queue raises
:class:`~serve.errors.OverloadedError` (HTTP 503) instead of letting latency grow without bound; a
request past its deadline gets :class:`~serve.errors.ScoringTimeoutError` (504) and its images, if
not yet started, are skipped.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from datasets.errors import ClearsightError, ModelError
from models.inference import Prediction, Predictor
from serve.errors import OverloadedError, ScoringTimeoutError

__all__ = ["CANARY", "RESCORE_FLOOR_S", "BatchObserver", "MicroBatcher"]

log = logging.getLogger("clearsight.serve.batching")

BatchObserver = Callable[[str, int, int], None]
"""Called after each predictor call with (cargo_type, images in the call, queue depth left)."""

CANARY = np.full((64, 64, 3), 128, dtype=np.uint8)
"""A flat grey picture any healthy model scores: when a batch fails, it tells a model that fails on
everything (scored again, each request would hold the worker past the deadlines) from one that
fails on some request's images."""


RESCORE_FLOOR_S = 0.25
"""The least time a failed batch's requests are scored again for, when the batch failed at once."""


@dataclass
class _Item:
    image: np.ndarray
    future: concurrent.futures.Future[Prediction]
    request: int  # which submit() it came with
    deadline: float = math.inf  # time.monotonic() past which nobody waits for it


class MicroBatcher:
    """Gathers images of one cargo type into batches for one predictor, on its own thread."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        max_batch_size: int,
        max_wait_s: float,
        queue_size: int,
        retry_after_s: int = 1,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch_size < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError(
                f"max_batch_size={max_batch_size} and queue_size={queue_size} must be >= 1, "
                f"max_wait_s={max_wait_s} >= 0"
            )
        self.predictor = predictor
        self.cargo_type = predictor.cargo_type
        self._max_batch = max_batch_size
        self._max_wait = max_wait_s
        self._queue_size = queue_size
        self._retry_after_s = retry_after_s
        self._observer = observer
        self._queue: collections.deque[_Item] = collections.deque()
        self._requests = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"batcher-{self.cargo_type}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Images waiting to be scored."""
        with self._cond:
            return len(self._queue)

    def submit(
        self, images: Sequence[np.ndarray], *, deadline: float = math.inf
    ) -> list[concurrent.futures.Future[Prediction]]:
        """Enqueue all ``images`` or none of them, waited for until ``deadline`` (``time.monotonic``).

        Raises:
            OverloadedError: the queue has no room for all of them, or the batcher is stopping.
        """
        futures: list[concurrent.futures.Future[Prediction]] = [concurrent.futures.Future() for _ in images]
        with self._cond:
            if self._stopping:
                raise OverloadedError(
                    f"the {self.cargo_type} scorer is shutting down", retry_after_s=self._retry_after_s
                )
            if len(self._queue) + len(images) > self._queue_size:
                raise OverloadedError(
                    f"the {self.cargo_type} scoring queue is full ({len(self._queue)} of {self._queue_size} "
                    f"images waiting, this request adds {len(images)}); retry after {self._retry_after_s} s",
                    retry_after_s=self._retry_after_s,
                )
            request = next(self._requests)
            self._queue.extend(
                _Item(image, fut, request, deadline) for image, fut in zip(images, futures, strict=True)
            )
            self._cond.notify()
        return futures

    async def predict(self, images: Sequence[np.ndarray], *, timeout_s: float) -> list[Prediction]:
        """Score ``images`` through the batcher and wait at most ``timeout_s`` for all of them.

        Raises:
            OverloadedError: the queue is full (HTTP 503).
            ScoringTimeoutError: not all images were scored in time (HTTP 504).
            ModelError: the predictor failed on the batch holding one of these images.
        """
        futures = self.submit(images, deadline=time.monotonic() + timeout_s)
        waiting = [asyncio.wrap_future(f) for f in futures]
        try:
            return list(await asyncio.wait_for(asyncio.gather(*waiting), timeout=timeout_s))
        except TimeoutError as exc:
            for fut in futures:
                fut.cancel()  # images not yet started are skipped by the worker
            raise ScoringTimeoutError(
                f"scoring {len(images)} {self.cargo_type} image(s) took longer than {timeout_s:g} s"
            ) from exc

    def close(self, *, timeout_s: float = 5.0) -> None:
        """Stop taking work, finish the queue, and join the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout_s)

    def _take_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self._max_wait
            # Wait for more images only while the batch is short; a full queue goes straight through.
            while len(self._queue) < self._max_batch and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(timeout=left)
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
        # A future cancelled by a timed-out request is dropped here rather than scored for nobody.
        return [item for item in batch if item.future.set_running_or_notify_cancel()]

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            started = time.monotonic()
            try:
                predictions = self._predict(batch)
            except Exception as exc:  # the worker must survive any model failure
                log.exception("batch of %d %s images failed", len(batch), self.cargo_type)
                self._isolate(batch, exc, budget=max(time.monotonic() - started, RESCORE_FLOOR_S))
            else:
                for item, prediction in zip(batch, predictions, strict=True):
                    item.future.set_result(prediction)

    def _isolate(self, batch: Sequence[_Item], exc: Exception, *, budget: float) -> None:
        """After ``batch`` failed with ``exc``: one request's failure must not become the other
        requests' decisions. Unless the batch is one request's, or the model fails on
        :data:`CANARY` too (then it fails on everything), each request's images are scored again
        together, and a request whose images fail fails as a whole (as it would with one image
        failing).

        Scoring again holds the worker, and the requests queued behind it, so it takes at most
        ``budget`` seconds after the canary (as long as the failed call took, or
        :data:`RESCORE_FLOOR_S`), or twice the canary's time where that is more: a request is
        scored again only where its images, at the canary's time each, fit in what is left, and
        its deadline has not passed. The requests left fail with the batch's error, as all of them
        did before, which records their shipments as held, not timed out."""
        requests: dict[int, list[_Item]] = {}
        for item in batch:
            requests.setdefault(item.request, []).append(item)
        each = self._canary_time() if len(requests) > 1 else None
        if each is None:
            for item in batch:
                self._fail(item, exc, len(batch))
            return
        until = time.monotonic() + max(budget, 2 * each)  # room for two one-image requests at least
        for items in requests.values():
            now = time.monotonic()
            error, size = exc, len(batch)
            if now + each * len(items) <= until and now < min(item.deadline for item in items):
                try:
                    predictions = self._predict(items)
                except Exception as alone:
                    log.exception("a request's %s images failed on their own", self.cargo_type)
                    error, size = alone, len(items)
                else:
                    for item, prediction in zip(items, predictions, strict=True):
                        item.future.set_result(prediction)
                    continue
            for item in items:
                self._fail(item, error, size)

    def _canary_time(self) -> float | None:
        """Seconds the model took to score :data:`CANARY`; None where it failed on it too."""
        started = time.monotonic()
        try:
            self._call([CANARY])
        except Exception:
            log.exception("the %s model fails on a flat grey picture too", self.cargo_type)
            return None
        return time.monotonic() - started

    def _predict(self, batch: Sequence[_Item]) -> list[Prediction]:
        return self._call([item.image for item in batch])

    def _call(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """One predictor call, told to the observer whether it succeeds or fails."""
        try:
            predictions = self.predictor.predict(images)
            if len(predictions) != len(images):
                raise ModelError(
                    f"model {self.predictor.model_id} returned {len(predictions)} predictions "
                    f"for {len(images)} images"
                )
            return list(predictions)
        finally:
            if self._observer is not None:
                self._observer(self.cargo_type, len(images), self.depth)

    def _fail(self, item: _Item, exc: BaseException, size: int = 1) -> None:
        """Fail ``item`` with ``exc``, raised by a call of ``size`` images: one that held others'
        images says so, so that a request's record does not blame its own picture for them."""
        where = "this image" if size == 1 else f"a batch of {size} holding this image"
        error = (
            exc
            if isinstance(exc, ClearsightError)
            else ModelError(f"model {self.predictor.model_id} failed on {where}: {type(exc).__name__}: {exc}")
        )
        if error is not exc:
            error.__cause__ = exc
        item.future.set_exception(error)
