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
"""Addresses remembered at once, in memory and in the shared file alike; the longest quiet are
forgotten first, so memory and the file stay bounded (each address keeps at most the limit's number
of wrong keys). Counting entries instead let 500 addresses within their limit push every other
address's count out within the minute."""


class Failures(Protocol):
    """Where wrong keys are counted: the times (seconds) each address sent one."""

    def recent(self, client: str, since: float) -> tuple[int, float]:
        """How many wrong keys ``client`` sent after ``since``, and the time of the oldest of them
        (``since`` when none)."""
        ...

    def add(self, client: str, at: float, since: float, keep: int) -> None:
        """Count a wrong key of ``client`` at ``at``, keeping at most its newest ``keep``; those at
        or before ``since`` may be forgotten, and past :data:`MAX_TRACKED` addresses the longest
        quiet."""
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

    def add(self, client: str, at: float, since: float, keep: int) -> None:
        times = self._pruned(client, since)
        if times is None:
            times = self._failures[client] = deque()
        times.append(at)
        # the newest `keep` hold the address exactly as long as all of them would
        while len(times) > keep:
            times.popleft()
        self._failures.move_to_end(client)
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)


class SharedFailures:
    """Wrong keys counted in a SQLite file that every worker of the server opens (WAL, so a count
    read never waits on another worker's write; a write waits up to 5 s for another's).

    One row per address: its newest wrong keys (at most the limit's number) and when it last sent
    one. Rows go as new wrong keys come: those whose last is past the window, and past
    :data:`MAX_TRACKED` addresses the longest quiet, as in memory, so the file stays small
    (about ``limit`` x :data:`MAX_TRACKED` times) whatever addresses guess. Where the file cannot
    be opened or written, this process counts in memory instead (logged once): a lockout per
    worker, never none.
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
                # the first release's table: one row per wrong key, capped in all, not per address
                conn.execute("DROP TABLE IF EXISTS failures")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS wrong_keys (client TEXT PRIMARY KEY, seen REAL NOT NULL,"
                    " times TEXT NOT NULL) WITHOUT ROWID"
                )
                conn.execute("CREATE INDEX IF NOT EXISTS wrong_keys_seen ON wrong_keys (seen)")
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
            row = self._db().execute("SELECT times FROM wrong_keys WHERE client = ?", (client,)).fetchone()
        except (sqlite3.Error, OSError) as exc:
            return self._failed_over(exc).recent(client, since)
        times = [t for t in _parse(row) if t > since]
        return (len(times), times[0]) if times else (0, since)

    def add(self, client: str, at: float, since: float, keep: int) -> None:
        if self._fallback is not None:
            self._fallback.add(client, at, since, keep)
            return
        try:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT times FROM wrong_keys WHERE client = ?", (client,)).fetchone()
                times = sorted([t for t in _parse(row) if t > since] + [at])[-keep:]
                db.execute(
                    "INSERT INTO wrong_keys (client, seen, times) VALUES (?, ?, ?)"
                    " ON CONFLICT (client) DO UPDATE SET seen = excluded.seen, times = excluded.times",
                    (client, at, " ".join(map(repr, times))),
                )
                db.execute("DELETE FROM wrong_keys WHERE seen <= ?", (since,))
                if row is None:  # only a new address can take the file past its bound
                    (count,) = db.execute("SELECT COUNT(*) FROM wrong_keys").fetchone()
                    if count > MAX_TRACKED:
                        db.execute(
                            "DELETE FROM wrong_keys WHERE client IN"
                            " (SELECT client FROM wrong_keys ORDER BY seen LIMIT ?)",
                            (count - MAX_TRACKED,),
                        )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            self._failed_over(exc).add(client, at, since, keep)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _parse(row: tuple[str] | None) -> list[float]:
    """An address's wrong-key times as the file keeps them (space-separated, oldest first)."""
    return [float(t) for t in row[0].split()] if row is not None else []


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
            self._failures.add(client, now, now - self.window_s, self.limit)

    def close(self) -> None:
        """Close where the wrong keys are counted, if that is a file."""
        close = getattr(self._failures, "close", None)
        if close is not None:
            close()
