"""Against a real uvicorn server: a request head must arrive in time, and one client holds a few
connections at most (serve/connection_limits.py)."""

from __future__ import annotations

import socket
import time

import httpx

from serve.connection_limits import ConnectionLimits

PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
WHOLE_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _until_closed(sock: socket.socket, within_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took; fails
    where it is still open after ``within_s``."""
    started = time.monotonic()
    sock.settimeout(within_s)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {within_s} s; received {received!r}") from None
    finally:
        sock.close()
    return received, time.monotonic() - started


def _one_answer(sock: socket.socket) -> bytes:
    """Read one answer (head and a Content-Length body) off a kept-alive connection."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(4096)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head


def test_a_request_head_that_does_not_arrive_in_time_closes_its_connection(live_server) -> None:
    """uvicorn timed no request head: 500 connections sending a byte of one every 10 s held
    limit_concurrency full (every other request 503) for as long as they went on, and one that
    sent half a head and then nothing stayed open for good."""
    server = live_server(header_timeout_s=1.0)
    started = time.monotonic()
    trickling, silent, kept_alive = (_connect(server.port) for _ in range(3))
    trickling.sendall(PARTIAL_HEAD)
    kept_alive.sendall(WHOLE_HEAD)
    assert _one_answer(kept_alive).startswith(b"HTTP/1.1 200")
    kept_alive.sendall(PARTIAL_HEAD)  # the next request's head, after an answer, is timed too
    time.sleep(0.5)
    trickling.sendall(b"a")  # bytes of a head do not restart its clock
    # a head sent whole, if slowly, is answered
    slow = _connect(server.port)
    slow.sendall(WHOLE_HEAD[:10])
    time.sleep(0.2)
    slow.sendall(WHOLE_HEAD[10:])
    assert _one_answer(slow).startswith(b"HTTP/1.1 200")
    slow.close()
    assert httpx.get(f"{server.url}/healthz").status_code == 200

    for sock, answer in ((trickling, b"HTTP/1.1 408 "), (kept_alive, b"HTTP/1.1 408 "), (silent, b"")):
        received, _ = _until_closed(sock, within_s=3.0)
        assert received.startswith(answer) if answer else received == b""
    assert time.monotonic() - started < 3.0


def test_one_client_holds_at_most_its_cap_of_connections(live_server) -> None:
    """Closed after the head timeout, trickling connections could still be opened again as fast as
    they were closed: one address holds at most max_connections_per_client."""
    server = live_server(max_connections_per_client=3)
    held = [_connect(server.port) for _ in range(3)]
    refused, _ = _until_closed(_connect(server.port), within_s=3.0)
    assert refused.startswith(b"HTTP/1.1 503 ") and refused.endswith(
        b"Too many connections from this address."
    )
    held.pop().close()
    deadline = time.monotonic() + 3.0
    while (status := _status_or_none(server.url)) != 200 and time.monotonic() < deadline:
        time.sleep(0.05)  # until the server has seen the close
    assert status == 200
    for sock in held:
        sock.close()


def _status_or_none(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/healthz").status_code
    except httpx.TransportError:
        return None


def test_a_named_proxy_is_not_capped(live_server) -> None:
    """A proxy's connections are many clients': its cap would be theirs together."""
    server = live_server(max_connections_per_client=2, forwarded_allow_ips="127.0.0.1")
    held = [_connect(server.port) for _ in range(4)]
    for sock in held:
        sock.sendall(WHOLE_HEAD)
        assert _one_answer(sock).startswith(b"HTTP/1.1 200")
        sock.close()


def test_ipv6_clients_are_capped_by_their_slash_64() -> None:
    limits = ConnectionLimits(10.0, 5, trusted_proxies=["10.0.0.0/24", "::1"])
    assert (
        limits.capped_key("2001:db8:1:3::1") == limits.capped_key("2001:db8:1:3::ff") == "2001:db8:1:3::/64"
    )
    assert limits.capped_key("203.0.113.7") == "203.0.113.7"
    assert limits.capped_key("10.0.0.9") is None and limits.capped_key("::1") is None
    assert ConnectionLimits(10.0, 0).capped_key("203.0.113.7") is None  # no cap
