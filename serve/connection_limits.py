"""uvicorn's HTTP/1.1 protocol (h11) with a deadline on each request head and a cap per client.

uvicorn times nothing before a request's head is whole: the app (and its body timeout) is not called
until then, and its keep-alive timer is renewed by every byte. 500 connections that each sent a
few bytes of a head every 10 s filled ``limit_concurrency`` and every other request was answered
503 for as long as they stayed; one that sent half a head and then nothing stayed open for good.
Here a connection whose request head is not whole ``header_timeout_s`` after it opened, or after
the answer to its last request, is answered 408 (or, having sent nothing, just closed); and a
client may hold at most ``max_connections_per_client`` connections of a worker at once (an IPv6
client counted by its /64, as the lockout counts it; the proxies named in ``forwarded_allow_ips``,
whose connections are many clients', are not capped), so that reconnecting as each is closed does
not fill the worker either.

Neither bounds the connections waiting for a head across clients: ten addresses (or eleven IPv6
/64s, a sliver of one subscriber's /56) of 50 connections each, trickling heads and reopening each
as it was closed, still held ``limit_concurrency`` full, every other request 503. At most
``max_waiting`` connections of a worker wait for a head at once (``clearsight serve``: half of
``limit_concurrency``), new ones and those kept alive after an answer alike; one more closes the one
that has waited longest, not the newcomer: so a client that sends its head promptly always finds
room, whatever others leave waiting, and the requests in flight keep the other half.

:class:`ConnectionLimits` is what ``uvicorn.run(http=...)`` is given: a plain object, so that it
reaches the worker processes of ``--workers N`` (uvicorn pickles its options for them). It always
builds h11's protocol, also where httptools is installed and uvicorn's ``auto`` would have chosen
that.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import logging
import time
from collections.abc import Iterable
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from serve.lockout import client_key

__all__ = ["BoundedH11Protocol", "ConnectionLimits"]

log = logging.getLogger("clearsight.serve")

REFUSAL_LOG_INTERVAL_S = 60.0
"""Refused and evicted connections are logged at most once this often per worker (each kind): a
client reconnecting as fast as it is refused would otherwise write a line per connection."""

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConnectionLimits:
    """What ``uvicorn.run(http=...)`` calls to make each connection's protocol.

    Args:
        header_timeout_s: how long a request head may take to arrive whole, from the connection's
            opening or the end of the answer before.
        max_connections_per_client: most connections one client address (an IPv6 /64) holds open
            at once in a worker; 0: no cap.
        trusted_proxies: addresses or networks whose connections are not capped (the reverse
            proxies in ``forwarded_allow_ips``, each many clients' connections).
        max_waiting: most connections of a worker that wait for a request head at once, whatever
            their clients (those of proxies too); one more closes the one that has waited longest.
            0: no bound. Keep it well under ``limit_concurrency``, which counts them with the
            requests in flight.
    """

    def __init__(
        self,
        header_timeout_s: float,
        max_connections_per_client: int,
        trusted_proxies: Iterable[str] = (),
        *,
        max_waiting: int = 0,
    ) -> None:
        if header_timeout_s <= 0 or max_connections_per_client < 0:
            raise ValueError(
                f"header_timeout_s {header_timeout_s} must be > 0 and max_connections_per_client "
                f"{max_connections_per_client} >= 0"
            )
        if max_waiting < 0:
            raise ValueError(f"max_waiting {max_waiting} must be >= 0 (0: no bound)")
        self.header_timeout_s = header_timeout_s
        self.max_connections_per_client = max_connections_per_client
        self.max_waiting = max_waiting
        self.trusted_proxies: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies
        )
        self._last_refusal_logged = -REFUSAL_LOG_INTERVAL_S
        self._last_eviction_logged = -REFUSAL_LOG_INTERVAL_S
        self._waits = 0  # waits for a head begun in this worker: their order, oldest lowest

    def next_wait(self) -> int:
        """A number for a wait for a head beginning now, above every earlier one's (a clock may
        give two the same time)."""
        self._waits += 1
        return self._waits

    def __call__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> BoundedH11Protocol:
        return BoundedH11Protocol(config, server_state, app_state, _loop, limits=self)

    def capped_key(self, host: str) -> str | None:
        """The key ``host``'s connections are counted under, or None where they are not capped."""
        if not self.max_connections_per_client:
            return None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return client_key(host)
        if any(address in network for network in self.trusted_proxies):
            return None
        return client_key(host)

    def log_refusal(self, host: str, held: int) -> None:
        now = time.monotonic()
        if now - self._last_refusal_logged < REFUSAL_LOG_INTERVAL_S:
            return
        self._last_refusal_logged = now
        log.warning(
            "refused a connection from %s: it holds %d, max_connections_per_client; refusals in the "
            "next %g s are not logged",
            host,
            held,
            REFUSAL_LOG_INTERVAL_S,
        )

    def log_eviction(self, host: str | None) -> None:
        now = time.monotonic()
        if now - self._last_eviction_logged < REFUSAL_LOG_INTERVAL_S:
            return
        self._last_eviction_logged = now
        log.warning(
            "closed a connection from %s that waited longest for a request head: %d were waiting, "
            "max_waiting; closings in the next %g s are not logged",
            host or "an unknown address",
            self.max_waiting,
            REFUSAL_LOG_INTERVAL_S,
        )


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head is late, refusing one past
    its client's cap, and closing the longest waiting for a head past the worker's bound (see the
    module's docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.capped_key: str | None = None  # what this connection counts against, if capped
        self._head_timer: asyncio.TimerHandle | None = None
        # when this connection began to wait for a head (ConnectionLimits.next_wait); None while not
        self.waiting_since: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.client is not None:
            key = self.limits.capped_key(self.client[0])
            if key is not None:
                # one pass over this worker's connections (at most limit_concurrency): nothing to keep
                # in step as connections come and go
                held = sum(
                    1
                    for other in self.connections
                    if other is not self and getattr(other, "capped_key", None) == key
                )
                if held >= self.limits.max_connections_per_client:
                    self.limits.log_refusal(self.client[0], held)
                    self._refuse(503, b"Service Unavailable", b"Too many connections from this address.")
                    return
                self.capped_key = key
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Time the head while the connection waits for one (h11's client state IDLE: before the
        first request, and once an answer and its request are done), from when it began to wait:
        bytes of a head arriving do not restart the clock."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_late)
            self.waiting_since = self.limits.next_wait()
            self._make_room()
        elif not waiting:
            self._stop_head_timer()

    def _make_room(self) -> None:
        """Close the connections that have waited longest for a head until, with this one, at most
        ``max_waiting`` wait. One pass over the worker's connections (at most limit_concurrency),
        as for the cap: nothing to keep in step as connections come and go."""
        if not self.limits.max_waiting:
            return
        others = [
            other
            for other in self.connections
            if other is not self and getattr(other, "waiting_since", None) is not None
        ]
        excess = len(others) + 1 - self.limits.max_waiting
        if excess <= 0:
            return
        for oldest in heapq.nsmallest(excess, others, key=lambda other: other.waiting_since):
            self.limits.log_eviction(oldest.client[0] if oldest.client else None)
            oldest._close_waiting(
                503, b"Service Unavailable", b"Too many connections are waiting for a request head."
            )

    def _stop_head_timer(self) -> None:
        self.waiting_since = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        self._close_waiting(408, b"Request Timeout", b"The request head did not arrive in time.")

    def _close_waiting(self, status: int, reason: bytes, text: bytes) -> None:
        """Close this connection, waiting for a head: answered ``status`` where part of one came,
        else closed as uvicorn's keep-alive timeout closes an idle one (nothing was asked)."""
        self._stop_head_timer()
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        started, _ = self.conn.trailing_data
        if started:  # part of a head came: say why it is closed
            self._refuse(status, reason, text)
        else:
            self.conn.send(h11.ConnectionClosed())
            self.transport.close()

    def _refuse(self, status: int, reason: bytes, text: bytes) -> None:
        """Answer ``status`` before any request was read (h11 allows a server that) and close."""
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(text)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=status, headers=headers, reason=reason),
            h11.Data(data=text),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()
