"""Wrong API keys counted per client address: past a limit in a minute, the address must wait.

An IPv6 client is counted by its /64 (:func:`client_key`), the smallest block a provider hands one
subscriber: counted per address, one client with a /64 could name a new address per guess and was
never held. It is counted by its /48 too (:func:`block_key`), which may send
:data:`BLOCK_LIMIT_FACTOR` times the limit: a subscriber is often handed a /56 or a /48, and counted
by /64 alone it guessed the limit from each of its 256 or 65,536 /64s in turn.

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

import hashlib
import ipaddress
import logging
import math
import os
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from serve.errors import TooManyAttemptsError

__all__ = ["FailedAttempts", "Failures", "MemoryFailures", "SharedFailures", "block_key", "client_key"]

log = logging.getLogger("clearsight.serve")

MAX_TRACKED = 10_000
"""Addresses remembered at once, in memory and in the shared file alike; the longest quiet are
forgotten first, so memory and the file stay bounded (each address keeps at most the limit's number
of wrong keys, an IPv6 /48 ten times that). Counting entries instead let 500 addresses within their
limit push every other address's count out within the minute."""

IPV6_PREFIX = 64
"""The IPv6 block counted as one client: a subscriber's /64 is its to pick addresses from."""

IPV6_BLOCK_PREFIX = 48
"""The coarser IPv6 block every client is counted under as well: the largest a provider usually
hands one subscriber (a /56 is common at home, a /48 for a site), all of whose /64s it may use."""

BLOCK_LIMIT_FACTOR = 10
"""How many times the limit a /48 may send: room for a few of its /64s at the limit (a site's
machines, or subscribers of a provider that hands out /64s of one /48 and share its allowance),
where a /56 rotating its /64s had 256 times the limit and a /48 65,536 times."""

_LONGEST_NAME = 64
"""A client that is no IP address (``unknown``, a test client's name) longer than this is counted
by a digest of its name, so a row of the lockout file stays small whatever a proxy passes on."""


def client_key(client: str) -> str:
    """What a client's wrong keys are counted under: an IPv4 address as it is (an IPv4-mapped IPv6
    address as its IPv4 address), an IPv6 address as its /64 (``2001:db8:1:2::/64``, at most 43
    characters), anything else as it is where short, else ``sha256:`` and 32 hex digits.

    Rows of earlier releases keyed by a whole IPv6 address match no key now (each holds a ``/``
    no address has): they hold no one, and go as their wrong keys leave the window.
    """
    try:
        address = ipaddress.ip_address(client.strip("[]"))
    except ValueError:
        # a name holding "/" could pass for a /64's key and lock that block out
        if len(client) <= _LONGEST_NAME and "/" not in client:
            return client
        return "sha256:" + hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        # the scope of a link-local address (fe80::1%eth0) names no other client
        return str(ipaddress.IPv6Network((int(address), IPV6_PREFIX), strict=False))
    return str(address)


def block_key(client: str) -> str | None:
    """The /48 an IPv6 client's wrong keys are counted under as well (``2001:db8:1::/48``); None for
    an IPv4 address (an IPv4-mapped one too) or anything else, which have no such block."""
    try:
        address = ipaddress.ip_address(client.strip("[]"))
    except ValueError:
        return None
    if not isinstance(address, ipaddress.IPv6Address) or address.ipv4_mapped is not None:
        return None
    return str(ipaddress.IPv6Network((int(address), IPV6_BLOCK_PREFIX), strict=False))


class Failures(Protocol):
    """Where wrong keys are counted: the times (seconds) each address sent one."""

    def recent(self, client: str, at: float, since: float, keep: int) -> tuple[int, float]:
        """How many wrong keys ``client`` sent after ``since``, and the time of the oldest of them
        (``since`` when none), at ``at`` where at most ``keep`` are kept."""
        ...

    def attempt(self, client: str, at: float, since: float, keep: int) -> tuple[int, float]:
        """Count a wrong key of ``client`` at ``at`` unless it sent ``keep`` or more after ``since``,
        in one step (concurrent wrong keys of one address must not all pass a count of keep - 1):
        the count and oldest as :meth:`recent` finds them before. Those at or before ``since`` may
        be forgotten, and past :data:`MAX_TRACKED` addresses the longest quiet."""
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

    def recent(self, client: str, at: float, since: float, keep: int) -> tuple[int, float]:
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

    def attempt(self, client: str, at: float, since: float, keep: int) -> tuple[int, float]:
        found = self.recent(client, at, since, keep)
        if found[0] < keep:
            self.add(client, at, since, keep)
        return found

    def held(self, since: float) -> dict[str, list[float]]:
        """Every address's wrong keys after ``since``, oldest first (addresses without any left out)."""
        return {
            c: [t for t in times if t > since]
            for c, times in self._failures.items()
            if times and times[-1] > since
        }

    def clear(self) -> None:
        self._failures.clear()


BUSY_TIMEOUT_S = 0.1
"""How long a write waits for another worker's. Each holds the file under a millisecond (WAL, no
sync per commit), so a longer wait means a stuck holder (an operator's sqlite3 session); the async
routes count wrong keys on the event loop, which waited the whole 5 s it was given first."""

WAL_LIMIT_BYTES = 4 * 1024 * 1024
"""What the write-ahead log is cut back to once checkpointed: without a limit it kept its largest
size, 167.7 MB after a flood of wrong keys from 5,000 addresses, beside a database of about 1 MB."""

_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _busy(exc: Exception) -> bool:
    """Whether ``exc`` is another connection holding the file, which passes (not a file that
    cannot be opened, is no database or has another schema, which does not)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _BUSY


class SharedFailures:
    """Wrong keys counted in a SQLite file that every worker of the server opens (WAL, so a count
    read never waits on another worker's write; a write waits up to :data:`BUSY_TIMEOUT_S` for
    another's).

    One row per address (or IPv6 block): its newest wrong keys (at most the limit's number, a /48
    :data:`BLOCK_LIMIT_FACTOR` times that) and when it last sent one. Rows go as new wrong keys
    come: those whose last is past the window, and past :data:`MAX_TRACKED` addresses the longest
    quiet, as in memory, so the file stays small (at most ``limit`` x :data:`BLOCK_LIMIT_FACTOR` x
    :data:`MAX_TRACKED` times) whatever addresses guess.

    While another connection holds the file longer than that, a wrong key is held in this
    process's memory, counted with the file's for its address (a locked address stays locked), and
    written to the file with the next wrong key that gets through. Where the file cannot be opened,
    is no database or not this one, this process counts in memory from then on (logged): a lockout
    per worker, never none.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._opened = (0, 0)  # the open file's st_dev and st_ino
        self._held = MemoryFailures()  # wrong keys the file was too busy to take
        self._held_keep: dict[str, int] = {}  # the keep of each address held: a /48's is larger
        self._fallback: MemoryFailures | None = None  # set for good: the file cannot be used
        # while so, writes do not wait: on a stuck lock each wrong key would, holding up the worker
        self._busy = False
        self._unreadable: set[str] = set()  # addresses whose row did not read, till written afresh
        self._unreadable_logged = False

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            wait = 0.0 if self._busy else BUSY_TIMEOUT_S
            conn = sqlite3.connect(self.path, timeout=wait, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(
                    f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}"
                )  # counts, not records: a power cut may lose some
                # the first release's table: one row per wrong key, capped in all, not per address
                conn.execute("DROP TABLE IF EXISTS failures")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS wrong_keys (client TEXT PRIMARY KEY, seen REAL NOT NULL,"
                    " times TEXT NOT NULL) WITHOUT ROWID"
                )
                conn.execute("CREATE INDEX IF NOT EXISTS wrong_keys_seen ON wrong_keys (seen)")
                opened = os.stat(self.path)
            except (sqlite3.Error, OSError):
                conn.close()
                raise
            self._conn = conn
            self._opened = (opened.st_dev, opened.st_ino)
        return self._conn

    def _unusable(self, exc: Exception) -> MemoryFailures:
        """Where wrong keys go after ``exc``: held for the file while it is busy, else in memory
        for good (with those held so far)."""
        if _busy(exc):
            if not self._busy:
                self._busy = True
                self._wait(0.0)
                log.warning(
                    "the lockout file %s is busy (%s): wrong API keys are held in this worker's "
                    "memory until it can be written",
                    self.path,
                    exc,
                )
            return self._held
        if self._fallback is None:
            log.warning(
                "wrong API keys are counted per worker from now on: the lockout file %s cannot be used: %s",
                self.path,
                exc,
            )
            self._fallback = self._held
        return self._fallback

    def recent(self, client: str, at: float, since: float, keep: int) -> tuple[int, float]:
        if self._fallback is not None:
            return self._fallback.recent(client, at, since, keep)
        held, held_oldest = self._held.recent(client, at, since, keep)
        try:
            row = self._db().execute("SELECT times FROM wrong_keys WHERE client = ?", (client,)).fetchone()
        except (sqlite3.Error, OSError) as exc:
            return self._unusable(exc).recent(client, at, since, keep)
        times = self._times(client, row, at, since, keep)
        if not times:
            return held, held_oldest
        return len(times) + held, (min(times[0], held_oldest) if held else times[0])

    def attempt(self, client: str, at: float, since: float, keep: int) -> tuple[int, float]:
        self._follow_path()
        # a read waits on no write: a locked address is refused without taking the write lock
        found = self.recent(client, at, since, keep)
        if self._fallback is not None:
            return self._fallback.attempt(client, at, since, keep)
        if found[0] >= keep and client not in self._unreadable:
            return found
        new = self._held.held(since)
        try:
            found = self._write(new, client, at, since, keep)
        except (sqlite3.Error, OSError) as exc:
            self._unusable(exc)
            if self._fallback is not None:
                return self._fallback.attempt(client, at, since, keep)
            # busy: held in memory, counted with the file's as read above
            self._held.add(client, at, since, keep)
            self._held_keep[client] = keep
            return found
        self._held.clear()
        self._held_keep.clear()
        if self._busy:
            self._busy = False
            self._wait(BUSY_TIMEOUT_S)
            log.info("the lockout file %s is written again", self.path)
        return found

    def _follow_path(self) -> None:
        """Open the path afresh where it names another file than the one open, or none (deleted
        to clear a lockout, say): this worker kept counting in the deleted file while workers
        started after counted in a new one, each allowing the limit. One stat per wrong key."""
        if self._conn is None:
            return
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != self._opened:
            log.info("the lockout file %s was deleted or replaced: opening it afresh", self.path)
            self.close()

    def _wait(self, seconds: float) -> None:
        """How long the next statements wait for another connection's lock."""
        if self._conn is not None:
            self._conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def _write(
        self, new: dict[str, list[float]], client: str, at: float, since: float, keep: int
    ) -> tuple[int, float]:
        """In one transaction: count ``client``'s wrong keys (the file's and those held in ``new``),
        add one at ``at`` if fewer than ``keep``, and write ``new`` (held wrong keys per address)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT times FROM wrong_keys WHERE client = ?", (client,)).fetchone()
            times = sorted(self._times(client, row, at, since, keep) + new.get(client, []))
            found = (len(times), times[0]) if times else (0, since)
            if len(times) < keep:
                new.setdefault(client, []).append(at)
            elif client in self._unreadable:  # written afresh, as holding the limit now
                new.setdefault(client, [])
            grown = False
            for other, added in new.items():
                kept = keep if other == client else self._held_keep.get(other, keep)
                row = db.execute("SELECT times FROM wrong_keys WHERE client = ?", (other,)).fetchone()
                times = sorted(self._times(other, row, at, since, kept) + added)[-kept:]
                db.execute(
                    "INSERT INTO wrong_keys (client, seen, times) VALUES (?, ?, ?)"
                    " ON CONFLICT (client) DO UPDATE SET seen = excluded.seen, times = excluded.times",
                    (other, times[-1], " ".join(map(repr, times))),
                )
                grown = grown or row is None
            if new:
                db.execute("DELETE FROM wrong_keys WHERE seen <= ?", (since,))
            if grown:  # only a new address can take the file past its bound
                (count,) = db.execute("SELECT COUNT(*) FROM wrong_keys").fetchone()
                if count > MAX_TRACKED:
                    db.execute(
                        "DELETE FROM wrong_keys WHERE client IN"
                        " (SELECT client FROM wrong_keys ORDER BY seen LIMIT ?)",
                        (count - MAX_TRACKED,),
                    )
            db.execute("COMMIT")
            self._unreadable.difference_update(new)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return found

    def _times(
        self, client: str, row: tuple[object] | None, at: float, since: float, keep: int
    ) -> list[float]:
        """``client``'s wrong-key times after ``since`` in ``row``. One that does not read holds
        ``keep`` at ``at``: the address stays locked for the window (strict, as a guesser may have
        spoilt it), never a 500 for its every request, and the next write for it replaces it."""
        times = _parse(row)
        if times is None:
            self._unreadable.add(client)
            if not self._unreadable_logged:
                self._unreadable_logged = True
                log.warning(
                    "the lockout file %s holds an unreadable count for %s: it is locked out for the "
                    "window and its count written afresh with its next wrong key (logged once)",
                    self.path,
                    client,
                )
            return [at] * keep
        return [t for t in times if t > since]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _parse(row: tuple[object] | None) -> list[float] | None:
    """An address's wrong-key times as the file keeps them (space-separated, oldest first); None
    where the cell does not read so (SQLite keeps no checksum of a cell: one flipped byte)."""
    if row is None:
        return []
    try:
        times = [float(t) for t in row[0].split()]  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return None
    return times if all(math.isfinite(t) for t in times) else None


class FailedAttempts:
    """Wrong keys per client (its address; an IPv6 address's /64: :func:`client_key`, and its /48:
    :func:`block_key`, which may send :data:`BLOCK_LIMIT_FACTOR` times the limit) in a sliding
    window of ``window_s``; thread-safe.

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

    def _counters(self, client: str) -> list[tuple[str, int]]:
        """What ``client``'s wrong keys count against, each with its limit: its key, then its /48."""
        counters = [(client_key(client), self.limit)]
        block = block_key(client)
        if block is not None:
            counters.append((block, self.limit * BLOCK_LIMIT_FACTOR))
        return counters

    def check(self, client: str) -> None:
        """Raises TooManyAttemptsError while ``client`` (or its /48) has used up its wrong keys for
        the window (for a right key: it counts nothing, and writes nothing)."""
        if not self.limit:
            return
        counters = self._counters(client)
        with self._lock:
            now = self._clock()
            found = [
                (key, limit, *self._failures.recent(key, now, now - self.window_s, limit))
                for key, limit in counters
            ]
        self._refuse(found, now)

    def failed(self, client: str) -> None:
        """Count one wrong key from ``client`` (against its address or /64, and an IPv6 client's
        /48), or refuse it where either has used up its wrong keys for the window: one step per
        count, so concurrent wrong keys (threads, workers) cannot all pass a count of its limit - 1
        before any of them is counted.

        Raises:
            TooManyAttemptsError: ``client`` or its /48 had used up its wrong keys (this one is not
                counted against the one used up, nor, where that is its /64, against its /48).
        """
        if not self.limit:
            return
        (key, limit), *blocks = self._counters(client)
        with self._lock:
            now = self._clock()
            since = now - self.window_s
            # a /48 used up is refused on a read, before its /64 counts the key: rotating /64s
            # then writes nothing
            found = [(block, most, *self._failures.recent(block, now, since, most)) for block, most in blocks]
            if all(count < most for _, most, count, _ in found):
                found = []
                # the /64 first: one refused for its own limit leaves its /48 (shared, maybe, by
                # a provider's other subscribers) as it was. A /48 used up between the read and
                # its count leaves the /64 one more: a wrong key it did send
                for counted, most in ((key, limit), *blocks):
                    count, oldest = self._failures.attempt(counted, now, since, most)
                    if count >= most:
                        found = [(counted, most, count, oldest)]
                        break
        self._refuse(found, now)

    def _refuse(self, found: list[tuple[str, int, int, float]], now: float) -> None:
        """Raise for the counter of ``found`` (key, limit, count, oldest) held longest, if any is
        at its limit: the wait then frees the client of every one."""
        held = [
            (max(1, math.ceil(oldest + self.window_s - now)), key, count)
            for key, limit, count, oldest in found
            if count >= limit
        ]
        if not held:
            return
        wait, key, count = max(held)
        where = f"this address's /{key.rsplit('/', 1)[1]}" if "/" in key else "this address"
        raise TooManyAttemptsError(
            f"{count} wrong API keys from {where} in the last {self.window_s:g} s; try again in {wait} s",
            retry_after_s=wait,
        )

    def close(self) -> None:
        """Close where the wrong keys are counted, if that is a file."""
        close = getattr(self._failures, "close", None)
        if close is not None:
            close()
