"""Micro-batching, back-pressure (503 + Retry-After), deadlines (504), readiness and metrics."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from serve_fakes import ADMIN_KEY, OFFICER_KEY, FakePredictor, auth, png_bytes

from datasets.errors import AuditError, ModelError
from serve.batching import MicroBatcher
from serve.errors import OverloadedError, ScoringTimeoutError

IMAGES = [np.full((4, 4), v, dtype=np.uint8) for v in (0, 51, 102, 153, 204, 255)]


def _observed(predictor: FakePredictor, **settings: float) -> tuple[MicroBatcher, list[int]]:
    """A batcher of ``predictor`` and the list its observer fills with each call's image count."""
    sizes: list[int] = []
    observer = lambda _c, n, _d: sizes.append(n)  # noqa: E731
    return MicroBatcher(predictor, observer=observer, **settings), sizes  # type: ignore[arg-type]


def test_concurrent_requests_share_batches() -> None:
    predictor = FakePredictor(delay_s=0.05)
    sizes: list[int] = []
    batcher = MicroBatcher(
        predictor, max_batch_size=4, max_wait_s=0.2, queue_size=64, observer=lambda _c, n, _d: sizes.append(n)
    )

    async def many() -> list[list[float]]:
        results = await asyncio.gather(*(batcher.predict([img], timeout_s=5) for img in IMAGES))
        return [[p.score for p in r] for r in results]

    try:
        scores = asyncio.run(many())
    finally:
        batcher.close()
    assert scores == [[0.0], [0.2], [0.4], [0.6], [0.8], [1.0]]  # each request gets its own image's score
    assert predictor.batch_sizes == sizes == [4, 2]


def test_full_queue_refuses_whole_request() -> None:
    gate = threading.Event()

    class Blocked(FakePredictor):
        def predict(self, images):  # type: ignore[override]
            gate.wait(5)
            return super().predict(images)

    batcher = MicroBatcher(Blocked(), max_batch_size=1, max_wait_s=0, queue_size=2, retry_after_s=7)
    try:
        first = batcher.submit(IMAGES[:1])  # taken by the worker, which then blocks
        deadline = time.monotonic() + 2
        while batcher.depth and time.monotonic() < deadline:
            time.sleep(0.005)
        batcher.submit(IMAGES[1:3])  # fills the queue of 2
        with pytest.raises(OverloadedError) as info:
            batcher.submit(IMAGES[3:4])
        assert info.value.retry_after_s == 7
        assert str(info.value) == (
            "the bulk_ore scoring queue is full (2 of 2 images waiting, this request adds 1); retry after 7 s"
        )
    finally:
        gate.set()
        batcher.close()
    assert first[0].result(timeout=2).score == 0.0


def test_deadline_and_model_failure() -> None:
    slow = MicroBatcher(FakePredictor(delay_s=0.3), max_batch_size=2, max_wait_s=0, queue_size=8)
    broken = MicroBatcher(FakePredictor(fail=True), max_batch_size=2, max_wait_s=0, queue_size=8)
    try:
        with pytest.raises(
            ScoringTimeoutError, match=r"scoring 1 bulk_ore image\(s\) took longer than 0.05 s"
        ):
            asyncio.run(slow.predict(IMAGES[:1], timeout_s=0.05))
        with pytest.raises(ModelError, match="model bulk_ore-fake-0001 failed on this image: RuntimeError"):
            asyncio.run(broken.predict(IMAGES[:1], timeout_s=5))
        # The worker survives a failing batch and keeps serving.
        broken.predictor.fail = False  # type: ignore[attr-defined]
        assert [p.score for p in asyncio.run(broken.predict(IMAGES[5:], timeout_s=5))] == [1.0]
    finally:
        slow.close()
        broken.close()


class _BrokenByWhite(FakePredictor):
    """A model that fails on any batch holding a white image (one that breaks it, say)."""

    def predict(self, images):  # noqa: ANN001, ANN201 - the Predictor protocol
        if any(float(np.mean(image)) > 250 for image in images):
            raise RuntimeError(f"the model broke on one image of {len(images)}")
        return super().predict(images)


def test_one_image_that_breaks_the_model_fails_its_own_request_only() -> None:
    """A failed batch failed every request in it: three traders' shipments were held, and the
    failure recorded as their decisions, for one request's image."""
    batcher, sizes = _observed(_BrokenByWhite(), max_batch_size=8, max_wait_s=0.3, queue_size=16)

    async def three() -> list[object]:
        requests = [batcher.predict(images, timeout_s=5) for images in (IMAGES[:2], IMAGES[5:], IMAGES[2:3])]
        return await asyncio.gather(*requests, return_exceptions=True)

    try:
        first, white, third = asyncio.run(three())
    finally:
        batcher.close()
    assert sizes[0] == 4  # scored as one batch first
    assert [p.score for p in first] == [0.0, 0.2] and [p.score for p in third] == [0.4]
    assert isinstance(white, ModelError)
    assert (
        str(white)
        == "model bulk_ore-fake-0001 failed on this image: RuntimeError: the model broke on one image of 1"
    )


def test_two_images_that_break_the_model_fail_their_own_request_only() -> None:
    """Giving up after two lone failures in a row let one request of two such images, queued first,
    fail every request batched after it."""
    white = IMAGES[5]
    batcher, sizes = _observed(_BrokenByWhite(), max_batch_size=8, max_wait_s=0.3, queue_size=16)

    async def four() -> list[object]:
        sent = ([white, white], *([image] for image in IMAGES[:3]))
        return await asyncio.gather(*(batcher.predict(i, timeout_s=5) for i in sent), return_exceptions=True)

    try:
        poisoned, *good = asyncio.run(four())
    finally:
        batcher.close()
    assert isinstance(poisoned, ModelError)
    assert [[p.score for p in g] for g in good] == [[0.0], [0.2], [0.4]]
    # its own failure, not the batch's (which may describe another request's image)
    assert str(poisoned).endswith("the model broke on one image of 2")
    # the batch, the canary, then each request as a whole: not image by image
    assert sizes == [5, 1, 2, 1, 1, 1]


class _SlowlyBrokenByWhite(FakePredictor):
    """Takes ``seconds`` a call, then fails on a batch holding a white image."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def predict(self, images):  # noqa: ANN001, ANN201 - the Predictor protocol
        time.sleep(self.seconds if len(images) > 1 or float(np.mean(images[0])) > 250 else 0.05)
        if any(float(np.mean(image)) > 250 for image in images):
            raise RuntimeError(f"the model broke on one image of {len(images)}")
        return super().predict(images)


def test_a_request_past_its_deadline_is_not_scored_again() -> None:
    """Scoring a failed batch's requests again apart held the worker for requests nobody waited for."""
    batcher, sizes = _observed(_SlowlyBrokenByWhite(0.8), max_batch_size=8, max_wait_s=0.05, queue_size=16)

    async def two() -> list[object]:
        # its deadline passes while the batch fails (0.8 s, with time left after to score it again)
        hurried = batcher.predict([IMAGES[0], IMAGES[1]], timeout_s=0.4)
        poisoned = batcher.predict([IMAGES[5]], timeout_s=5)
        answers = await asyncio.gather(hurried, poisoned, return_exceptions=True)  # hurried: first in line
        return answers[::-1]

    try:
        poisoned, hurried = asyncio.run(two())
        time.sleep(0.2)  # the worker finishes the batch
    finally:
        batcher.close()
    assert isinstance(poisoned, ModelError) and isinstance(hurried, ScoringTimeoutError)
    assert sizes == [3, 1, 1]  # the batch, the canary, the poisoned request again: not the hurried one


def test_a_model_failing_on_every_image_is_not_asked_about_each_one() -> None:
    """Scoring a failed batch again image by image held the worker for a call per image, past the
    requests' deadlines: shipments recorded as held before got 504 and no record."""
    batcher, sizes = _observed(FakePredictor(fail=True), max_batch_size=8, max_wait_s=0.3, queue_size=16)

    async def six() -> list[object]:
        return await asyncio.gather(
            *(batcher.predict([image], timeout_s=5) for image in IMAGES), return_exceptions=True
        )

    try:
        answers = asyncio.run(six())
    finally:
        batcher.close()
    assert all(isinstance(a, ModelError) for a in answers)
    assert sizes == [6, 1]  # the batch, then the flat grey canary; every call observed


def test_a_batch_of_one_request_that_fails_is_not_scored_again() -> None:
    batcher, sizes = _observed(FakePredictor(fail=True), max_batch_size=8, max_wait_s=0, queue_size=16)
    try:
        with pytest.raises(ModelError):
            asyncio.run(batcher.predict(IMAGES[:3], timeout_s=5))
    finally:
        batcher.close()
    assert sizes == [3]  # not the canary, nor the same call again


class _BrokenByLarge(FakePredictor):
    """Scores a flat grey canary, fails on every image over 64 px, and takes 0.1 s a call."""

    def predict(self, images):  # noqa: ANN001, ANN201 - the Predictor protocol
        time.sleep(0.1)
        if any(image.shape[1] > 64 for image in images):
            raise RuntimeError("out of memory for a large picture")
        return super().predict(images)


def test_scoring_a_failed_batch_again_does_not_turn_holds_into_timeouts() -> None:
    """With the canary scored and every real image failing, each request was scored again, and the
    requests queued behind got 504 with nothing recorded, where they used to be recorded as held."""
    batcher = MicroBatcher(_BrokenByLarge(), max_batch_size=16, max_wait_s=0.05, queue_size=64)
    large = np.zeros((80, 80), np.uint8)

    async def many() -> list[object]:
        sent = [batcher.predict([large], timeout_s=3) for _ in range(48)]
        return await asyncio.gather(*sent, return_exceptions=True)

    try:
        answers = asyncio.run(many())
    finally:
        batcher.close()
    assert [type(a).__name__ for a in answers] == ["ModelError"] * 48


class _RefusesWhite(FakePredictor):
    """Refuses a batch holding a white image at once; otherwise takes ``per_image`` seconds an image
    and ``per_call`` a call."""

    def __init__(self, *, per_image: float = 0.0, per_call: float = 0.0) -> None:
        super().__init__()
        self.per_image, self.per_call = per_image, per_call

    def predict(self, images):  # noqa: ANN001, ANN201 - the Predictor protocol
        if any(float(np.mean(image)) > 250 for image in images):
            raise RuntimeError(f"bad image among {len(images)}")
        time.sleep(self.per_call + self.per_image * len(images))
        return super().predict(images)


def test_a_slow_model_still_scores_the_innocent_request_again() -> None:
    """The canary's own call used up the time for scoring again, when the batch failed at once: the
    innocent request failed with the other request's error."""
    batcher = MicroBatcher(_RefusesWhite(per_call=0.3), max_batch_size=8, max_wait_s=0.2, queue_size=16)

    async def two() -> list[object]:
        sent = (batcher.predict([IMAGES[5]], timeout_s=5), batcher.predict([IMAGES[1]], timeout_s=5))
        return await asyncio.gather(*sent, return_exceptions=True)

    try:
        poisoned, innocent = asyncio.run(two())
    finally:
        batcher.close()
    assert str(poisoned).endswith("bad image among 1") and [p.score for p in innocent] == [0.2]


def test_a_large_request_is_not_scored_again_past_the_time_left() -> None:
    """The time was checked only before each call: eight images scored again held the worker past
    the deadline of a request queued behind, which got 504 and no record."""
    batcher = MicroBatcher(_RefusesWhite(per_image=0.1), max_batch_size=9, max_wait_s=0.05, queue_size=32)

    async def three() -> list[object]:
        big = asyncio.ensure_future(batcher.predict([IMAGES[1]] * 8, timeout_s=5))
        white = asyncio.ensure_future(batcher.predict([IMAGES[5]], timeout_s=5))
        await asyncio.sleep(0.15)
        late = asyncio.ensure_future(batcher.predict([IMAGES[2]], timeout_s=0.7))
        return await asyncio.gather(big, white, late, return_exceptions=True)

    try:
        big, white, late = asyncio.run(three())
    finally:
        batcher.close()
    assert isinstance(big, ModelError) and isinstance(white, ModelError)  # big: the batch's error
    assert [p.score for p in late] == [0.4]


def _score(client, value: int):
    return client.post(
        "/v1/score",
        files=[("images", (f"{value}.png", png_bytes(value), "image/png"))],
        data={"cargo_type": "bulk_ore"},
        headers=auth(OFFICER_KEY),
    )


def test_http_back_pressure_and_timeout(make_client) -> None:
    client = make_client(
        predictors={"bulk_ore": FakePredictor(delay_s=0.4)},
        queue_size=1,
        max_images_per_request=1,
        max_batch_size=1,
        max_wait_ms=0,
        retry_after_s=3,
        request_timeout_s=0.15,
    )
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda v: _score(client, v), [1, 2, 3, 4]))
    statuses = sorted(r.status_code for r in responses)
    overloaded = [r for r in responses if r.status_code == 503]
    assert set(statuses) <= {503, 504} and overloaded, statuses
    assert overloaded[0].headers["retry-after"] == "3"
    assert overloaded[0].json()["type"] == "https://clearsight.dev/problems/overloaded"
    timed_out = [r for r in responses if r.status_code == 504]
    assert (
        timed_out and timed_out[0].json()["detail"] == "scoring 1 bulk_ore image(s) took longer than 0.15 s"
    )


def test_http_requests_are_batched_and_counted(make_client) -> None:
    predictor = FakePredictor(delay_s=0.05)
    client = make_client(predictors={"bulk_ore": predictor}, max_batch_size=8, max_wait_ms=100)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda v: _score(client, v), range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert max(predictor.batch_sizes) > 1 and sum(predictor.batch_sizes) == 8
    metrics = client.get("/metrics", headers=auth(ADMIN_KEY)).text
    assert f'clearsight_batch_size_count{{cargo_type="bulk_ore"}} {len(predictor.batch_sizes)}.0' in metrics
    assert 'clearsight_batch_size_sum{cargo_type="bulk_ore"} 8.0' in metrics
    assert 'clearsight_http_requests_total{endpoint="/v1/score",method="POST",status="200"} 8.0' in metrics
    assert 'clearsight_image_score_count{cargo_type="bulk_ore"} 8.0' in metrics
    assert 'clearsight_queue_depth{cargo_type="bulk_ore"} 0.0' in metrics


def test_readiness(make_client, audit_store) -> None:
    client = make_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    # open to anyone: no model ids or policy version (officers read those at /v1/models)
    assert ready.json() == {"status": "ready", "models_loaded": 2, "audit": "reachable"}

    class Unreachable:
        def ping(self, *, write_wait_s: float | None = None) -> None:
            raise AuditError("cannot reach postgresql://db/audit")

    class Blocked:  # a writer stuck holding the lock: every write fails, reads go on
        def ping(self, *, write_wait_s: float | None = None) -> None:
            if write_wait_s is not None:
                raise AuditError("writes are blocked")

    # load balancers probe with HEAD: the same status, no body
    assert (client.head("/readyz").status_code, client.head("/healthz").status_code) == (200, 200)
    for store in (Unreachable(), Blocked()):
        gone = make_client(audit=store).get("/readyz")
        assert (gone.status_code, gone.headers["retry-after"]) == (503, "2")
        assert make_client(audit=store).head("/readyz").status_code == 503
        # /readyz is open to anyone: the store's address stays in the log
        assert gone.json()["detail"] == (
            "audit store unreachable or its writes blocked (the service's log says why)"
        )
    empty = make_client(predictors={})
    assert empty.get("/readyz").json()["detail"].startswith("no model loaded")
    assert client.get("/healthz").json() == {"status": "ok"}
