"""Shipments: submit images + declaration for a recorded decision; read it back; record the outcome."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Form, Path, Query, Request, UploadFile
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from datasets.errors import ClearsightError, ConflictError, InputError, ModelError
from datasets.json_text import loads_strict
from datasets.perceptual_hash import perceptual_hashes
from pipeline.audit.image_indexes import Picture, Sighting
from pipeline.audit.store import (
    DecidedAlready,
    DecisionUnnamed,
    FirstSent,
    ImagesSeenSince,
    Lookup,
    SentByAnother,
)
from pipeline.verdicts import AeoTierSource, Declaration, ImageVerdict, ShipmentDecision, first_field_like
from serve.auth import Principal, Role
from serve.deps import AuditDep, JsonBodyDep, MultipartDep, OfficerDep, Services, ServicesDep, SubmitterDep
from serve.errors import (
    DecidedAgainError,
    NotFoundError,
    OutcomeExistsError,
    OverloadedError,
    RequestTooLargeError,
    ShipmentTakenError,
    TierNotAllowedError,
)
from serve.findings import finding_types
from serve.problems import AUTHENTICATED, message_with_input, problem_responses
from serve.routes.score import UPLOAD_DESCRIBED, UPLOAD_ERRORS
from serve.schemas import (
    CLEAN,
    RECORDED_ID_PATTERN,
    SHIPMENT_ID_PATTERN,
    SHIPMENT_ID_RE,
    LatestDecision,
    OutcomeFor,
    OutcomeIn,
    OutcomeOut,
    ShipmentResponse,
    SubmissionReceipt,
)
from serve.scoring import Upload, batcher_for, decoded_uploads, heatmap_png, predict, refuse_repeated_fields
from serve.storage import heatmap_key, heatmap_name

__all__ = ["distinct_names", "idempotency_key", "record_outcome", "router", "submit_shipment"]

router = APIRouter(prefix="/v1", tags=["shipments"])
_log = logging.getLogger("clearsight.serve")

DECLARATION_EXAMPLE = (
    '{"shipment_id": "SHP-2025-0001", "cargo_type": "bulk_ore", "trader_id": "CN-TRADER-42", '
    '"radiation_alarm": false}'
)

MAX_DECLARATION_CHARS = 16_384
"""Longest declaration JSON accepted: a real one is a few hundred characters."""
MAX_EXTRA_FIELDS, MAX_EXTRA_CHARS = 64, 1_000
"""Most ``extra`` fields in a declaration, and the longest text value: each is kept in the audit trail
for good and shown on the review page, so one submission must not be able to bloat either."""


DECLARATION_SCHEMA: dict[str, Any] = {
    "allOf": [
        {"$ref": "#/components/schemas/Declaration"},
        {
            "properties": {
                "shipment_id": {
                    "pattern": SHIPMENT_ID_PATTERN,
                    "description": "Letters, digits, '.', '_', ':' or '-', starting with a letter or "
                    "digit; at most 128. The service refuses ids a batch may record ('/', spaces).",
                },
                "aeo_tier": {
                    "description": "Officers and admins only: a submitter's tier comes from the trader "
                    "register, and one that declares it is refused (403 aeo-tier-not-allowed).",
                },
                "extra": {
                    "maxProperties": MAX_EXTRA_FIELDS,
                    "propertyNames": {"maxLength": 64},
                    "additionalProperties": {
                        "type": ["string", "number", "boolean", "null"],
                        "maxLength": MAX_EXTRA_CHARS,
                    },
                },
            }
        },
    ]
}
"""What ``POST /v1/shipments`` takes as its declaration: the Declaration schema, and the id pattern
and tier rule the service adds to it (batch mode, which shares the schema, accepts other ids)."""

ShipmentIdPath = Annotated[
    str, Path(pattern=SHIPMENT_ID_PATTERN, description="Shipment id: letters, digits, . _ : -; at most 128.")
]


_AUDIT_UNAVAILABLE = (
    "The audit store unavailable: unreachable, or its lock wait ran out (audit-unavailable); retry "
    "after Retry-After seconds"
)
_OFFICERS = "Officers and admins only (forbidden)"
SUBMIT_RESPONSES = problem_responses(
    (*UPLOAD_ERRORS, 409),
    {
        **UPLOAD_DESCRIBED,
        403: "An officer's key (forbidden); a shipment id first sent by a key this one may not send "
        "it again for (shipment-taken); a submitter declaring aeo_tier (aeo-tier-not-allowed)",
        409: "Already decided on other images or another declaration, and the declaration raises no "
        "flag that holds it stricter, whatever the images; sent by an admin, the decision is no "
        "stricter (conflict)",
        422: "A field that does not match the schema (validation); a declaration refused: not the "
        "Declaration schema, a shipment id outside its pattern, sent twice (bad-input); not a usable "
        "image (bad-image); a cargo type without a model (unknown-cargo-type)",
        503: f"{UPLOAD_DESCRIBED[503]}; {_AUDIT_UNAVAILABLE}",
    },
)
READ_RESPONSES = problem_responses(
    (*AUTHENTICATED, 404, 422, 503),
    {403: _OFFICERS, 422: "A malformed shipment id (validation)", 503: _AUDIT_UNAVAILABLE},
)
OUTCOME_RESPONSES = problem_responses(
    (400, *AUTHENTICATED, 404, 408, 409, 413, 415, 422, 503),
    {
        400: "A Content-Length that is not a number (bad-request)",
        403: _OFFICERS,
        409: "The decision has an outcome and amend is not set (outcome-exists); decision_seq is an "
        "earlier decision, the shipment decided again since, and it has no finding to correct (no "
        "outcome, or a clean one: record a finding on the latest decision) or amend is not set "
        "(decided-again); no decision_seq for a shipment decided more than once (decision-unnamed)",
        413: "A body over 64 KiB (request-too-large)",
        415: "A body that is not application/json (unsupported-media-type)",
        422: "An outcome or shipment id that does not match the schema (validation); a decision_seq "
        "that is none of the shipment's decisions, or a found type the shipment was not scored against "
        "and its model does not know, without new_type; a body that cannot be read as JSON: not JSON, "
        "not UTF-8, nested too deeply, a number of more than 308 digits (bad-input)",
        503: _AUDIT_UNAVAILABLE,
    },
)


def idempotency_key(declaration: Declaration, image_hashes: list[str]) -> str:
    """sha256 of the declaration as the client sent it (as canonical JSON) and the sorted image
    hashes: one submission, one record. A retry of the same submission finds its record whatever
    the trader register says meanwhile; the same shipment id with other images or another
    declaration (a radiation alarm added, say) is a different submission.

    Keys recorded before this release hashed the declaration with the register's tier filled in
    (:func:`vouched`): :func:`submit_shipment` looks that key up too, given ``vouched_declaration``."""
    canonical = json.dumps(declaration.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    text = canonical + "\n" + "\n".join(sorted(image_hashes))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_declaration(text: str) -> Declaration:
    """The declaration in ``text`` (JSON), checked against the bounds above.

    Raises:
        RequestTooLargeError: ``text`` is over :data:`MAX_DECLARATION_CHARS`.
        InputError: not JSON, a key given twice in one object (naming it), not a valid Declaration
            (naming the first bad field), a bad shipment id, or ``extra`` with too many fields, a
            value that is not a number, text, true/false or null, or text over
            :data:`MAX_EXTRA_CHARS`.
    """
    if len(text) > MAX_DECLARATION_CHARS:
        raise RequestTooLargeError(
            f"declaration is {len(text):,} characters; at most {MAX_DECLARATION_CHARS:,} are accepted"
        )
    try:
        # our own reader, not pydantic's JSON one: that keeps the last of a key given twice
        value = loads_strict(text)
    except ValueError as exc:  # not JSON, or a key given twice (named)
        raise InputError(
            f"declaration is not valid: {exc}; expected JSON with shipment_id and cargo_type, e.g. "
            f"{DECLARATION_EXAMPLE}"
        ) from exc
    try:
        declaration = Declaration.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "declaration"
        raise InputError(
            f"declaration is not valid: {where}: {message_with_input(first)} ({exc.error_count()} error(s)); "
            f"expected JSON with shipment_id and cargo_type, e.g. {DECLARATION_EXAMPLE}"
        ) from exc
    aside = first_field_like(declaration.extra)
    if aside is not None:  # a flag kept aside under extra would never reach the rules
        raise InputError(
            f"declaration is not valid: extra key {aside[0]!r} is the field {aside[1]!r}; give it as "
            f"{aside[1]}, not under extra"
        )
    if not SHIPMENT_ID_RE.fullmatch(declaration.shipment_id):
        raise InputError(
            f"shipment_id {declaration.shipment_id[:140]!r} is not accepted; use 1-128 letters, digits, "
            f"'.', '_', ':' or '-', starting with a letter or digit"
        )
    extra = declaration.extra
    if len(extra) > MAX_EXTRA_FIELDS:
        raise InputError(
            f"declaration extra has {len(extra)} fields; at most {MAX_EXTRA_FIELDS} are accepted"
        )
    for key, value in extra.items():
        if not (value is None or isinstance(value, bool | int | float | str)):
            raise InputError(
                f"declaration extra field {key[:64]!r} is a {type(value).__name__}; accepted: text, a "
                "number, true/false or null"
            )
        if len(key) > 64 or (isinstance(value, str) and len(value) > MAX_EXTRA_CHARS):
            raise InputError(
                f"declaration extra field {key[:64]!r} is too long: names up to 64 characters, text up "
                f"to {MAX_EXTRA_CHARS:,}"
            )
    return declaration


def _may_send(register: Any, caller: Principal) -> Callable[[FirstSent], bool] | None:
    """Whether ``caller`` may send again a shipment whose first decision was sent so: None (anyone)
    for officers and admins. A submitter may where

    - its own key sent it;
    - an admin sent it, declared for a trader the register lists the caller for;
    - its sender is listed for one trader only, the caller is listed for that trader, and the
      declaration named that trader or none: a rotated key (keep the old key's name in the register:
      removing it from the API keys revokes it), a second office.

    A broker's key, listed for two traders, makes neither trader's keys the other's; a key that
    names a trader it is not listed for gains nothing from it; a first decision that names no
    sender (a batch's, or an older version's, which filled in a named trader's tier for anyone) is
    sent again by an admin only."""
    if caller.role is not Role.SUBMITTER:
        return None
    mine = register.traders_of(caller.name) if register is not None else frozenset()

    def may(first: FirstSent) -> bool:
        if first.submitted_by == caller.name:
            return True
        if register is None or not mine or first.submitted_by is None:
            return False
        if first.submitted_by.partition(":")[0] == Role.ADMIN.value:  # officers send no shipments
            return first.trader_id in mine
        theirs = register.traders_of(first.submitted_by)
        return len(theirs) == 1 and theirs <= mine and first.trader_id in (None, *theirs)

    return may


def vouched(declaration: Declaration, traders: Any, caller: Principal) -> Declaration:
    """The declaration with its trader's AEO tier taken from the register (``traders``, a
    :class:`~pipeline.trader_register.TraderRegister` or None).

    A tier lowers scrutiny, so a submitter cannot grant one, nor borrow a trusted trader's by naming
    it: a submitter declares no tier, and gets the registered one only where the register names its
    key among the trader's submitters. Officers and admins are trusted with the tier they declare (a
    correction the register has not caught up with), and get the registered one otherwise.

    Raises:
        TierNotAllowedError: a submitter declared a tier.
    """
    if caller.role is Role.SUBMITTER:
        if declaration.aeo_tier is not None:
            # one answer whatever the register says: it must not be read off the refusals
            raise TierNotAllowedError(
                "aeo_tier may not be declared by a submitter: a trader's tier comes from the service's "
                "register of trusted traders; leave aeo_tier out"
            )
        tier = traders.tier_for(declaration.trader_id, caller.name) if traders is not None else None
    else:
        tier = declaration.aeo_tier or (
            traders.tier_of(declaration.trader_id) if traders is not None else None
        )
    return declaration.model_copy(update={"aeo_tier": tier}) if tier != declaration.aeo_tier else declaration


def tier_source(declared: Declaration, traders: Any, caller: Principal) -> AeoTierSource:
    """Where :func:`vouched` takes the AEO tier of ``declared`` (as sent) from: a submitter's from
    the register (none without one), an officer's or admin's declared tier as they declared it (not
    verified against the register), their undeclared one from the register."""
    if caller.role is not Role.SUBMITTER and declared.aeo_tier is not None:
        return "declared_unverified"
    return "register" if traders is not None else "none"


def _response(request: Request, record: Any, latest: Any = None) -> ShipmentResponse:
    """``record`` as answered; ``latest``: the shipment's latest decision, named where it is not
    ``record`` (a client refreshing from an answer about a superseded decision showed its tier)."""
    decision: ShipmentDecision = record.decision
    outcome = OutcomeOut.of(record.outcome) if record.outcome is not None else None
    later = None
    if latest is not None and latest.seq != record.seq:
        later = LatestDecision(seq=latest.seq, tier=latest.decision.tier)
    return ShipmentResponse(
        request_id=request.state.request_id,
        seq=record.seq,
        record_hash=record.record_hash,
        idempotency_key=getattr(record, "idempotency_key", None),
        policy_version=decision.policy_version,
        model_ids=decision.model_ids,
        decision=decision,
        outcome=outcome,
        superseded_by=later,
    )


async def _look_up(services: Services, shipment_id: str, images: list[Picture]) -> Lookup:
    """Where each picture, or a near-copy of it, was decided in other shipments, as of now."""
    return await run_in_threadpool(
        lambda: services.audit.sightings(
            images, other_than=shipment_id, near_copy_bits=services.settings.near_copy_bits
        )
    )


async def _verdicts(
    services: Services, declaration: Declaration, uploads: list[Upload]
) -> tuple[list[ImageVerdict], list[tuple[str, str, bytes]], Lookup]:
    """Score the uploads: their verdicts (a model failure fails closed), each heatmap to keep,
    (image hash, model id, PNG), once the decision stands, and the lookup of pictures decided before
    (the last audit record it saw, the shipments past those it names)."""
    batcher_for(services, declaration.cargo_type)  # an unknown cargo type scores nothing
    hashed = await run_in_threadpool(lambda: [perceptual_hashes(u.pixels) or () for u in uploads])
    pictures = [Picture(u.sha256, h[0] if h else None, h[1:]) for u, h in zip(uploads, hashed, strict=True)]
    # looked up while the model scores: among many pictures alike, with each picture's turns, the
    # lookup can take as long as the model
    looking = asyncio.ensure_future(_look_up(services, declaration.shipment_id, pictures))
    common = {"shipment_id": declaration.shipment_id, "cargo_type": declaration.cargo_type}
    try:
        predictions = await predict(services, declaration.cargo_type, uploads)
    except ModelError as exc:
        # Recorded with the error so that the policy's fail-closed rule holds the shipment.
        lookup = await looking
        failed = [
            ImageVerdict(
                path=u.filename, sha256=u.sha256, error=str(exc), **_sighted(lookup.found, p), **common
            )
            for u, p in zip(uploads, pictures, strict=True)
        ]
        return failed, [], lookup
    except BaseException:
        # an overload or a timeout: nobody waits for the lookup (a thread already running it ends
        # on its own); one that failed already is logged, not lost
        if not looking.cancel() and not looking.cancelled() and looking.exception() is not None:
            _log.warning("looking up pictures decided before failed too: %s", looking.exception())
        raise
    lookup = await looking
    seen = lookup.found
    verdicts, heatmaps = [], []
    for upload, picture, prediction in zip(uploads, pictures, predictions, strict=True):
        png = await heatmap_png(upload, prediction)
        heatmap = services.store.heatmap_path(upload.sha256, prediction.model_id)
        heatmaps.append((upload.sha256, prediction.model_id, png))
        verdicts.append(
            ImageVerdict(
                path=upload.filename,
                sha256=upload.sha256,
                score=float(prediction.score),
                label=prediction.label,
                anomaly_type=prediction.anomaly_type,
                type_probabilities={k: float(v) for k, v in prediction.type_probabilities.items()},
                threshold=prediction.thresholds.release,
                hold_threshold=prediction.thresholds.hold,
                model_id=prediction.model_id,
                heatmap=heatmap,
                scale_vs_training=prediction.scale_vs_training,
                signal_log_odds=prediction.signal_log_odds,
                **_sighted(seen, picture),
                **common,
            )
        )
    return verdicts, heatmaps, lookup


def _sighted(seen: dict[str, Sighting], picture: Picture) -> dict[str, Any]:
    """An image verdict's fields for the picture's hashes and where it was decided before (None:
    seen nowhere)."""
    return {
        "phash": picture.phash,
        "phash_turns": tuple(picture.turns) or None,
        **Sighting.verdict_fields(seen.get(picture.sha256 or "")),
    }


_DECIDE_ATTEMPTS = 3
"""Decisions of one submission, when its pictures keep being decided elsewhere while it is recorded."""


def distinct_names(uploads: list[Upload]) -> list[Upload]:
    """The uploads, each named apart from the others of its shipment: the second and later of a file
    name sent again are ``name (2)``, ``name (3)`` in the order sent.

    A decision's reasons name the picture they judge by its name alone: three pictures sent as
    ``scan.png`` left the audit trail and the review page unable to tell which of them was held (the
    page showed the held one under the release threshold). The name is a label only (never a path,
    not in the submission's key), so a client's retry is answered from its record as before."""
    taken = {u.filename for u in uploads}
    seen: set[str] = set()
    named: list[Upload] = []
    for upload in uploads:
        name = upload.filename
        if name in seen:
            n = 2
            while f"{name} ({n})" in taken:
                n += 1
            name = f"{name} ({n})"
            taken.add(name)
            upload = replace(upload, filename=name)
        seen.add(name)
        named.append(upload)
    return named


async def submit_shipment(
    services: Services,
    declaration: Declaration,
    uploads: list[Upload],
    *,
    submitted_by: str | None = None,
    may_send: Callable[[FirstSent], bool] | None = None,
    aeo_tier_source: AeoTierSource | None = None,
    declared: Declaration | None = None,
    by_tier: bool = False,
) -> Any:
    """Decide and record a shipment once; returns the audit record, new or (on a retry) existing.
    With ``may_send`` (a submitter's, :func:`_may_send`), a shipment already decided is sent again
    only where it accepts how the shipment was first sent. ``by_tier`` (an officer's or admin's
    send, who see every verdict anyway): a shipment already decided is decided again where the new
    decision is stricter, pictures included, not only where its declaration's flags make it so.
    ``aeo_tier_source`` is recorded with the decision (:func:`tier_source`; None: as
    :func:`pipeline.decide.decide_shipment` infers it).
    ``declared`` is the declaration as the client sent it, before :func:`vouched` gave it the
    register's tier (None: ``declaration`` is as sent): the submission is keyed by it, so that a
    retry is answered from its record whatever the register said since; a record keyed the way
    earlier releases keyed it (``declaration``, the tier filled in) is found too.

    Raises:
        ConflictError: the shipment was already decided on other images or another declaration,
            and the declaration raises no flag that holds it stricter (:class:`DecidedAlready`),
            whatever the pictures: a submitter must not be able to replace a hold (or a release it
            wanted to try again) by sending other pictures of the cargo, nor learn from the answer
            whether other pictures would pass. With ``by_tier``: the new decision is no stricter.
        ShipmentTakenError: ``may_send`` refused the shipment's first sender: a trader
            must not add a hold to another trader's shipment, nor learn how it was decided.
    """
    from pipeline.batch_decisions import with_earlier_holds
    from pipeline.decide import decide_shipment

    if may_send is not None:  # before any work: no model time spent on it, nothing read back
        first = await run_in_threadpool(services.audit.first_sent, declaration.shipment_id)
        if first is not None and not may_send(first):
            raise ShipmentTakenError(str(SentByAnother(declaration.shipment_id)))
    uploads = distinct_names(uploads)
    hashes = [u.sha256 for u in uploads]
    key = idempotency_key(declared or declaration, hashes)
    # a retry is answered from the record: no model time, nothing stored again
    replayed = await run_in_threadpool(services.audit.replayed, key, declaration.shipment_id)
    if replayed is None and declared is not None and declared != declaration:
        # first sent before keys were taken as sent: keyed with the tier the register gave it then
        old_key = idempotency_key(declaration, hashes)
        replayed = await run_in_threadpool(services.audit.replayed, old_key, declaration.shipment_id)
    if replayed is not None:
        # the same pictures (the key pins their hashes): kept again in case the first attempt
        # recorded its decision and then failed to keep them, heatmaps too
        await run_in_threadpool(_keep_for_review, services, uploads, [])
        await _restore_heatmaps(services, replayed.decision, uploads)
        return replayed
    from pipeline.decide import declared_tier

    # Decided already, sent by a submitter: decided anew only where the declaration raises a flag
    # that holds it stricter, whatever the pictures would score, so refused before any model time
    # (the store judges it again where it writes: a first decision may land meanwhile). A refusal
    # that waited for the scores told a submitter, leaving no trace, whether a picture would pass.
    # An officer's or admin's send (by_tier) rests on the scores, so the store alone judges it.
    if not by_tier:
        latest = await run_in_threadpool(services.audit.get, declaration.shipment_id)
        if (
            latest is not None
            and latest.decision.tier.severity >= declared_tier(services.policy, declaration).severity
        ):
            raise DecidedAlready(declaration.shipment_id, latest.seq)
    verdicts, heatmaps, lookup = await _verdicts(services, declaration, uploads)
    as_of = lookup.as_of
    for attempt in range(_DECIDE_ATTEMPTS):
        # a picture of a shipment held, and not cleared, carries its hold over: looked for among all
        # the shipments that hold it, not only those the lookup names
        seen, held_before = await run_in_threadpool(
            with_earlier_holds, services.audit, declaration.shipment_id, verdicts, lookup.unnamed
        )
        decision = decide_shipment(
            services.policy,
            declaration,
            seen,
            audit_key=services.settings.audit_secret.get_secret_value().encode("utf-8"),
            aeo_tier_source=aeo_tier_source,
            held_before=held_before,
        ).model_copy(update={"submitted_by": submitted_by})
        try:
            record = await run_in_threadpool(
                lambda d=decision, seen_as_of=as_of: services.audit.record(
                    d,
                    idempotency_key=key,
                    exclusive=True,
                    images_seen_as_of=seen_as_of,
                    near_copy_bits=services.settings.near_copy_bits,
                    may_send=may_send,
                    by_tier=by_tier,
                )
            )
            break
        except SentByAnother as exc:  # sent first under another key while this one was scored
            raise ShipmentTakenError(str(exc)) from exc
        except ImagesSeenSince as exc:  # the same pictures decided in another shipment meanwhile
            if attempt == _DECIDE_ATTEMPTS - 1:
                raise OverloadedError(
                    "this shipment's pictures are being decided in other shipments at this moment; "
                    "send it again shortly",
                    retry_after_s=services.settings.retry_after_s,
                ) from exc
            pictures = [Picture(v.sha256 or "", v.phash, v.phash_turns or ()) for v in verdicts]
            lookup = await _look_up(services, declaration.shipment_id, pictures)
            as_of = lookup.as_of
            verdicts = [
                verdict.model_copy(update=_sighted(lookup.found, picture))
                for verdict, picture in zip(verdicts, pictures, strict=True)
            ]
    # Kept for review only once the decision stands: a refused submission (409) stores nothing, so
    # sending rival pictures again and again cannot fill the disk. A failure just here leaves a
    # decision whose pictures are missing on the review page until its retry keeps them (and makes
    # the heatmaps again), never pictures of no decision.
    await run_in_threadpool(_keep_for_review, services, uploads, heatmaps)
    if record.decision.decided_at == decision.decided_at:  # a replay returns the earlier decision's time
        services.metrics.decisions.labels(record.decision.tier.value).inc()
    return record


async def _restore_heatmaps(services: Services, decision: ShipmentDecision, uploads: list[Upload]) -> None:
    """Make again the heatmaps a recorded decision names and the store lacks (a first attempt that
    failed after recording), where the model loaded now is the one that scored the picture: model
    time only in that rare case, never for a model since replaced, and never another model's map
    under this one's name."""
    predictor = services.predictors.get(decision.cargo_type)
    if predictor is None:
        return
    model_id = predictor.model_id
    named = {v.sha256: v for v in decision.images if v.sha256 and v.model_id == model_id and v.heatmap}
    missing = [
        u
        for u in uploads
        if u.sha256 in named
        # where the review page reads it (a decision from before maps were keyed by model reads another)
        and heatmap_name(named[u.sha256].heatmap, u.sha256) == heatmap_key(u.sha256, model_id)
        and not services.store.has("heatmaps", heatmap_key(u.sha256, model_id))
    ]
    if not missing:
        return
    try:
        predictions = await predict(services, decision.cargo_type, missing, observe=False)
    except ClearsightError as exc:  # the decision stands; its page shows the picture without one
        _log.warning("heatmaps of shipment %s not made again: %s", decision.shipment_id, exc)
        return
    kept = [
        (u.sha256, p.model_id, await heatmap_png(u, p))
        for u, p in zip(missing, predictions, strict=True)
        if p.model_id == model_id  # a model swapped in meanwhile
    ]
    await run_in_threadpool(_keep_for_review, services, [], kept)


def _keep_for_review(
    services: Services, uploads: list[Upload], heatmaps: list[tuple[str, str, bytes]]
) -> None:
    for upload in uploads:
        services.store.save_image(upload.sha256, upload.data, upload.image_format)
    for sha256, model_id, png in heatmaps:
        services.store.save_heatmap(sha256, model_id, png)


@router.post(
    "/shipments",
    response_model=ShipmentResponse | SubmissionReceipt,
    responses=SUBMIT_RESPONSES,
    summary="Decide a shipment and record it",
    # neither a multipart `encoding` nor a contentMediaType names the declaration part JSON: with
    # either, Swagger UI sent it as a file part, which the text field refuses, so /docs could not
    # submit; the field's description says it is JSON, its contentSchema which (an annotation that
    # strict JSON Schema readers skip without a contentMediaType)
)
async def post_shipment(
    request: Request,
    services: ServicesDep,
    caller: SubmitterDep,
    _multipart: MultipartDep,
    images: Annotated[list[UploadFile], File(description="The shipment's images.")],
    declaration: Annotated[
        str,
        Form(
            description="The declaration as JSON of the Declaration schema (contentSchema), once: "
            f"shipment_id matching {SHIPMENT_ID_PATTERN}, cargo_type, trader_id, the flags, extra; "
            "aeo_tier from officers and admins only (a submitter's: 403 aeo-tier-not-allowed).",
            examples=[DECLARATION_EXAMPLE],
            # no contentMediaType: Swagger UI 5 offers any string field with one as a file upload,
            # sent as a file part the text field refuses (/docs could not submit)
            json_schema_extra={"maxLength": MAX_DECLARATION_CHARS, "contentSchema": DECLARATION_SCHEMA},
        ),
    ],
) -> ShipmentResponse | SubmissionReceipt:
    """Score the images with the declared cargo type's model, decide RELEASE / REMOTE_INSPECTION /
    PHYSICAL_INSPECTION under the loaded policy, and record the decision in the audit store.

    A submitter gets a receipt (the tier and the record); officers and admins the whole decision.
    The trader's AEO tier comes from the service's register of trusted traders, not from a
    submitter's declaration.

    A shipment is decided once. The same declaration and images again (a retry) return the stored
    decision (same ``seq``); the same shipment id with other images or another declaration, sent by
    a submitter, is decided again only where the declaration raises a flag that holds it stricter
    (an alarm raised later), and refused with 409 otherwise, before its images are scored: the
    answer never depends on how they would score. Sent by an admin, who sees every verdict anyway,
    it is recorded where its decision is stricter (a re-scan finding a hot picture), 409 otherwise."""
    # one reading for the tier and the sender rule; off the event loop, as a changed file is read
    await refuse_repeated_fields(request, "declaration")
    register = await run_in_threadpool(services.register)
    declared = parse_declaration(declaration)
    parsed = vouched(declared, register, caller)
    batcher_for(services, parsed.cargo_type)  # an unknown cargo type decodes nothing
    async with decoded_uploads(services, images, gone=request.is_disconnected) as uploads:
        record = await submit_shipment(
            services,
            parsed,
            uploads,
            submitted_by=caller.name,
            may_send=_may_send(register, caller),
            aeo_tier_source=tier_source(declared, register, caller),
            declared=declared,
            # the flags-only rule keeps a submitter from reading verdicts off 409s; an admin reads them
            by_tier=caller.role is not Role.SUBMITTER,
        )
    request.state.log_extra = {
        "shipment_id": parsed.shipment_id,
        "tier": record.decision.tier.value,
        "seq": record.seq,
        "policy_version": record.decision.policy_version,
    }
    if caller.role is Role.SUBMITTER:
        return SubmissionReceipt(
            request_id=request.state.request_id,
            shipment_id=record.decision.shipment_id,
            tier=record.decision.tier,
            seq=record.seq,
            record_hash=record.record_hash,
            decided_at=record.decision.decided_at,
            policy_version=record.decision.policy_version,
        )
    return _response(request, record)


@router.get(
    "/shipments/{shipment_id}",
    response_model=ShipmentResponse,
    responses=READ_RESPONSES,
    summary="A recorded decision",
)
async def get_shipment(
    request: Request, shipment_id: ShipmentIdPath, audit: AuditDep, _caller: OfficerDep
) -> ShipmentResponse:
    """The recorded decision of a shipment, with the officer's outcome if one was recorded."""
    record = await run_in_threadpool(audit.get, shipment_id)
    if record is None:
        raise NotFoundError(f"no decision recorded for shipment {shipment_id!r}")
    return _response(request, record)


async def record_outcome(
    services: Services, shipment_id: str, outcome: OutcomeIn, officer: str
) -> tuple[Any, Any]:
    """Record an officer's finding; ``clean`` is stored as ``found=None`` (and read back as
    ``clean``, :class:`~serve.schemas.OutcomeOut`). Returns the decision the outcome was recorded on
    (an earlier one for a correction, ``amend``, of its finding) with the outcome this call recorded,
    and the shipment's latest decision as read after the write.

    Raises:
        NotFoundError: no decision recorded for the shipment.
        InputError: ``outcome.decision_seq`` is none of the shipment's decisions, or ``outcome.found``
            is no type :func:`~serve.findings.finding_types` accepts and ``outcome.new_type`` is unset.
        DecidedAgainError: ``outcome.decision_seq`` is an earlier decision of the shipment, without
            a finding to correct (no outcome, or a clean one) or without ``outcome.amend``.
        DecisionUnnamed: no ``outcome.decision_seq``, and the shipment has more than one decision.
        OutcomeExistsError: the decision has an outcome already and ``outcome.amend`` is not set.
    """
    audit = services.audit
    record = await run_in_threadpool(audit.get, shipment_id)
    if record is None:
        raise NotFoundError(f"no decision recorded for shipment {shipment_id!r}")
    found = None if outcome.found == CLEAN else outcome.found
    # judged against the decision the outcome is for; one for an earlier decision is the store's to
    # refuse as decided again (409), not this check's as an unknown type, but for a correction of
    # a finding recorded on it
    judged = record if outcome.decision_seq in (None, record.seq) else None
    if judged is None and outcome.amend:
        earlier = await run_in_threadpool(audit.decisions_of, [shipment_id])
        judged = next(
            (
                r
                for r in earlier
                if r.seq == outcome.decision_seq and r.outcome is not None and r.outcome.found is not None
            ),
            None,
        )
    if found is not None and not outcome.new_type and judged is not None:
        accepted = finding_types(services.predictors, judged.decision)
        if found not in accepted:
            cargo, listed = judged.decision.cargo_type, ", ".join([CLEAN, *accepted])
            raise InputError(
                f"found {found!r} is not a type the {cargo} pictures of shipment {shipment_id!r} were "
                f"scored against, nor one its {cargo} model knows (accepted: {listed}); "
                'send "new_type": true if inspection found a kind of anomaly its model does not know'
            )
    # the store checks decision_seq and amend again where it writes: two officers at once, or a
    # decision added meanwhile, cannot slip between this read and the write
    try:
        recorded = await run_in_threadpool(
            lambda: audit.record_outcome(
                shipment_id,
                found=found,
                officer=officer,
                notes=outcome.notes,
                decision_seq=outcome.decision_seq,
                amend=outcome.amend,
            )
        )
    except DecisionUnnamed:  # its own problem type: which decisions exist, name the one inspected
        raise
    except ConflictError as exc:
        # the store says which in words; a client is told by the problem's type, so which of its
        # two checks refused is read off the record as it stands now
        latest = await run_in_threadpool(audit.get, shipment_id)
        if outcome.decision_seq is not None and latest is not None and latest.seq != outcome.decision_seq:
            raise DecidedAgainError(str(exc)) from exc
        raise OutcomeExistsError(str(exc)) from exc
    # answered with the outcome this request wrote: another officer's correction landing between the
    # write and this read-back would otherwise be answered as this officer's
    latest = await run_in_threadpool(audit.get, shipment_id)
    if latest is None:
        return latest, latest
    judged = latest
    if latest.seq != recorded.decision_seq:  # a correction of an earlier decision's outcome
        decided = await run_in_threadpool(audit.decisions_of, [shipment_id])
        judged = next(r for r in decided if r.seq == recorded.decision_seq)
    return judged.model_copy(update={"outcome": recorded}), latest


@router.get(
    "/shipments",
    response_model=ShipmentResponse,
    responses=READ_RESPONSES,
    summary="A recorded decision, its shipment id as a query parameter",
)
async def get_shipment_by_query(
    request: Request,
    shipment_id: Annotated[
        str,
        Query(
            pattern=RECORDED_ID_PATTERN,
            description="The shipment's id as recorded: a batch's may hold '/' or spaces.",
        ),
    ],
    audit: AuditDep,
    _caller: OfficerDep,
) -> ShipmentResponse:
    """As ``GET /v1/shipments/{shipment_id}``, for any recorded id: a batch records ids the service's
    own pattern refuses ('SHP/2026/0001', 'SHP 0002'), which a path cannot carry whole."""
    return await get_shipment(request, shipment_id, audit, _caller)


@router.post(
    "/outcomes",
    response_model=ShipmentResponse,
    responses=OUTCOME_RESPONSES,
    summary="Record the inspection outcome, its shipment named in the body",
)
async def post_outcome_for(
    request: Request,
    services: ServicesDep,
    caller: OfficerDep,
    _json: JsonBodyDep,
    outcome: Annotated[OutcomeFor, Body()],
) -> ShipmentResponse:
    """As ``POST /v1/shipments/{shipment_id}/outcome``, for any recorded id (see ``GET
    /v1/shipments?shipment_id=``)."""
    found = OutcomeIn(**outcome.model_dump(exclude={"shipment_id"}))
    return await post_outcome(request, outcome.shipment_id, services, caller, None, found)


@router.post(
    "/shipments/{shipment_id}/outcome",
    response_model=ShipmentResponse,
    responses=OUTCOME_RESPONSES,
    summary="Record the inspection outcome",
)
async def post_outcome(
    request: Request,
    shipment_id: ShipmentIdPath,
    services: ServicesDep,
    caller: OfficerDep,
    _json: JsonBodyDep,
    outcome: Annotated[OutcomeIn, Body()],
) -> ShipmentResponse:
    """The officer's finding after inspection: ``clean`` or the anomaly type found, with notes.
    Answered with the decision it was recorded on, and ``superseded_by`` naming the shipment's
    latest decision where that is a later one (a correction of an earlier decision's finding)."""
    record, latest = await record_outcome(services, shipment_id, outcome, caller.name)
    request.state.log_extra = {"shipment_id": shipment_id, "found": outcome.found}
    return _response(request, record, latest)
