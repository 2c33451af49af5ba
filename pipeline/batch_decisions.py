"""Batch decisions recorded in the audit store, each after looking its pictures up there.

The HTTP service looks every picture up before it decides (a picture decided before in another
shipment goes to an officer: ``override.image_reused`` / ``image_near_copy``). Decisions recorded
from a batch (``clearsight decide --audit-db``, ``clearsight score --policy --audit-db``) do the same,
or a shipment picked for a random audit could be sent again under a new id in the next batch and
released. Shipments are looked up and recorded one after the other, so a picture shared by two
shipments of one batch is caught in the second. Batch rows carry each picture's own perceptual hash
only (no turns: those need the pixels), so a batch finds the same bytes and near-copies as sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

from datasets.errors import ConflictError, InputError
from pipeline.audit.image_indexes import Picture, Sighting, Unnamed
from pipeline.audit.records import AuditRecord
from pipeline.audit.store import AuditStore, ImagesSeenSince
from pipeline.decide import EarlierHold, decide_shipment
from pipeline.policy import Policy
from pipeline.shipment_rows import inputs_key, shipments_of, tier_source
from pipeline.trader_register import TraderRegister
from pipeline.verdicts import ImageVerdict, Refused, ShipmentDecision, Tier

__all__ = ["WhatIf", "decide_and_record", "decide_record_and_compare", "earlier_holds", "with_earlier_holds"]

_ATTEMPTS = 3
"""Decisions of one shipment, when its pictures keep being decided elsewhere while it is recorded."""


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_sha256(image: ImageVerdict, shipment_id: str) -> None:
    """Refuse an image that could not be looked up: a picture decided before would pass as new and
    its shipment be released, so the batch is refused, the safe way round. (A row that failed to
    decode may lack the hash: it is never released.)"""
    named = f"image {image.path!r} of shipment {shipment_id!r}"
    if image.sha256 is None:
        if image.error is None:
            raise InputError(
                f"{named} was scored but has no sha256, so it cannot be looked up among the pictures "
                "decided before; score it again (clearsight score writes each image's sha256)"
            )
    elif not _SHA256.fullmatch(image.sha256):
        raise InputError(
            f"{named} has sha256 {image.sha256[:80]!r}, not 64 lowercase hex digits, so it cannot be "
            "looked up among the pictures decided before; score it again"
        )


def earlier_holds(
    store: AuditStore, images: Iterable[ImageVerdict], shipment_id: str | None = None
) -> dict[str | tuple[str, str], EarlierHold]:
    """The standing holds, uncleared, of the shipments the images name as where their pictures were
    decided before (``seen_in``, ``similar_in``), by id, in one read: a picture of a held shipment
    sent again under a new id carries the hold over (:func:`pipeline.decide.decide_shipment`'s
    ``held_before``). An officer's outcome that found the cargo clean clears a hold; one that found
    something does not. Only a hold on the shipment's own evidence carries
    (:meth:`pipeline.decide.EarlierHold.of`): not one it carried itself from another, nor a random
    audit's. The names are the few oldest: :func:`with_earlier_holds` looks among all.

    A decision whose latest outcome found an anomaly holds, at the strictest tier, the pictures it
    was decided on (:meth:`pipeline.decide.EarlierHold.found`), whatever the shipment's later
    decisions and their outcomes: a re-scan of the shipment inspected clean speaks for its own
    pictures, not for the one the anomaly was found in. Such a finding on a decision not the
    shipment's latest is keyed by (shipment id, content hash) of each picture it was made on
    (:data:`pipeline.decide.HeldBefore`): the same bytes carry it, and a near-copy of any picture of
    the shipment (the lookup names the shipment, not which of its pictures the copy is near), where
    the policy holds near-copies; never another picture of the shipment that names it.

    With ``shipment_id``, the shipment the images are decided for: its own decisions whose latest
    outcome found an anomaly hold the pictures they were decided on, keyed alike. The lookup leaves
    them out (``other_than``), and the store judges a new decision by the shipment's latest only: a
    picture seized, sent again under its own shipment after a re-scan inspected clean, was released.
    """
    images = list(images)
    named = sorted({s for image in images for s in (*(image.seen_in or ()), *(image.similar_in or ()))})
    read = sorted({*named, shipment_id}) if shipment_id is not None else named
    if not read:
        return {}
    decisions = store.decisions_of(read)  # oldest first
    # the shipment's own latest decision is judged where the new one is written, not carried
    latest = {r.decision.shipment_id: r for r in decisions if r.decision.shipment_id != shipment_id}
    holds: dict[str | tuple[str, str], EarlierHold] = {}
    for shipment, record in latest.items():
        hold = _hold(record)
        if hold is not None:
            holds[shipment] = hold
    for record in decisions:
        shipment = record.decision.shipment_id
        if record.outcome is None or record.outcome.found is None or latest.get(shipment) is record:
            continue  # a finding on the latest decision holds it, each of its pictures, as above
        for image in record.decision.images:
            key = (shipment, image.sha256 or "")
            if image.sha256 and key not in holds:  # the first finding is named
                holds[key] = EarlierHold.found(record.decision, record.seq, record.outcome.found, image.path)
    return holds


_PAGE = 100
"""Decisions read at a time while looking for an earlier hold among all the shipments that hold a
picture: the first stands at the strictest tier on its own evidence where none was cleared."""

_MOST = 1_000
"""Decisions read at most per picture and tier while looking for an earlier hold (ten pages): a
picture held and sent again thousands of times while the hold stood made every later send of it
read every one of those decisions, for seconds, once the hold was cleared. Past them the picture is
held at that tier as they are (:func:`_crowded`), the safe way round."""


def with_earlier_holds(
    store: AuditStore, shipment_id: str, images: Sequence[ImageVerdict], unnamed: Mapping[str, Unnamed]
) -> tuple[list[ImageVerdict], dict[str | tuple[str, str], EarlierHold]]:
    """The images of shipment ``shipment_id``, looked up in ``store``, and the earlier holds they
    carry over (``held_before``): those of the shipments they name (:func:`earlier_holds`), and,
    where a picture was decided in more shipments than it names (``unnamed``, from
    :class:`~pipeline.audit.store.Lookup`), the strictest hold among all those that hold the same
    bytes, and among all those found holding a near-copy, where it is stricter than the holds
    named. That shipment is named too (the oldest at that tier), so that the decision says where
    its hold came from; a near-copy's with its distance where it is the nearest.

    The lookup names the few oldest shipments: a picture decided in as many shipments first, then
    held for a radiation alarm, and sent again under a new id, carried no hold (the held one was
    never named). A decision holding the picture whose latest outcome found an anomaly is looked for
    first (:meth:`~pipeline.audit.store.AuditStore.findings_on`), whatever its tier and whatever its
    shipment decided since, as :func:`earlier_holds` reads the shipments named: the latest decisions
    read next speak neither for an earlier decision nor at RELEASE. Then only decisions stricter than
    the holds named are read, strictest first, a page at a time, until the first that stands at its
    tier on its own evidence.
    """
    holds = earlier_holds(store, images, shipment_id)
    looked = []
    for image in images:
        past = unnamed.get(image.sha256 or "")
        update: dict[str, Any] = {}
        if image.sha256:
            # a finding is looked for whatever the lookup named: it names the shipments that sent the
            # picture before this one first did, so one that sent it first was released when it sent
            # it again after another shipment's inspection found an anomaly in it
            findings = partial(store.findings_on, other_than=shipment_id, holding=image.sha256)
            hold = _found(image.seen_in or [], holds, findings, image.sha256)
            if hold is None and past is not None and past.same:
                hold = _stricter(image.seen_in or [], holds, _holding(store, shipment_id, image.sha256))
            if hold is not None and hold.shipment_id not in (image.seen_in or []):
                update["seen_in"] = [*(image.seen_in or []), hold.shipment_id]
        if past is not None and past.similar_in:
            near = {copy.shipment_id: copy for copy in past.similar_in}
            hold = _found(
                image.similar_in or [], holds, _found_among(store, shipment_id, list(near))
            ) or _stricter(image.similar_in or [], holds, _among(store, shipment_id, list(near)))
            if hold is not None and hold.shipment_id not in (image.similar_in or []):
                update["similar_in"] = [*(image.similar_in or []), hold.shipment_id]
                copy = near[hold.shipment_id]
                if image.similar_bits is None or copy.bits < image.similar_bits:  # the nearest now
                    update |= {
                        "similar_bits": copy.bits,
                        "similar_turn": copy.turn,
                        "turned_phash": copy.turned_phash,
                    }
        looked.append(image.model_copy(update=update) if update else image)
    return looked, holds


def _hold(record: AuditRecord) -> EarlierHold | None:
    """The hold ``record`` stands at on its own evidence, uncleared, or by what inspection found on
    it (None: none)."""
    cleared = record.outcome is not None and record.outcome.found is None
    found = record.outcome.found if record.outcome is not None else None
    return EarlierHold.of(record.decision, record.seq, cleared=cleared, found=found)


def _found(
    named: Sequence[str],
    holds: dict[str | tuple[str, str], EarlierHold],
    findings: Callable[[], Iterable[AuditRecord]],
    sha256: str | None = None,
) -> EarlierHold | None:
    """The first decision ``findings`` brings whose latest outcome found an anomaly, its hold at the
    strictest tier added to ``holds`` (None: none, or the shipments ``named`` hold the picture at
    that tier already: nothing is stricter, so ``findings`` is not read). With ``sha256``, the
    findings are on decisions holding those very bytes: the hold is that picture's, named in it,
    as :func:`earlier_holds` keys a finding on a shipment's earlier decision."""
    keys: list[str | tuple[str, str]] = [*named, *((s, sha256) for s in named if sha256)]
    if any(holds[k].tier is Tier.PHYSICAL_INSPECTION for k in keys if k in holds):
        return None
    for record in findings():
        if record.outcome is not None and record.outcome.found is not None:  # as read, sealed
            shipment = record.decision.shipment_id
            if sha256 is None:
                hold = EarlierHold.found(record.decision, record.seq, record.outcome.found)
                holds[shipment] = hold
                return hold
            picture = next((i.path for i in record.decision.images if i.sha256 == sha256), None)
            hold = EarlierHold.found(record.decision, record.seq, record.outcome.found, picture)
            holds.setdefault((shipment, sha256), hold)
            return hold
    return None


def _stricter(
    named: Sequence[str],
    holds: dict[str | tuple[str, str], EarlierHold],
    pages: Callable[[Tier, int], Iterator[AuditRecord]],
) -> EarlierHold | None:
    """The first hold ``pages`` brings that is stricter than those of the shipments ``named``, added
    to ``holds`` (None: none): strictest first, by the tiers of the decisions, and a tier's
    decisions only while no hold as strict was found. A tier with more than :data:`_MOST` decisions
    to read holds the picture at that tier (:func:`_crowded`), however many were read."""
    floor = max((holds[s].tier.severity for s in named if s in holds), default=Tier.RELEASE.severity)
    found: EarlierHold | None = None
    crowded = False
    for tier in sorted(Tier, key=lambda t: t.severity, reverse=True):
        if tier.severity <= floor:  # a decision's own evidence holds it no stricter than the decision
            break
        last: AuditRecord | None = None
        for read, record in enumerate(pages(tier, _MOST + 1)):
            if read == _MOST and last is not None:  # more than can be checked: held as they are
                found, floor, crowded = _crowded(last, tier), tier.severity, True
                break
            last = record
            hold = _hold(record)
            if hold is not None and hold.tier.severity > floor:
                found, floor = hold, hold.tier.severity
                if hold.tier is tier:  # none of this tier's decisions holds it stricter
                    break
    if found is None or (found.shipment_id in named and not crowded):  # (named: decided again meanwhile)
        return None
    holds[found.shipment_id] = found
    return found


def _crowded(last: AuditRecord, tier: Tier) -> EarlierHold:
    """The hold of a picture that more than :data:`_MOST` decisions at ``tier`` hold: more than are
    read for one standing on its own evidence, so the picture is held at ``tier`` as they are (each
    read was cleared, or held by another's hold only; one past them may not be). Named after the
    last decision read (``last``), so that the decision says where to look."""
    why = (
        f"more than {_MOST} earlier decisions at {tier.value} hold this picture, more than are checked "
        "for one held on its own evidence: it is held as they are"
    )
    return EarlierHold(last.decision.shipment_id, tier, (why,), last.seq)


def _holding(
    store: AuditStore, shipment_id: str, sha256: str
) -> Callable[[Tier, int], Iterator[AuditRecord]]:
    """The latest decisions at a tier of all the shipments that hold the picture, a page at a time,
    ``most`` of them at most."""

    def pages(tier: Tier, most: int) -> Iterator[AuditRecord]:
        after = 0
        while most > 0:
            limit = most if most <= _PAGE + 1 else _PAGE  # the last page one longer: not one more read
            page = store.latest_decisions_at(
                tier, other_than=shipment_id, holding=sha256, after=after, limit=limit
            )
            yield from page
            if len(page) < limit:
                return
            after, most = page[-1].seq, most - limit

    return pages


def _among(
    store: AuditStore, shipment_id: str, shipments: Sequence[str]
) -> Callable[[Tier, int], Iterator[AuditRecord]]:
    """The latest decisions at a tier of ``shipments``, ``_PAGE`` shipments at a time, ``most`` of
    them at most."""

    def pages(tier: Tier, most: int) -> Iterator[AuditRecord]:
        for start in range(0, len(shipments), _PAGE):
            if most <= 0:
                return
            chunk = shipments[start : start + _PAGE]
            page = store.latest_decisions_at(tier, other_than=shipment_id, among=chunk, limit=_PAGE)
            yield from page[:most]
            most -= len(page)

    return pages


def _found_among(
    store: AuditStore, shipment_id: str, shipments: Sequence[str]
) -> Callable[[], Iterator[AuditRecord]]:
    """The first decision of ``shipments`` whose latest outcome found an anomaly, ``_PAGE`` shipments
    at a time."""

    def findings() -> Iterator[AuditRecord]:
        for start in range(0, len(shipments), _PAGE):
            yield from store.findings_on(other_than=shipment_id, among=shipments[start : start + _PAGE])

    return findings


def _standing(store: AuditStore, decision: ShipmentDecision, why: str) -> ShipmentDecision:
    """What the audit trail holds for ``decision``'s shipment, marked with ``decision`` refused."""
    record = store.get(decision.shipment_id)
    refused = Refused(
        tier=decision.tier,
        policy_version=decision.policy_version,
        policy_sha256=decision.policy_sha256,
        decided_at=decision.decided_at,
        why=why,
        standing_seq=record.seq if record is not None else None,
    )
    standing = record.decision if record is not None else decision
    return standing.model_copy(update={"refused": refused})


def decide_and_record(
    policy: Policy,
    rows: Iterable[ImageVerdict],
    *,
    audit_key: bytes,
    store: AuditStore,
    near_copy_bits: int,
    register: TraderRegister | None = None,
) -> Iterator[tuple[ShipmentDecision, str | None]]:
    """Decide each shipment of ``rows`` with its pictures looked up in ``store``, and record it; with
    a ``register``, under each trader's registered AEO tier (:func:`pipeline.shipment_rows.shipments_of`).

    Yields:
        (decision, None) once recorded, or the decision recorded before for the same inputs (a run
        again); or (standing, why) when the store did not record it: one that would lower an
        unresolved hold (the hold stands), or whose pictures kept being decided in other shipments
        meanwhile (the service writing to the same store). ``standing`` is then the decision the
        audit trail holds for the shipment, with ``refused`` saying what was decided now and why;
        where the trail holds none, the decision not recorded, ``refused.standing_seq`` None.

    Raises:
        InputError: a row without a shipment id, a declaration that does not validate, or a scored
            image without its sha256 (before anything is recorded).
        AuditError: the store cannot be read or written.
    """
    for decision, why, _, _ in _decide_and_record(
        policy,
        None,
        rows,
        audit_key=audit_key,
        store=store,
        near_copy_bits=near_copy_bits,
        register=register,
    ):
        yield decision, why


class WhatIf(NamedTuple):
    """One shipment of :func:`decide_record_and_compare`."""

    decision: ShipmentDecision
    """As :func:`decide_and_record` yields it: recorded, or the standing one marked ``refused``."""
    why: str | None
    """Why the store did not record this run's decision (None: it did)."""
    decided: ShipmentDecision
    """This run's decision under the policy: the one recorded (or recorded before for the same
    inputs), or the one the store refused."""
    other: ShipmentDecision
    """The other policy's, on the same inputs as ``decided``: the pictures as looked up in the store,
    the earlier holds read there, the declaration and AEO tier source (never recorded)."""


def decide_record_and_compare(
    policy: Policy,
    other: Policy,
    rows: Iterable[ImageVerdict],
    *,
    audit_key: bytes,
    store: AuditStore,
    near_copy_bits: int,
    register: TraderRegister | None = None,
) -> Iterator[WhatIf]:
    """:func:`decide_and_record` under ``policy``, each shipment also decided under ``other`` on the
    same inputs, so that a what-if compares the rules alone (``clearsight decide --compare-policy``);
    a shipment refused by the store is compared as decided now, not as it stands.

    Raises:
        As :func:`decide_and_record`.
    """
    for decision, why, decided, compared in _decide_and_record(
        policy,
        other,
        rows,
        audit_key=audit_key,
        store=store,
        near_copy_bits=near_copy_bits,
        register=register,
    ):
        assert compared is not None  # decided under other whenever one is given
        yield WhatIf(decision, why, decided, compared)


def _decide_and_record(
    policy: Policy,
    other: Policy | None,
    rows: Iterable[ImageVerdict],
    *,
    audit_key: bytes,
    store: AuditStore,
    near_copy_bits: int,
    register: TraderRegister | None,
) -> Iterator[tuple[ShipmentDecision, str | None, ShipmentDecision, ShipmentDecision | None]]:
    """:func:`decide_and_record`'s (decision, why) with :class:`WhatIf`'s ``decided`` and ``other``
    (None where no ``other`` policy is given)."""
    # every declaration checked before the first record: a bad one must not leave half a batch
    # recorded and no decisions file
    shipments = list(shipments_of(rows, register=register))
    for declaration, images in shipments:
        for image in images:
            _check_sha256(image, declaration.shipment_id)
    for declaration, images in shipments:
        pictures = [Picture(image.sha256 or "", image.phash) for image in images]
        for attempt in range(_ATTEMPTS):
            # a shipment decided again (a what-if under a new policy) is looked up, picture by
            # picture, among what came before it first held each (AuditStore.sightings)
            lookup = store.sightings(
                pictures, other_than=declaration.shipment_id, near_copy_bits=near_copy_bits
            )
            seen, held_before = with_earlier_holds(
                store,
                declaration.shipment_id,
                [
                    image.model_copy(update=Sighting.verdict_fields(lookup.found.get(image.sha256 or "")))
                    for image in images
                ],
                lookup.unnamed,
            )
            decision = decide_shipment(
                policy,
                declaration,
                seen,
                audit_key=audit_key,
                aeo_tier_source=tier_source(register),
                held_before=held_before,
            )
            compared = (
                decide_shipment(
                    other,
                    declaration,
                    seen,
                    audit_key=audit_key,
                    aeo_tier_source=tier_source(register),
                    held_before=held_before,
                )
                if other is not None
                else None
            )
            try:
                record = store.record(
                    decision,
                    idempotency_key=inputs_key(decision),
                    images_seen_as_of=lookup.as_of,
                    near_copy_bits=near_copy_bits,
                )
            except ImagesSeenSince:  # decided in another shipment meanwhile: look again
                if attempt == _ATTEMPTS - 1:  # the others go on; this one waits for a run again
                    why = (
                        f"shipment {declaration.shipment_id!r}: its pictures kept being decided in other "
                        "shipments while it was recorded; run again to record it"
                    )
                    yield _standing(store, decision, why), why, decision, compared
                    break
                continue
            except ConflictError as exc:
                why = str(exc)
                yield _standing(store, decision, why), why, decision, compared
            else:
                # a run again over the same inputs is answered from the record, as a retry is by the
                # service: what was decided then, not what the pictures decided since would make of it
                yield record.decision, None, record.decision, compared
            break
