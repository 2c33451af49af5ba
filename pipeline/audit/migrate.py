"""Making an audit store's schema, and upgrading an older one, as the store is opened (:class:`Schema`).

A store without a schema is given one by a writer (``create``); a store at an older version
(:data:`~pipeline.audit.schema.SCHEMA_VERSION`) is upgraded when a writer opens it, by a role that
may create tables (one that may not is refused, :attr:`Schema.not_upgraded`), and read as it is
when opened to read (``create=False``: `clearsight audit verify`), so that reading it locks no older
Clearsight out; decisions wait for the upgrade (:attr:`Schema.no_decisions`). A writer also gives
the records table the indexes this Clearsight looks pictures up by where a store made before them
lacks them, at any version (an index moves no version: older Clearsights read the same tables).
On PostgreSQL an advisory lock makes two processes opening one new
store at once take turns.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, Table, inspect, select, text
from sqlalchemy.exc import DBAPIError

from datasets.errors import AuditError, SchemaVersionError
from pipeline.audit import policy_index
from pipeline.audit.chain import GENESIS_HASH, created_at_now
from pipeline.audit.database import lock_wait, read_only
from pipeline.audit.image_indexes import rebuild
from pipeline.audit.schema import (
    SCHEMA_VERSION,
    SUPERSEDED_INDEXES,
    audit_head,
    audit_records,
    image_index,
    image_likeness,
    index_metadata,
    metadata,
    policy_versions,
    schema_info,
)
from pipeline.audit.seal import SealKey, add_seal_column, has_seal_column, locked_head, unsealed_records

__all__ = ["Schema"]

# Arbitrary constant: the advisory lock that serialises schema creation on PostgreSQL.
_PG_CREATE_LOCK = 0x636C656172
# How long dropping a replaced index waits for readers before leaving it to a later open.
_DROP_WAIT_MS = 100
_UPGRADABLE = (1, 2, 3, 4, 5)  # the schema versions this one upgrades from (schema.SCHEMA_VERSION)
log = logging.getLogger("clearsight.audit")


def _check_postgres(version: tuple[Any, ...] | None, url: str) -> None:
    """Refuse a PostgreSQL before 14 at open: near-copy lookups count bits with its ``bit_count``,
    and every submission would fail instead."""
    if version is not None and version < (14,):
        shown = ".".join(str(part) for part in version)
        raise AuditError(f"audit store {url}: PostgreSQL {shown} is too old; Clearsight needs 14 or later")


class Schema:
    """The schema of the store at ``url`` (its URL with any password hidden), as :meth:`open` found
    it, made it or upgraded it; and what that leaves writing to it to wait for."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.not_upgraded: str | None = None  # why an older store may be read but not written
        self.no_decisions: str | None = None  # why decisions may not be recorded yet (outcomes may)
        self.sealed = False  # the records table has its seal column (version 5): appends seal
        self.unsealed: str | None = None  # why a holder of the key may not write: records unsealed
        self.version: int | None = None  # the version found (after any upgrade)
        self.unsealed_checked = False  # :meth:`check_unsealed` ran (a writer's open; a reader's first write)
        # the indexes verification checks against the chain, and why any other is not
        self.indexes: tuple[Table, ...] = (image_index, image_likeness, policy_versions)
        self._unchecked: list[str] = []
        self.unindexed = False  # an older store without this version's indexes: nothing looked up

    @property
    def index_unchecked(self) -> str | None:
        """Why an index is not checked by verification (a store at an older version read as it is)."""
        return "; ".join(self._unchecked) or None

    @property
    def policy_indexed(self) -> bool:
        """The store has its policy index (version 6): a policy's version is checked there."""
        return policy_versions in self.indexes

    def open(self, conn: Connection, *, create: bool, seal_key: SealKey | None = None) -> None:
        """Check the store's schema version and tables; with ``create``, make the schema where there
        is none and upgrade an older one. With ``seal_key``, a store holding records without a seal
        (one before version 5 among them) is refused to a writer (``create``), and writing to it
        refused otherwise (:attr:`unsealed`), until an operator seals them (`clearsight audit seal`);
        and a store whose head does not carry ``seal_key``'s seal is refused to a writer.

        Raises:
            SchemaVersionError: another schema version; or an older one and ``create``, by a role
                that may not upgrade it.
            HeadSealError: ``create`` and ``seal_key``, and the head does not carry its seal (another
                secret's store, or a forged head), naming CLEARSIGHT_AUDIT_SECRET.
            AuditError: tables missing, PostgreSQL too old for a writer, no schema and not ``create``,
                or records without a seal, ``create`` and ``seal_key``.
        """
        # as :meth:`__init__` left them: an open retried (a lock waited out) finds them again
        self.indexes, self._unchecked = (image_index, image_likeness, policy_versions), []
        if conn.dialect.name == "postgresql":
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
            if version >= 6:
                needed.add(policy_versions.name)
            missing = sorted(needed - tables)
            if missing:
                raise AuditError(
                    f"audit store {self.url}: schema version {version} but tables {missing} are missing"
                )
            if version >= 5 and not has_seal_column(conn):
                # before any upgrade, which would add it again empty: every record would read as
                # never sealed
                raise AuditError(self._seal_dropped(version))
            self.version = version
            if version < SCHEMA_VERSION and not create:
                # read, and given outcomes, as it is. Its version moves when a writer opens it, not
                # when a newer `clearsight audit verify` reads it, so that reading locks no older
                # Clearsight out; decisions wait for that upgrade (3 has the image indexes of 4 and
                # 5 and is looked up too; 1 and 2 lack them; none before 6 has the policy index a
                # decision is checked against)
                self.no_decisions = (
                    f"audit store {self.url} is at schema version {version}: decisions of this "
                    f"Clearsight are recorded once a writer has upgraded it to {SCHEMA_VERSION} (open it "
                    "to record)"
                )
                self._older(version)
            elif version != SCHEMA_VERSION:
                if seal_key is not None and version < 5 and self._holds_records(conn):
                    # the upgrade seals nothing: the operator vouches for the records (`audit seal`)
                    raise AuditError(self._before_seals(version))
                self.upgrade(conn, version, create=create)
            elif create:
                self._mend_likeness(conn)
                self._index_records(conn)
            self._check_sealed(conn)
            if seal_key is not None and create:  # a reader's scan waits for its first write
                self.check_unsealed(conn, create=True)
                # a writer whose secret did not seal the head would append nothing, every decision
                # failing (500s behind a service that said it was ready): refused as it opens
                locked_head(conn, seal_key, store=self.url)
            if image_likeness in self.indexes and not create and not self._likeness_current(conn):
                # an early build's layout, made again when a writer opens the store
                self.indexes = tuple(table for table in self.indexes if table is not image_likeness)
                self._unchecked.append(
                    "likeness index not checked: laid out by an early build of version 3 (a writer "
                    "opening the store makes it again from the chain)"
                )
            return
        if not create:
            raise AuditError(
                f"audit store {self.url} has no Clearsight schema: it is not an audit store, or nothing "
                "was ever recorded in it"
            )
        metadata.create_all(conn)
        add_seal_column(conn)
        index_metadata.create_all(conn)
        self.sealed = True
        self.version = SCHEMA_VERSION
        conn.execute(schema_info.insert().values(id=1, version=SCHEMA_VERSION, created_at=created_at_now()))
        conn.execute(audit_head.insert().values(id=1, seq=0, record_hash=GENESIS_HASH))

    def _index_records(self, conn: Connection) -> None:
        """Give ``audit_records`` the indexes of this Clearsight where a store made before them
        lacks them, and drop those they replace (:data:`~pipeline.audit.schema.SUPERSEDED_INDEXES`):
        built from the records, so nothing is lost. A writer whose role may not (not the table's
        owner; a read-only file) is let go on without them: its lookups are slower, not wrong.
        PostgreSQL blocks appends while it builds them, once."""
        have = {str(index["name"]) for index in inspect(conn).get_indexes(audit_records.name)}
        missing = [index for index in audit_records.indexes if index.name not in have]
        if missing:
            try:
                with conn.begin_nested():
                    for index in missing:
                        index.create(conn)
            except DBAPIError as exc:
                if not read_only(exc):
                    raise
                log.warning(
                    "audit store %s: this role may not add the indexes %s to audit_records (%s); "
                    "pictures held in many shipments are looked up slowly until a role that may "
                    "create them opens it",
                    self.url,
                    ", ".join(sorted(str(index.name) for index in missing)),
                    type(exc.orig).__name__,
                )
                return
        for name in sorted(have & set(SUPERSEDED_INDEXES)):
            if not self._drop_superseded(conn, name):
                return  # the rest wait on the same table lock: another 100 ms for nothing

    def _drop_superseded(self, conn: Connection, name: str) -> bool:
        """Drop an index the lookup indexes replaced, where that waits on no reader. On PostgreSQL
        DROP INDEX takes the table's ACCESS EXCLUSIVE lock, which a long read holds off (``audit
        verify`` or an export of a large store): waiting for it failed the writer's open after its
        whole lock wait, and queued every append and read behind it meanwhile. An index left in
        place costs only its upkeep; a later writer's open drops it. Returns whether it was dropped."""
        postgres = conn.dialect.name == "postgresql"
        try:
            with conn.begin_nested():
                if postgres:  # undone with the savepoint where the drop fails
                    # in ms; 0 is no limit. No longer than the open's own wait (busy_timeout_s)
                    wait = int(
                        conn.execute(
                            text("SELECT setting FROM pg_settings WHERE name = 'lock_timeout'")
                        ).scalar_one()
                    )
                    drop_wait = min(_DROP_WAIT_MS, wait) if wait > 0 else _DROP_WAIT_MS
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(drop_wait)}")
                conn.execute(text(f"DROP INDEX {name}"))
                if postgres:  # the open's own wait again, for what it does next
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(wait)}")
            return True
        except DBAPIError as exc:
            if not (lock_wait(exc) or read_only(exc)):
                raise
            log.info(
                "audit store %s: index %s, replaced by the lookup indexes, is left for a later writer "
                "to drop (%s)",
                self.url,
                name,
                type(exc.orig).__name__,
            )
            return False

    @staticmethod
    def _likeness_current(conn: Connection) -> bool:
        """Whether the likeness index has this version's columns (an early version-3 build's lacks
        its ``coarse`` column)."""
        columns = {column["name"] for column in inspect(conn).get_columns(image_likeness.name)}
        return set(image_likeness.columns.keys()) <= columns

    @classmethod
    def _mend_likeness(cls, conn: Connection) -> None:
        """Make the likeness index again where an early version-3 build laid it out otherwise (before
        its ``coarse`` column): it is built from the chain, so nothing is lost."""
        if cls._likeness_current(conn):
            return
        with conn.begin_nested():
            image_likeness.drop(conn)
            rebuild(conn)

    def _check_sealed(self, conn: Connection) -> None:
        """Whether appends seal: the store has its seal column, at version 5 or later or just
        upgraded to it (a store at 4 read as it is has none)."""
        self.sealed = has_seal_column(conn)

    def _seal_dropped(self, version: int) -> str:
        return (
            f"audit store {self.url}: schema version {version} but column audit_records.seal is "
            "missing (dropped: the seals of its records are gone)"
        )

    @staticmethod
    def _holds_records(conn: Connection) -> bool:
        return conn.execute(select(audit_records.c.seq).limit(1)).first() is not None

    def _before_seals(self, version: int | None) -> str:
        return (
            f"audit store {self.url} is at schema version {version}, before seals: its records carry "
            "none, and no writer holding the key vouches for records on its own. Check the chain "
            "(`clearsight audit verify --no-seals`), compare its head with the one published last, then "
            "seal them with `clearsight audit seal --expect SEQ:HASH` of that head (it upgrades the "
            f"store to version {SCHEMA_VERSION})"
        )

    def check_unsealed(self, conn: Connection, *, create: bool) -> None:
        """With the key every record must carry a seal: a store with records that do not is refused
        to a writer (at open), and writes to it refused (:attr:`unsealed`) where opened to read,
        until an operator vouches for them. Records written by a writer without the key, or their
        seals cleared by a forger, would otherwise be decided on; and sealing them on opening is how
        a forger who set the version back had a forged record sealed. One scan of the records (70 ms
        for 100,000 on SQLite), so a reader that never writes is spared it.

        Raises:
            AuditError: records without a seal, and ``create``.
        """
        self.unsealed_checked = True
        if not self.sealed:  # a store at an older version read as it is
            self.unsealed = self._before_seals(self.version) if self._holds_records(conn) else None
        else:
            found = unsealed_records(conn)
            which = (
                f"record {found.first} carries"
                if found.count == 1
                else f"{found.count} records carry (seq {found.first} to {found.last})"
            )
            self.unsealed = (
                None
                if not found.count
                else f"audit store {self.url}: {which} no seal: written by a writer not given the "
                "server's key, or their seals cleared by a forger. Look at them (`clearsight audit "
                "verify`, `clearsight audit export --chain --no-seals`), then, if they are genuine, "
                "seal them with `clearsight audit seal --expect SEQ:HASH` of a head published at or "
                f"after record {found.last}"
            )
        if self.unsealed is not None and create:
            raise AuditError(self.unsealed)

    def _older(self, version: int) -> None:
        """A store read at an older ``version`` than this one writes: the indexes it lacks are not
        checked (a version-1 store has no image index, a version-2 one no likeness index, none
        before 6 a policy index), and verification says so."""
        if version < 3:
            self.unindexed = True
            self.indexes = ()
            self._unchecked.append(f"image and policy indexes not checked: store at version {version}")
        elif version < 6:
            self.indexes = tuple(table for table in self.indexes if table is not policy_versions)
            self._unchecked.append(f"policy index not checked: store at version {version}")

    def upgrade(self, conn: Connection, version: int, *, create: bool) -> None:
        """Version 1: the image indexes, made from the chain; 2: the likeness index; 3: only the
        version, so that an older Clearsight refuses the decisions this one writes; from each, and
        from 4, the seal column, its records left unsealed (`clearsight audit seal` seals them);
        from each, and from 5, the policy index, made from the chain, a page of records at a time. A
        role that may not create tables (an auditor's, a read-only replica) reads the store as it
        is, and writing to it is refused until it is upgraded; a writer (``create``) is refused at
        once, not at its first record."""
        try:
            with conn.begin_nested():
                if version == 1:
                    rebuild(conn)
                elif version == 2:  # a version-2 decision carries no perceptual hash: nothing to fill
                    image_likeness.create(conn, checkfirst=True)
                else:
                    self._mend_likeness(conn)
                # before the indexes: a role that may not add the column is refused (below), not warned
                add_seal_column(conn)
                policy_index.rebuild(conn)
                self._index_records(conn)
                conn.execute(schema_info.update().where(schema_info.c.id == 1).values(version=SCHEMA_VERSION))
            self.version = SCHEMA_VERSION
        except DBAPIError as exc:
            if not read_only(exc):
                raise
            self.not_upgraded = (
                f"audit store {self.url} is at schema version {version} and this role may not "
                f"upgrade it to {SCHEMA_VERSION} ({type(exc.orig).__name__}); open it once with a role "
                "that may create tables, then record"
            )
            self._older(version)
            if create:
                raise SchemaVersionError(self.not_upgraded) from exc
