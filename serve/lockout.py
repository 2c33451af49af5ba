"""Wrong API keys counted per client address: past a limit in a minute, the address must wait.

A key is at least 8 characters, but a client that may try keys as fast as the server answers can
still guess weak ones; a lockout turns that into years. Only wrong keys count (not missing ones,
which cost a guesser nothing to learn about), and only the guessing address waits. Behind a reverse
proxy every client shares the proxy's address, so the limit there is shared too, unless the proxy
is named in ``forwarded_allow_ips`` (then its X-Forwarded-For names the client; no other
connection's does): set it with that in mind (``auth_failures_per_minute``; 0 turns the lockout
off).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from serve.errors import TooManyAttemptsError

__all__ = ["FailedAttempts"]

MAX_TRACKED = 10_000
"""Addresses remembered at once; the longest quiet are forgotten first, so memory stays bounded."""


class FailedAttempts:
    """Wrong keys per client address in a sliding window of ``window_s``; thread-safe.

    Args:
        limit: wrong keys an address may send per window (0: no limit).
        window_s: the window's length in seconds.
        clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(
        self, limit: int, *, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 0 or window_s <= 0:
            raise ValueError(f"limit {limit} must be >= 0 and window_s {window_s} > 0")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is not None:
            while times and times[0] <= now - self.window_s:
                times.popleft()
        return times

    def check(self, client: str) -> None:
        """Raises TooManyAttemptsError while ``client`` has used up its wrong keys for the window."""
        if not self.limit:
            return
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            if times is not None and len(times) >= self.limit:
                wait = max(1, math.ceil(times[0] + self.window_s - now))
                raise TooManyAttemptsError(
                    f"{len(times)} wrong API keys from this address in the last {self.window_s:g} s; "
                    f"try again in {wait} s",
                    retry_after_s=wait,
                )

    def failed(self, client: str) -> None:
        """Count one wrong key from ``client``."""
        if not self.limit:
            return
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            if times is None:
                times = self._failures[client] = deque()
            times.append(now)
            self._failures.move_to_end(client)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)
