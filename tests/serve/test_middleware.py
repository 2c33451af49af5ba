"""BodyLimitMiddleware's pace: a body that stalls or trickles is cut off with 408, one that keeps
coming is not, however long it takes in all (real sleeps of hundredths of a second); and every
response sent before its body was read whole closes the connection."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from serve_fakes import OFFICER_KEY, SUBMITTER_KEY

from serve.metrics import Metrics
from serve.middleware import BodyLimitMiddleware, RequestContextMiddleware

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


_SIZED = [(b"content-length", b"100000")]  # the whole body, in pieces
_SHORT = [(b"content-length", b"20000")]
_CHUNKED = [(b"transfer-encoding", b"chunked")]
_KEYLESS_UPLOAD = ("POST", "/v1/shipments", _SIZED)


def _answer(app, request: tuple[str, str, list], reads: int, *, inner=None) -> tuple[int, list]:
    """(status, response headers) of one request through BodyLimitMiddleware (uploads up to 200 000
    bytes, others 64 KiB) whose body comes in 100 pieces of 1000 bytes (the last without
    ``more_body``); the app behind reads ``reads`` of them (-1: all), then answers 200, or ``inner``
    stands in for it."""
    method, path, headers = request
    sent: list[dict] = []
    pieces = 100

    async def behind(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        for _ in range(pieces if reads < 0 else reads):
            if (await receive())["type"] == "http.disconnect":
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict:
        nonlocal pieces
        if not pieces:
            await asyncio.Event().wait()
        pieces -= 1
        return {"type": "http.request", "body": b"k" * 1000 if headers else b"", "more_body": bool(pieces)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers, "state": {}, "app": app,
             "client": ("203.0.113.9", 5000)}  # fmt: skip
    middleware = BodyLimitMiddleware(inner or behind, max_bytes=200_000)
    asyncio.run(asyncio.wait_for(middleware(scope, receive, send), timeout=3))
    return sent[0]["status"], sent[0]["headers"]


def _app_404(path: str):  # type: ignore[no-untyped-def]
    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no " + path.encode()})

    return app


@pytest.mark.parametrize(
    ("request_", "keys", "reads", "inner", "status", "closes"),
    [
        (_KEYLESS_UPLOAD, [], -1, None, 401, True),
        (("POST", "/v1/score", _CHUNKED), [SUBMITTER_KEY], -1, None, 403, True),
        (_KEYLESS_UPLOAD, ["wrong-key-0001", "wrong-key-0002"], -1, None, 429, True),
        (("POST", "/review/login", _SIZED), [], -1, None, 413, True),  # declared past 64 KiB
        (("POST", "/v1/score", [(b"content-length", b"lots")]), [OFFICER_KEY], -1, None, 400, True),
        (("POST", "/review/login", _CHUNKED), [], -1, None, 413, True),  # past 64 KiB while streaming
        (("POST", "/healthz", _SHORT), [], 0, None, 200, True),  # a route that never reads the body
        (("POST", "/nope", _CHUNKED), [], 0, _app_404("/nope"), 404, True),
        (("POST", "/review/login", _SHORT), [], 3, None, 200, True),  # part of the body read
        (("POST", "/v1/score", _SIZED), [OFFICER_KEY], -1, None, 200, False),
        (("GET", "/healthz", []), [], 0, None, 200, False),  # no body: nothing left to read
        (("POST", "/v1/shipments", [(b"content-length", b"0")]), [], 0, None, 401, False),
    ],
    ids=[
        "keyless-upload",
        "wrong-role",
        "locked-out",
        "declared-too-large",
        "bad-length",
        "streamed-too-large",
        "app-never-reads",
        "app-404-chunked",
        "app-reads-part",
        "app-reads-all",
        "no-body",
        "refusal-without-body",
    ],
)
def test_a_reply_sent_before_the_body_was_read_closes_the_connection(
    make_client, request_, keys, reads, inner, status, closes
) -> None:
    """A keyless upload trickling its body after the 401 (or a POST /healthz after its 405) held its
    connection 40 s and more, each byte renewing uvicorn's keep-alive timer: three of them turned
    /healthz into 503 under limit_concurrency 4. Connections whose body was read stay kept alive."""
    app = make_client(auth_failures_per_minute=1).app
    method, path, headers = request_
    for key in keys[:-1]:  # the wrong keys before the one that locks the address out
        _answer(app, (method, path, headers + [(b"x-api-key", key.encode())]), reads, inner=inner)
    auth = [(b"x-api-key", keys[-1].encode())] if keys else []
    got, response_headers = _answer(app, (method, path, headers + auth), reads, inner=inner)
    assert got == status
    assert ((b"connection", b"close") in response_headers) is closes, response_headers


def test_the_last_resort_500_closes_the_connection() -> None:
    """How much of its body the failed app read is unknown: the rest must not hold the connection."""
    sent: list[dict] = []

    async def failing(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/v1/score", "headers": _SIZED, "state": {}}
    asyncio.run(RequestContextMiddleware(failing, metrics=Metrics())(scope, receive, send))
    assert sent[0]["status"] == 500 and (b"connection", b"close") in sent[0]["headers"]
