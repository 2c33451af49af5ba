"""The audit store's database: its URL, its engine on SQLite or PostgreSQL, and the transactions
every call of the store runs in (:class:`Database`).

Writers take the write lock before they read the chain's head, and wait for it a bounded time:

* SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (the database write lock is taken
  before the head is read) with a busy timeout; the file is switched to WAL so that readers do not
  block the writer. Reads, and opening a store to read it (``create=False``), take no write lock.
* PostgreSQL: each write transaction bounds its lock waits (``lock_timeout``); the head row is then
  read ``SELECT ... FOR UPDATE`` (:mod:`pipeline.audit.writing`), which queues writers on that row.

A unique conflict or a lock timeout is retried a few times before it becomes an
:class:`~datasets.errors.AuditError`. The wait for a lock is bounded per call, all its tries
together (``busy_timeout_s``: SQLite's busy timeout, PostgreSQL's ``lock_timeout``), so that a
writer stuck holding the lock fails the others with that error instead of holding them for ever.
Every SQLAlchemy error is translated to ``AuditError`` naming the URL without its password.
"""

from __future__ import annotations

import itertools
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlencode

from sqlalchemy import Connection, Engine, RootTransaction, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import asbool

from datasets.errors import AuditError
from pipeline.audit.hamming_sql import register_sqlite

__all__ = [
    "SERVER_OPTION",
    "Database",
    "build_engine",
    "lock_wait",
    "parsed_url",
    "read_only",
    "refuse_missing_sqlite_file",
    "shown_store_url",
    "shown_url",
    "sqlite_file",
    "wait_ms",
]

_T = TypeVar("_T")
_WRITE = "clearsight_write"
_WAIT_MS = "clearsight_wait_ms"  # what is left of the call's lock wait, for SQLite's busy timeout
_ATTEMPTS = 8
# The least idle time in a write transaction after which PostgreSQL ends the writer's session (and
# frees the head lock): a pause between two statements (a GC, a busy machine) must not cost it that
_IDLE_FLOOR_S = 10.0


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite audit store URL; None for another backend, memory, or a bad URL."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None  # build_engine names the bad URL
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file is not None and asbool(parsed.query.get("uri")) and file.startswith("file:"):
        # sqlite:///file:PATH?mode=ro&uri=true, a read-only copy; SQLite decodes %XX once more
        file = unquote(re.sub(r"^file:(//(localhost)?(?=/))?", "", file).split("?")[0].split("#")[0])
    return None if file in (None, "", ":memory:") else Path(file)


def refuse_missing_sqlite_file(url: str) -> None:
    """Refuse to open a SQLite file that is not there to read (connecting would create it empty).

    Raises:
        AuditError: naming the missing file.
    """
    file = sqlite_file(url)
    if file is not None and not file.exists():
        raise AuditError(
            f"audit store {_shown_text(url)} does not exist: no file {str(file)!r} (decisions are "
            "recorded with --audit-db on clearsight score --policy or clearsight decide)"
        )


SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})
"""The connection parameters of libpq that hold a secret: the user's password and the passphrase of
the client's SSL key. A URL may give them in its query (``?password=...``), which libpq reads as it
reads ``user:password@``."""

_SECRET_WORDS = re.compile(r"pass(word|wd|phrase)|pwd|secret|token", re.IGNORECASE)
"""Any other query key naming a secret, whichever driver reads it, is hidden too."""


def _secret_key(key: str) -> bool:
    return key.lower() in SECRET_QUERY_KEYS or _SECRET_WORDS.search(key) is not None


def _hidden_query(text: str) -> str:
    """``text`` with the value of each ``KEY=VALUE`` naming a secret hidden, a pair starting at a
    "?", "&", ";" or "#": a "#" typed for "?" (``h/db#password=pw``) is no query to SQLAlchemy,
    which reads it as part of the database's name, or of the value before it (``?x=1#password=pw``).
    A value runs past a "#" (a password may hold one); one not a secret's is searched again."""
    return re.sub(
        r"([?&;#]([^=&;]*)=)([^&;]*)",
        # pass%77ord is password
        lambda m: m[1] + ("***" if _secret_key(unquote(m[2])) else _hidden_query(m[3])),
        text,
    )


def shown_url(url: URL) -> str:
    """``url`` as messages, logs and reports write it: the password hidden (``***``), in the user
    part and in the query. ``render_as_string(hide_password=True)`` hides only the first:
    ``postgresql+psycopg://postgres@host/db?password=hunter2`` was written whole into the field
    report, and into every error naming the store."""
    # URL.set(database=None) keeps the database: the URL made again without it, nor its query
    base = URL.create(url.drivername, url.username, url.password, url.host, url.port)
    base = base.render_as_string(hide_password=True)
    if url.database is not None:  # quoted as render_as_string quotes it, the "***" left as it is
        base += "/" + quote(_hidden_query(url.database), safe=" +/*")
    pairs = [  # the keys sorted, as render_as_string writes them
        (key, "***" if _secret_key(key) else _hidden_query(value))
        for key, values in sorted(url.query.items())
        for value in ((values,) if isinstance(values, str) else values)
    ]
    return f"{base}?{urlencode(pairs, safe='*')}" if pairs else base


def shown_store_url(url: str, parsed: URL) -> str:
    """The store at ``url`` (parsed as ``parsed``) as messages, logs and reports name it, its secrets
    hidden: a SQLite store as typed (:func:`_shown_text`), since rendering %-quotes a file's name
    ("store@2026.db" written "store%402026.db", not the file the user has); any other as
    :func:`shown_url` renders it."""
    return _shown_text(url) if parsed.get_backend_name() == "sqlite" else shown_url(parsed)


def _shown_text(url: str) -> str:
    """A URL as given, its secrets hidden as :func:`shown_url` hides them (the user part's password,
    and the value of a query key naming a secret), for one that does not parse or whose path is
    best named as typed: rendering writes a SQLite file's name %-quoted."""
    # the query's secrets first: "?password=Tr0ub@4dor" read below as a user part ending at its "@"
    hidden = _hidden_query(url)
    # the user part's password runs to the LAST "@": a password holding "/" or "@" unencoded
    # ("Tr0ub/4dor", "Tr0ub@4dor") ended the pattern early and was shown from there
    # and in a URL mistyped: "//" without the scheme's colon, one slash or three, or no scheme at all
    if re.match(r"sqlite[^:/]*:///", hidden, re.IGNORECASE):  # no user part ("file:a@b.db" is a name);
        return hidden  # SQLCipher's passphrase stands in one: sqlite+pysqlcipher://:PHRASE@/FILE
    # ... whose host is empty: the user part ends at the "@" before the file's "/", the last such (a
    # passphrase may hold "@/"); the greedy ".*@" below ran on into an "@" of the file's name
    shown, found = re.subn(r"^(sqlite[^:/]*://[^/?#:]*:).*@(?=/)", r"\1***@", hidden, flags=re.IGNORECASE)
    if found:
        return shown
    # the user name may hold an "@" itself (u@corp, as some hosted servers name users). With no scheme,
    # the user part is whatever stands before the first ":" not followed by "//": a user name with an
    # "@" (u@corp:pw@h), none at all (:pw@h) or a password starting with "/" (u:/pw@h) were shown whole
    for user_part in (r"[^/?#]*//[^/?#:]*:", r"[^:/?#]+:/+[^/?#:]*:", r"[^:/?#]*:(?!//)"):
        shown, found = re.subn(rf"^({user_part}).*@", r"\1***@", hidden)
        if found:
            return shown
    return hidden


_PORT_NO_NUMBER = re.compile(r"^([^:/?#]*://(?:\[[^\]/?#]*\]|[^/?#:\[]*):)(?![0-9]*(?:[/?#]|$))[^/?#]*")
"""The "port" of a URL with no "@" where it is no number: a password, its "@host" left off."""


def _refused_text(url: str) -> str:
    """A URL refused before it could be read, as its error names it: nothing of it up to its last
    "@" but a scheme or user name at its start (``postgresql+psycopg://***@h/db``, ``u:***@h/db``),
    and its query's secrets hidden. Where the parser failed, nothing tells the user part from the
    rest, and each pattern :func:`_shown_text` guessed it by was broken in turn by a user name or
    password of another shape (``u/x:pw@h``, a newline): the password stands before that "@".
    Without an "@", a port that is no number is hidden (``postgresql://user:pw``, its "@host" left
    off), and with no scheme either, whatever follows the first ":" (``user:pw``)."""
    head, at, tail = _hidden_query(url).rpartition("@")
    if not at:  # no user part; but "user:password" with its "@host" left off reads as host and port
        if "://" in tail:
            return _PORT_NO_NUMBER.sub(r"\1***", tail)
        return re.sub(r"^([^:/?#]*:).+", r"\1***", tail, flags=re.DOTALL)
    start = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:/*", head)
    return f"{start[0] if start else ''}***@{tail}"


SERVER_OPTION = "--audit-db or CLEARSIGHT_AUDIT_DB"
"""Where the server (``clearsight serve``) takes its store's URL from: what a bad URL's error names
unless the caller names its own option (``audit verify --db``, ``decide --audit-db``)."""


def parsed_url(url: str, *, option: str = SERVER_OPTION) -> URL:
    """``url`` parsed, naming a supported backend (nothing is connected to); ``option`` is where the
    caller took it from, which a refusal names.

    Raises:
        AuditError: not a SQLAlchemy URL, or a backend other than SQLite and PostgreSQL.
    """
    # the command's own option: "--audit-db" named from `audit verify`, which takes --db and has none
    accepted = f"{option}; accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        why = " (its port is not a number)" if isinstance(exc, ValueError) else ""
        raise AuditError(
            f"audit store URL {_refused_text(url)!r} is not a SQLAlchemy URL{why} ({accepted})"
        ) from None  # the parser's own words repeat the URL, password and all (shown under --debug)
    # SQLAlchemy ends the user part at an "@" wherever it stands: one in a password in the query
    # (?password=Tr0ub@4dor) made "4dor" the host, which was looked up and named in the driver's error
    query = re.split(r"[?#]", url, maxsplit=1)[1:]  # the text from the first "?" or "#" on
    # a PostgreSQL database named with an "@": a user part after a third slash (postgresql:///u:pw@h/db),
    # sent to the server as the database's name, which its error repeated, password and all
    misplaced = parsed.get_backend_name() == "postgresql" and "@" in (parsed.database or "")
    if "@" in (parsed.host or "") or "@" in "".join(query) or misplaced:
        raise AuditError(
            f"audit store URL {_refused_text(url)!r}: an '@' not written as %40 moves where its user part "
            f"ends (a password's '@', in the user part or the query, which would reach the driver as part "
            f"of the host's name; write '@', '?' and '#' in a password or a query value as %40, %3F and "
            f"%23) ({accepted})"
        )
    # a "#" typed for "?" (h/db#password=pw): the rest is the database's name to SQLAlchemy, which
    # the server's "database does not exist" repeated, password and all ("%23" is a name's own "#")
    if parsed.get_backend_name() == "postgresql" and "#" in url.split("?", 1)[0]:
        raise AuditError(
            f"audit store URL {_refused_text(url)!r}: a '#' would be read as part of the database's name "
            f"(start a query with '?'; write a '#' in a name as %23) ({accepted})"
        )
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        # the user part of an unsupported scheme may be a password mistyped ("u://pw@h": "pw" the user)
        shown = _refused_text(url)
        raise AuditError(
            f"audit store URL {shown}: backend {backend!r} is not supported (accepted: sqlite, postgresql)"
        )
    return parsed


def wait_ms(seconds: float) -> int:
    """A lock wait in whole milliseconds, at least 1: 0 means "no limit" to PostgreSQL's lock_timeout."""
    return max(1, round(seconds * 1000))


def build_engine(url: str, busy_timeout_s: float, *, create: bool, option: str = SERVER_OPTION) -> Engine:
    """The engine of the store at ``url`` (given by ``option``, which a bad URL's error names): on
    SQLite, each connection's transactions begun as :class:`Database` asks, and with ``create`` the
    file switched to WAL.

    Raises:
        AuditError: a bad or unsupported URL, or the database cannot be reached or opened.
    """
    parsed = parsed_url(url, option=option)
    backend = parsed.get_backend_name()
    shown = shown_store_url(url, parsed)
    try:
        if backend == "sqlite":
            memory = parsed.database in (None, "", ":memory:")
            engine = create_engine(
                parsed,
                connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
                # One shared connection, or each connection would see its own empty in-memory database.
                **({"poolclass": StaticPool} if memory else {}),
            )

            @event.listens_for(engine, "connect")
            def _connect(dbapi_connection: Any, _record: Any) -> None:
                # Take transaction control from the sqlite3 module so "begin" below decides the mode.
                dbapi_connection.isolation_level = None
                register_sqlite(dbapi_connection)

            @event.listens_for(engine, "begin")
            def _begin(conn: Connection) -> None:
                options = conn.get_execution_options()
                # a write waits what is left of its call's wait, not a fresh one per try; a read,
                # on the same pooled connection afterwards, the whole again
                wait = options.get(_WAIT_MS, wait_ms(busy_timeout_s))
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(wait)}")
                conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(_WRITE, False) else "BEGIN")

            if create and not memory:  # a reader leaves the file as it is
                _use_wal(engine, busy_timeout_s, shown)
            return engine
        return create_engine(parsed, pool_pre_ping=True)  # postgresql
    except AuditError:
        raise
    except (SQLAlchemyError, ImportError) as exc:
        raise AuditError(f"audit store {shown}: cannot connect ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # sqlite3.OperationalError from the raw PRAGMA connection
        raise AuditError(f"audit store {shown}: cannot open ({type(exc).__name__}: {exc})") from exc


def _use_wal(engine: Engine, busy_timeout_s: float, shown: str) -> None:
    """Switch the SQLite file to WAL, which persists in it: readers stop blocking the single writer.

    SQLite answers the switch "database is locked" at once, without its busy timeout, while another
    connection holds a lock on the file: a second process opening a new store at the same moment,
    or one opening it while another writes. Retried, like a write, for up to ``busy_timeout_s``.

    Raises:
        AuditError: the file stayed locked that long.
    """
    deadline = time.monotonic() + busy_timeout_s
    for attempt in itertools.count(1):
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    cursor.execute("PRAGMA journal_mode=WAL")
                return
            finally:
                cursor.close()
        except sqlite3.OperationalError as exc:
            left = deadline - time.monotonic()
            if not any(s in str(exc).lower() for s in ("locked", "busy")):
                raise
            if left <= 0:
                raise AuditError(
                    f"audit store {shown}: open failed: another writer held the lock for the "
                    f"{busy_timeout_s:g} s this call may wait (OperationalError: {exc})"
                ) from exc
        finally:
            raw.close()
        jitter = random.uniform(0.005, 0.05) * min(attempt, 10)  # noqa: S311 - jitter only
        time.sleep(min(jitter, left))


def read_only(exc: DBAPIError) -> bool:
    """Whether the database refused a write because this role or connection may only read:
    PostgreSQL's insufficient privilege (42501) or read-only transaction (25006, a standby), by code
    and not by its words (a server may speak another language); SQLite's read-only file."""
    code = getattr(exc.orig, "sqlstate", None)
    if code is not None:
        return code in ("42501", "25006")
    return "readonly" in str(exc.orig).lower()


def _retryable(exc: SQLAlchemyError) -> bool:
    """Unique-constraint conflicts, lock timeouts, deadlocks and serialization failures."""
    if isinstance(exc, IntegrityError) or lock_wait(exc):
        return True
    if isinstance(exc, OperationalError):
        message = str(exc.orig).lower()
        if any(s in message for s in ("deadlock", "could not serialize")):
            return True
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in ("40001", "40P01")


def lock_wait(exc: SQLAlchemyError) -> bool:
    """A lock another connection held longer than the wait allowed: PostgreSQL's lock_not_available
    (55P03, by code), SQLite's "database is locked" or "busy" (by its words: sqlite3 gives no code)."""
    if isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == "55P03":
        return True
    return isinstance(exc, OperationalError) and any(s in str(exc.orig).lower() for s in ("locked", "busy"))


class Database:
    """An audit store's engine and the transactions its calls run in: :meth:`retry` for a write
    (or a read that must see a settled store), :meth:`reading` for a read.

    Safe to share between threads: each call takes its own connection; an in-memory store's calls
    take turns on its one.
    """

    def __init__(self, engine: Engine, *, shown_url: str, busy_timeout_s: float) -> None:
        self.engine = engine
        self.busy_timeout_s = busy_timeout_s
        # An in-memory store is one connection shared by every thread (StaticPool): their
        # transactions take turns, or one thread's BEGIN, COMMIT or ROLLBACK lands in another's
        # (records reported written, then lost). Other stores give each call its own connection.
        self._turn: AbstractContextManager[Any] = (
            threading.RLock() if isinstance(engine.pool, StaticPool) else nullcontext()
        )
        self.postgres = engine.dialect.name == "postgresql"
        self.url = shown_url
        """The store's URL with any password hidden."""

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def fail(self, what: str, exc: BaseException) -> AuditError:
        """``what`` failed with ``exc``, as an :class:`AuditError` naming the store."""
        detail = getattr(exc, "orig", None) or exc
        return AuditError(f"audit store {self.url}: {what} failed ({type(detail).__name__}: {detail})")

    def _unparsed(self, what: str, exc: BaseException, *, hint: bool = True) -> AuditError:
        # verify names the record itself: it must never send the user to verify
        find = "; run `clearsight audit verify` to find it" if hint else f": {exc}"
        said = f"a stored record does not parse ({type(exc).__name__}){find}"
        return AuditError(f"audit store {self.url}: {what} failed: {said}")

    def retry(
        self, what: str, work: Callable[[Connection], _T], *, write: bool = True, snapshot: bool = False
    ) -> _T:
        """Run ``work`` in a transaction (``write``: one that takes the write lock first; ``snapshot``:
        on PostgreSQL one snapshot, REPEATABLE READ, so that a row another transaction changed
        meanwhile fails the write instead of being written over), retrying lock timeouts, unique
        conflicts and serialization failures; the lock waits of all tries together stay within
        ``busy_timeout_s``."""
        deadline = time.monotonic() + self.busy_timeout_s
        for attempt in range(_ATTEMPTS):
            wait = wait_ms(deadline - time.monotonic())
            try:
                with self.transaction(wait, write=write, snapshot=snapshot) as (conn, _):
                    return work(conn)
            except SQLAlchemyError as exc:
                left = deadline - time.monotonic()
                if attempt == _ATTEMPTS - 1 or not _retryable(exc) or left <= 0:
                    if lock_wait(exc):
                        raise self._locked(what, exc) from exc
                    raise self.fail(what, exc) from exc
                jitter = random.uniform(0.005, 0.05) * (attempt + 1)  # noqa: S311 - jitter only
                time.sleep(min(jitter, left))
            except (ValueError, KeyError, TypeError) as exc:
                # a write reads stored rows too (the shipment's latest decision, its tier, its first
                # sender): a damaged one is named as the read path names it, not a raw parse error
                raise self._unparsed(what, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def transaction(
        self, wait: int, *, write: bool, snapshot: bool = False
    ) -> Iterator[tuple[Connection, RootTransaction]]:
        """One transaction (``write``: one that takes the write lock first; ``snapshot``: REPEATABLE
        READ on PostgreSQL) whose lock waits last at most ``wait`` milliseconds; SQLAlchemy's errors
        are the caller's to translate."""
        with self._turn, self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: write, _WAIT_MS: wait})
            if snapshot and self.postgres:
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin() as transaction:
                if self.postgres:
                    self._bound_waits(conn, wait)
                yield conn, transaction

    def _bound_waits(self, conn: Connection, wait: int) -> None:
        """PostgreSQL waits for a row lock without limit by default: the head row held by a writer
        that is stuck (paused, cut off mid-transaction) queued every other writer for ever while
        reads went on. This transaction waits what is left of its call's wait; and if this writer
        sits idle holding the lock for the whole wait (:data:`_IDLE_FLOOR_S` at least), the server
        ends its session and frees the lock."""
        # SET LOCAL, not SELECT set_config(): a SELECT would take a REPEATABLE READ transaction's
        # snapshot before its first lock (sealing failed as a serialization failure under appends).
        # Both are integers this module computed, never text from outside.
        idle = wait_ms(max(self.busy_timeout_s, _IDLE_FLOOR_S))
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(wait)}")
        conn.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = {int(idle)}")

    def _locked(self, what: str, exc: SQLAlchemyError) -> AuditError:
        detail = getattr(exc, "orig", None) or exc
        return AuditError(
            f"audit store {self.url}: {what} failed: another writer held the lock for the "
            f"{self.busy_timeout_s:g} s this call may wait ({type(detail).__name__}: {detail})"
        )

    @contextmanager
    def reading(self, what: str, *, verifying: bool = False) -> Iterator[Connection]:
        """A read-only transaction, on PostgreSQL one snapshot; its errors as :class:`AuditError`
        (``verifying``: the read is verification's, which names a damaged record itself)."""
        try:
            with self._turn, self.engine.connect() as conn:
                if self.postgres:
                    # One snapshot for multi-query reads (verify, pages with their outcomes).
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise self.fail(what, exc) from exc
        except (ValueError, KeyError, TypeError) as exc:  # stored content that no longer parses
            raise self._unparsed(what, exc, hint=not verifying) from exc
