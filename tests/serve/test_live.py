"""Against a real uvicorn server: the body limit while streaming, and an end-to-end submission."""

from __future__ import annotations

import json
import socket
import time

import httpx
from serve_fakes import ADMIN_KEY, OFFICER_KEY, SUBMITTER_KEY, auth, png_bytes


def test_real_server_scores_and_decides(live_server) -> None:
    server = live_server()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        files = [("images", ("a.png", png_bytes(240), "image/png"))]
        declaration = json.dumps({"shipment_id": "LIVE-1", "cargo_type": "bulk_ore"})
        submitted = client.post(
            "/v1/shipments", files=files, data={"declaration": declaration}, headers=auth(SUBMITTER_KEY)
        )
        assert submitted.status_code == 200, submitted.text
        assert submitted.json()["tier"] == "PHYSICAL_INSPECTION"  # a submitter gets the receipt
        got = client.get("/v1/shipments/LIVE-1", headers=auth(OFFICER_KEY))
        assert got.json()["seq"] == submitted.json()["seq"]


def test_declared_length_over_the_limit(live_server) -> None:
    server = live_server(max_request_bytes=2000)
    files = [("images", ("a.png", b"\x89PNG" + b"0" * 5000, "image/png"))]
    response = httpx.post(
        f"{server.url}/v1/score", files=files, data={"cargo_type": "bulk_ore"}, headers=auth(OFFICER_KEY)
    )
    assert response.status_code == 413
    body = response.json()
    assert body["type"] == "https://clearsight.dev/problems/request-too-large"
    assert body["detail"].startswith("request body of ") and body["detail"].endswith(
        " exceeds the limit of 2000 bytes"
    )
    assert body["request_id"] == response.headers["x-request-id"]


def test_chunked_body_is_cut_off_while_streaming(live_server) -> None:
    server = live_server(max_request_bytes=2000)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    chunks = [head] + [b"x" * 1000] * 10
    request = (
        f"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {OFFICER_KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    for chunk in chunks:  # no Content-Length: only counting while streaming can catch it
        request += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    request += b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    head_text, _, body = reply.partition(b"\r\n\r\n")
    assert head_text.startswith(b"HTTP/1.1 413 ")
    problem = json.loads(body)
    assert problem["detail"] == "request body passed the limit of 2000 bytes while streaming"


def _through_the_limit(
    app, method: str, path: str, headers: list, body: bytes, root: str = ""
) -> tuple[int, int, bool]:
    """(status, body reads, whether the app behind was reached) of one request through
    BodyLimitMiddleware, the started ``app`` giving it its services."""
    import asyncio

    from serve.middleware import BodyLimitMiddleware

    sent: list[dict] = []
    reads = 0
    reached = False

    async def behind(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        nonlocal reached
        reached = True
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": root + path, "root_path": root, "headers": headers,
             "state": {}, "app": app, "client": ("203.0.113.9", 5000)}  # fmt: skip
    asyncio.run(BodyLimitMiddleware(behind, max_bytes=64 * 1024 * 1024)(scope, receive, send))
    return sent[0]["status"], reads, reached


def test_what_a_request_may_cost_before_it_is_authenticated(make_client) -> None:
    """FastAPI parses a body before any dependency authenticates: a client with no key made the
    server read and parse 62 MiB of JSON (about 380 MB) to be told 401, and a wrong key, or an
    address locked out for wrong keys, had its whole upload read first. Uploads are refused before
    their body is read; other bodies hold at most 64 KiB."""
    from serve.middleware import SMALL_BODY_BYTES

    app = make_client(auth_failures_per_minute=2).app
    big = b"[" + b"0," * SMALL_BODY_BYTES + b"0]"
    good = [(b"authorization", f"Bearer {SUBMITTER_KEY}".encode())]
    assert _through_the_limit(app, "POST", "/v1/shipments", [], big) == (401, 0, False)
    assert _through_the_limit(app, "POST", "/v1/score/", [(b"x-api-key", b"")], big) == (401, 0, False)
    assert _through_the_limit(app, "POST", "/v1/shipments", good, big) == (200, 1, True)
    # behind a proxy prefix: the route is still an upload, neither refused as small nor let through
    assert _through_the_limit(app, "POST", "/v1/shipments", good, big, root="/clearsight")[0] == 200
    assert _through_the_limit(app, "POST", "/v1/shipments", [], big, root="/clearsight")[0] == 401
    sized = [(b"content-length", str(len(big)).encode())]
    # an outcome's key is checked first too (a submitter's: 403), then its body held to 64 KiB
    officer = [(b"authorization", f"Bearer {OFFICER_KEY}".encode())]
    assert _through_the_limit(app, "POST", "/v1/shipments/S1/outcome", good + sized, big) == (403, 0, False)
    assert _through_the_limit(app, "POST", "/v1/shipments/S1/outcome", officer + sized, big) == (
        413,
        0,
        False,
    )
    assert _through_the_limit(app, "POST", "/review/login", sized, big) == (413, 0, False)
    assert _through_the_limit(app, "POST", "/v1/shipments/S1/outcome", officer, big)[0] == 413  # streamed
    assert (
        _through_the_limit(app, "POST", "/v1/shipments/S1/outcome", officer, b'{"found": "clean"}')[0] == 200
    )
    wrong = [(b"authorization", b"Bearer wrong-key-123")]
    assert [_through_the_limit(app, "POST", "/v1/score", wrong, big)[:2] for _ in range(3)] == [
        (401, 0),
        (401, 0),
        (429, 0),  # the address is locked out: not a byte read
    ]


def test_an_upload_from_a_role_the_route_does_not_admit_is_not_read(make_client) -> None:
    """An officer's upload to /v1/shipments (a submitter's route), or a submitter's to /v1/score (an
    officer's), was read whole before the route's dependency said 403."""
    app = make_client().app
    body = b"x" * 100_000
    officer = [(b"authorization", f"Bearer {OFFICER_KEY}".encode())]
    submitter = [(b"x-api-key", SUBMITTER_KEY.encode())]
    assert _through_the_limit(app, "POST", "/v1/shipments", officer, body) == (403, 0, False)
    assert _through_the_limit(app, "POST", "/v1/score", submitter, body) == (403, 0, False)
    assert _through_the_limit(app, "POST", "/v1/score", officer, body) == (200, 1, True)
    assert _through_the_limit(app, "POST", "/v1/shipments", submitter, body) == (200, 1, True)
    admin = [(b"authorization", f"Bearer {ADMIN_KEY}".encode())]
    assert _through_the_limit(app, "POST", "/v1/shipments", admin, body)[0] == 200
    assert _through_the_limit(app, "POST", "/v1/score", admin, body)[0] == 200


def test_the_insecure_development_mode_takes_uploads_without_a_key(tmp_path) -> None:
    from fastapi.testclient import TestClient
    from serve_fakes import FakePredictor

    from serve.app import create_app
    from serve.settings import ServeSettings

    settings = ServeSettings(_env_file=None, api_keys="", insecure_dev=True, data_dir=tmp_path)
    with TestClient(create_app(settings, predictors={"bulk_ore": FakePredictor("bulk_ore")})) as client:
        assert _through_the_limit(client.app, "POST", "/v1/shipments", [], b"x")[0] == 200


def _read_until_closed(sock: socket.socket) -> bytes:
    reply = b""
    while data := sock.recv(65536):
        reply += data
    return reply


def test_a_stalled_body_is_answered_408_and_its_connection_closed(live_server) -> None:
    """A keyless client trickling a body to /review/login held its connection for good."""
    # 1 byte/s: the 4 bytes sent earn 4 s, so the pause alone cuts the body; at 500 bytes/s they earned
    # 8 ms, and on a loaded machine the wait for the first bytes spent more, cutting it as too slow
    server = live_server(body_timeout_s=0.2, body_min_bytes_per_s=1)
    head = (
        b"POST /review/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\nkey="
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head)
        reply = _read_until_closed(sock)  # a timeout here: the server kept the connection
    head_text, _, body = reply.partition(b"\r\n\r\n")
    assert head_text.startswith(b"HTTP/1.1 408 ") and b"\r\nconnection: close" in head_text.lower()
    assert json.loads(body)["detail"] == "request body went 0.2 s without a byte, after 4 bytes"


def test_a_refused_upload_still_trickling_its_body_is_disconnected(live_server) -> None:
    """Told 401 at once, a keyless upload went on sending a byte every few seconds, and uvicorn,
    reading and dropping the rest of the body, kept the connection open for it (40 s and more)."""
    server = live_server()
    head = (
        b"POST /v1/shipments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 60000\r\n\r\n"
    )
    reply, closed = b"", False
    with socket.create_connection(("127.0.0.1", server.port), timeout=0.1) as sock:
        sock.sendall(head)
        deadline = time.monotonic() + 3  # well inside the keep-alive timeout each byte renews
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"a")
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # reset: the server closed with a byte unread
                closed = True
                break
            closed = not data
            reply += data
    assert reply.startswith(b"HTTP/1.1 401 ") and b"\r\nconnection: close" in reply.lower()
    assert closed


def test_connections_past_the_limit_are_answered_503(live_server) -> None:
    """A request in flight holds its connection. (One waiting for its head no longer would: half of
    limit_concurrency may wait, and a newcomer closes the one waiting longest; see
    test_connection_limits.)"""
    server = live_server(limit_concurrency=2)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as holder:
        holder.sendall(  # a body still to come
            b"POST /review/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\nkey="
        )
        assert httpx.get(f"{server.url}/healthz").status_code == 503
    for _ in range(100):  # the server notices the closed connection a moment later
        if (status := httpx.get(f"{server.url}/healthz").status_code) == 200:
            break
    assert status == 200
