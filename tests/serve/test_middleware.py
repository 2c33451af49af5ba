"""BodyLimitMiddleware's pace: a body that stalls or trickles is cut off with 408, one that keeps
coming is not, however long it takes in all (real sleeps of hundredths of a second)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from serve.middleware import BodyLimitMiddleware

PAUSE_S = 0.2
NEVER = None
"""A chunk's delay for a client that stops sending."""


def _paced(app, chunks: list[tuple[float | None, bytes]], *, wait_after_s: float = 0.0):
    """(status, problem or body, response headers, what the app behind received) of one POST
    /review/login whose body comes as ``chunks``, each after its delay. The app reads the body, then
    waits ``wait_after_s`` for the client to disconnect (as a streaming response does), and says ok."""
    sent: list[dict] = []
    got: list[dict] = []

    async def behind(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        while True:
            got.append(await receive())
            if got[-1]["type"] == "http.disconnect" or not got[-1].get("more_body"):
                break
        if wait_after_s and got[-1]["type"] == "http.request":
            got.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    pending = list(chunks)

    async def receive() -> dict:
        if not pending:  # the whole body has gone: the client disconnects a while later
            await asyncio.sleep(wait_after_s)
            return {"type": "http.disconnect"}
        delay, body = pending.pop(0)
        if delay is NEVER:
            await asyncio.Event().wait()
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/x-www-form-urlencoded"), (b"content-length", b"60000")]
    scope = {"type": "http", "method": "POST", "path": "/review/login", "headers": headers,
             "state": {}, "app": app, "client": ("203.0.113.9", 5000)}  # fmt: skip
    middleware = BodyLimitMiddleware(behind, max_bytes=64 * 1024 * 1024)
    # bounded, so that a middleware that waits for ever fails the test rather than hanging it
    asyncio.run(asyncio.wait_for(middleware(scope, receive, send), timeout=3))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    content = json.loads(body) if sent[0]["status"] != 200 else body
    return sent[0]["status"], content, dict(sent[0]["headers"]), got


@pytest.mark.parametrize(
    ("chunks", "detail"),  # detail: a regular expression
    [
        (
            [(0.0, b"key="), (NEVER, b"")],
            r"request body went 0\.2 s without a byte, after 4 bytes",
        ),
        (
            [(0.05, b"k")] * 20,  # each byte well inside the pause, but 20 bytes a second
            r"request body came too slowly: \d+ bytes in [\d.]+ s; after its first 0\.2 s a body "
            r"must come at 1000 bytes/s or faster",
        ),
    ],
    ids=["stalls", "trickles"],
)
def test_a_body_that_stalls_or_trickles_is_cut_off(make_client, chunks, detail) -> None:
    """A keyless client sending /review/login a byte every ten seconds held its connection for as
    long as it liked; 300 of them held 300."""
    app = make_client(body_timeout_s=PAUSE_S, body_min_bytes_per_s=1000).app
    status, problem, headers, got = _paced(app, chunks)
    assert status == 408 and headers[b"connection"] == b"close"
    assert problem["type"] == "https://clearsight.dev/problems/request-timeout"
    assert re.fullmatch(detail, problem["detail"]), problem["detail"]
    assert got[-1] == {"type": "http.disconnect"}  # the app behind stops reading, its reply dropped


@pytest.mark.parametrize(
    ("chunks", "wait_after_s"),
    [
        ([(0.02, b"k" * 200)] * 15, 0.0),  # 0.3 s in all, longer than the pause: steady is enough
        ([(0.0, b"key=x")], 2 * PAUSE_S),  # the body is whole: waiting for a disconnect is not timed
    ],
    ids=["slow-but-steady", "after-the-body"],
)
def test_a_body_that_keeps_coming_is_read_whole(make_client, chunks, wait_after_s) -> None:
    app = make_client(body_timeout_s=PAUSE_S, body_min_bytes_per_s=1000).app
    status, content, _, got = _paced(app, chunks, wait_after_s=wait_after_s)
    assert (status, content) == (200, b"ok")
    received = b"".join(m.get("body", b"") for m in got if m["type"] == "http.request")
    assert received == b"".join(body for _, body in chunks)
