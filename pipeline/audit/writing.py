"""Appending to the audit chain, and the rules a decision or an officer's outcome must pass first.

:func:`write_decision` and :func:`write_outcome` are the transactions of
:meth:`~pipeline.audit.store.AuditStore.record` and
:meth:`~pipeline.audit.store.AuditStore.record_outcome`. Each locks the chain's head before it reads
anything, so that two writers cannot both judge a shipment's latest decision before either appends,
and checks there what a concurrent writer could change: who first sent the shipment, whether a hold
would be lowered, whether the same decision is already recorded, whether the pictures were decided
elsewhere since they were looked up.
:func:`append` then chains the record after the head. The checks of the caller's values alone
(:func:`check_idempotency_key`, :func:`decision_json`, :func:`check_outcome`) come before any
transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pydantic_core import PydanticSerializationError
from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from datasets.errors import ConflictError, DatasetFormatError, InputError, PolicyError
from datasets.json_text import check_writable
from datasets.shown_text import refuse_unshown
from datasets.type_names import PSEUDO_PREFIX, TYPE_NAME_RULE
from pipeline.audit import policy_index
from pipeline.audit.chain import canonical_json, chain_hash, created_at_now, index_columns
from pipeline.audit.image_indexes import Picture, Sighting, add_decision, sightings
from pipeline.audit.reading import FirstSent, first_sent, latest_decision, outcome_found, records_of
from pipeline.audit.records import AuditRecord, OutcomeRecord
from pipeline.audit.schema import audit_head, audit_records, image_index, sealed_records
from pipeline.audit.seal import SealKey, locked_head
from pipeline.decide import EarlierHold, flagged_tier
from pipeline.verdicts import ShipmentDecision, Tier

__all__ = [
    "DecidedAlready",
    "DecisionUnnamed",
    "ImagesSeenSince",
    "SentByAnother",
    "append",
    "refuse_a_reused_policy_version",
    "check_idempotency_key",
    "check_outcome",
    "decision_json",
    "write_decision",
    "write_outcome",
]

_NOT_ANOMALY_TYPES = frozenset({"clean", "good", "none"})
"""Words an outcome's ``found`` may not be: each reads as "nothing found"."""


class SentByAnother(ConflictError):
    """A shipment first sent under another key, whose sender may not send it again (``may_send``)."""

    def __init__(self, shipment_id: str) -> None:
        # no tier, no record number: the other sender's decision is none of this caller's business
        super().__init__(
            f"shipment {shipment_id!r} was first sent under another key; only that key, or another key "
            "of the same trader, may send it again (an admin may record a stricter decision)"
        )


class DecidedAlready(ConflictError):
    """A shipment sent again under another key (other pictures, another declaration) whose new
    declaration raises no flag that holds it stricter than its latest decision (``exclusive``); or,
    ``by_tier``, whose new decision is no stricter."""

    def __init__(self, shipment_id: str, seq: int, *, by_tier: bool = False) -> None:
        if by_tier:  # an officer's or admin's send: it sees every verdict, the answer tells it nothing new
            super().__init__(
                f"shipment {shipment_id!r} was already decided (audit record {seq}) on other images "
                "or another declaration; a shipment is decided once, and only a stricter decision is "
                "added later: send the same images and declaration to read that decision back, or "
                "have an officer record what inspection found"
            )
            return
        # the same answer whatever the pictures would have scored: it must tell nothing about them
        super().__init__(
            f"shipment {shipment_id!r} was already decided (audit record {seq}) on other images or "
            "another declaration; a shipment is decided once: sent again, it is decided anew only "
            "where its declaration raises a flag (radiation_alarm, suspected_solid_waste, "
            "document_mismatch, declared_foreign_inclusions) that holds it stricter, whatever its "
            "pictures. Send the same images and declaration to read that decision back, or have an "
            "officer record what inspection found"
        )


class ImagesSeenSince(ConflictError):
    """A decision's pictures, or near-copies, were decided in another shipment after they were looked
    up (two submissions of the same pictures at once): look them up and decide again."""

    def __init__(self, shipment_id: str) -> None:
        super().__init__(
            f"shipment {shipment_id!r}: its pictures were decided in another shipment since they were "
            "looked up; decide it again"
        )


class DecisionUnnamed(ConflictError):
    """An outcome that names no decision (``decision_seq``) for a shipment decided more than once:
    judged against whichever decision was latest when it was written, a clean finding lifted a hold
    recorded after the officer looked (a radiation alarm) that nobody had inspected for.

    ``decisions``: the shipment's decisions (their audit records), oldest first: all of them, or the
    latest :data:`_MOST_NAMED` and one more (the message names those, and says earlier ones exist)."""

    def __init__(self, shipment_id: str, decisions: Sequence[int]) -> None:
        self.shipment_id = shipment_id
        self.decisions = list(decisions)
        super().__init__(
            f"shipment {shipment_id!r} was decided more than once ({self.named()}): an outcome must "
            "name the decision the officer inspected (decision_seq), so that it judges no decision "
            "recorded since; read the shipment and send the audit record of the one inspected"
        )

    def named(self) -> str:
        """The decisions in words: ``decisions 3, 7 (the latest 7)``."""
        listed = ", ".join(str(seq) for seq in self.decisions[-_MOST_NAMED:])
        earlier = "earlier ones, then " if len(self.decisions) > _MOST_NAMED else ""
        return f"decisions {earlier}{listed} (the latest {self.decisions[-1]})"


_MOST_NAMED = 10
"""The most of a shipment's decisions a :class:`DecisionUnnamed` names (the latest ones)."""


def _refuse_half_characters(where: str, fields: dict[str, Any]) -> None:
    """Refuse text holding half a character (a lone UTF-16 surrogate: JSON may escape one, and a
    Python string holds it), naming the field. The chain hashes UTF-8, where it would fail as a raw
    UnicodeEncodeError after every check had passed. Depth is not checked: the readers bound it, and
    a decision nests what they read deeper (a picture's row declaration sits in ``images``).

    Raises:
        InputError: naming the field and the half character.
    """
    for name, value in fields.items():
        try:
            check_writable(value, f"{where}: {name}", any_depth=True)
        except DatasetFormatError as exc:  # the manifests' error; here it is a caller's value
            raise InputError(str(exc)) from exc


def check_idempotency_key(idempotency_key: str | None, shipment_id: str) -> None:
    """Refuse an empty or over-long idempotency key, or one holding half a character.

    Raises:
        InputError: naming what is wrong with it.
    """
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 256:
        raise InputError(
            f"idempotency_key of length {len(idempotency_key)} not accepted (1 to 256 characters)"
        )
    _refuse_half_characters(f"shipment {shipment_id!r}", {"idempotency_key": idempotency_key})


def decision_json(decision: ShipmentDecision) -> dict[str, Any]:
    """The decision as the chain holds it.

    Raises:
        InputError: half a character (a lone UTF-16 surrogate) in it, a key included, or it cannot
            be written as JSON.
    """
    where = f"decision of shipment {decision.shipment_id!r}"
    # Checked every time, not only when the dump fails: pydantic refuses half a character in a
    # string but writes one in a key (a declaration's free extra) as U+FFFD, so two keys apart only
    # by it were recorded as one, the first value lost.
    _refuse_half_characters(where, decision.model_dump())
    try:
        # Through JSON so that NaN/inf scores of fail-closed images become null, not an error.
        return json.loads(decision.model_dump_json())
    except PydanticSerializationError as exc:
        raise InputError(f"{where} cannot be written as JSON ({exc})") from exc


def check_outcome(shipment_id: str, found: str | None, officer: str, notes: str) -> None:
    """Refuse an outcome's empty officer or finding, a finding that reads as clean cargo or names one
    of the synthetic classes training makes (:data:`datasets.type_names.PSEUDO_PREFIX`), half a
    character in any of its text, or a character that does not show as itself
    (:func:`datasets.shown_text.refuse_unshown`): in the officer, a name, any but the joiners; in the
    finding, an id, any; in the notes, free text, any but tabs, line breaks and the joiners.

    Checked as an outcome is recorded, never as one is read: an outcome recorded before the rule
    keeps its text, reads back and verifies (the review page isolates it, the CLI escapes it).

    Raises:
        InputError: naming what is wrong.
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
    where = f"outcome of shipment {shipment_id!r}"
    _refuse_half_characters(
        where, {"shipment_id": shipment_id, "found": found, "officer": officer, "notes": notes}
    )
    # an ESC in notes rewrote the terminal that printed the trail, and "o-\u202e1" read as 1-o: kept
    # for good once chained. The shipment id is not checked: it names a decision already recorded,
    # which may hold what was taken before its own rule.
    try:
        refuse_unshown(officer, "officer", name=True)  # حسن\u200cزاده: the joiner shapes its letters
        refuse_unshown(found, "found")
        refuse_unshown(notes, "notes", breaks=True)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from exc
    if found is not None and found.startswith(PSEUDO_PREFIX):
        # every writer's (the API, the review page, the CLI, a script on the store): a class that
        # training made up is not what an officer finds, and the trail keeps what it takes for good
        raise InputError(f"{where}: found {found!r} is not a type name: {TYPE_NAME_RULE}")


def write_decision(
    conn: Connection,
    decision: ShipmentDecision,
    decided: dict[str, Any],
    *,
    idempotency_key: str | None,
    exclusive: bool,
    images_seen_as_of: int | None,
    near_copy_bits: int,
    may_send: Callable[[FirstSent], bool] | None,
    by_tier: bool = False,
    seal_key: SealKey | None = None,
) -> AuditRecord:
    """Append ``decision`` (``decided``: as :func:`decision_json` gave it), or answer with the
    record it repeats, under the rules of :meth:`~pipeline.audit.store.AuditStore.record`.

    ``seal_key``: the record is sealed with it (the store has the seal column); None, unsealed. With
    it, the records the decision is judged by (the shipment's latest decision and its outcome, a
    decision replayed, the holds of shipments found since the lookup) are checked against their
    seals first.

    Raises:
        ConflictError, SentByAnother, ImagesSeenSince: as ``record`` says.
        SealBrokenError: with ``seal_key``, a record judged by fails its seal.
    """
    # Lock the head first, so that two writers cannot both judge the shipment's latest
    # decision before either appends (Postgres reads committed rows; SQLite writes alone).
    head = conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1).with_for_update()).scalar_one()
    if may_send is not None:
        first = first_sent(conn, decision.shipment_id)
        if first is not None and not may_send(first):
            raise SentByAnother(decision.shipment_id)
    if idempotency_key is not None:
        existing = conn.execute(
            select(audit_records).where(audit_records.c.idempotency_key == idempotency_key)
        ).first()
        if existing is not None:
            return _retried(conn, existing, decision, idempotency_key, exclusive=exclusive, seal_key=seal_key)
    latest = latest_decision(conn, decision.shipment_id)
    # A submitter's send is judged by what the declaration's flags force, not by the decision's tier:
    # that rests on the pictures too, so "409 unless stricter" told a submitter, with nothing
    # recorded, whether a picture sent again under a released shipment would pass. A flag it declares
    # is evidence it has already. An officer or admin (by_tier) sees every verdict anyway: its
    # stricter re-scan (a hot picture under a released shipment) is recorded.
    stricter = decision.tier if by_tier else flagged_tier(decision)
    if exclusive and latest is not None and Tier(latest.tier).severity >= stricter.severity:
        raise DecidedAlready(decision.shipment_id, latest.seq, by_tier=by_tier)
    if latest is not None:
        replayed = _same_decision(conn, latest, decided, seal_key)
        if replayed is not None:
            return replayed
        _refuse_lowering_a_hold(conn, latest, decision.shipment_id, decision.tier, seal_key)
    # nothing written since the lookup, the common case: nothing to check under the lock
    if images_seen_as_of is not None and head > images_seen_as_of:
        _refuse_images_seen_since(conn, decision, images_seen_as_of, near_copy_bits, seal_key)
    refuse_a_reused_policy_version(conn, decision.policy_version, decision.policy_sha256)
    content = {
        "kind": "decision",
        "shipment_id": decision.shipment_id,
        "idempotency_key": idempotency_key,
        "created_at": created_at_now(),
        "decision": decided,
    }
    seq, prev, digest, created = append(conn, content, seal_key)
    return AuditRecord(
        seq=seq,
        record_hash=digest,
        prev_hash=prev,
        created_at=created,
        decision=ShipmentDecision.model_validate(decided),
        idempotency_key=idempotency_key,
    )


def refuse_a_reused_policy_version(conn: Connection, version: str, sha: str) -> None:
    """Refuse to record under policy ``version`` with sha256 ``sha`` where a decision in the trail
    names that version with another sha256: the version is what says which rules decided, and a
    trail holding one version under two rule sets cannot tell an auditor which rules a decision met.

    One read of the policy index (:mod:`pipeline.audit.policy_index`), under the write lock where a
    write calls it and without it as a run or the service starts
    (:meth:`~pipeline.audit.store.AuditStore.check_policy`): reading the records for it held the
    lock, and delayed every start, for as long as the trail is.

    Raises:
        PolicyError: naming both sha256s and the first record of the other.
    """
    found = policy_index.recorded_otherwise(conn, version, sha)
    if found is not None:
        raise PolicyError(
            f"policy_version {version!r} is recorded in the audit trail with policy_sha256 "
            f"{found.sha256} (record {found.seq}), and this policy's sha256 is {sha}: "
            "the same version would name two rule sets. Give the changed policy a new "
            "policy_version (or decide under the policy recorded with it)"
        )


def _retried(
    conn: Connection,
    existing: Any,
    decision: ShipmentDecision,
    idempotency_key: str,
    *,
    exclusive: bool,
    seal_key: SealKey | None,
) -> AuditRecord:
    """The answer to a submission whose ``idempotency_key`` was recorded before (``existing``)."""
    if existing.kind != "decision":  # pragma: no cover - outcomes carry no key
        raise InputError(f"idempotency_key {idempotency_key!r} belongs to a {existing.kind} record")
    latest = latest_decision(conn, decision.shipment_id)
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
        _refuse_lowering_a_hold(conn, latest, decision.shipment_id, Tier(existing.tier), seal_key)
    return records_of(conn, [existing], seal_key=seal_key)[0]  # replayed: never a forged one


def _same_decision(
    conn: Connection, row: Any, decided: dict[str, Any], seal_key: SealKey | None
) -> AuditRecord | None:
    """The shipment's latest decision (``row``) when it is this one but for its time: a replay
    under another key (keys from an earlier version of Clearsight) must not append a duplicate,
    which would also reopen a hold an officer has resolved."""
    latest = records_of(conn, [row], seal_key=seal_key)[0]
    mine = {k: v for k, v in decided.items() if k != "decided_at"}
    theirs = {k: v for k, v in json.loads(latest.decision.model_dump_json()).items() if k != "decided_at"}
    return latest if mine == theirs else None


def _refuse_lowering_a_hold(
    conn: Connection, latest: Any, shipment_id: str, tier: Tier, seal_key: SealKey | None
) -> None:
    """Refuse a decision at ``tier`` where the shipment's ``latest`` is a stricter hold that no
    officer's outcome has cleared: its latest outcome (a correction recorded with amend is a later
    one) found nothing. A latest decision whose latest outcome found an anomaly is a hold at
    PHYSICAL_INSPECTION, whatever its own tier: a finding recorded on a released re-scan was
    dropped by the next decision, released again with no outcome. With ``seal_key``, the hold and
    its outcomes are checked against their seals.
    """
    if tier is Tier.PHYSICAL_INSPECTION:  # nothing is stricter: no outcome to read
        return
    outcome = records_of(conn, [latest], seal_key=seal_key)[0].outcome
    found = outcome is not None and outcome.found is not None
    held = Tier.PHYSICAL_INSPECTION if found else Tier(latest.tier)
    if held.severity <= tier.severity:
        return
    # only a clean finding lifts a hold, as it does for a picture sent again (EarlierHold.of): one
    # that found an anomaly let a re-scan or a laxer policy record the cargo as released
    if outcome is not None and outcome.found is None:
        return
    why = (
        "a hold is lifted by an officer's outcome (clearsight audit outcome, or the review page)"
        if outcome is None
        else f"inspection found {outcome.found!r} (audit record {outcome.seq}), and a hold is lifted "
        "only by an officer's outcome that found the cargo clean"
    )
    stands = (
        held.value
        if held.value == latest.tier
        else f"{held.value} by what inspection found on its decision at {latest.tier}"
    )
    raise ConflictError(
        f"shipment {shipment_id!r} is held ({stands}, audit record {latest.seq}) "
        f"and this decision would lower it to {tier.value}: {why}, not by deciding "
        "again; decide what-if runs without --audit-db"
    )


def _refuse_images_seen_since(
    conn: Connection, decision: ShipmentDecision, after: int, near_copy_bits: int, seal_key: SealKey | None
) -> None:
    """Refuse the decision where the records written after ``after`` (the last its images' lookup
    saw) would fire a rule their verdicts did not, or hold a picture of it where the verdicts do
    not name the shipment that holds it; only those records, so that the write lock is held for
    moments.

    Raises:
        ImagesSeenSince: naming the shipment.
    """
    since = sightings(
        conn,
        [Picture(i.sha256 or "", i.phash, i.phash_turns or ()) for i in decision.images],
        decision.shipment_id,
        near_copy_bits=near_copy_bits,
        after=after,
        most=_MOST_SINCE,
    )
    if any(_news(since.get(i.sha256 or ""), i) for i in decision.images):
        raise ImagesSeenSince(decision.shipment_id)
    unnamed = {
        shipment
        for image in decision.images
        if (found := since.get(image.sha256 or "")) is not None
        for shipment in (*found.seen_in, *found.similar_in)
        if shipment not in (*(image.seen_in or ()), *(image.similar_in or ()))
    }
    # only a hold stricter than the decision's tier changes it: one no stricter would only add a
    # reason, and refusing for it left shipments unrecorded under two writers at once
    if any(
        _holds(conn, shipment, stricter_than=decision.tier, seal_key=seal_key) for shipment in sorted(unnamed)
    ):
        raise ImagesSeenSince(decision.shipment_id)
    if _found_since(conn, decision, after):
        raise ImagesSeenSince(decision.shipment_id)


def _found_since(conn: Connection, decision: ShipmentDecision, after: int) -> bool:
    """Whether an outcome recorded after ``after`` found an anomaly on a decision of a shipment the
    decision's images name, or on one holding one of its pictures: a finding holds them at
    PHYSICAL_INSPECTION (:meth:`pipeline.decide.EarlierHold.found`), and one recorded between the
    lookup and the write, on a shipment already named, adds no decision for the check above to find.
    Only the outcomes since the lookup are read (by sequence number), and their finding alone; a
    decision at PHYSICAL_INSPECTION reads nothing, as no hold is stricter."""
    if decision.tier is Tier.PHYSICAL_INSPECTION:
        return False
    c = audit_records.c
    decisions = [
        row.ref_seq
        for row in conn.execute(
            select(c.ref_seq).where(c.seq > after, c.kind == "outcome", outcome_found(c.content).is_not(None))
        )
    ]
    if not decisions:
        return False
    named = {s for i in decision.images for s in (*(i.seen_in or ()), *(i.similar_in or ()))}
    hashes = sorted({i.sha256 for i in decision.images if i.sha256})
    by_named = select(c.seq).where(c.seq.in_(decisions), c.shipment_id.in_(sorted(named)))
    ix = image_index.c
    by_picture = select(ix.seq).where(ix.seq.in_(decisions), ix.sha256.in_(hashes))
    return conn.execute(by_named.union_all(by_picture).limit(1)).first() is not None


_MOST_SINCE = 100
"""Shipments named per picture among the records written since a lookup (a moment's worth)."""


def _news(since: Sighting | None, image: Any) -> bool:
    """Whether records written since the lookup would fire a rule the image's verdict did not: the
    same bytes where none were seen, a near-copy where none was (more names change no rule's tier,
    but see :func:`_holds`)."""
    if since is None:
        return False
    return bool(since.seen_in and not image.seen_in) or bool(since.similar_in and not image.similar_in)


def _holds(conn: Connection, shipment_id: str, *, stricter_than: Any, seal_key: SealKey | None) -> bool:
    """Whether the shipment's latest decision holds it on its own evidence, uncleared
    (:meth:`pipeline.decide.EarlierHold.of`), at a tier stricter than ``stricter_than``: a hold a
    picture of it sent again carries over. A
    shipment recorded so between a decision's lookup and its write (a radiation alarm on the same
    picture) was named nowhere, and the decision was written without its hold where the picture
    already named another shipment."""
    row = latest_decision(conn, shipment_id)
    if row is None:  # pragma: no cover - an indexed shipment has a decision
        return False
    record = records_of(conn, [row], seal_key=seal_key)[0]
    cleared = record.outcome is not None and record.outcome.found is None
    found = record.outcome.found if record.outcome is not None else None
    hold = EarlierHold.of(record.decision, record.seq, cleared=cleared, found=found)
    return hold is not None and hold.tier.severity > stricter_than.severity


def write_outcome(
    conn: Connection,
    shipment_id: str,
    *,
    found: str | None,
    officer: str,
    notes: str,
    decision_seq: int | None,
    amend: bool,
    url: str,
    seal_key: SealKey | None = None,
) -> OutcomeRecord:
    """Append an officer's outcome for the shipment's latest decision, or with ``amend`` a
    correction of the outcome of an earlier one (``decision_seq``), under the rules of
    :meth:`~pipeline.audit.store.AuditStore.record_outcome` (``url``: the store's, for its errors;
    ``seal_key``: as :func:`write_decision`'s).

    Raises:
        InputError, ConflictError, DecisionUnnamed: as ``record_outcome`` says.
        SealBrokenError: with ``seal_key``, the earlier decision corrected, or its outcomes, fail
            their seals.
    """
    conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1).with_for_update()).one()
    decision = latest_decision(conn, shipment_id)
    if decision is None:
        raise InputError(f"no decision recorded for shipment {shipment_id!r} in {url}")
    if decision_seq is not None and decision_seq != decision.seq:
        decision = _superseded(
            conn, shipment_id, decision_seq, decision, found=found, amend=amend, seal_key=seal_key
        )
    if decision_seq is None:
        _refuse_an_unnamed_decision(conn, shipment_id)
    if not amend:
        earlier = records_of(conn, [decision])[0].outcome  # refuses only: nothing lifted on it
        if earlier is not None:
            raise ConflictError(
                f"shipment {shipment_id!r} already has an outcome ({earlier.found or 'clean'}, "
                f"recorded by {earlier.officer}); send amend: true to record a correction"
            )
    content = {
        "kind": "outcome",
        "shipment_id": shipment_id,
        "idempotency_key": None,
        "created_at": created_at_now(),
        "decision_seq": decision.seq,
        "decision_hash": decision.record_hash,
        "outcome": {"found": found, "officer": officer, "notes": notes},
    }
    seq, prev, digest, created = append(conn, content, seal_key)
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


def _superseded(
    conn: Connection,
    shipment_id: str,
    seq: int,
    newest: Any,
    *,
    found: str | None,
    amend: bool,
    seal_key: SealKey | None,
) -> Any:
    """The row of decision ``seq`` of the shipment, since decided again (``newest``: the row of its
    latest decision), where the outcome is a correction (``amend``) of a finding recorded on it: one
    recorded by mistake otherwise held its pictures for good once the shipment was decided again. A
    first outcome on it is refused: it would judge cargo that was decided again, which its latest
    decision's outcome is for; and so is a correction of a clean outcome, which would record a
    finding on a decision the cargo no longer stands at (released, maybe, by the latest one, with no
    word of the finding). With ``seal_key`` and ``amend``, the decision and its outcomes are
    checked against their seals (the correction, and the refusal of one, rest on them).

    Raises:
        InputError: the shipment has no decision ``seq``.
        ConflictError: it has no outcome to correct, its latest one is clean, or not ``amend``.
    """
    latest = newest.seq
    c = audit_records.c
    row = conn.execute(
        select(audit_records).where(c.seq == seq, c.kind == "decision", c.shipment_id == shipment_id)
    ).first()
    if row is None:
        raise InputError(
            f"shipment {shipment_id!r} has no decision {seq}: its latest decision is {latest}; judge that one"
        )
    decided_again = (
        f"shipment {shipment_id!r} was decided again since decision {seq}: its latest decision is {latest}"
    )
    # sealed where a correction rests on it; a refusal only words itself by it
    earlier = records_of(conn, [row], seal_key=seal_key if amend else None)[0].outcome
    if earlier is None:
        # a first outcome judges the latest decision: the cargo was decided again on what came since
        # (a radiation alarm), and an inspection for the superseded decision looked for none of it
        why = (
            f"; amend corrects an outcome already recorded, and decision {seq} has none: judge the latest"
            if amend
            else "; judge that one"
        )
        raise ConflictError(decided_again + why)
    if not amend:
        raise ConflictError(
            f"{decided_again}; judge that one, or correct the outcome recorded on decision {seq} "
            f"(record {earlier.seq}) with amend (the API's amend: true, the CLI's --amend)"
        )
    if earlier.found is None:
        # a finding belongs on the decision the cargo stands at, where it holds it; recorded on a
        # superseded one it would hold the pictures when sent again while this cargo stays as decided.
        # Named with its officer and time: another officer may have recorded it moments ago
        clean = (
            f"{decided_again} ({newest.tier}); amend corrects a finding recorded by mistake, and decision "
            f"{seq}'s outcome is clean (record {earlier.seq}, by {earlier.officer} at {earlier.created_at})"
        )
        if found is None:  # clean again (notes fixed): sent to the latest, it would judge cargo uninspected
            raise ConflictError(f"{clean}: a clean outcome on a superseded decision is not recorded again")
        standing = records_of(conn, [newest])[0].outcome  # refuses only: nothing lifted on it
        if standing is not None:  # the advice below would be refused as an outcome already recorded
            raise ConflictError(
                f"{clean}: correct the outcome of decision {latest} (record {standing.seq}), the one the "
                "shipment stands at, with amend"
            )
        raise ConflictError(f"{clean}: record a finding on decision {latest}, the one the shipment stands at")
    return row


def _refuse_an_unnamed_decision(conn: Connection, shipment_id: str) -> None:
    """Refuse an outcome naming no decision where the shipment has more than one: a shipment
    decided once keeps taking one without (only that decision can be the one inspected).

    Raises:
        DecisionUnnamed: naming the shipment's decisions.
    """
    c = audit_records.c
    latest_first = (
        conn.execute(
            select(c.seq)
            .where(c.kind == "decision", c.shipment_id == shipment_id)
            .order_by(c.seq.desc())
            .limit(_MOST_NAMED + 1)
        )
        .scalars()
        .all()
    )
    if len(latest_first) > 1:
        raise DecisionUnnamed(shipment_id, latest_first[::-1])


def append(
    conn: Connection, content: dict[str, Any], seal_key: SealKey | None = None
) -> tuple[int, str, str, str]:
    """Append one record after the locked head, sealed with ``seal_key`` where one is given; returns
    (seq, prev_hash, record_hash, created_at).

    Raises:
        HeadSealError: with ``seal_key``, the head does not carry its seal.
    """
    if seal_key is not None:
        head = locked_head(conn, seal_key)
    else:
        head = conn.execute(
            select(audit_head.c.seq, audit_head.c.record_hash).where(audit_head.c.id == 1).with_for_update()
        ).one()
    body = canonical_json(content)
    digest = chain_hash(head.record_hash, body)
    seq = head.seq + 1
    sealed = {} if seal_key is None else {"seal": seal_key.seal(digest)}
    conn.execute(
        (audit_records if seal_key is None else sealed_records)
        .insert()
        .values(
            seq=seq,
            content=body,
            prev_hash=head.record_hash,
            record_hash=digest,
            **index_columns(content),
            **sealed,
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
        policy_index.add_decision(conn, content["decision"], seq)
    return seq, head.record_hash, digest, content["created_at"]
