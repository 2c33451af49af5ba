"""Against a real uvicorn server: the body limit while streaming, and an end-to-end submission."""

from __future__ import annotations

import json
import socket

import httpx
from serve_fakes import OFFICER_KEY, SUBMITTER_KEY, auth, png_bytes


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


def test_what_a_request_may_cost_before_it_is_authenticated() -> None:
    """FastAPI parses a body before any dependency authenticates: a client with no key made the
    server read and parse 62 MiB of JSON (about 380 MB) to be told 401. Uploads without a key are
    refused before their body is read; other bodies hold at most 64 KiB."""
    import asyncio

    from serve.middleware import SMALL_BODY_BYTES, BodyLimitMiddleware

    def call(
        method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, int, bool]:
        sent: list[dict] = []
        reads = 0
        reached = False

        async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
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

        scope = {"type": "http", "method": method, "path": path, "headers": headers, "state": {}}
        asyncio.run(BodyLimitMiddleware(app, max_bytes=64 * 1024 * 1024)(scope, receive, send))
        return sent[0]["status"], reads, reached

    big = b"[" + b"0," * (SMALL_BODY_BYTES) + b"0]"
    assert call("POST", "/v1/shipments", [], big) == (401, 0, False)  # no key: not a byte read
    assert call("POST", "/v1/score/", [], big) == (401, 0, False)
    keyed = [(b"authorization", b"Bearer k")]
    assert call("POST", "/v1/shipments", keyed, big)[0] == 200  # a key: the app authenticates it
    sized = [(b"content-length", str(len(big)).encode())]
    assert call("POST", "/v1/shipments/S1/outcome", keyed + sized, big) == (413, 0, False)
    assert call("POST", "/review/login", sized, big) == (413, 0, False)
    assert call("POST", "/v1/shipments/S1/outcome", keyed, big)[0] == 413  # streamed, no length
    assert call("POST", "/v1/shipments/S1/outcome", keyed, b'{"found": "clean"}')[0] == 200
