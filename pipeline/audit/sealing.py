"""Sealing the records that carry no seal, once an operator vouches for them (`clearsight audit seal`).

Records without a seal are those of a store from before seals (schema version 4 or older), or
written since by a writer not given the server's key (the library without ``seal_key``, an older
Clearsight). No writer seals them on its own: nothing in the database can say that a store was
sealed before, so when the upgrade sealed what it found, a database writer who appended a forged
record, dropped the seal column and set the version back to 4 had the next writer holding the key
seal the forgery with the rest. A writer holding the key refuses such a store instead
(:meth:`~pipeline.audit.migrate.Schema.open`), until an operator has:

1. checked the chain (`clearsight audit verify --no-seals`) and compared its head with the one
   published last, outside the database;
2. named that published head (``--expect SEQ:HASH``).

Then, in one write transaction (appends wait on it), :func:`seal_vouched` upgrades the store to the
current version where it is older, walks the chain as verify does (hashes, links, indexes, and the
seal of every record that carries one), finds the named record with its published hash, and seals
every record without a seal, provided none lies after the named one: a record written after the
head was published is what a forger appends, and must be looked at, then vouched for by a head
published later. Nothing is sealed when any check fails.

Rotating the secret (`clearsight audit seal --rotate`, :func:`seal_vouched` with ``previous``): the
same walk checks every seal under the key of the previous secret, and the new key seals every record
again, each write pinned to the hash the walk passed. Two heads anchor it: the one published last
(``expect``), found in the chain with its hash as above, since a secret that leaked lets its holder
rewrite the chain and seal it again, which only a head published outside the store catches; and the
chain's head as it stands (``head``), which the operator names once they have looked at the records
after the published one, since the new key vouches for those too. A record without a seal after the
published head is refused as above: rotating never seals what no key vouched for.
"""

from __future__ import annotations

import hmac
from typing import NamedTuple

from sqlalchemy import Connection, select, text

from datasets.errors import AuditError
from pipeline.audit.migrate import Schema
from pipeline.audit.schema import SCHEMA_VERSION, audit_head, audit_records, schema_info, sealed_records
from pipeline.audit.seal import SealCheck, SealKey, seal_fault, seal_walked
from pipeline.audit.verify import verify_chain

__all__ = ["SealingReport", "seal_vouched"]


class SealingReport(NamedTuple):
    """What :func:`seal_vouched` did: ``sealed`` records (``first`` to ``last``; None: none lacked a
    seal), ``upgraded_from`` the schema version it upgraded (None: at the current one already), the
    chain's head, and what its seals prove (``seals``: :meth:`SealCheck.summary`); ``rotated``: every
    record was sealed again under the new key (``--rotate``), ``had_no_seal`` of them carrying none
    before."""

    sealed: int
    first: int | None
    last: int | None
    upgraded_from: int | None
    head_seq: int
    head_hash: str
    seals: str
    rotated: bool = False
    had_no_seal: int = 0


def seal_vouched(
    conn: Connection,
    schema: Schema,
    key: SealKey,
    expect: tuple[int, str],
    *,
    previous: SealKey | None = None,
    head: tuple[int, str] | None = None,
) -> SealingReport:
    """Seal, under ``key``, every record without a seal of the store on ``conn`` (a write
    transaction), once the chain checks out and reaches ``expect``, the ``(seq, record_hash)`` of a
    head the operator published; see the module's docstring. ``previous``: the key of the secret
    the records were sealed under, to check their seals with before every record is sealed again
    under ``key`` (a rotation), and ``head``, the chain's head as the operator names it.

    Raises:
        AuditError: the chain or an index broken, a seal wrong, ``expect`` not in the chain with its
            hash, or a record without a seal after it (naming the record), or, rotating, ``head``
            not the chain's head, or ``previous`` the same key: nothing is sealed.
        SchemaVersionError: an older store, and a role that may not upgrade it.
    """
    url = f"audit store {schema.url}"
    if previous is not None and hmac.compare_digest(previous.key, key.key):
        raise AuditError(
            f"{url}: nothing sealed: the previous secret and the new one are the same: nothing to rotate"
        )
    if previous is not None and head is None:
        raise AuditError(f"{url}: nothing sealed: rotating needs the chain's head named as it stands")
    if conn.dialect.name == "postgresql":
        # first, before the snapshot is taken: no append, trigger or rule can come in meanwhile
        # (SQLite's BEGIN IMMEDIATE holds the write lock already). EXCLUSIVE, not SHARE ROW
        # EXCLUSIVE: that one did not wait for an append holding the head row FOR UPDATE, and the
        # two deadlocked (PostgreSQL aborted one after a second)
        conn.execute(text("LOCK TABLE audit_head, audit_records IN EXCLUSIVE MODE"))
    _refuse_rewriters(conn, url)
    conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1).with_for_update()).first()
    version = conn.execute(select(schema_info.c.version).where(schema_info.c.id == 1)).scalar()
    upgraded_from = None
    if version != SCHEMA_VERSION:
        schema.upgrade(conn, version, create=True)
        upgraded_from = version
    check = SealCheck(key, vouching=True) if previous is None else SealCheck(previous, rekeying=True)
    report = verify_chain(conn, seals=check, sealed=True)
    if not report.ok:
        where = report.index or "chain"
        under = (
            _rotated_already(conn, key, report.first_bad)
            if previous is not None and report.problem == "forged"
            else ""
        )
        raise AuditError(
            f"{url}: nothing sealed: {where} broken at record {report.first_bad} ({report.problem}): "
            f"{report.message}{under}"
        )
    seq, published = expect
    found = conn.execute(select(audit_records.c.record_hash).where(audit_records.c.seq == seq)).scalar()
    if found is None:
        raise AuditError(
            f"{url}: nothing sealed: record {seq}, published with hash {published}, is not in the chain "
            f"(its head is record {report.head_seq}): the chain was cut back, or the head is not this "
            "store's"
        )
    if found != published:
        raise AuditError(
            f"{url}: nothing sealed: record {seq} has hash {found}, but {published} was published: the "
            "chain up to it was rewritten, or the head is not this store's"
        )
    if check.last_unsealed is not None and check.last_unsealed > seq:
        raise AuditError(
            f"{url}: nothing sealed: records after the published head (record {seq}) carry no seal, the "
            f"last at seq {check.last_unsealed}: written since it was published by a writer not given "
            "the server's key, or by a forger. Look at them (`clearsight audit export --chain "
            "--no-seals`), and vouch for a head published after them only if they are genuine"
        )
    if head is not None and head != (report.head_seq, report.head_hash):
        raise AuditError(
            f"{url}: nothing sealed: the chain's head is record {report.head_seq} with hash "
            f"{report.head_hash}, not the {head[0]}:{head[1]} named: rotating seals every record again "
            "under the new secret, those after the published head too, so look at them (`clearsight "
            "audit export --chain --out FILE`) and name the head as it stands"
        )
    sealed = seal_walked(conn, key, check.walked(), rekeying=previous is not None)
    _check_again(conn, url, key, expect, (report.head_seq, report.head_hash))
    if not sealed:
        first, last = None, None
    elif previous is not None:
        first, last = check.walked_range()
    else:
        first, last = check.first_unsealed, check.last_unsealed
    seals = SealCheck(key).summary(report.records_checked)
    if previous is not None and previous.weak:
        seals += (
            "; the seals they carried before were checked with the public development audit_secret "
            "(or one shorter than 16 characters): anyone could have made them, so the heads named "
            "vouch for these records, not their old seals"
        )
    return SealingReport(
        sealed,
        first,
        last,
        upgraded_from,
        report.head_seq,
        report.head_hash,
        seals,
        rotated=previous is not None,
        had_no_seal=check.unsealed if previous is not None else 0,
    )


def _rotated_already(conn: Connection, key: SealKey, seq: int | None) -> str:
    """What the report of a rotation's walk adds where record ``seq`` failed its seal under the
    previous secret: that it carries the new one's already (the rotation was run before, and its
    answer lost), or that the seals were checked under the previous secret."""
    row = None
    if seq is not None:
        c = sealed_records.c
        row = conn.execute(select(c.record_hash, c.seal).where(c.seq == seq)).first()
    if row is not None and row.seal and seal_fault(key, row.record_hash, row.seal) is None:
        return (
            "; it carries the new secret's seal already: the store was rotated before (check it with "
            "`clearsight audit verify` under the new secret)"
        )
    return " (seals checked under the previous secret, CLEARSIGHT_PREVIOUS_AUDIT_SECRET)"


_AUDIT_TABLES = (
    "schema_info",
    "audit_head",
    "audit_records",
    "audit_image_index",
    "audit_image_likeness",
    "audit_policy_versions",
)


def _refuse_rewriters(conn: Connection, url: str) -> None:
    """Refuse a store whose tables carry a trigger (or, on PostgreSQL, a rule): Clearsight makes
    none, and one that fires on a seal's write can rewrite a record between the walk and its seal.

    Raises:
        AuditError: naming the first such trigger or rule.
    """
    if conn.dialect.name == "sqlite":
        found = conn.execute(
            text("SELECT 'trigger', name, tbl_name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
        ).first()
    else:
        tables = {f"t{i}": name for i, name in enumerate(_AUDIT_TABLES)}
        resolved = ", ".join(f"to_regclass(:{k})" for k in tables)  # as the store's queries resolve them
        found = conn.execute(
            text(
                "SELECT 'trigger', t.tgname, c.relname FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid "
                f"WHERE NOT t.tgisinternal AND t.tgrelid IN ({resolved}) "
                "UNION ALL SELECT 'rule', r.rulename, c.relname FROM pg_rewrite r "
                f"JOIN pg_class c ON c.oid = r.ev_class WHERE r.ev_class IN ({resolved}) "
                "UNION ALL SELECT 'view', c.relname, c.relname FROM pg_class c "
                f"WHERE c.oid IN ({resolved}) AND c.relkind <> 'r' ORDER BY 1 DESC, 2"
            ),
            tables,
        ).first()
    if found is not None:
        kind, name, table = found
        what = (
            f"{table} is not a table (a view, or another kind)"
            if kind == "view"
            else f"{kind} {name!r} on table {table}"
        )
        raise AuditError(
            f"{url}: nothing sealed: {what}: Clearsight makes none, and one can rewrite records as "
            "they are sealed. Look at what it does, and drop it before sealing"
        )


def _check_again(
    conn: Connection, url: str, key: SealKey, expect: tuple[int, str], head: tuple[int, str]
) -> None:
    """Walk the chain once more, in the sealing transaction, every seal checked as verify checks it:
    nothing the key now vouches for may differ from what the first walk passed (the head, the
    published record), so anything that rewrote the store meanwhile undoes the sealing.

    Raises:
        AuditError: the store is not what the first walk found, or fails the strict walk.
    """
    report = verify_chain(conn, seals=SealCheck(key), sealed=True)
    seq, published = expect
    found = conn.execute(select(audit_records.c.record_hash).where(audit_records.c.seq == seq)).scalar()
    changed = (
        f"record {report.first_bad} ({report.problem}): {report.message}"
        if not report.ok
        else f"its head moved from record {head[0]} to {report.head_seq}"
        if (report.head_seq, report.head_hash) != head
        else f"record {seq}'s hash changed"
        if found != published
        else None
    )
    if changed is not None:
        raise AuditError(
            f"{url}: nothing sealed: the store changed while it was being sealed ({changed}): something "
            "rewrites it (a trigger, a writer without the key); run `clearsight audit verify`"
        )
