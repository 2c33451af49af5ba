"""Against a real uvicorn server: a request head must arrive in time, and one client holds a few
connections at most (serve/connection_limits.py)."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from serve.cli import uvicorn_options
from serve.connection_limits import ConnectionLimits
from serve.settings import ServeSettings

PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
WHOLE_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def _connect(port: int, client: str = "127.0.0.1") -> socket.socket:
    """A connection to the server on 127.0.0.1 from ``client`` (any address of 127.0.0.0/8 is
    this host's: each stands for another client)."""
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(client, 0))


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


def _still_open(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(4096) != b""
    except TimeoutError:
        return True


def test_connections_waiting_for_a_head_leave_room_for_a_prompt_request(live_server) -> None:
    """Capped per client, connections trickling their heads from a few addresses (or IPv6 /64s)
    still took every one of limit_concurrency's slots, and every other request was answered 503.
    At most half of them wait for a head; a newcomer closes the one that has waited longest."""
    server = live_server(limit_concurrency=8, max_connections_per_client=3)  # 4 may wait
    trickling = []
    for client in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        for _ in range(3):
            sock = _connect(server.port, client)
            sock.sendall(PARTIAL_HEAD)
            trickling.append(sock)
            time.sleep(0.02)  # opened in this order
    officer = _connect(server.port)
    officer.sendall(WHOLE_HEAD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    answer, _ = _until_closed(officer, within_s=3.0)
    assert answer.startswith(b"HTTP/1.1 200 ")
    # the officer's connection closed the sixth oldest; the five before went as the next came
    for sock in trickling[:6]:
        closed, _ = _until_closed(sock, within_s=3.0)
        assert closed.startswith(b"HTTP/1.1 503 ") and closed.endswith(
            b"Too many connections are waiting for a request head."
        )
    assert all(_still_open(sock) for sock in trickling[6:])
    for sock in trickling[6:]:
        sock.close()


def test_an_idle_kept_alive_connection_waits_for_a_head_too(live_server) -> None:
    """A connection kept alive after its answer waits for the next head, as a new one does: it is
    closed (without an answer: it sent nothing) when it has waited longest."""
    server = live_server(limit_concurrency=4)  # 2 may wait
    idle = _connect(server.port)
    idle.sendall(WHOLE_HEAD)
    assert _one_answer(idle).startswith(b"HTTP/1.1 200")
    time.sleep(0.05)
    newer = [_connect(server.port) for _ in range(2)]
    closed, _ = _until_closed(idle, within_s=3.0)
    assert closed == b""
    assert all(_still_open(sock) for sock in newer)
    for sock in newer:
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


def test_the_connections_waiting_for_a_head_are_bounded_at_half_of_limit_concurrency() -> None:
    options = uvicorn_options(ServeSettings(_env_file=None, limit_concurrency=500))
    assert options["http"].max_waiting == 250
    assert uvicorn_options(ServeSettings(_env_file=None, limit_concurrency=1))["http"].max_waiting == 1
    with pytest.raises(ValueError, match=r"max_waiting -1 must be >= 0"):
        ConnectionLimits(10.0, 5, max_waiting=-1)


def test_ipv6_clients_are_capped_by_their_slash_64() -> None:
    limits = ConnectionLimits(10.0, 5, trusted_proxies=["10.0.0.0/24", "::1"])
    assert (
        limits.capped_key("2001:db8:1:3::1") == limits.capped_key("2001:db8:1:3::ff") == "2001:db8:1:3::/64"
    )
    assert limits.capped_key("203.0.113.7") == "203.0.113.7"
    assert limits.capped_key("10.0.0.9") is None and limits.capped_key("::1") is None
    assert ConnectionLimits(10.0, 0).capped_key("203.0.113.7") is None  # no cap
