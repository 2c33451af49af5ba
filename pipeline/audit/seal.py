"""Keyed seals on the audit chain: ``seal = HMAC-SHA256(K, record_hash)``, one per record.

The hash chain alone is public arithmetic: anyone who may write to the database can append a record
(a "clean" outcome that lifts a hold, by any officer, backdated) with one sha256 and move the head
row, and every check of the chain passes. A seal is made with a key only the server holds, so a
record added or rewritten by a database writer without it carries no seal, or a wrong one.

``K = HMAC-SHA256(audit_secret, b"clearsight audit seal v1")``: derived from the server's
``audit_secret`` under its own label, so the seals and the random-audit draws made with the same
secret never share a key.

With a key every record must carry its seal (:class:`SealCheck`). Records without one (those of
a store from before version 5, or written by a writer not given the key) are sealed only by an
operator who vouches for them against a head published earlier (`clearsight audit seal --expect
SEQ:HASH`, :mod:`pipeline.audit.sealing`), never by an upgrade on its own: nothing in the database
can say that a store was sealed before, so a forger who dropped the seal column and set the version
back to 4 had the next writer holding the key seal a forged record with the rest. A writer holding
the key refuses a store with unsealed records until then (:func:`unsealed_records`).

What the seals do not prove: a holder of the secret can seal anything; a chain cut back to an
earlier record (its head row moved back) still carries valid seals, which only a head published
elsewhere catches (``clearsight audit verify --expect``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from array import array
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, func, inspect, select, text

from datasets.errors import AuditError
from pipeline.audit.chain import GENESIS_HASH, chain_hash, index_columns
from pipeline.audit.schema import audit_head, audit_records, sealed_records

__all__ = [
    "SEAL_LABEL",
    "HeadSealError",
    "SealBrokenError",
    "SealCheck",
    "SealKey",
    "add_seal_column",
    "check_head_seal",
    "check_outcome_of",
    "has_seal_column",
    "locked_head",
    "seal_walked",
    "seal_fault",
    "seals_unchecked",
    "unsealed_records",
]

SEAL_LABEL = b"clearsight audit seal v1"
"""The label the seal key is derived under (domain separation from the random-audit draws)."""


class SealKey(NamedTuple):
    """The key records are sealed and checked with. ``weak``: derived from the public development
    secret (or one short enough to guess), so that anyone can compute the seals."""

    key: bytes
    weak: bool = False

    @classmethod
    def derive(cls, secret: str | bytes, *, weak: bool = False) -> SealKey:
        """``K = HMAC-SHA256(secret, SEAL_LABEL)`` of the server's ``audit_secret``."""
        raw = secret.encode("utf-8") if isinstance(secret, str) else secret
        return cls(hmac.new(raw, SEAL_LABEL, hashlib.sha256).digest(), weak)

    def seal(self, record_hash: str) -> str:
        """The seal of a record: ``HMAC-SHA256(K, record_hash)`` as 64 lowercase hex digits."""
        return hmac.new(self.key, record_hash.encode("ascii"), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"SealKey(weak={self.weak})"


class SealBrokenError(AuditError):
    """A record read to decide (an outcome that lifts a hold, a decision replayed or carried over)
    fails its seal: forged, or written without the server's key. Nothing is decided on it."""

    def __init__(self, seq: int, why: str) -> None:
        super().__init__(f"audit record {seq} fails its seal ({why}): run `clearsight audit verify`")
        self.seq = seq


class HeadSealError(SealBrokenError):
    """The chain's head fails the seal of the key a writer holds: nothing is appended after it, since
    a record added there would bury a forged head under sealed ones, and a writer still holding a
    rotated secret would seal what the server's key then refuses.

    Attributes:
        unsealed: the head carries no seal at all (appended by a writer not given the key, or its
            seal cleared), which no secret would seal: an operator seals it, or not, once checked.
    """

    def __init__(
        self,
        seq: int,
        why: str,
        *,
        foreign: bool = False,
        store: str | None = None,
        unsealed: bool = False,
    ) -> None:
        rotated = (
            ": if the audit secret was rotated (`clearsight audit seal --rotate`), restart this writer "
            "with the new CLEARSIGHT_AUDIT_SECRET"
            if foreign
            else ""
        )
        super().__init__(
            seq,
            f"{why}; it is the chain's head, and nothing is appended after a head that does not carry "
            f"this writer's seal{rotated}",
        )
        self.unsealed = unsealed
        if store is not None and unsealed:  # no secret is at fault: as a writer's open says of it
            self.args = (
                f"audit store {store}: its head, record {seq}, carries no seal: written by a writer not "
                "given the server's key, or its seal cleared by a forger. Look at it (`clearsight audit "
                "verify`, `clearsight audit export --chain --no-seals`), then, if it is genuine, seal it "
                "with `clearsight audit seal --expect SEQ:HASH` of a head published at or after record "
                f"{seq}. Nothing is appended after a head without this writer's seal",
            )
        elif store is not None:  # found as a writer opens the store: said as a setting to change
            self.args = (
                f"audit store {store}: its head, record {seq}, does not carry the seal of this "
                f"CLEARSIGHT_AUDIT_SECRET ({why}): the secret is not the one the store's records are "
                "sealed with (set the one its writers use; after `clearsight audit seal --rotate`, the "
                "new one: README, *Rotating the audit secret*), or the head was forged (`clearsight "
                "audit verify` with the store's secret says which). Nothing is appended after a head "
                "without this writer's seal",
            )


class Head(NamedTuple):
    """The chain's head as its row gives it."""

    seq: int
    record_hash: str


def locked_head(conn: Connection, key: SealKey, *, store: str | None = None) -> Head:
    """The chain's head row, locked for an append (PostgreSQL: FOR UPDATE), once its record is found
    to carry ``key``'s seal, and its hash and query columns to be its content's: read in the same
    query. A writer extends only a head it would vouch for reading it. ``store``: the store's URL
    (password hidden), given by a writer opening it, whose refusal names the secret to set.

    Raises:
        HeadSealError: naming the head record.
    """
    return _checked_head(conn, key, lock=True, store=store)


def check_head_seal(conn: Connection, key: SealKey, *, store: str | None = None) -> None:
    """Raise :class:`HeadSealError` where the chain's head does not carry ``key``'s seal, read
    without a lock (a readiness probe's check: :meth:`pipeline.audit.AuditStore.check_head_seal`).

    Raises:
        HeadSealError: naming the head record and the store, as a writer's open does.
    """
    _checked_head(conn, key, lock=False, store=store)


def _checked_head(conn: Connection, key: SealKey, *, lock: bool, store: str | None = None) -> Head:
    h = audit_head.c
    query = (
        select(h.seq.label("head_seq"), h.record_hash.label("head_hash"), sealed_records)
        .select_from(
            audit_head.outerjoin(
                sealed_records,
                (sealed_records.c.seq == h.seq) & (sealed_records.c.record_hash == h.record_hash),
            )
        )
        .where(h.id == 1)
    )
    if lock:
        # locked on its own first: PostgreSQL, a FOR UPDATE that waited for another writer's append
        # reads the head row as that append left it, but a row joined to it as the statement began,
        # without the new record (a writer opening meanwhile was refused as if the head were forged);
        # the statement after the wait sees both
        conn.execute(select(h.seq).where(h.id == 1).with_for_update())
    row = conn.execute(query).one()
    head = Head(row.head_seq, row.head_hash)
    if head.seq == 0:
        return head
    if row.seq is None:
        raise HeadSealError(
            head.seq, "the head row names a record the chain does not hold with its hash", store=store
        )
    why = _content_fault(row)
    if why is not None:
        raise HeadSealError(head.seq, why, store=store)
    why = seal_fault(key, head.record_hash, row.seal)
    if why is not None:
        # the same story as a read's: the head and the records it ends with, and the first, all another
        # key's (the head's made-up seal alone passed for a rotation)
        rotated = _foreign_seal(key, head.record_hash, row.seal) and _looks_rotated(
            conn, key, head.seq, head.seq
        )
        raise HeadSealError(
            head.seq, why, foreign=bool(rotated), store=store, unsealed=row.seal is None or row.seal == ""
        )
    return head


def _content_fault(row: Any) -> str | None:
    """Why a record row is not what its hash and content say (its hash not its content's, or a
    query column not the content's), or None: a forger who rewrote either left the seal as it was."""
    if chain_hash(row.prev_hash, row.content) != row.record_hash:
        return "its content does not give its hash"
    try:
        content = json.loads(row.content)
        expected = index_columns(content if isinstance(content, dict) else {})
    except (ValueError, RecursionError, AttributeError):
        return "its content is not a record"
    if any(getattr(row, column) != value for column, value in expected.items()):
        return "a column differs from its hashed content"
    return None


@functools.cache
def _public_key() -> SealKey:
    # imported here: pipeline.settings derives its keys with this module
    from pipeline.settings import DEVELOPMENT_AUDIT_SECRET

    return SealKey.derive(DEVELOPMENT_AUDIT_SECRET, weak=True)


def seal_fault(key: SealKey, record_hash: str, seal: object, *, mac: Any = None) -> str | None:
    """Why ``seal`` is not the seal of ``record_hash`` under ``key``, or None (``mac``: an HMAC of
    the key to copy, so that a walk pads the key once).

    A seal that does not match but is the one the public development secret gives is named so: the
    record was written by a server run without ``CLEARSIGHT_AUDIT_SECRET``, which an operator must
    hear, since anyone can make such seals."""
    if seal is None or seal == "":
        return "carries no seal: written without the server's key (forged, or by a writer not given the key)"
    if not isinstance(seal, str) or not seal.isascii():  # compare_digest refuses non-ASCII text: a crash
        return "forged or altered (its seal is not one any key writes)"
    raw = record_hash.encode("utf-8", "surrogatepass")
    if mac is None:
        mac = hmac.new(key.key, digestmod=hashlib.sha256)
    mac = mac.copy()
    mac.update(raw)
    if isinstance(seal, str) and hmac.compare_digest(mac.hexdigest(), seal):
        return None
    public = _public_key()
    public_seal = hmac.new(public.key, raw, hashlib.sha256).hexdigest()
    if key.key != public.key and isinstance(seal, str) and hmac.compare_digest(public_seal, seal):
        return (
            "its seal does not match: sealed with the public development secret: written by a "
            "server without CLEARSIGHT_AUDIT_SECRET"
        )
    why = (
        " (checked with the public development audit_secret or one too short: set "
        "CLEARSIGHT_AUDIT_SECRET to the server's, or check without seals)"
        if key.weak
        else ""
    )
    return f"forged or altered (its seal does not match){why}"


class SealCheck:
    """The seals of a chain, checked record by record in chain order (constant memory).

    A record with a seal must carry the one its hash gives, and fails at once. Every record must
    carry one: those without are counted (:attr:`unsealed`, the first at :attr:`first_unsealed`)
    and the walk fails at its end (:meth:`unsealed_fault`), saying how many, since a store upgraded
    by a writer with the key had every record sealed then: a record without one was written by a
    writer without the key, or lost its seal to a forger (one who cleared every seal and appended a
    record of their own).

    ``vouching``: the walk of `clearsight audit seal`, which is to seal the records without one, so
    they are counted (up to :attr:`last_unsealed`) and do not fail it, and their numbers and hashes,
    as the walk checked them, kept (:meth:`walked`, 40 bytes a record): the key signs those hashes
    and no other, whatever is read afterwards. ``rekeying`` (with ``vouching``): the walk of `clearsight
    audit seal --rotate`, under the previous key, which keeps every record it passed, sealed or not,
    since the new key seals them all.
    """

    def __init__(self, key: SealKey, *, vouching: bool = False, rekeying: bool = False) -> None:
        self.key = key
        self._mac = hmac.new(key.key, digestmod=hashlib.sha256)  # copied per record: the key's pad once
        self.vouching = vouching or rekeying
        self.rekeying = rekeying
        self.checked = 0
        self.unsealed = 0
        self.first_unsealed: int | None = None
        self.last_unsealed: int | None = None
        self._walked_seqs = array("q")
        self._walked_hashes = bytearray()

    def walked(self) -> Iterator[tuple[int, str]]:
        """``(seq, record_hash)`` of each record the vouching walk passed that is to be sealed (those
        without a seal; every record when ``rekeying``), as it checked them."""
        for i, seq in enumerate(self._walked_seqs):
            yield seq, self._walked_hashes[32 * i : 32 * (i + 1)].hex()

    def check(self, seq: int, record_hash: str, seal: object) -> str | None:
        """Why record ``seq``'s seal does not match, or None; a record without one is counted."""
        self.checked += 1
        if seal is None or seal == "":
            self.unsealed += 1
            if self.first_unsealed is None:
                self.first_unsealed = seq
            self.last_unsealed = seq
            if self.vouching:  # the walk checked the hash is the content's, linked to the one before
                self._walk(seq, record_hash)
            return None
        why = seal_fault(self.key, record_hash, seal, mac=self._mac)
        if why is None and self.rekeying:
            self._walk(seq, record_hash)
        return None if why is None else f"record {seq}: {why}"

    def walked_range(self) -> tuple[int | None, int | None]:
        """The first and the last record number :meth:`walked` gives (None, None: none)."""
        return (self._walked_seqs[0], self._walked_seqs[-1]) if self._walked_seqs else (None, None)

    def _walk(self, seq: int, record_hash: str) -> None:
        self._walked_seqs.append(seq)
        self._walked_hashes += bytes.fromhex(record_hash)

    def unsealed_fault(self) -> str | None:
        """Why the walk fails for the records without a seal, or None: every record had one."""
        if not self.unsealed or self.vouching:
            return None
        return (
            f"{self.unsealed} records carry no seal, first at seq {self.first_unsealed}: written without "
            "the server's key (by a writer not given it) or their seals cleared (forged)"
        )

    def summary(self, checked: int) -> str:
        """What the seals of ``checked`` records, all of them passed, prove: a line for the report."""
        said = f"{checked} records sealed, every seal matches" if checked else "no records to check seals of"
        if self.key.weak:
            said += (
                "; the seals were checked with the public development audit_secret (or one shorter than "
                "16 characters): anyone can compute them, so they prove nothing"
            )
        return said


def seals_unchecked() -> str:
    """The report's line when no key was given."""
    return (
        "seals not checked (no key: set CLEARSIGHT_AUDIT_SECRET to the server's): a database writer "
        "could have added or rewritten records"
    )


def has_seal_column(conn: Connection) -> bool:
    """Whether the store's ``audit_records`` has the ``seal`` column (schema version 5)."""
    return any(column["name"] == "seal" for column in inspect(conn).get_columns(audit_records.name))


def add_seal_column(conn: Connection) -> None:
    """Give ``audit_records`` its nullable ``seal`` column (schema version 5), where it has none:
    records written before stay unsealed."""
    if not has_seal_column(conn):
        conn.execute(text("ALTER TABLE audit_records ADD COLUMN seal VARCHAR(64)"))


def check_read(conn: Connection, key: SealKey, rows: Iterable[Any]) -> None:
    """Check the rows a read decides on (an outcome lifting a hold, a decision replayed or carried
    over) before it does: each one's seal, read in one query, under ``key``, and that its hash is
    its content's and its query columns are its content's, since a forger who rewrote the content,
    or pointed a genuine outcome at another decision by its column, left the seal as it was.

    Raises:
        SealBrokenError: naming the first row that fails.
    """
    rows = list(rows)
    if not rows:
        return
    c = sealed_records.c
    # the rows' seals and their neighbours' links, in one query
    wanted = (
        {row.seq for row in rows}
        | {row.seq - 1 for row in rows if row.seq > 1}
        | {row.seq + 1 for row in rows}
    )
    found = {
        r.seq: r
        for r in conn.execute(
            select(c.seq, c.seal, c.prev_hash, c.record_hash).where(c.seq.in_(sorted(wanted)))
        )
    }
    head = conn.execute(
        select(audit_head.c.seq, audit_head.c.record_hash).where(audit_head.c.id == 1)
    ).first()
    for row in rows:
        why = _content_fault(row)
        if why is not None:
            raise SealBrokenError(row.seq, why)
        stored = found.get(row.seq)
        why = seal_fault(key, row.record_hash, None if stored is None else stored.seal)
        if why is not None:
            raise SealBrokenError(row.seq, why + _rotation_hint(conn, key, row.seq, head))
        why = _misplaced(row, found, head)
        if why is not None:
            raise SealBrokenError(row.seq, why)


def _foreign_seal(key: SealKey, record_hash: str, seal: object) -> bool:
    """Whether ``seal`` is one a rotation leaves a process of the previous secret reading: present,
    64 lowercase hex digits, and the seal of neither ``key`` nor the public development secret.
    A seal cleared, cut, or the public secret's is a writer's or a forger's doing, never a
    rotation's."""
    if not (isinstance(seal, str) and len(seal) == 64 and all(c in "0123456789abcdef" for c in seal)):
        return False
    if not isinstance(record_hash, str):  # stored as bytes: a forger's, which verify names
        return False
    raw = record_hash.encode("utf-8", "surrogatepass")
    return not any(
        hmac.compare_digest(hmac.new(k.key, raw, hashlib.sha256).hexdigest(), seal)
        for k in (key, _public_key())
    )


def _looks_rotated(conn: Connection, key: SealKey, seq: int, head_seq: int) -> str | None:
    """Which ends of the chain back a rotation's story for record ``seq`` failing its seal, or None
    where they do not: the record, the records either side of it, the chain's first record and its
    head, as many as there are, all carry another key's seal (:func:`_foreign_seal`), as a rotation
    leaves every record. A forger's made-up seal beside records carrying this key's passed for a
    rotation when only the ends were looked at. A chain of one record backs nothing."""
    c = sealed_records.c
    wanted = {1, head_seq, seq, seq - 1, seq + 1} & set(range(1, head_seq + 1))
    if wanted == {seq}:
        return None
    rows = conn.execute(select(c.seq, c.record_hash, c.seal).where(c.seq.in_(sorted(wanted)))).all()
    if len(rows) != len(wanted) or not all(_foreign_seal(key, r.record_hash, r.seal) for r in rows):
        return None
    ends = sorted({1, head_seq} - {seq})
    return (
        "so do the records beside it and the chain's first record and its head"
        if len(ends) == 2
        else "so do the records beside it and the chain's first record"
        if ends == [1]
        else "so do the records beside it and the chain's head"
    )


def _rotation_hint(conn: Connection, key: SealKey, seq: int, head: Any) -> str:
    """What a failing read's message adds where :func:`_looks_rotated` backs a rotation: the secret
    was likely rotated under this process, whose seals are all another key's now, rather than the
    records forged (a forger without any key can still make up seals on all of those records: the
    hint says "if")."""
    if head is None:
        return ""
    others = _looks_rotated(conn, key, seq, head.seq)
    if others is None:
        return ""
    return (
        f"; {others}, carrying another key's seal as it does: if the audit secret was rotated "
        "(`clearsight audit seal --rotate`), restart this process with the new CLEARSIGHT_AUDIT_SECRET"
    )


def _misplaced(row: Any, found: Mapping[int, Any], head: Any) -> str | None:
    """Why a row read is not where the chain puts it, or None (``found``: the stored rows by number,
    its neighbours among them; ``head``: the head row): the record before it must be the one its
    hashed ``prev_hash`` names (the chain's start for record 1), and the one after it link back to
    it, or it be the head. Record numbers are not hashed: a genuine, sealed decision renumbered past
    a shipment's later hold was read as its latest decision, and the hold was gone."""
    before = found.get(row.seq - 1)
    if row.prev_hash != (GENESIS_HASH if row.seq == 1 else before.record_hash if before else None):
        return "it is not where the chain puts it: the record before it is not the one it links to"
    after = found.get(row.seq + 1)
    if after is not None and after.prev_hash != row.record_hash:
        return "it is not where the chain puts it: the record after it links to another"
    if after is None and (head is None or (head.seq, head.record_hash) != (row.seq, row.record_hash)):
        return "it is not where the chain puts it: no record follows it, and it is not the chain's head"
    return None


def check_outcome_of(decision: Any, outcome: Any) -> None:
    """Check that the ``outcome`` row a read attaches to the ``decision`` row (by its ``ref_seq``)
    names that very decision in its hashed content: its shipment and the decision's record hash.

    Sequence numbers are not hashed, so a forger who swapped two genuine decisions' numbers had one
    shipment's cleared hold lend its officer's outcome to another's live hold, every row passing
    :func:`check_read` (review repro: a held shipment then recorded as RELEASE).

    Raises:
        SealBrokenError: naming the outcome, where its content names another decision.
    """
    try:
        content = json.loads(outcome.content)
        named = (content.get("shipment_id"), content.get("decision_hash"))
    except (ValueError, RecursionError, AttributeError):
        raise SealBrokenError(outcome.seq, "its content is not a record") from None
    if named != (decision.shipment_id, decision.record_hash):
        raise SealBrokenError(
            outcome.seq,
            f"it is the outcome of another decision than record {decision.seq}, whose number it names",
        )


_SEAL_PAGE = 1000


class Unsealed(NamedTuple):
    """The records of a store that carry no seal: how many, the first and the last (None: none)."""

    count: int
    first: int | None
    last: int | None


def unsealed_records(conn: Connection) -> Unsealed:
    """The records without a seal, of a store with the seal column (one scan of the records)."""
    seal, seq = sealed_records.c.seal, sealed_records.c.seq
    row = conn.execute(
        select(func.count(), func.min(seq), func.max(seq)).where((seal.is_(None)) | (seal == ""))
    ).one()
    return Unsealed(int(row[0] or 0), row[1], row[2])


def seal_walked(
    conn: Connection, key: SealKey, walked: Iterable[tuple[int, str]], *, rekeying: bool = False
) -> int:
    """Seal under ``key`` the records ``walked``, ``(seq, record_hash)`` as a vouching walk checked
    them (:meth:`SealCheck.walked`), a page at a time; returns how many rows took a seal.

    Only hashes the walk passed are signed, and each write is pinned to its row's walked hash (and
    to the row carrying no seal, unless ``rekeying``, which replaces the seals the walk checked
    under the previous key): a row rewritten after the walk (a trigger or a rule firing on a
    seal's write rewrote the head record) is left as it is, and the key's signature of what a page
    read returned could not be taken away by whatever copied it out of the transaction. The caller
    walks the chain again afterwards, strictly.
    """
    records = sealed_records.c
    pinned = [records.seq == bindparam("at"), records.record_hash == bindparam("pinned")]
    if not rekeying:
        pinned.append((records.seal.is_(None)) | (records.seal == ""))
    update = sealed_records.update().where(*pinned).values(seal=bindparam("made"))
    count, page = 0, []
    for seq, record_hash in walked:
        page.append({"at": seq, "pinned": record_hash, "made": key.seal(record_hash)})
        if len(page) == _SEAL_PAGE:
            count += _sealed(conn.execute(update, page), len(page))
            page = []
    if page:
        count += _sealed(conn.execute(update, page), len(page))
    return count


def _sealed(result: Any, sent: int) -> int:
    """Rows a page's update sealed; where the driver gives no count for many rows, those sent (the
    strict walk after the sealing tells any that were not)."""
    rowcount = getattr(result, "rowcount", -1)
    return rowcount if isinstance(rowcount, int) and rowcount >= 0 else sent
