"""Reading the audit chain back: stored rows as records, and the queries the store's reads share
with the checks its writes make (a shipment's latest decision, how it was first sent).

Each function runs on a connection its caller holds in a transaction
(:class:`~pipeline.audit.database.Database`), so that several queries read one state of the store.
A stored record that does not parse raises ``ValueError``, ``KeyError`` or ``TypeError``, which
that transaction names as a damaged record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Select, String, Table, and_, exists, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from pipeline.audit.chain import chain_hash
from pipeline.audit.records import AuditRecord, OutcomeRecord
from pipeline.audit.schema import audit_records, image_index
from pipeline.audit.seal import SealBrokenError, SealKey, check_outcome_of, check_read
from pipeline.verdicts import ShipmentDecision, Tier

__all__ = [
    "FirstSent",
    "SealFailure",
    "first_sent",
    "found_on",
    "latest_at",
    "latest_decision",
    "outcome_found",
    "records_of",
    "records_passing",
    "review_queue",
    "rows_after",
]


class FirstSent(NamedTuple):
    """How a shipment's first decision was sent: by whom (``submitted_by``: a key's name, None for a
    batch), for which trader, and under which AEO tier (a submitter's declared trader gets its tier
    only where the register lists the submitter's key for it)."""

    submitted_by: str | None
    trader_id: str | None
    aeo_tier: str | None


def first_sent(conn: Connection, shipment_id: str) -> FirstSent | None:
    """How ``shipment_id``'s first decision was sent, or None: not decided."""
    c = audit_records.c
    first = conn.execute(
        select(c.content).where(c.kind == "decision", c.shipment_id == shipment_id).order_by(c.seq).limit(1)
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


def latest_decision(conn: Connection, shipment_id: str) -> Any:
    """The row of the shipment's latest decision, or None."""
    c = audit_records.c
    return conn.execute(
        select(audit_records)
        .where(c.kind == "decision", c.shipment_id == shipment_id)
        .order_by(c.seq.desc())
        .limit(1)
    ).first()


def _held_before(holding: str, other_than: str) -> Any:
    """The image index's rows of the picture whose content hash is ``holding`` recorded before
    ``other_than`` first held it (all of them where it never did): the shipments a picture sent
    again was seen in, as :meth:`~pipeline.audit.store.AuditStore.sightings` names them."""
    ix = image_index.c
    own_first = (
        select(func.min(ix.seq)).where(ix.sha256 == holding, ix.shipment_id == other_than).scalar_subquery()
    )
    return and_(ix.sha256 == holding, or_(own_first.is_(None), ix.seq < own_first))


def latest_at(
    tier: Tier,
    other_than: str,
    *,
    holding: str | None,
    among: Sequence[str],
    after: int,
    limit: int,
) -> Select[Any]:
    """The query of :meth:`~pipeline.audit.store.AuditStore.latest_decisions_at`: the latest
    decisions at ``tier`` of the shipments other than ``other_than`` that hold the picture
    ``holding`` (that held it before ``other_than`` first did, where it did), or without it of those
    in ``among``; numbered after ``after``, oldest first, ``limit`` of them.

    The shipments are found by the image index's content hash (or by id), then each one's decisions
    by the shipment index: the records of other shipments are never read."""
    c = audit_records.c
    if holding is not None:
        ix = image_index.c
        shipments: Any = select(ix.shipment_id).where(_held_before(holding, other_than))
    else:
        shipments = sorted(set(among))
    later = audit_records.alias("later")
    superseded = exists().where(
        later.c.kind == "decision", later.c.shipment_id == c.shipment_id, later.c.seq > c.seq
    )
    return (
        select(audit_records)
        .where(
            c.shipment_id.in_(shipments),
            c.shipment_id != other_than,
            c.kind == "decision",
            c.tier == tier.value,
            c.seq > after,
            ~superseded,
        )
        .order_by(c.seq)
        .limit(limit)
    )


def found_on(other_than: str, *, holding: str | None, among: Sequence[str], limit: int) -> Select[Any]:
    """The query of :meth:`~pipeline.audit.store.AuditStore.findings_on`: the decisions of the
    shipments other than ``other_than`` whose latest outcome found an anomaly; those that hold the
    picture ``holding``, whenever they were decided, or without it any decision of the shipments in
    ``among``; oldest first, ``limit`` of them. Not only those decided before ``other_than`` first
    held the picture, as :func:`latest_at` reads them: a shipment that sent a picture before another
    shipment's inspection found an anomaly in it was released when it sent it again.

    The decisions are found by the image index's content hash (or the shipment index), their
    outcomes by the index on the decision they refer to; only those outcomes' content is read, for
    what they found (:class:`outcome_found`)."""
    c = audit_records.c
    if holding is not None:
        ix = image_index.c
        decided: Any = c.seq.in_(select(ix.seq).where(ix.sha256 == holding))
    else:
        decided = c.shipment_id.in_(sorted(set(among)))
    outcome = audit_records.alias("outcome")
    later = audit_records.alias("later")
    corrected = exists().where(
        later.c.kind == "outcome", later.c.ref_seq == outcome.c.ref_seq, later.c.seq > outcome.c.seq
    )
    found = exists().where(
        outcome.c.kind == "outcome",
        outcome.c.ref_seq == c.seq,
        ~corrected,
        outcome_found(outcome.c.content).is_not(None),
    )
    return (
        select(audit_records)
        .where(decided, c.shipment_id != other_than, c.kind == "decision", found)
        .order_by(c.seq)
        .limit(limit)
    )


class outcome_found(FunctionElement):  # noqa: N801 - named as SQL functions are
    """``outcome_found(content)``: what an outcome record's content says inspection found, as text; NULL
    where it found the cargo clean (JSON null). The content is JSON text in a text column (the chain
    hashes it as it is), so each database reads into it with its own JSON functions."""

    type = String()
    inherit_cache = True
    name = "outcome_found"


@compiles(outcome_found, "postgresql")
def _found_postgresql(element: outcome_found, compiler: Any, **kw: Any) -> str:
    (content,) = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(CAST({content} AS jsonb) #>> '{{outcome,found}}')"


@compiles(outcome_found, "sqlite")
def _found_sqlite(element: outcome_found, compiler: Any, **kw: Any) -> str:
    (content,) = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"json_extract({content}, '$.outcome.found')"


def _outcome(row: Any) -> OutcomeRecord:
    content = json.loads(row.content)
    outcome = content["outcome"]
    return OutcomeRecord(
        seq=row.seq,
        record_hash=row.record_hash,
        prev_hash=row.prev_hash,
        # from the hashed content, not the columns beside it: a read apart from a walk checks the
        # content against the hash the walk passed, and nothing checks a column there
        created_at=content.get("created_at", row.created_at),
        shipment_id=content.get("shipment_id", row.shipment_id),
        decision_seq=content["decision_seq"],
        found=outcome["found"],
        officer=outcome["officer"],
        notes=outcome["notes"],
    )


class SealFailure(NamedTuple):
    """A decision a read to show leaves out, as its record or one of its outcomes fails its seal:
    ``seq``, the record that fails; ``shipment_id``, the shipment to show it under: the one its
    hashed content names where that content gives its hash, the column's where it differs or the
    content does not (said so in the text; nothing else of the content is read); ``why``, the
    :class:`~pipeline.audit.seal.SealBrokenError`'s message, which names the record and what to run."""

    seq: int
    shipment_id: str
    why: str


def records_of(
    conn: Connection,
    rows: Sequence[Any],
    *,
    upto: int | None = None,
    seal_key: SealKey | None = None,
    outcomes_read: Callable[[Sequence[Any]], None] | None = None,
) -> list[AuditRecord]:
    """Decision rows -> records, each with the latest outcome that refers to it (with ``upto``, of
    those numbered up to it).

    With ``seal_key`` (a read that decides: a hold carried over or lifted, a decision replayed),
    the decisions and their outcomes are first checked against their seals
    (:func:`~pipeline.audit.seal.check_read`): a forged outcome must not lift a hold, nor a forged
    decision be answered as the one recorded. ``outcomes_read``: given the outcome rows read,
    before they are attached (a walk's read checks them against the rows it walked).

    Raises:
        SealBrokenError: with ``seal_key``, a record that fails its seal.
    """
    found = _outcome_rows(conn, rows, upto)
    if outcomes_read is not None:
        outcomes_read(found)
    if seal_key is not None:
        _check(conn, seal_key, rows, found)
    return _records(rows, found)


def records_passing(
    conn: Connection, rows: Sequence[Any], *, seal_key: SealKey | None
) -> tuple[list[AuditRecord], list[SealFailure]]:
    """Decision rows -> the records of those that pass their seals, as :func:`records_of` gives
    them, and apart, in the rows' order, a :class:`SealFailure` for each one that fails: a read that
    shows many shipments (the review queue) shows the others, where one record failing its seal
    failed the whole read. Each decision is checked with its own outcomes, so a forged one hides
    no other; all are checked at once first (one query for the seals), each on its own only where
    one fails. Without ``seal_key`` none fails."""
    found = _outcome_rows(conn, rows, None)
    if seal_key is None:
        return _records(rows, found), []
    try:
        _check(conn, seal_key, rows, found)
        return _records(rows, found), []
    except SealBrokenError as whole:
        first = whole
    outcomes: dict[int, list[Any]] = {}
    for row in found:
        outcomes.setdefault(row.ref_seq, []).append(row)
    passing, failed = [], []
    for row in rows:
        try:
            _check(conn, seal_key, [row], outcomes.get(row.seq, []))
            passing.append(row)
        except SealBrokenError as exc:
            failed.append(SealFailure(exc.seq, _named(row), str(exc)))
    if not failed:  # the rows that failed together pass one by one: nothing to show apart
        raise first
    kept = {row.seq for row in passing}
    return _records(passing, [row for row in found if row.ref_seq in kept]), failed


def _named(row: Any) -> str:
    """The shipment a failing decision row is to be shown under: the one its hashed content names
    where that content still gives its hash (a forger who moved a genuine hold to another
    shipment's id by its column had the banner name that shipment, and the held one named nowhere),
    with what the column says where it differs; the column's, marked unverified, otherwise."""
    column = str(row.shipment_id)
    try:
        intact = chain_hash(row.prev_hash, row.content) == row.record_hash
        named = json.loads(row.content).get("shipment_id") if intact else None
    except (ValueError, TypeError, AttributeError, RecursionError):
        named = None
    if not isinstance(named, str):
        return f"{column} (as its record's column says: unverified)"
    return named if named == column else f"{named} (its record's column says {column})"


def _outcome_rows(conn: Connection, rows: Sequence[Any], upto: int | None) -> list[Any]:
    """The outcome rows that refer to the decision ``rows`` (with ``upto``, those numbered up to
    it), in chain order."""
    seqs = [r.seq for r in rows]
    if not seqs:
        return []
    c = audit_records.c
    where = [c.kind == "outcome", c.ref_seq.in_(seqs), *([] if upto is None else [c.seq <= upto])]
    return list(conn.execute(select(audit_records).where(*where).order_by(c.seq)).all())


def _check(conn: Connection, seal_key: SealKey, rows: Sequence[Any], found: Sequence[Any]) -> None:
    """Check the decision ``rows`` and their outcomes ``found`` against their seals, and that each
    outcome names the decision it is attached to.

    Raises:
        SealBrokenError: naming the first record that fails.
    """
    check_read(conn, seal_key, [*rows, *found])
    decided = {row.seq: row for row in rows}
    for row in found:
        check_outcome_of(decided[row.ref_seq], row)


def _records(rows: Sequence[Any], found: Sequence[Any]) -> list[AuditRecord]:
    """The decision ``rows`` as records, each with its latest outcome among ``found``."""
    outcomes: dict[int, OutcomeRecord] = {}
    for row in found:
        outcomes[row.ref_seq] = _outcome(row)  # later outcomes correct earlier ones
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


def review_queue(
    tiers: Sequence[Tier] | None,
    limit: int,
    offset: int,
    pending_outcome: bool | None,
    before: int | None = None,
) -> Select[Any]:
    """The query of :meth:`~pipeline.audit.store.AuditStore.list`: the latest decision per shipment,
    newest first, a page of them; with ``before``, only those numbered below it (the next page after
    one whose last record was ``before``: pages by offset skipped shipments when outcomes recorded
    meanwhile took earlier ones out of the pending queue)."""
    c = audit_records.c
    latest = select(func.max(c.seq)).where(c.kind == "decision").group_by(c.shipment_id)
    query = select(audit_records).where(c.kind == "decision", c.seq.in_(latest))
    if before is not None:
        query = query.where(c.seq < before)
    if tiers is not None:
        query = query.where(c.tier.in_([Tier(t).value for t in tiers]))
    if pending_outcome is not None:
        closed = select(c.ref_seq).where(c.kind == "outcome", c.ref_seq.is_not(None))
        query = query.where(c.seq.not_in(closed) if pending_outcome else c.seq.in_(closed))
    return query.order_by(c.seq.desc()).limit(limit).offset(offset)


def rows_after(
    conn: Connection, after: int, page: int, *where: Any, table: Table = audit_records
) -> list[Any]:
    """A page of record rows numbered after ``after``, in chain order (``table``: ``sealed_records``
    for their seals too; ``where`` on its columns)."""
    return list(
        conn.execute(select(table).where(table.c.seq > after, *where).order_by(table.c.seq).limit(page)).all()
    )
