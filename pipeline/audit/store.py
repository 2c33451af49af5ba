"""The tamper-evident audit store: SQLAlchemy 2 on SQLite (default) or PostgreSQL (by URL).

Appends are serialised so that concurrent writers (several scorer processes, a server's threads)
never fork the chain or lose a record:

* SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (the database write lock is taken
  before the head is read) with a busy timeout; the file is switched to WAL so that readers do not
  block the writer. Reads, and opening a store to read it (``create=False``), take no write lock.
* PostgreSQL: the head row is read ``SELECT ... FOR UPDATE``, which queues writers on that row.

Unique constraints on ``seq``, ``prev_hash`` and ``record_hash`` are the backstop; a conflict or a
lock timeout is retried a few times before it becomes an :class:`~datasets.errors.AuditError`. The
wait for a lock is bounded per call, all its tries together (``busy_timeout_s``: SQLite's busy
timeout, PostgreSQL's ``lock_timeout``), so that a writer stuck holding the lock fails the others
with that error instead of holding them for ever. Every SQLAlchemy error is translated to
``AuditError`` naming the URL without its password.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar
from urllib.parse import unquote

from pydantic_core import PydanticSerializationError
from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, select, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import asbool

from datasets.errors import AuditError, ConflictError, DatasetFormatError, InputError, SchemaVersionError
from datasets.json_text import check_writable
from pipeline.audit.chain import GENESIS_HASH, canonical_json, chain_hash, index_columns
from pipeline.audit.chain_file import write_chain_file
from pipeline.audit.export import write_export
from pipeline.audit.hamming_sql import register_sqlite
from pipeline.audit.image_indexes import (
    Picture,
    Sighting,
    add_decision,
    check_bits,
    rebuild,
    sightings,
)
from pipeline.audit.records import AuditRecord, OutcomeRecord, VerifyReport
from pipeline.audit.schema import (
    SCHEMA_VERSION,
    audit_head,
    audit_records,
    image_index,
    image_likeness,
    index_metadata,
    metadata,
    schema_info,
)
from pipeline.audit.verify import verify_chain
from pipeline.verdicts import ShipmentDecision, Tier

__all__ = ["AuditStore", "FirstSent", "ImagesSeenSince", "Lookup", "SentByAnother", "sqlite_file"]

_T = TypeVar("_T")
_WRITE = "clearsight_write"
_WAIT_MS = "clearsight_wait_ms"  # what is left of the call's lock wait, for SQLite's busy timeout
_ATTEMPTS = 8
# The least idle time in a write transaction after which PostgreSQL ends the writer's session (and
# frees the head lock): a pause between two statements (a GC, a busy machine) must not cost it that
_IDLE_FLOOR_S = 10.0
# Arbitrary constant: the advisory lock that serialises schema creation on PostgreSQL.
_PG_CREATE_LOCK = 0x636C656172
_UPGRADABLE = (1, 2, 3)  # the schema versions this one upgrades from (schema.SCHEMA_VERSION)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite audit store URL; None for another backend, memory, or a bad URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None  # _build_engine names the bad URL
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file is not None and asbool(parsed.query.get("uri")) and file.startswith("file:"):
        # sqlite:///file:PATH?mode=ro&uri=true, a read-only copy; SQLite decodes %XX once more
        file = unquote(re.sub(r"^file:(//(localhost)?(?=/))?", "", file).split("?")[0].split("#")[0])
    return None if file in (None, "", ":memory:") else Path(file)


def _refuse_missing_sqlite_file(url: str) -> None:
    file = sqlite_file(url)
    if file is not None and not file.exists():
        raise AuditError(
            f"audit store {url} does not exist: no file {str(file)!r} (decisions are recorded "
            "with --audit-db on clearsight score --policy or clearsight decide)"
        )


def _parsed_url(url: str) -> URL:
    """``url`` parsed, naming a supported backend (nothing is connected to)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise AuditError(
            f"audit store URL {url!r} is not a SQLAlchemy URL "
            "(accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)"
        ) from exc
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        shown = parsed.render_as_string(hide_password=True)
        raise AuditError(
            f"audit store URL {shown}: backend {backend!r} is not supported (accepted: sqlite, postgresql)"
        )
    return parsed


def _wait_ms(seconds: float) -> int:
    """A lock wait in whole milliseconds, at least 1: 0 means "no limit" to PostgreSQL's lock_timeout."""
    return max(1, round(seconds * 1000))


def _build_engine(url: str, busy_timeout_s: float, *, create: bool) -> Engine:
    parsed = _parsed_url(url)
    backend = parsed.get_backend_name()
    shown = parsed.render_as_string(hide_password=True)
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
                wait = options.get(_WAIT_MS, _wait_ms(busy_timeout_s))
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


def _refuse_half_characters(where: str, fields: dict[str, Any]) -> None:
    """Refuse text holding half a character (a lone UTF-16 surrogate: JSON may escape one, and a
    Python string holds it), naming the field. The chain hashes UTF-8, where it would fail as a raw
    UnicodeEncodeError after every check had passed.

    Raises:
        InputError: naming the field and the half character.
    """
    for name, value in fields.items():
        try:
            check_writable(value, f"{where}: {name}")
        except DatasetFormatError as exc:  # the manifests' error; here it is a caller's value
            raise InputError(str(exc)) from exc


def _check_postgres(version: tuple[Any, ...] | None, url: str) -> None:
    """Refuse a PostgreSQL before 14 at open: near-copy lookups count bits with its ``bit_count``,
    and every submission would fail instead."""
    if version is not None and version < (14,):
        shown = ".".join(str(part) for part in version)
        raise AuditError(f"audit store {url}: PostgreSQL {shown} is too old; Clearsight needs 14 or later")


def _read_only(exc: DBAPIError) -> bool:
    """Whether the database refused a write because this role or connection may only read:
    PostgreSQL's insufficient privilege (42501) or read-only transaction (25006, a standby), by code
    and not by its words (a server may speak another language); SQLite's read-only file."""
    code = getattr(exc.orig, "sqlstate", None)
    if code is not None:
        return code in ("42501", "25006")
    return "readonly" in str(exc.orig).lower()


def _retryable(exc: SQLAlchemyError) -> bool:
    """Unique-constraint conflicts, lock timeouts, deadlocks and serialization failures."""
    if isinstance(exc, IntegrityError) or _lock_wait(exc):
        return True
    if isinstance(exc, OperationalError):
        message = str(exc.orig).lower()
        if any(s in message for s in ("deadlock", "could not serialize")):
            return True
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in ("40001", "40P01")


def _lock_wait(exc: SQLAlchemyError) -> bool:
    """A lock another connection held longer than the wait allowed: PostgreSQL's lock_not_available
    (55P03, by code), SQLite's "database is locked" or "busy" (by its words: sqlite3 gives no code)."""
    if isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == "55P03":
        return True
    return isinstance(exc, OperationalError) and any(s in str(exc.orig).lower() for s in ("locked", "busy"))


class AuditStore:
    """Append-only, hash-chained record of shipment decisions and officers' outcomes.

    Open with :meth:`open`; safe to share between threads (each call takes its own connection; an
    in-memory store's calls take turns on its one) and to use from several processes at once.
    """

    def __init__(self, engine: Engine, *, shown_url: str, busy_timeout_s: float = 30.0) -> None:
        self._engine = engine
        self._busy_timeout_s = busy_timeout_s
        # An in-memory store is one connection shared by every thread (StaticPool): their
        # transactions take turns, or one thread's BEGIN, COMMIT or ROLLBACK lands in another's
        # (records reported written, then lost). Other stores give each call its own connection.
        self._turn: AbstractContextManager[Any] = (
            threading.RLock() if isinstance(engine.pool, StaticPool) else nullcontext()
        )
        self._postgres = engine.dialect.name == "postgresql"
        self.url = shown_url
        """The store's URL with any password hidden."""
        self._not_upgraded: str | None = None  # why an older store may be read but not written
        self._no_decisions: str | None = None  # why decisions may not be recorded yet (outcomes may)

    # -- opening -----------------------------------------------------------------------------------

    @staticmethod
    def check_url(url: str) -> None:
        """Refuse, without connecting, a URL that is not one or names an unsupported backend.

        Raises:
            AuditError: as :meth:`open` would for such a URL.
        """
        _parsed_url(url)

    @classmethod
    def open(cls, url: str, *, create: bool = True, busy_timeout_s: float = 30.0) -> AuditStore:
        """Open (and with ``create``, initialise) the store at a SQLAlchemy URL.

        Args:
            create: make the schema where there is none, and upgrade an older one; without it the
                store is opened to read, and takes no write lock to open.
            busy_timeout_s: the longest one call waits for a lock another writer holds, all its
                tries together, before it fails with :class:`AuditError`.

        Raises:
            SchemaVersionError: the database was created by another schema version.
            AuditError: unreachable, unsupported backend, or no schema and ``create=False``.
        """
        if not create:
            _refuse_missing_sqlite_file(url)  # connecting would create an empty file
        engine = _build_engine(url, busy_timeout_s, create=create)
        shown = engine.url.render_as_string(hide_password=True)
        store = cls(engine, shown_url=shown, busy_timeout_s=busy_timeout_s)
        try:
            store._retry("open", lambda conn: store._init_schema(conn, create=create), write=create)
        except BaseException:
            engine.dispose()
            raise
        return store

    def _init_schema(self, conn: Connection, *, create: bool) -> None:
        if self._postgres:
            if create:  # a writer looks pictures up with bit_count; a reader never does
                _check_postgres(conn.dialect.server_version_info, self.url)
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_CREATE_LOCK})
        tables = set(inspect(conn).get_table_names())
        if "schema_info" in tables:
            version = conn.execute(select(schema_info.c.version).where(schema_info.c.id == 1)).scalar()
            if version not in (*_UPGRADABLE, SCHEMA_VERSION):
                raise SchemaVersionError(
                    f"audit store {self.url} has schema version {version}; this Clearsight reads "
                    f"versions {_UPGRADABLE[0]} to {SCHEMA_VERSION} and writes version {SCHEMA_VERSION}"
                )
            needed = {t.name for t in metadata.sorted_tables}
            if version >= 2:
                needed.add(image_index.name)
            if version >= 3:
                needed.add(image_likeness.name)
            missing = sorted(needed - tables)
            if missing:
                raise AuditError(
                    f"audit store {self.url}: schema version {version} but tables {missing} are missing"
                )
            if version == 3 and not create:
                # the tables of 4: read, looked up and given outcomes as it is. Its version moves
                # when a writer opens it, not when a newer `clearsight audit verify` reads it, so
                # that reading locks no older Clearsight out; decisions wait for that upgrade
                self._no_decisions = (
                    f"audit store {self.url} is at schema version 3: decisions of this Clearsight are "
                    f"recorded once a writer has upgraded it to {SCHEMA_VERSION} (open it to record)"
                )
            elif version != SCHEMA_VERSION:
                self._upgrade(conn, version, create=create)
            elif create:
                self._mend_likeness(conn)
            return
        if not create:
            raise AuditError(
                f"audit store {self.url} has no Clearsight schema: it is not an audit store, or nothing "
                "was ever recorded in it"
            )
        metadata.create_all(conn)
        index_metadata.create_all(conn)
        conn.execute(schema_info.insert().values(id=1, version=SCHEMA_VERSION, created_at=_now()))
        conn.execute(audit_head.insert().values(id=1, seq=0, record_hash=GENESIS_HASH))

    @staticmethod
    def _mend_likeness(conn: Connection) -> None:
        """Make the likeness index again where an early version-3 build laid it out otherwise (before
        its ``coarse`` column): it is built from the chain, so nothing is lost."""
        columns = {column["name"] for column in inspect(conn).get_columns(image_likeness.name)}
        if set(image_likeness.columns.keys()) <= columns:
            return
        with conn.begin_nested():
            image_likeness.drop(conn)
            rebuild(conn)

    def _upgrade(self, conn: Connection, version: int, *, create: bool) -> None:
        """Version 1: the image indexes, made from the chain; 2: the likeness index; 3: only the
        version, so that an older Clearsight refuses the decisions this one writes. A role that may
        not create tables (an auditor's, a read-only replica) reads the store as it is, and writing
        to it is refused until it is upgraded; a writer (``create``) is refused at once, not at its
        first record."""
        try:
            with conn.begin_nested():
                if version == 1:
                    rebuild(conn)
                elif version == 2:  # a version-2 decision carries no perceptual hash: nothing to fill
                    image_likeness.create(conn, checkfirst=True)
                else:
                    self._mend_likeness(conn)
                conn.execute(schema_info.update().where(schema_info.c.id == 1).values(version=SCHEMA_VERSION))
        except DBAPIError as exc:
            if not _read_only(exc):
                raise
            self._not_upgraded = (
                f"audit store {self.url} is at schema version {version} and this role may not "
                f"upgrade it to {SCHEMA_VERSION} ({type(exc.orig).__name__}); open it once with a role "
                "that may create tables, then record"
            )
            if create:
                raise SchemaVersionError(self._not_upgraded) from exc

    def close(self) -> None:
        """Release the connection pool."""
        self._engine.dispose()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------

    def _fail(self, what: str, exc: BaseException) -> AuditError:
        detail = getattr(exc, "orig", None) or exc
        return AuditError(f"audit store {self.url}: {what} failed ({type(detail).__name__}: {detail})")

    def _unparsed(self, what: str, exc: BaseException) -> AuditError:
        return AuditError(
            f"audit store {self.url}: {what} failed: a stored record does not parse "
            f"({type(exc).__name__}); run `clearsight audit verify` to find it"
        )

    def _retry(self, what: str, work: Callable[[Connection], _T], *, write: bool = True) -> _T:
        """Run ``work`` in a transaction (``write``: one that takes the write lock first), retrying
        lock timeouts and unique conflicts; the lock waits of all tries together stay within
        ``busy_timeout_s``."""
        deadline = time.monotonic() + self._busy_timeout_s
        for attempt in range(_ATTEMPTS):
            wait = _wait_ms(deadline - time.monotonic())
            try:
                with self._turn, self._engine.connect() as conn:
                    conn.execution_options(**{_WRITE: write, _WAIT_MS: wait})
                    with conn.begin():
                        if self._postgres:
                            self._bound_waits(conn, wait)
                        return work(conn)
            except SQLAlchemyError as exc:
                left = deadline - time.monotonic()
                if attempt == _ATTEMPTS - 1 or not _retryable(exc) or left <= 0:
                    if _lock_wait(exc):
                        raise self._locked(what, exc) from exc
                    raise self._fail(what, exc) from exc
                jitter = random.uniform(0.005, 0.05) * (attempt + 1)  # noqa: S311 - jitter only
                time.sleep(min(jitter, left))
            except (ValueError, KeyError, TypeError) as exc:
                # a write reads stored rows too (the shipment's latest decision, its tier, its first
                # sender): a damaged one is named as the read path names it, not a raw parse error
                raise self._unparsed(what, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _bound_waits(self, conn: Connection, wait_ms: int) -> None:
        """PostgreSQL waits for a row lock without limit by default: the head row held by a writer
        that is stuck (paused, cut off mid-transaction) queued every other writer for ever while
        reads went on. This transaction waits what is left of its call's wait; and if this writer
        sits idle holding the lock for the whole wait (:data:`_IDLE_FLOOR_S` at least), the server
        ends its session and frees the lock."""
        conn.execute(
            text("SELECT set_config('lock_timeout', :wait, true), "
                 "set_config('idle_in_transaction_session_timeout', :idle, true)"),
            {"wait": f"{wait_ms}ms", "idle": f"{_wait_ms(max(self._busy_timeout_s, _IDLE_FLOOR_S))}ms"},
        )  # fmt: skip

    def _locked(self, what: str, exc: SQLAlchemyError) -> AuditError:
        detail = getattr(exc, "orig", None) or exc
        return AuditError(
            f"audit store {self.url}: {what} failed: another writer held the lock for the "
            f"{self._busy_timeout_s:g} s this call may wait ({type(detail).__name__}: {detail})"
        )

    @contextmanager
    def _reading(self, what: str) -> Iterator[Connection]:
        try:
            with self._turn, self._engine.connect() as conn:
                if self._postgres:
                    # One snapshot for multi-query reads (verify, pages with their outcomes).
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise self._fail(what, exc) from exc
        except (ValueError, KeyError, TypeError) as exc:  # stored content that no longer parses
            raise self._unparsed(what, exc) from exc

    def _append(self, conn: Connection, content: dict[str, Any]) -> tuple[int, str, str, str]:
        """Append one record after the locked head; returns (seq, prev_hash, record_hash, created_at)."""
        head = conn.execute(
            select(audit_head.c.seq, audit_head.c.record_hash).where(audit_head.c.id == 1).with_for_update()
        ).one()
        body = canonical_json(content)
        digest = chain_hash(head.record_hash, body)
        seq = head.seq + 1
        conn.execute(
            audit_records.insert().values(
                seq=seq,
                content=body,
                prev_hash=head.record_hash,
                record_hash=digest,
                **index_columns(content),
            )
        )
        updated = conn.execute(
            audit_head.update()
            .where(audit_head.c.id == 1, audit_head.c.seq == head.seq)
            .values(seq=seq, record_hash=digest)
        )
        if updated.rowcount != 1:  # another writer moved the head: abort and retry
            raise IntegrityError("audit_head moved during append", None, Exception("head moved"))
        if content["kind"] == "decision":
            add_decision(conn, content["decision"], content["shipment_id"], seq)
        return seq, head.record_hash, digest, content["created_at"]

    @staticmethod
    def _outcome(row: Any) -> OutcomeRecord:
        content = json.loads(row.content)
        outcome = content["outcome"]
        return OutcomeRecord(
            seq=row.seq,
            record_hash=row.record_hash,
            prev_hash=row.prev_hash,
            created_at=row.created_at,
            shipment_id=row.shipment_id,
            decision_seq=content["decision_seq"],
            found=outcome["found"],
            officer=outcome["officer"],
            notes=outcome["notes"],
        )

    def _records(self, conn: Connection, rows: Sequence[Any]) -> list[AuditRecord]:
        """Decision rows -> records, each with the latest outcome that refers to it."""
        outcomes: dict[int, OutcomeRecord] = {}
        seqs = [r.seq for r in rows]
        if seqs:
            for row in conn.execute(
                select(audit_records)
                .where(audit_records.c.kind == "outcome", audit_records.c.ref_seq.in_(seqs))
                .order_by(audit_records.c.seq)
            ):
                outcomes[row.ref_seq] = self._outcome(row)  # later outcomes correct earlier ones
        records = []
        for row in rows:
            content = json.loads(row.content)
            records.append(
                AuditRecord(
                    seq=row.seq,
                    record_hash=row.record_hash,
                    prev_hash=row.prev_hash,
                    created_at=row.created_at,
                    decision=ShipmentDecision.model_validate(content["decision"]),
                    outcome=outcomes.get(row.seq),
                    idempotency_key=row.idempotency_key,
                )
            )
        return records

    # -- writing -----------------------------------------------------------------------------------

    def record(
        self,
        decision: ShipmentDecision,
        *,
        idempotency_key: str | None = None,
        exclusive: bool = False,
        images_seen_as_of: int | None = None,
        near_copy_bits: int = 0,
        may_send: Callable[[FirstSent], bool] | None = None,
    ) -> AuditRecord:
        """Append a decision. If ``idempotency_key`` was recorded before, return that record instead.

        Args:
            decision: the decision to record.
            idempotency_key: what identifies this submission: recorded once, returned on a retry.
            exclusive: a shipment already decided under another key takes only a stricter
                decision (an alarm raised later, worse pictures), never an equal or milder one; a
                retry (a known key) returns the shipment's latest decision.
                Re-deciding stored verdicts (a new policy) appends a decision that supersedes the
                last; a submitter (the HTTP service) must not be able to replace a hold, or a
                release it did not like the look of, by sending other images.

        A decision that would lower the tier of the shipment's latest one is refused while that
        one has no officer's outcome: a hold is lifted by an officer who inspected the cargo
        (:meth:`record_outcome`), not by deciding again under a laxer policy or on other verdicts.

        With ``may_send``, a shipment already decided is decided again (or read back) only where
        ``may_send`` accepts how its first decision was sent (:class:`FirstSent`): another trader's
        key must not add a hold to it, nor learn how it was decided.

        With ``images_seen_as_of``, the decision's images say where each, or a near-copy of it within
        ``near_copy_bits``, was seen before, as :meth:`sightings` found them up to that sequence
        number (``ImageVerdict.seen_in`` and ``similar_in``). The records written since are checked
        in the write's transaction, so that the same pictures sent under two ids at once cannot both
        pass as new; only those, so that the write lock is held for moments.

        Raises:
            InputError: an empty or over-long idempotency key; half a character (a lone UTF-16
                surrogate) in it or in the decision.
            ConflictError: ``exclusive`` and the shipment was decided under another key at the
                same or a stricter tier; or the decision would lower an unresolved hold.
            SentByAnother: ``may_send`` refused the shipment's first decision's sender.
            ImagesSeenSince: an image that was seen nowhere (or had no near-copy) when looked up
                has been decided in another shipment since: look it up and decide again.
            AuditError: the database cannot be written, or is at an older schema version.
        """
        self._check_writable()
        if self._no_decisions is not None:
            raise AuditError(self._no_decisions)
        check_bits(near_copy_bits)
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 256:
            raise InputError(
                f"idempotency_key of length {len(idempotency_key)} not accepted (1 to 256 characters)"
            )
        _refuse_half_characters(f"shipment {decision.shipment_id!r}", {"idempotency_key": idempotency_key})
        try:
            # Through JSON so that NaN/inf scores of fail-closed images become null, not an error.
            decision_json = json.loads(decision.model_dump_json())
        except PydanticSerializationError as exc:
            # pydantic refuses half a character in a str field, not in a declaration's free extra
            where = f"decision of shipment {decision.shipment_id!r}"
            _refuse_half_characters(where, decision.model_dump())
            raise InputError(f"{where} cannot be written as JSON ({exc})") from exc

        def work(conn: Connection) -> AuditRecord:
            # Lock the head first, so that two writers cannot both judge the shipment's latest
            # decision before either appends (Postgres reads committed rows; SQLite writes alone).
            head = conn.execute(
                select(audit_head.c.seq).where(audit_head.c.id == 1).with_for_update()
            ).scalar_one()
            if may_send is not None:
                first = self._first_sent(conn, decision.shipment_id)
                if first is not None and not may_send(first):
                    raise SentByAnother(decision.shipment_id)
            if idempotency_key is not None:
                existing = conn.execute(
                    select(audit_records).where(audit_records.c.idempotency_key == idempotency_key)
                ).first()
                if existing is not None:
                    if existing.kind != "decision":  # pragma: no cover - outcomes carry no key
                        raise InputError(
                            f"idempotency_key {idempotency_key!r} belongs to a {existing.kind} record"
                        )
                    latest = self._latest_decision(conn, decision.shipment_id)
                    if exclusive:
                        # a retry learns the shipment's decision as it stands: a stricter one may
                        # have been added since (a submitter must not read "released" off a hold)
                        existing = latest or existing
                    elif latest is not None and latest.seq != existing.seq:
                        # a batch run again over earlier inputs (an alarm cleared in the manifest
                        # since, an earlier policy): answered from the record, it read "released"
                        # off a hold recorded since, which only an officer's outcome lifts
                        # judged by the record returned, not the decision computed now (a random
                        # audit under a rotated secret may make that one strict enough to pass)
                        self._refuse_lowering_a_hold(conn, latest, decision.shipment_id, Tier(existing.tier))
                    return self._records(conn, [existing])[0]
            latest = self._latest_decision(conn, decision.shipment_id)
            if exclusive and latest is not None and Tier(latest.tier).severity >= decision.tier.severity:
                raise ConflictError(
                    f"shipment {decision.shipment_id!r} was already decided (audit record {latest.seq}) "
                    "on other images or another declaration; a shipment is decided once, and only "
                    "a stricter decision is added later: send the same images and declaration to "
                    "read that decision back, or have an officer record what inspection found"
                )
            if latest is not None:
                replayed = self._same_decision(conn, latest, decision_json)
                if replayed is not None:
                    return replayed
                self._refuse_lowering_a_hold(conn, latest, decision.shipment_id, decision.tier)
            # nothing written since the lookup, the common case: nothing to check under the lock
            if images_seen_as_of is not None and head > images_seen_as_of:
                since = sightings(
                    conn,
                    [Picture(i.sha256 or "", i.phash, i.phash_turns or ()) for i in decision.images],
                    decision.shipment_id,
                    near_copy_bits=near_copy_bits,
                    after=images_seen_as_of,
                )
                if any(_news(since.get(i.sha256 or ""), i) for i in decision.images):
                    raise ImagesSeenSince(decision.shipment_id)
            content = {
                "kind": "decision",
                "shipment_id": decision.shipment_id,
                "idempotency_key": idempotency_key,
                "created_at": _now(),
                "decision": decision_json,
            }
            seq, prev, digest, created = self._append(conn, content)
            return AuditRecord(
                seq=seq,
                record_hash=digest,
                prev_hash=prev,
                created_at=created,
                decision=ShipmentDecision.model_validate(decision_json),
                idempotency_key=idempotency_key,
            )

        return self._retry(f"recording shipment {decision.shipment_id!r}", work)

    def sightings(
        self,
        images: Sequence[Picture | tuple[str, str | None]],
        *,
        other_than: str,
        near_copy_bits: int,
        most: int = 5,
    ) -> Lookup:
        """Where each image, a :class:`Picture` or (content hash, perceptual hash or None), was
        decided in another shipment: with the same bytes, or as a near-copy (as sent, or mirrored or
        turned where the picture brings those hashes) whose fine hash lies within ``near_copy_bits``
        of 256 (0: the same bytes only). ``found`` is keyed by content hash and
        leaves out images seen nowhere; ``as_of`` is the last record the lookup saw, for
        :meth:`record`'s ``images_seen_as_of``.

        Raises:
            ValueError: ``near_copy_bits`` out of range (:data:`MAX_NEAR_COPY_BITS`).
        """
        check_bits(near_copy_bits)
        if self._not_upgraded is not None:
            return Lookup({}, 0)  # an older store has no index (and takes no decision to check against it)
        with self._reading("looking up images decided before") as conn:
            # the head first: every record up to it is committed, so the lookup after it sees them
            as_of = conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).scalar_one()
            found = sightings(conn, images, other_than, near_copy_bits=near_copy_bits, most=most)
        return Lookup(found, as_of)

    def _check_writable(self) -> None:
        if self._not_upgraded is not None:
            raise SchemaVersionError(self._not_upgraded)

    @staticmethod
    def _first_sent(conn: Connection, shipment_id: str) -> FirstSent | None:
        c = audit_records.c
        first = conn.execute(
            select(c.content)
            .where(c.kind == "decision", c.shipment_id == shipment_id)
            .order_by(c.seq)
            .limit(1)
        ).scalar()
        if first is None:
            return None
        content = json.loads(first)
        decided = content.get("decision") if isinstance(content, dict) else None
        if not isinstance(decided, dict):  # foreign data: nobody's to follow, not a 500
            return FirstSent(None, None, None)
        declared = decided.get("declaration")
        declared = declared if isinstance(declared, dict) else {}

        def text(value: Any) -> str | None:  # stripped as Declaration strips it; odd data as none
            return (value.strip() or None) if isinstance(value, str) else None

        return FirstSent(
            text(decided.get("submitted_by")), text(declared.get("trader_id")), text(declared.get("aeo_tier"))
        )

    def first_sent(self, shipment_id: str) -> FirstSent | None:
        """How ``shipment_id``'s first decision was sent, or None: not decided. Checked before any
        work, and again where :meth:`record` writes (``may_send``)."""
        with self._reading(f"reading shipment {shipment_id!r}") as conn:
            return self._first_sent(conn, shipment_id)

    @staticmethod
    def _latest_decision(conn: Connection, shipment_id: str) -> Any:
        """The row of the shipment's latest decision, or None."""
        c = audit_records.c
        return conn.execute(
            select(audit_records)
            .where(c.kind == "decision", c.shipment_id == shipment_id)
            .order_by(c.seq.desc())
            .limit(1)
        ).first()

    def _same_decision(self, conn: Connection, row: Any, decision_json: dict[str, Any]) -> AuditRecord | None:
        """The shipment's latest decision (``row``) when it is this one but for its time: a replay
        under another key (keys from an earlier version of Clearsight) must not append a duplicate,
        which would also reopen a hold an officer has resolved."""
        latest = self._records(conn, [row])[0]
        mine = {k: v for k, v in decision_json.items() if k != "decided_at"}
        theirs = {k: v for k, v in json.loads(latest.decision.model_dump_json()).items() if k != "decided_at"}
        return latest if mine == theirs else None

    @staticmethod
    def _refuse_lowering_a_hold(conn: Connection, latest: Any, shipment_id: str, tier: Tier) -> None:
        """Refuse a decision at ``tier`` where the shipment's ``latest`` is a stricter, unresolved hold."""
        c = audit_records.c
        if Tier(latest.tier).severity <= tier.severity:
            return
        resolved = conn.execute(
            select(c.seq).where(c.kind == "outcome", c.ref_seq == latest.seq).limit(1)
        ).first()
        if resolved is None:
            raise ConflictError(
                f"shipment {shipment_id!r} is held ({latest.tier}, audit record {latest.seq}) "
                f"and this decision would lower it to {tier.value}: a hold is lifted by an "
                "officer's outcome (clearsight audit outcome, or the review page), not by deciding "
                "again; decide what-if runs without --audit-db"
            )

    def record_outcome(
        self,
        shipment_id: str,
        *,
        found: str | None,
        officer: str,
        notes: str = "",
        decision_seq: int | None = None,
        amend: bool = True,
    ) -> OutcomeRecord:
        """Chain an officer's finding for the shipment's latest decision (``found=None``: clean).

        Args:
            decision_seq: the decision the officer judged; refused if the shipment was decided again.
            amend: whether this may correct an outcome already recorded for that decision. Both are
                checked in the write's transaction, so two officers at once cannot both pass them.

        Raises:
            InputError: no decision recorded for ``shipment_id``, ``decision_seq`` none of its
                decisions, an empty ``officer``/``found``, or half a character (a lone UTF-16
                surrogate) in any of the text.
            ConflictError: ``decision_seq`` is an earlier decision; or it has an outcome and not
                ``amend``.
            AuditError: the database cannot be written.
        """
        if not officer.strip():
            raise InputError("officer is empty; name the officer who inspected the cargo")
        if found is not None and not found.strip():
            raise InputError("found is empty; give the anomaly type found, or None for clean cargo")
        if found is not None and found.strip().lower() in _NOT_ANOMALY_TYPES:
            # read back, "clean" and "good" mean nothing was found: an anomaly type of that name
            # read as clean cargo on one page and as an anomaly in the CSV export
            raise InputError(
                f"found {found!r} names no anomaly type: record clean cargo as clean (the API's found "
                '"clean", the CLI\'s --clean)'
            )
        _refuse_half_characters(
            f"outcome of shipment {shipment_id!r}",
            {"shipment_id": shipment_id, "found": found, "officer": officer, "notes": notes},
        )
        self._check_writable()

        def work(conn: Connection) -> OutcomeRecord:
            conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1).with_for_update()).one()
            decision = self._latest_decision(conn, shipment_id)
            if decision is None:
                raise InputError(f"no decision recorded for shipment {shipment_id!r} in {self.url}")
            if decision_seq is not None and decision_seq != decision.seq:
                c = audit_records.c
                judged = select(c.seq).where(
                    c.seq == decision_seq, c.kind == "decision", c.shipment_id == shipment_id
                )
                if conn.execute(judged).first() is None:
                    raise InputError(
                        f"shipment {shipment_id!r} has no decision {decision_seq}: its latest decision "
                        f"is {decision.seq}; judge that one"
                    )
                raise ConflictError(
                    f"shipment {shipment_id!r} was decided again since decision {decision_seq}: its latest "
                    f"decision is {decision.seq}; judge that one"
                )
            if not amend:
                earlier = self._records(conn, [decision])[0].outcome
                if earlier is not None:
                    raise ConflictError(
                        f"shipment {shipment_id!r} already has an outcome ({earlier.found or 'clean'}, "
                        f"recorded by {earlier.officer}); send amend: true to record a correction"
                    )
            content = {
                "kind": "outcome",
                "shipment_id": shipment_id,
                "idempotency_key": None,
                "created_at": _now(),
                "decision_seq": decision.seq,
                "decision_hash": decision.record_hash,
                "outcome": {"found": found, "officer": officer, "notes": notes},
            }
            seq, prev, digest, created = self._append(conn, content)
            return OutcomeRecord(
                seq=seq,
                record_hash=digest,
                prev_hash=prev,
                created_at=created,
                shipment_id=shipment_id,
                decision_seq=decision.seq,
                found=found,
                officer=officer,
                notes=notes,
            )

        return self._retry(f"recording the outcome of shipment {shipment_id!r}", work)

    # -- reading -----------------------------------------------------------------------------------

    def get(self, shipment_id: str) -> AuditRecord | None:
        """The latest decision recorded for ``shipment_id`` (with its outcome), or None."""
        with self._reading(f"reading shipment {shipment_id!r}") as conn:
            row = self._latest_decision(conn, shipment_id)
            return self._records(conn, [row])[0] if row is not None else None

    def decisions_of(self, shipment_ids: Sequence[str]) -> list[AuditRecord]:
        """Every decision recorded for these shipments, superseded ones too, oldest first, in one
        read (the review page's near-copies may lie in a decision since replaced)."""
        wanted = sorted(set(shipment_ids))
        if not wanted:
            return []
        c = audit_records.c
        with self._reading("reading the decisions of shipments") as conn:
            rows = conn.execute(
                select(audit_records).where(c.kind == "decision", c.shipment_id.in_(wanted)).order_by(c.seq)
            ).all()
            return self._records(conn, rows)

    def list(
        self,
        *,
        tiers: Sequence[Tier] | None = None,
        limit: int = 100,
        offset: int = 0,
        pending_outcome: bool | None = None,
    ) -> list[AuditRecord]:
        """Latest decision per shipment, newest first: the officers' review queue.

        Args:
            tiers: keep only these tiers (None: all).
            limit: page size, 1 to 10000.
            offset: records to skip, >= 0.
            pending_outcome: True: only those without an outcome yet; False: only those with one.
        """
        if not 1 <= limit <= 10_000 or offset < 0:
            raise InputError(f"limit={limit}, offset={offset} not accepted (limit 1 to 10000, offset >= 0)")
        c = audit_records.c
        latest = select(func.max(c.seq)).where(c.kind == "decision").group_by(c.shipment_id)
        query = select(audit_records).where(c.kind == "decision", c.seq.in_(latest))
        if tiers is not None:
            query = query.where(c.tier.in_([Tier(t).value for t in tiers]))
        if pending_outcome is not None:
            closed = select(c.ref_seq).where(c.kind == "outcome", c.ref_seq.is_not(None))
            query = query.where(c.seq.not_in(closed) if pending_outcome else c.seq.in_(closed))
        query = query.order_by(c.seq.desc()).limit(limit).offset(offset)
        with self._reading("listing decisions") as conn:
            return self._records(conn, conn.execute(query).all())

    @staticmethod
    def _rows_after(conn: Connection, after: int, page: int, *where: Any) -> list[Any]:
        return list(
            conn.execute(
                select(audit_records)
                .where(audit_records.c.seq > after, *where)
                .order_by(audit_records.c.seq)
                .limit(page)
            ).all()
        )

    def iter_records(self, *, page: int = 500) -> Iterator[AuditRecord]:
        """Every decision record (superseded ones included) in chain order, a page at a time."""
        after = 0
        while True:
            with self._reading("reading decisions") as conn:
                rows = self._rows_after(conn, after, page, audit_records.c.kind == "decision")
                records = self._records(conn, rows)
            yield from records
            if len(rows) < page:
                return
            after = rows[-1].seq

    def iter_chain(self, *, page: int = 500, upto: int | None = None) -> Iterator[Any]:
        """Every record, decisions and outcomes, in chain order (rows with ``seq``, ``prev_hash``,
        ``record_hash`` and ``content``, the hashed text), a page at a time; with ``upto``, those
        numbered up to it."""
        where = () if upto is None else (audit_records.c.seq <= upto,)
        after = 0
        while True:
            with self._reading("reading the chain") as conn:
                rows = self._rows_after(conn, after, page, *where)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].seq

    def export_chain(self, path: str | Path) -> int:
        """Write the whole chain, up to the head read first, to a file that
        :func:`~pipeline.audit.chain_file.verify_chain_file` checks without the database; returns
        the number of records. Records appended meanwhile are left for the next export.

        Raises:
            AuditError: the chain does not reach its head (records deleted from its end, or the last
                one altered), or goes past it: nothing is written, as ``clearsight audit verify``
                names what happened.
            InputError: the file cannot be written.
        """
        with self._reading("reading the chain head") as conn:
            head = conn.execute(
                select(audit_head.c.seq, audit_head.c.record_hash).where(audit_head.c.id == 1)
            ).first()
            # in the head's snapshot: a record past it was not appended by the store (later
            # appends are not in the snapshot), and an export up to the head would leave it out
            last = conn.execute(select(func.max(audit_records.c.seq))).scalar()
        if head is None:
            raise AuditError(
                f"audit store {self.url}: the chain head row is missing; run `clearsight audit verify`"
            )
        if last is not None and last > head.seq:
            raise AuditError(
                f"audit store {self.url}: record {last} lies past the chain head (record {head.seq}); "
                "nothing exported (`clearsight audit verify` names what happened)"
            )
        rows = self._reaching(self.iter_chain(upto=head.seq), head.seq, head.record_hash)
        return write_chain_file(rows, Path(path), head=(head.seq, head.record_hash))

    def _reaching(self, rows: Iterator[Any], head_seq: int, head_hash: str) -> Iterator[Any]:
        """``rows``, then an error if they did not end at the head: a copy of a chain whose tail was
        deleted is itself a valid chain, and would pass for the whole one."""
        last_seq, last_hash = 0, GENESIS_HASH
        for row in rows:
            yield row
            last_seq, last_hash = row.seq, row.record_hash
        if last_seq < head_seq:
            raise AuditError(
                f"audit store {self.url}: the chain ends at record {last_seq} but its head says "
                f"{head_seq}: records after {last_seq} are missing; nothing exported (`clearsight "
                "audit verify` names what happened)"
            )
        if last_hash != head_hash:
            raise AuditError(
                f"audit store {self.url}: record {head_seq} does not have the hash its head holds; "
                "nothing exported (`clearsight audit verify` names what happened)"
            )

    def verify(self) -> VerifyReport:
        """Re-compute the whole chain; see :mod:`pipeline.audit.verify`."""
        with self._reading("verifying the chain") as conn:
            return verify_chain(conn)

    def replayed(self, idempotency_key: str, shipment_id: str) -> AuditRecord | None:
        """The shipment's latest decision when ``idempotency_key`` was recorded before (a retry),
        else None: lets a caller answer a retry without redoing the work behind it."""
        c = audit_records.c
        with self._reading(f"reading shipment {shipment_id!r}") as conn:
            if conn.execute(select(c.seq).where(c.idempotency_key == idempotency_key)).first() is None:
                return None
            row = self._latest_decision(conn, shipment_id)
            return self._records(conn, [row])[0] if row is not None else None

    def hash_at(self, seq: int) -> str | None:
        """The record hash of record ``seq``, or None when there is no such record."""
        with self._reading(f"reading record {seq}") as conn:
            return conn.execute(
                select(audit_records.c.record_hash).where(audit_records.c.seq == seq)
            ).scalar()

    def export(self, path: str | Path, *, fmt: Literal["csv", "jsonl"] | None = None) -> int:
        """Write every decision with its latest outcome to CSV or JSONL; returns the number of rows.

        ``fmt`` defaults to the file's suffix. See :func:`pipeline.audit.export.write_export`.
        """
        return write_export(self.iter_records(), Path(path), fmt=fmt)

    def ping(self, *, write_wait_s: float | None = None) -> None:
        """Raise :class:`AuditError` if the database cannot be reached (readiness probe); with
        ``write_wait_s``, also if the write lock cannot be had within that many seconds.

        A writer stuck holding the lock (paused, cut off mid-transaction) fails every write after
        ``busy_timeout_s`` while reads go on: a probe that only read said ready, and the load
        balancer kept sending submissions that all failed. The write probe takes the lock and lets
        it go at once (writes hold it for milliseconds), recording nothing.
        """
        with self._reading("ping") as conn:
            conn.execute(select(1))
        if write_wait_s is None:
            return
        wait = _wait_ms(write_wait_s)
        try:
            with self._turn, self._engine.connect() as conn:
                conn.execution_options(**{_WRITE: True, _WAIT_MS: wait})
                with conn.begin() as transaction:
                    if self._postgres:
                        self._bound_waits(conn, wait)
                    # a write that changes nothing, rolled back: a read-only database (a file opened
                    # mode=ro, a standby) refuses it, where a locking read passed on SQLite
                    head = update(audit_head).where(audit_head.c.id == 1).values(seq=audit_head.c.seq)
                    touched = conn.execute(head).rowcount
                    transaction.rollback()
        except SQLAlchemyError as exc:
            if _lock_wait(exc):
                raise AuditError(
                    f"audit store {self.url}: writes are blocked: another writer held the lock for the "
                    f"{write_wait_s:g} s the probe waited"
                ) from exc
            raise self._fail("ping", exc) from exc
        if touched != 1:  # every append reads the head row: without it none goes through
            raise AuditError(
                f"audit store {self.url}: its chain head is missing; run `clearsight audit verify`"
            )


_NOT_ANOMALY_TYPES = frozenset({"clean", "good", "none"})
"""Words an outcome's ``found`` may not be: each reads as "nothing found"."""


def _news(since: Sighting | None, image: Any) -> bool:
    """Whether records written since the lookup would fire a rule the image's verdict did not: the
    same bytes where none were seen, a near-copy where none was (more names change no decision)."""
    if since is None:
        return False
    return bool(since.seen_in and not image.seen_in) or bool(since.similar_in and not image.similar_in)


class Lookup(NamedTuple):
    """What :meth:`AuditStore.sightings` found, and the last record it saw."""

    found: dict[str, Sighting]
    as_of: int


class FirstSent(NamedTuple):
    """How a shipment's first decision was sent: by whom (``submitted_by``: a key's name, None for a
    batch), for which trader, and under which AEO tier (a submitter's declared trader gets its tier
    only where the register lists the submitter's key for it)."""

    submitted_by: str | None
    trader_id: str | None
    aeo_tier: str | None


class SentByAnother(ConflictError):
    """A shipment first sent under another key, whose sender may not send it again (``may_send``)."""

    def __init__(self, shipment_id: str) -> None:
        # no tier, no record number: the other sender's decision is none of this caller's business
        super().__init__(
            f"shipment {shipment_id!r} was first sent under another key; only that key, or another key "
            "of the same trader, may send it again (an admin may record a stricter decision)"
        )


class ImagesSeenSince(ConflictError):
    """A decision's pictures, or near-copies, were decided in another shipment after they were looked
    up (two submissions of the same pictures at once): look them up and decide again."""

    def __init__(self, shipment_id: str) -> None:
        super().__init__(
            f"shipment {shipment_id!r}: its pictures were decided in another shipment since they were "
            "looked up; decide it again"
        )
