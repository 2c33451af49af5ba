"""Wrong API keys counted per client address: past a limit in a minute, the address must wait.

A key is at least 8 characters, but a client that may try keys as fast as the server answers can
still guess weak ones; a lockout turns that into years. Only wrong keys count (not missing ones,
which cost a guesser nothing to learn about), and only the guessing address waits. Behind a reverse
proxy every client shares the proxy's address, so the limit there is shared too, unless the proxy
is named in ``forwarded_allow_ips`` (then its X-Forwarded-For names the client; no other
connection's does): set it with that in mind (``auth_failures_per_minute``; 0 turns the lockout
off).

The server counts in a small SQLite file in its data folder (:class:`SharedFailures`), where every
worker process of it sees the counts: counted per worker, ``--workers 4`` let an address try 80
keys a minute where the limit said 20. :class:`MemoryFailures` counts in one process (tests, and the
fallback where that file cannot be used).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from serve.errors import TooManyAttemptsError

__all__ = ["FailedAttempts", "Failures", "MemoryFailures", "SharedFailures"]

log = logging.getLogger("clearsight.serve")

MAX_TRACKED = 10_000
"""Addresses remembered at once in memory; the longest quiet are forgotten first, so memory stays
bounded. The shared file keeps at most this many wrong keys in all, the oldest forgotten first."""


class Failures(Protocol):
    """Where wrong keys are counted: the times (seconds) each address sent one."""

    def recent(self, client: str, since: float) -> tuple[int, float]:
        """How many wrong keys ``client`` sent after ``since``, and the time of the oldest of them
        (``since`` when none)."""
        ...

    def add(self, client: str, at: float, since: float) -> None:
        """Count a wrong key of ``client`` at ``at``; those at or before ``since`` may be forgotten."""
        ...


class MemoryFailures:
    """Wrong keys counted in this process only; at most :data:`MAX_TRACKED` addresses."""

    def __init__(self) -> None:
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _pruned(self, client: str, since: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is not None:
            while times and times[0] <= since:
                times.popleft()
        return times

    def recent(self, client: str, since: float) -> tuple[int, float]:
        times = self._pruned(client, since)
        return (len(times), times[0]) if times else (0, since)

    def add(self, client: str, at: float, since: float) -> None:
        times = self._pruned(client, since)
        if times is None:
            times = self._failures[client] = deque()
        times.append(at)
        self._failures.move_to_end(client)
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)


class SharedFailures:
    """Wrong keys counted in a SQLite file that every worker of the server opens (WAL, so a count
    read never waits on another worker's write; a write waits up to 5 s for another's).

    Old entries go as new ones come: those past the window, and past :data:`MAX_TRACKED` entries the
    oldest, so the file stays small whatever addresses guess. Where the file cannot be opened or
    written, this process counts in memory instead (logged once): a lockout per worker, never none.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._fallback: MemoryFailures | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # counts, not records: a power cut may lose some
                conn.execute("CREATE TABLE IF NOT EXISTS failures (client TEXT NOT NULL, at REAL NOT NULL)")
                conn.execute("CREATE INDEX IF NOT EXISTS failures_client_at ON failures (client, at)")
                conn.execute("CREATE INDEX IF NOT EXISTS failures_at ON failures (at)")
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _failed_over(self, exc: Exception) -> MemoryFailures:
        if self._fallback is None:
            log.warning(
                "wrong API keys are counted per worker from now on: the lockout file %s cannot be used: %s",
                self.path,
                exc,
            )
            self._fallback = MemoryFailures()
        return self._fallback

    def recent(self, client: str, since: float) -> tuple[int, float]:
        if self._fallback is not None:
            return self._fallback.recent(client, since)
        try:
            count, oldest = (
                self._db()
                .execute(
                    "SELECT COUNT(*), MIN(at) FROM failures WHERE client = ? AND at > ?", (client, since)
                )
                .fetchone()
            )
        except (sqlite3.Error, OSError) as exc:
            return self._failed_over(exc).recent(client, since)
        return int(count), since if oldest is None else float(oldest)

    def add(self, client: str, at: float, since: float) -> None:
        if self._fallback is not None:
            self._fallback.add(client, at, since)
            return
        try:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO failures (client, at) VALUES (?, ?)", (client, at))
                db.execute("DELETE FROM failures WHERE at <= ?", (since,))
                # bounded whatever addresses guess within one window: the oldest entries go
                db.execute(
                    "DELETE FROM failures WHERE rowid <= (SELECT MAX(rowid) FROM failures) - ?",
                    (MAX_TRACKED,),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            self._failed_over(exc).add(client, at, since)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class FailedAttempts:
    """Wrong keys per client address in a sliding window of ``window_s``; thread-safe.

    Args:
        limit: wrong keys an address may send per window (0: no limit).
        window_s: the window's length in seconds.
        clock: seconds (tests pass a fake); wall-clock time where ``failures`` is shared between
            processes, whose monotonic clocks need not agree.
        failures: where the wrong keys are counted (default: in this process's memory).
    """

    def __init__(
        self,
        limit: int,
        *,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        failures: Failures | None = None,
    ) -> None:
        if limit < 0 or window_s <= 0:
            raise ValueError(f"limit {limit} must be >= 0 and window_s {window_s} > 0")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._failures = failures if failures is not None else MemoryFailures()
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Raises TooManyAttemptsError while ``client`` has used up its wrong keys for the window."""
        if not self.limit:
            return
        with self._lock:
            now = self._clock()
            count, oldest = self._failures.recent(client, now - self.window_s)
        if count >= self.limit:
            wait = max(1, math.ceil(oldest + self.window_s - now))
            raise TooManyAttemptsError(
                f"{count} wrong API keys from this address in the last {self.window_s:g} s; "
                f"try again in {wait} s",
                retry_after_s=wait,
            )

    def failed(self, client: str) -> None:
        """Count one wrong key from ``client``."""
        if not self.limit:
            return
        with self._lock:
            now = self._clock()
            self._failures.add(client, now, now - self.window_s)

    def close(self) -> None:
        """Close where the wrong keys are counted, if that is a file."""
        close = getattr(self._failures, "close", None)
        if close is not None:
            close()
