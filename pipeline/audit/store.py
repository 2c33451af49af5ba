"""The tamper-evident audit store: SQLAlchemy 2 on SQLite (default) or PostgreSQL (by URL).

:class:`AuditStore` is what the rest of Clearsight opens, records into and reads back. Appends are
serialised so that concurrent writers (several scorer processes, a server's threads) never fork the
chain or lose a record: each takes the database's write lock before it reads the chain's head, and
unique constraints on ``seq``, ``prev_hash`` and ``record_hash`` are the backstop. A conflict or a
lock timeout is retried a few times, within one bounded wait per call (``busy_timeout_s``), before
it becomes an :class:`~datasets.errors.AuditError`; every SQLAlchemy error is translated to
``AuditError`` naming the URL without its password.

The store's parts, each in a module of its own:

* :mod:`pipeline.audit.database`: the URL, the engine, the locks and the retried transactions;
* :mod:`pipeline.audit.migrate`: making the schema, and upgrading an older one, at open;
* :mod:`pipeline.audit.writing`: appending to the chain, and the rules a decision or an outcome
  must pass first;
* :mod:`pipeline.audit.reading`: stored rows as records, and the lookups reads and writes share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from datasets.errors import AuditError, InputError, SchemaVersionError
from pipeline.audit.chain import chain_hash
from pipeline.audit.chain_file import write_chain_file
from pipeline.audit.database import (
    SERVER_OPTION,
    Database,
    build_engine,
    lock_wait,
    parsed_url,
    refuse_missing_sqlite_file,
    shown_store_url,
    sqlite_file,
    wait_ms,
)
from pipeline.audit.export import write_export
from pipeline.audit.image_indexes import Picture, Sighting, Unnamed, check_bits, sightings
from pipeline.audit.migrate import Schema
from pipeline.audit.reading import (
    FirstSent,
    SealFailure,
    first_sent,
    found_on,
    latest_at,
    latest_decision,
    records_of,
    records_passing,
    review_queue,
    rows_after,
)
from pipeline.audit.records import AuditRecord, OutcomeRecord, VerifyReport
from pipeline.audit.schema import audit_head, audit_records, sealed_records
from pipeline.audit.seal import SealCheck, SealKey, check_head_seal
from pipeline.audit.sealing import SealingReport, seal_vouched
from pipeline.audit.verify import checked, verify_chain
from pipeline.audit.writing import (
    DecidedAlready,
    DecisionUnnamed,
    ImagesSeenSince,
    SentByAnother,
    check_idempotency_key,
    check_outcome,
    decision_json,
    refuse_a_reused_policy_version,
    write_decision,
    write_outcome,
)
from pipeline.verdicts import ShipmentDecision, Tier

__all__ = [
    "AuditStore",
    "DecidedAlready",
    "DecisionUnnamed",
    "FirstSent",
    "ImagesSeenSince",
    "Lookup",
    "QueuePage",
    "SealFailure",
    "SentByAnother",
    "sqlite_file",
]


def _refuse_page(limit: int, among: Sequence[str]) -> None:
    """Refuse a page of the picture lookups (:meth:`AuditStore.latest_decisions_at`,
    :meth:`AuditStore.findings_on`) past its bounds: ``limit`` 1 to 10000, at most 10000 shipments."""
    if not 1 <= limit <= 10_000 or len(among) > 10_000:
        raise InputError(
            f"limit={limit} with {len(among)} shipments not accepted (limit 1 to 10000, at most "
            "10000 shipments)"
        )


class AuditStore:
    """Append-only, hash-chained record of shipment decisions and officers' outcomes.

    Open with :meth:`open`; safe to share between threads (each call takes its own connection; an
    in-memory store's calls take turns on its one) and to use from several processes at once.
    """

    def __init__(
        self, engine: Engine, *, shown_url: str, busy_timeout_s: float = 30.0, seal_key: SealKey | None = None
    ) -> None:
        self._db = Database(engine, shown_url=shown_url, busy_timeout_s=busy_timeout_s)
        self._seal_key = seal_key  # records appended are sealed with it, and verify checks the seals
        self.url = shown_url
        """The store's URL with any password hidden, in its query too (:func:`shown_store_url`)."""
        self._schema = Schema(shown_url)  # what opening found; why writing may wait for an upgrade

    # -- opening -----------------------------------------------------------------------------------

    @staticmethod
    def check_url(url: str, *, option: str = SERVER_OPTION) -> None:
        """Refuse, without connecting, a URL that is not one or names an unsupported backend
        (``option``: where the caller took it from, as :meth:`open` takes it).

        Raises:
            AuditError: as :meth:`open` would for such a URL.
        """
        parsed_url(url, option=option)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        create: bool = True,
        busy_timeout_s: float = 30.0,
        seal_key: SealKey | None = None,
        option: str = SERVER_OPTION,
    ) -> AuditStore:
        """Open (and with ``create``, initialise) the store at a SQLAlchemy URL.

        Args:
            create: make the schema where there is none, and upgrade an older one; without it the
                store is opened to read, and takes no write lock to open.
            busy_timeout_s: the longest one call waits for a lock another writer holds, all its
                tries together, before it fails with :class:`AuditError`.
            seal_key: the server's seal key (:mod:`pipeline.audit.seal`, from its ``audit_secret``):
                every record appended is sealed with it, :meth:`verify` checks every seal, reads
                that decide check the seals of the records they decide on, and a store holding
                records without a seal (an older one among them) is refused to a writer
                (``create``), and writes to it refused, until :meth:`seal_unsealed`. None: records
                are appended unsealed, and verify says the seals were not checked.
            option: where the caller took ``url`` from (``--db``, ``--audit-db``, an environment
                variable), which a bad URL's error names; the server's by default.

        Raises:
            SchemaVersionError: the database was created by another schema version.
            AuditError: unreachable, unsupported backend, no schema and ``create=False``, or
                records without a seal, ``create`` and ``seal_key``.
        """
        if not create:
            refuse_missing_sqlite_file(url)  # connecting would create an empty file
        engine = build_engine(url, busy_timeout_s, create=create, option=option)
        shown = shown_store_url(url, engine.url)
        store = cls(engine, shown_url=shown, busy_timeout_s=busy_timeout_s, seal_key=seal_key)
        try:
            store._db.retry(
                "open", lambda conn: store._schema.open(conn, create=create, seal_key=seal_key), write=create
            )
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        """Release the connection pool."""
        self._db.close()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        by_tier: bool = False,
    ) -> AuditRecord:
        """Append a decision. If ``idempotency_key`` was recorded before, return that record instead.

        Args:
            decision: the decision to record.
            idempotency_key: what identifies this submission: recorded once, returned on a retry.
            exclusive: a shipment already decided under another key takes a decision only where
                its declaration's flags (an alarm raised later: its ``override.<flag>`` reasons)
                hold it stricter than its latest decision, whatever its pictures scored; a retry (a
                known key) returns the shipment's latest decision.
                Re-deciding stored verdicts (a new policy) appends a decision that supersedes the
                last; a submitter (the HTTP service) must not be able to replace a hold, or a
                release it did not like the look of, by sending other images, nor learn from the
                answer whether other images would pass (a refusal that depended on their tier
                did tell it, leaving no trace).
            by_tier: with ``exclusive``, a shipment already decided takes a decision where it is
                stricter than the latest, pictures included: for an officer's or admin's send, who
                see every verdict anyway (an admin's re-scan finding a hot picture under a released
                shipment holds it). False: by its declaration's flags alone, as for a submitter.

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
                same or a stricter tier than its declaration's flags give it (with ``by_tier``: than
                the decision's) (:class:`DecidedAlready`); or the decision would lower an
                unresolved hold.
            SentByAnother: ``may_send`` refused the shipment's first decision's sender.
            ImagesSeenSince: an image that was seen nowhere (or had no near-copy) when looked up
                has been decided in another shipment since: look it up and decide again.
            PolicyError: the trail holds a decision of the same ``policy_version`` under another
                ``policy_sha256`` (a changed policy needs a new version), as its policy index
                holds them under the write lock.
            AuditError: the database cannot be written, or is at an older schema version.
        """
        self._check_writable()
        if self._schema.no_decisions is not None:
            raise AuditError(self._schema.no_decisions)
        check_bits(near_copy_bits)
        check_idempotency_key(idempotency_key, decision.shipment_id)
        decided = decision_json(decision)

        def work(conn: Connection) -> AuditRecord:
            return write_decision(
                conn,
                decision,
                decided,
                idempotency_key=idempotency_key,
                exclusive=exclusive,
                images_seen_as_of=images_seen_as_of,
                near_copy_bits=near_copy_bits,
                may_send=may_send,
                by_tier=by_tier,
                seal_key=self._sealing(),
            )

        return self._db.retry(f"recording shipment {decision.shipment_id!r}", work)

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
        :meth:`record`'s ``images_seen_as_of``; ``unnamed`` says, for each image decided in more
        shipments than the ``most`` named, what lies past them (:class:`Unnamed`).

        Raises:
            ValueError: ``near_copy_bits`` out of range (:data:`MAX_NEAR_COPY_BITS`).
        """
        check_bits(near_copy_bits)
        if self._schema.not_upgraded is not None or self._schema.unindexed:
            # an older store has no index (and takes no decision to check against it)
            return Lookup({}, 0, {})
        unnamed: dict[str, Unnamed] = {}
        with self._db.reading("looking up images decided before") as conn:
            # the head first: every record up to it is committed, so the lookup after it sees them
            as_of = conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).scalar_one()
            found = sightings(
                conn, images, other_than, near_copy_bits=near_copy_bits, most=most, unnamed=unnamed
            )
        return Lookup(found, as_of, unnamed)

    def _sealing(self) -> SealKey | None:
        """The key appends seal with: none on a store at version 4 read as it is (no seal column)."""
        return self._seal_key if self._schema.sealed else None

    def _check_writable(self) -> None:
        if self._schema.not_upgraded is not None:
            raise SchemaVersionError(self._schema.not_upgraded)
        if self._seal_key is None:
            return
        if not self._schema.unsealed_checked:  # opened to read: looked for at the first write
            schema = self._schema
            with self._db.reading("looking for records without a seal") as conn:
                schema.check_unsealed(conn, create=False)
        if self._schema.unsealed is not None:
            raise AuditError(self._schema.unsealed)  # nothing is decided on records nobody vouched for

    def first_sent(self, shipment_id: str) -> FirstSent | None:
        """How ``shipment_id``'s first decision was sent, or None: not decided. Checked before any
        work, and again where :meth:`record` writes (``may_send``)."""
        with self._db.reading(f"reading shipment {shipment_id!r}") as conn:
            return first_sent(conn, shipment_id)

    def record_outcome(
        self,
        shipment_id: str,
        *,
        found: str | None,
        officer: str,
        notes: str = "",
        decision_seq: int | None = None,
        amend: bool = False,
    ) -> OutcomeRecord:
        """Chain an officer's finding for the shipment's latest decision (``found=None``: clean), or
        a correction of the outcome of an earlier one.

        Args:
            decision_seq: the decision the officer judged; an earlier one than the shipment's latest
                is refused (decided again since), but for a correction (``amend``) of a finding
                recorded on it (its latest outcome): one recorded by mistake held its pictures, sent
                again, for good. The correction is that decision's latest outcome; the shipment's
                later decisions stand as recorded (one held by the finding takes its own outcome). A
                clean outcome there is not corrected: a finding belongs on the latest decision.
                Required where the shipment has more than one decision: without it the outcome
                judged whichever was latest when written, one recorded after the officer looked.
            amend: whether this may correct an outcome already recorded for that decision (not by
                default: a caller that does not say so would overwrite another officer's finding
                unawares). Both are checked in the write's transaction, so two officers at once
                cannot both pass them.

        Raises:
            InputError: no decision recorded for ``shipment_id``, ``decision_seq`` none of its
                decisions, an empty ``officer``/``found``, half a character (a lone UTF-16
                surrogate) in any of the text, or a character that does not show as itself in
                ``officer``, ``found`` or ``notes`` (:func:`~pipeline.audit.writing.check_outcome`).
            ConflictError: ``decision_seq`` is an earlier decision, and has no outcome, a clean
                one, or not ``amend``; or it has an outcome and not ``amend``.
            DecisionUnnamed: no ``decision_seq`` for a shipment with more than one decision.
            AuditError: the database cannot be written.
        """
        check_outcome(shipment_id, found, officer, notes)
        self._check_writable()

        def work(conn: Connection) -> OutcomeRecord:
            return write_outcome(
                conn,
                shipment_id,
                found=found,
                officer=officer,
                notes=notes,
                decision_seq=decision_seq,
                amend=amend,
                url=self.url,
                seal_key=self._sealing(),
            )

        return self._db.retry(f"recording the outcome of shipment {shipment_id!r}", work)

    # -- reading -----------------------------------------------------------------------------------

    def get(self, shipment_id: str) -> AuditRecord | None:
        """The latest decision recorded for ``shipment_id`` (with its outcome), or None. With the
        store's key, the decision and its outcomes are checked against their seals, as every read
        is: an officer shown a forged outcome would take the shipment for inspected.

        Raises:
            SealBrokenError: with the key, a record read fails its seal.
        """
        with self._db.reading(f"reading shipment {shipment_id!r}") as conn:
            row = latest_decision(conn, shipment_id)
            return records_of(conn, [row], seal_key=self._sealing())[0] if row is not None else None

    def decisions_of(self, shipment_ids: Sequence[str]) -> list[AuditRecord]:
        """Every decision recorded for these shipments, superseded ones too, oldest first, in one
        read (the review page's near-copies may lie in a decision since replaced)."""
        wanted = sorted(set(shipment_ids))
        if not wanted:
            return []
        c = audit_records.c
        with self._db.reading("reading the decisions of shipments") as conn:
            rows = conn.execute(
                select(audit_records).where(c.kind == "decision", c.shipment_id.in_(wanted)).order_by(c.seq)
            ).all()
            return records_of(conn, rows, seal_key=self._sealing())

    def latest_decisions_at(
        self,
        tier: Tier,
        *,
        other_than: str,
        holding: str | None = None,
        among: Sequence[str] = (),
        after: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """The latest decisions at ``tier`` (with their outcomes) of the other shipments than
        ``other_than`` that hold the picture whose content hash is ``holding``, all of them, however
        many (only those that held it before ``other_than`` first did, where it did, as
        :meth:`sightings` names them); without ``holding``, of the shipments in ``among``. Numbered
        after ``after``, oldest first, ``limit`` of them: a page, read by the indexes on image hashes
        and shipment ids. The earlier holds a picture sent again carries over are looked for so
        among all the shipments it was decided in, not only the few :meth:`sightings` names.

        Raises:
            InputError: ``limit`` not 1 to 10000, or more than 10000 shipments in ``among``.
        """
        _refuse_page(limit, among)
        query = latest_at(tier, other_than, holding=holding, among=among, after=after, limit=limit)
        with self._db.reading("reading the decisions of shipments holding a picture") as conn:
            return records_of(conn, conn.execute(query).all(), seal_key=self._sealing())

    def findings_on(
        self,
        *,
        other_than: str,
        holding: str | None = None,
        among: Sequence[str] = (),
        limit: int = 1,
    ) -> list[AuditRecord]:
        """The decisions (with their outcomes) whose latest outcome found an anomaly, of the other
        shipments than ``other_than``: those that hold the picture whose content hash is ``holding``,
        whenever they were decided (not only before ``other_than`` first held it, as
        :meth:`sightings` names them), whatever each shipment decided since; without ``holding``,
        any decision of the shipments in ``among``. Oldest first, ``limit`` of them, read by the
        indexes on image hashes, shipment ids and the decisions outcomes refer to. A finding is
        evidence about the pictures it was made on, however many shipments carried them, before or
        since: a picture sent again carries it (:meth:`pipeline.decide.EarlierHold.found`) where
        :meth:`sightings` did not name the shipment.

        Raises:
            InputError: ``limit`` not 1 to 10000, or more than 10000 shipments in ``among``.
        """
        _refuse_page(limit, among)
        query = found_on(other_than, holding=holding, among=among, limit=limit)
        with self._db.reading("reading the findings on a picture") as conn:
            return records_of(conn, conn.execute(query).all(), seal_key=self._sealing())

    def list(
        self,
        *,
        tiers: Sequence[Tier] | None = None,
        limit: int = 100,
        offset: int = 0,
        pending_outcome: bool | None = None,
        before: int | None = None,
    ) -> list[AuditRecord]:
        """Latest decision per shipment, newest first: the officers' review queue.

        Args:
            tiers: keep only these tiers (None: all).
            limit: page size, 1 to 10000.
            offset: records to skip, >= 0.
            pending_outcome: True: only those without an outcome yet; False: only those with one.
            before: only records numbered below it, >= 1 (the page after one that ended at
                record ``before``: unlike an offset, it skips nothing when outcomes recorded since
                took shipments out of a pending queue).

        With the store's key, the records listed and their outcomes are checked against their
        seals (an outcome that takes a decision out of the pending queue is not listed, and so not
        checked: verify catches a forged one).

        Raises:
            SealBrokenError: with the key, a record listed fails its seal (:meth:`list_page` lists
                the others and names it apart).
            InputError: ``limit``, ``offset`` or ``before`` out of range.
        """
        query = _queue_query(tiers, limit, offset, pending_outcome, before)
        with self._db.reading("listing decisions") as conn:
            return records_of(conn, conn.execute(query).all(), seal_key=self._sealing())

    def list_page(
        self,
        *,
        tiers: Sequence[Tier] | None = None,
        limit: int = 100,
        pending_outcome: bool | None = None,
        before: int | None = None,
    ) -> QueuePage:
        """A page of the review queue, as :meth:`list` gives it, for a page that shows it: the
        decisions whose records pass their seals, and apart (:attr:`QueuePage.failed`) each one
        whose decision or outcome fails its seal, named by that record and the shipment its column
        says, nothing of its content. One record failing its seal raised for the whole page in
        :meth:`list`, and the officers' queue was gone until an operator mended the store; it now
        shows the others, and who must not be acted on.

        Args: as :meth:`list`'s (a page is cut by ``before``, never by an offset).

        Raises:
            InputError: ``limit`` or ``before`` out of range.
        """
        query = _queue_query(tiers, limit, 0, pending_outcome, before)
        with self._db.reading("listing decisions") as conn:
            rows = conn.execute(query).all()
            records, failed = records_passing(conn, rows, seal_key=self._sealing())
        return QueuePage(records, failed, len(rows), rows[-1].seq if rows else None)

    def iter_records(self, *, page: int = 500) -> Iterator[AuditRecord]:
        """Every decision record (superseded ones included) in chain order, a page at a time."""
        after = 0
        while True:
            with self._db.reading("reading decisions") as conn:
                rows = rows_after(conn, after, page, audit_records.c.kind == "decision")
                records = records_of(conn, rows)
            yield from records
            if len(rows) < page:
                return
            after = rows[-1].seq

    def iter_chain(self, *, page: int = 500, upto: int | None = None) -> Iterator[Any]:
        """Every record, decisions and outcomes, in chain order (rows with ``seq``, ``prev_hash``,
        ``record_hash`` and ``content``, the hashed text), a page at a time; with ``upto``, those
        numbered up to it. Rows of a store with the seal column carry ``seal`` too (None: unsealed)."""
        table = sealed_records if self._schema.sealed else audit_records
        where = () if upto is None else (table.c.seq <= upto,)
        after = 0
        while True:
            with self._db.reading("reading the chain") as conn:
                rows = rows_after(conn, after, page, *where, table=table)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].seq

    def export_chain(self, path: str | Path) -> int:
        """Write the whole chain, up to the head read first, to a file that
        :func:`~pipeline.audit.chain_file.verify_chain_file` checks without the database; returns
        the number of records. Records appended meanwhile are left for the next export.

        Raises:
            AuditError: a record fails its checks (its seal too, with the store's key), the chain
                does not reach its head (records deleted from its end, or the last one altered), or
                goes past it: nothing is written, as ``clearsight audit verify``
                names what happened.
            InputError: the file cannot be written.
        """
        head = self._export_head()
        rows = checked(
            self.iter_chain(upto=head.seq), head.seq, head.record_hash, self.url, seals=self.seal_check()
        )
        return write_chain_file(rows, Path(path), head=(head.seq, head.record_hash))

    def _export_head(self, refused: str = "nothing exported") -> Any:
        """The chain's head an export reads up to (seq, record_hash).

        Raises:
            AuditError: the head row is missing, or a record lies past it: nothing is exported.
        """
        with self._db.reading("reading the chain head") as conn:
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
        if isinstance(last, int) and last > head.seq:  # a seq that is no number: the walk names it
            raise AuditError(
                f"audit store {self.url}: record {last} lies past the chain head (record {head.seq}); "
                f"{refused} (`clearsight audit verify` names what happened)"
            )
        return head

    def seal_check(self) -> SealCheck | None:
        """A check of the seals of one walk of the chain, with the store's key (None: no key)."""
        return None if self._seal_key is None else SealCheck(self._seal_key)

    def verify(self) -> VerifyReport:
        """Re-compute the whole chain, and with the store's seal key check every seal; see
        :mod:`pipeline.audit.verify`."""
        seals = self.seal_check()
        with self._db.reading("verifying the chain", verifying=True) as conn:
            return verify_chain(
                conn,
                seals=seals,
                sealed=self._schema.sealed,
                indexes=self._schema.indexes,
                unchecked=self._schema.index_unchecked,
            )

    def seal_unsealed(self, *, expect: tuple[int, str]) -> SealingReport:
        """Seal the records without a seal, which the operator vouches for by ``expect``, the
        ``(seq, record_hash)`` of a head published earlier (`clearsight audit seal`; see
        :mod:`pipeline.audit.sealing`); upgrades an older store to the current version on the way.

        Raises:
            AuditError: no seal key; the chain broken, a seal wrong, ``expect`` not in the chain, or
                a record without a seal after it (naming the record): nothing is sealed.
            SchemaVersionError: an older store, and a role that may not upgrade it.
        """
        return self._seal(expect, None)

    def rotate_seals(
        self, *, expect: tuple[int, str], head: tuple[int, str], previous: SealKey
    ) -> SealingReport:
        """Seal every record again under this store's key, once each seal checks under ``previous``,
        the key of the secret it was sealed under, ``expect`` (the head published last) is in the
        chain with its hash, and ``head`` is the chain's head as the operator names it (`clearsight
        audit seal --rotate`; see :mod:`pipeline.audit.sealing`). Writers still holding the
        previous secret then refuse to append (the head's seal is not theirs), until restarted
        with the new one.

        Raises:
            AuditError: no seal key, or ``previous`` the same; the chain broken, a seal wrong under
                ``previous``, ``expect`` not in the chain, a record without a seal after it, ``head``
                not the chain's head: nothing is sealed.
            SchemaVersionError: an older store, and a role that may not upgrade it.
        """
        return self._seal(expect, previous, head)

    def _seal(
        self, expect: tuple[int, str], previous: SealKey | None, head: tuple[int, str] | None = None
    ) -> SealingReport:
        key = self._seal_key
        if key is None:
            raise AuditError(
                f"audit store {self.url}: sealing needs the server's key (CLEARSIGHT_AUDIT_SECRET)"
            )
        report = self._db.retry(
            "sealing records",
            lambda conn: seal_vouched(conn, self._schema, key, expect, previous=previous, head=head),
            snapshot=True,
        )
        schema = Schema(self.url)  # what it is now: at the current version, every record sealed
        self._db.retry("open", lambda conn: schema.open(conn, create=False, seal_key=key), write=False)
        self._schema = schema
        return report

    def replayed(self, idempotency_key: str, shipment_id: str) -> AuditRecord | None:
        """The shipment's latest decision when ``idempotency_key`` was recorded before (a retry),
        else None: lets a caller answer a retry without redoing the work behind it."""
        c = audit_records.c
        with self._db.reading(f"reading shipment {shipment_id!r}") as conn:
            if conn.execute(select(c.seq).where(c.idempotency_key == idempotency_key)).first() is None:
                return None
            row = latest_decision(conn, shipment_id)
            return records_of(conn, [row], seal_key=self._sealing())[0] if row is not None else None

    def hash_at(self, seq: int) -> str | None:
        """The record hash of record ``seq``, or None when there is no such record."""
        with self._db.reading(f"reading record {seq}") as conn:
            return conn.execute(
                select(audit_records.c.record_hash).where(audit_records.c.seq == seq)
            ).scalar()

    def export(self, path: str | Path, *, fmt: Literal["csv", "jsonl"] | None = None) -> int:
        """Write every decision with its latest outcome to CSV or JSONL; returns the number of rows.

        ``fmt`` defaults to the file's suffix. See :func:`pipeline.audit.export.write_export`. The
        whole chain up to its head is read, each record checked as it goes (its hash, its columns,
        its link and, with the store's seal key, its seal): an export of a tampered store would
        pass for a copy of the trail.

        Raises:
            AuditError: a record fails its checks, or the chain does not reach its head: nothing is
                written, and an earlier export at ``path`` is kept.
            InputError: a format other than csv/jsonl, or the file cannot be written.
        """
        return write_export(self.checked_decisions(seals=self.seal_check()), Path(path), fmt=fmt)

    def checked_decisions(
        self, *, seals: SealCheck | None = None, refused: str = "nothing exported"
    ) -> Iterator[AuditRecord]:
        """Every decision with its latest outcome, up to the head read first, the whole chain walked
        as it is read and each record checked as an export checks it (its hash, its columns, its link
        and, with ``seals``, its seal): figures drawn from it count no record appended or rewritten
        after a verify that ran before. Each outcome attached is read apart from the walk, so its
        content must give its hash, and it and the decision it is attached to be those the walk
        checked for it (``refused``: what a failure message says was not done).

        Raises:
            AuditError: as it is iterated, a record fails its checks, or the chain does not reach
                its head.
        """
        head = self._export_head(refused)
        # each outcome as the walk checked it (its hash, and the decision its checked column names)
        walked: dict[int, tuple[str, int | None]] = {}
        read: dict[int, tuple[str, int | None]] = {}  # each outcome row attached, as its own read gave it

        def remember(rows: Iterator[Any]) -> Iterator[Any]:
            for row in rows:
                if row.kind == "outcome":
                    walked[row.seq] = (row.record_hash, row.ref_seq)
                yield row

        def outcomes_read(found: Sequence[Any]) -> None:
            for row in found:  # read apart from the walk: its content must give the hash it carries
                if row.seq in read:  # each outcome is looked up by one page only: twice, it was moved
                    raise AuditError(
                        f"audit store {self.url}: outcome record {row.seq} changed while the chain was "
                        "read (attached to two decisions); run `clearsight audit verify`"
                    )
                if chain_hash(row.prev_hash, row.content) != row.record_hash:
                    raise AuditError(
                        f"audit store {self.url}: outcome record {row.seq} changed while the chain was "
                        "read (its content does not give its hash); run `clearsight audit verify`"
                    )
                read[row.seq] = (row.record_hash, row.ref_seq)

        rows = checked(
            remember(self.iter_chain(upto=head.seq)),
            head.seq,
            head.record_hash,
            self.url,
            seals=seals,
            refused=refused,
        )
        yield from self._decisions(rows, upto=head.seq, outcomes_read=outcomes_read)
        # the walk is over: the outcomes attached must be those it checked, each to the decision its
        # checked column names (outcomes are looked up by ref_seq, which is not hashed: one pointed
        # elsewhere meanwhile was attached to another decision, or to none), and every one of them
        # (the last page's were read after the walk, earlier pages' before it reached them)
        if read != walked:
            seq = min(s for s in read.keys() | walked.keys() if read.get(s) != walked.get(s))
            raise AuditError(
                f"audit store {self.url}: outcome record {seq} changed while the chain was read (it is not "
                "the record the walk checked, or not attached to the decision it names); run "
                "`clearsight audit verify`"
            )

    def _decisions(
        self,
        rows: Iterator[Any],
        *,
        upto: int,
        page: int = 500,
        outcomes_read: Callable[[Sequence[Any]], None] | None = None,
    ) -> Iterator[AuditRecord]:
        """The decision rows among ``rows`` as records with their latest outcomes up to ``upto``, a
        page at a time."""
        batch: list[Any] = []
        for row in rows:
            if row.kind == "decision":
                batch.append(row)
            if len(batch) == page:
                yield from self._records(batch, upto, outcomes_read)
                batch = []
        yield from self._records(batch, upto, outcomes_read)

    def _records(
        self, rows: list[Any], upto: int, outcomes_read: Callable[[Sequence[Any]], None] | None = None
    ) -> list[AuditRecord]:
        if not rows:
            return []
        with self._db.reading("reading decisions") as conn:
            return records_of(conn, rows, upto=upto, outcomes_read=outcomes_read)

    def check_policy(self, version: str, sha256: str) -> None:
        """Refuse to record under policy ``version`` (sha256 ``sha256``) where the trail holds a
        decision of that version under another sha256; read without the write lock, so that a run or
        the service refuses as it starts, not at its first decision (the service answered it 500).
        One read of the policy index; a store read as it is at a version before it checks nothing
        here, as it takes no decision until a writer upgrades it (and makes the index).

        Raises:
            PolicyError: naming both sha256s and the record.
            AuditError: the store cannot be read.
        """
        if not self._schema.policy_indexed:
            return
        with self._db.reading("checking the policy's version against the trail") as conn:
            refuse_a_reused_policy_version(conn, version, sha256)

    def check_head_seal(self) -> None:
        """Raise :class:`~pipeline.audit.seal.HeadSealError` where the chain's head does not carry the
        seal of the key this store was opened with (a readiness probe's check: one query, no lock).
        Nothing is checked on a store opened without a key, or read as it is at a version before
        seals (its writes are refused anyway).

        Raises:
            HeadSealError: naming the head record and the store, as a writer's open does.
            AuditError: the store cannot be read.
        """
        if self._seal_key is None or not self._schema.sealed:
            return
        with self._db.reading("reading the chain head") as conn:
            check_head_seal(conn, self._seal_key, store=self.url)

    def ping(self, *, write_wait_s: float | None = None) -> None:
        """Raise :class:`AuditError` if the database cannot be reached (readiness probe); with
        ``write_wait_s``, also if the write lock cannot be had within that many seconds.

        A writer stuck holding the lock (paused, cut off mid-transaction) fails every write after
        ``busy_timeout_s`` while reads go on: a probe that only read said ready, and the load
        balancer kept sending submissions that all failed. The write probe takes the lock and lets
        it go at once (writes hold it for milliseconds), recording nothing.
        """
        with self._db.reading("ping") as conn:
            conn.execute(select(1))
        if write_wait_s is None:
            return
        wait = wait_ms(write_wait_s)
        try:
            with self._db.transaction(wait, write=True) as (conn, transaction):
                # a write that changes nothing, rolled back: a read-only database (a file opened
                # mode=ro, a standby) refuses it, where a locking read passed on SQLite
                head = update(audit_head).where(audit_head.c.id == 1).values(seq=audit_head.c.seq)
                touched = conn.execute(head).rowcount
                transaction.rollback()
        except SQLAlchemyError as exc:
            if lock_wait(exc):
                raise AuditError(
                    f"audit store {self.url}: writes are blocked: another writer held the lock for the "
                    f"{write_wait_s:g} s the probe waited"
                ) from exc
            raise self._db.fail("ping", exc) from exc
        if touched != 1:  # every append reads the head row: without it none goes through
            raise AuditError(
                f"audit store {self.url}: its chain head is missing; run `clearsight audit verify`"
            )


def _queue_query(
    tiers: Sequence[Tier] | None, limit: int, offset: int, pending_outcome: bool | None, before: int | None
) -> Any:
    """The review queue's query (:func:`~pipeline.audit.reading.review_queue`), its page bounds
    checked first.

    Raises:
        InputError: ``limit`` not 1 to 10000, ``offset`` below 0, or ``before`` below 1.
    """
    if not 1 <= limit <= 10_000 or offset < 0:
        raise InputError(f"limit={limit}, offset={offset} not accepted (limit 1 to 10000, offset >= 0)")
    if before is not None and before < 1:
        raise InputError(f"before={before} not accepted (a record number, >= 1)")
    return review_queue(tiers, limit, offset, pending_outcome, before)


class QueuePage(NamedTuple):
    """A page of the review queue (:meth:`AuditStore.list_page`): ``records``, the decisions that
    pass their seals, newest first; ``failed``, those that do not, newest first; ``listed``, how
    many decisions the page holds, both kinds (a full page has ``limit``); ``last_seq``, the lowest
    decision number on it, the ``before`` of the next page (None: an empty page)."""

    records: list[AuditRecord]
    failed: list[SealFailure]
    listed: int
    last_seq: int | None


class Lookup(NamedTuple):
    """What :meth:`AuditStore.sightings` found, the last record it saw, and what lies past the
    shipments named for each picture decided in more."""

    found: dict[str, Sighting]
    as_of: int
    unnamed: dict[str, Unnamed]
