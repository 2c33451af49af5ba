"""Shipment decisions: image verdicts + declaration + policy -> RELEASE / REMOTE / PHYSICAL.

Every rule that fires adds a :class:`~pipeline.verdicts.Reason` (rule id, tier, message, image,
score, threshold); the shipment's tier is the most severe tier among its reasons, ``RELEASE`` when
only clear-score reasons fired. The rows of a verdicts file become each shipment's declaration and
images in :mod:`pipeline.shipment_rows`; :func:`decide_rows` decides them. Rule ids:

==============================  ==========================================================
``override.<flag>``             a declaration flag (radiation alarm, solid waste, ...)
``override.image_reused``       a picture already decided in another shipment
``override.image_near_copy``    a near-copy of one (re-encoded, resized, retouched)
``override.image_held_before``  such a picture of a shipment held on its own evidence, not cleared
``fail_closed.<case>``          the shipment cannot be judged (no image, corrupt image, a score
                                of a model the policy does not approve, ...)
``score.hold``                  an image at or above the hold threshold
``score.review``                an image at or above the (AEO-adjusted) release threshold
``score.clear``                 an image below the release threshold (tier RELEASE)
``trusted_trader.odds``         an AEO tier raised the release threshold (tier RELEASE)
``trusted_trader.conflict``     the rows name more than one trader or AEO tier: none is taken
                                (no trusted-trader factor; tier RELEASE, the scores decide)
``random_audit``                picked for a random compliance audit
==============================  ==========================================================

A shipment of a cargo type the policy does not list still has every image judged: under the
policy's rules for its model's cargo type where the policy lists it, against the thresholds of the
model that scored it where not (the score reasons say which): an unknown or misspelt cargo type
must not hide a score that holds the cargo under its own name. A picture of another cargo type
than the declared one (``fail_closed.mixed_cargo_types``): its row's ``cargo_type``, the one its
``model_id`` names (``<cargo type>-<backbone>-<hex>``: a packs' model's score on a row of ore says
nothing of ore) or its row's declaration's, is judged under the rules of every cargo
type it is said to be of that the policy lists, its model's first, and the strictest is kept: ore
pictures declared as packs are not let off by the packs' laxer hold. Where the policy does not list
the model's cargo type, its model's own thresholds (without a trusted-trader factor) are among
those rules: a crude-oil picture declared as packs is held where crude oil would be.

Random audits are drawn among all shipments, whatever their images say, by
``HMAC-SHA256(audit_key, shipment_id)`` mapped to [0, 1) < ``random_audit.rate``: reproducible by an
auditor holding the key, unpredictable to a trader without it. A picked shipment is inspected at
least at ``random_audit.tier`` (a floor: one held more strictly stays so), so the share of would-be
releases inspected at random is the rate, and a suspect picture added to a picked shipment can only
keep or raise its tier, whichever tier the audit has.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from datasets.errors import InputError, PolicyError
from pipeline.policy import CargoPolicy, Policy, TrustedTrader, model_cargo_type
from pipeline.resolution import SCALE_TOLERANCE, describe_scale, off_training_scale
from pipeline.shipment_rows import (
    TRADER_FIELDS,
    image_cargo_type,
    shipments_of,
    tier_source,
    trader_conflicts,
)
from pipeline.trader_register import TraderRegister
from pipeline.verdicts import (
    OVERRIDE_FLAGS,
    AeoTierSource,
    Declaration,
    ImageVerdict,
    Reason,
    ShipmentDecision,
    Tier,
)

__all__ = [
    "EarlierHold",
    "HeldBefore",
    "applied_thresholds",
    "audit_fraction",
    "decide_rows",
    "decide_shipment",
    "declared_tier",
    "flagged_tier",
]


_NOT_CARRIED = frozenset({"override.image_held_before", "random_audit"})
"""Reasons a hold that carries over never rests on: a hold carried from a third shipment (carried
on, it would outlive the officer's outcome clearing the shipment it came from) and a random pick (a
scan shared by several consignments would spread it beyond the audit rate)."""


class EarlierHold(NamedTuple):
    """Another shipment's standing decision that holds it on its own evidence and that no officer's
    outcome has cleared (found clean), or a decision of it whose inspection found an anomaly
    (:meth:`found`): a picture of it sent again carries the hold over."""

    shipment_id: str
    tier: Tier
    """The tier its own evidence gives it: its reasons' but ``override.image_held_before`` and
    ``random_audit``, which may be milder than its decision's."""
    rules: tuple[str, ...]
    """The rules that gave it that tier (those of its reasons at that tier)."""
    seq: int
    """Its audit record."""
    picture: str | None = None
    """The picture a finding on an earlier decision of it was made on (:meth:`found`), which the
    hold is carried by; None: its standing decision's, carried by each of its pictures."""

    @staticmethod
    def of(
        decision: ShipmentDecision, seq: int, *, cleared: bool, found: str | None = None
    ) -> EarlierHold | None:
        """The hold ``decision`` (audit record ``seq``) stands at on its own evidence, or None:
        released, cleared by an officer who found the cargo clean, or held only by a hold carried
        from another shipment (``override.image_held_before``) or a random audit. ``found``: what
        its latest outcome found, which holds it at the strictest tier whatever its own
        (:meth:`found`): a released re-scan on which inspection found an anomaly is a hold."""
        if found is not None:
            return EarlierHold.found(decision, seq, found)
        if decision.tier is Tier.RELEASE or cleared:
            return None
        own = [r for r in decision.reasons if r.rule not in _NOT_CARRIED]
        tier = max((r.tier for r in own), key=lambda t: t.severity, default=Tier.RELEASE)
        if tier is Tier.RELEASE:
            return None
        rules = tuple(dict.fromkeys(r.rule for r in own if r.tier is tier))
        return EarlierHold(decision.shipment_id, tier, rules, seq)

    @staticmethod
    def found(decision: ShipmentDecision, seq: int, found: str, picture: str | None = None) -> EarlierHold:
        """The hold of a decision (audit record ``seq``) whose latest outcome found ``found``: the
        strictest tier, whatever the decision's own. A finding is evidence about the pictures it was
        made on, which no later decision of the shipment, nor a clean outcome on one, takes back.
        ``picture``: the one of them it is carried by (None: each)."""
        return EarlierHold(
            decision.shipment_id, Tier.PHYSICAL_INSPECTION, (f"inspection found {found!r}",), seq, picture
        )

    def held_as(self) -> str:
        """Why it holds, for a reason's message: its rules, and the picture a finding was made on."""
        found_in = f" in picture {self.picture}" if self.picture is not None else ""
        return f"{', '.join(self.rules)}{found_in}; audit record {self.seq}"


HeldBefore = Mapping[str | tuple[str, str], EarlierHold]
"""Earlier holds by shipment id (its standing hold, carried by its pictures sent again), and by
(shipment id, content hash) for a finding on one of its earlier decisions, which holds the pictures
it was made on only: a shipment's own among them, as its later decisions do not take it back."""


def _held_before(
    policy: Policy, shipment_id: str, image: ImageVerdict, held_before: HeldBefore
) -> Iterator[Reason]:
    """``override.image_held_before`` for each held shipment ``image``'s picture was decided in: the
    same bytes always; a near-copy unless the policy records near-copies without holding
    (``image_near_copy: RELEASE``: a site where look-alikes are no copies). And where inspection
    found an anomaly in the same picture on an earlier decision of this shipment (``shipment_id``):
    the lookup leaves the shipment's own decisions out, and a picture seized was released when the
    shipment sent it again after a re-scan inspected clean."""
    own = held_before.get((shipment_id, image.sha256)) if image.sha256 else None
    if own is not None:
        yield Reason(
            rule="override.image_held_before",
            tier=own.tier,
            image=image.path,
            message=(
                f"the same picture was decided before in this shipment, held at {own.tier.value} "
                f"({own.held_as()}): a finding holds the picture it was made on whatever the "
                "shipment's later decisions"
            ),
        )
    same = list(image.seen_in or [])
    near: list[str] = []
    if policy.overrides.image_near_copy is not Tier.RELEASE:
        near = [s for s in image.similar_in or [] if s not in same]
    for shipment in [*same, *near]:
        if shipment in same:  # the shipment's standing hold, or a finding on these very bytes
            held = [held_before.get(shipment), held_before.get((shipment, image.sha256 or ""))]
        else:  # near which of its pictures is not known: its standing hold, or a finding on any
            held = [held_before.get(shipment)]
            held += [h for k, h in held_before.items() if isinstance(k, tuple) and k[0] == shipment]
        holds = [h for h in held if h is not None]
        if not holds:
            continue
        hold = max(holds, key=lambda h: h.tier.severity)  # the first of the strictest
        copy = "the same picture" if shipment in same else "a near-copy of a picture"
        yield Reason(
            rule="override.image_held_before",
            tier=hold.tier,
            image=image.path,
            message=(
                f"{copy} was decided in shipment {shipment}, held at {hold.tier.value} "
                f"({hold.held_as()}) with no officer's outcome clearing it: the hold carries over to "
                "its pictures sent again"
            ),
        )


_FLAG_RULES = frozenset(f"override.{flag}" for flag in OVERRIDE_FLAGS)


def declared_tier(policy: Policy, declaration: Declaration) -> Tier:
    """The strictest tier ``declaration``'s own flags (a radiation alarm, suspected solid waste, a
    document mismatch, declared foreign inclusions) force under ``policy``; RELEASE where it raises
    none. What :func:`decide_shipment` records as their ``override.<flag>`` reasons
    (:func:`flagged_tier`), known before any picture is scored."""
    tiers = [getattr(policy.overrides, flag) for flag in OVERRIDE_FLAGS if getattr(declaration, flag)]
    return max(tiers, key=lambda tier: tier.severity, default=Tier.RELEASE)


def flagged_tier(decision: ShipmentDecision) -> Tier:
    """The strictest tier ``decision``'s declaration flags gave it (its ``override.<flag>``
    reasons); RELEASE where they gave none. It rests on what was declared, never on a picture."""
    tiers = [reason.tier for reason in decision.reasons if reason.rule in _FLAG_RULES]
    return max(tiers, key=lambda tier: tier.severity, default=Tier.RELEASE)


def audit_fraction(audit_key: bytes, shipment_id: str) -> float:
    """``HMAC-SHA256(audit_key, shipment_id)`` mapped uniformly to [0, 1) (its first 64 bits)."""
    digest = hmac.new(audit_key, shipment_id.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _utc_iso(now: datetime | None) -> str:
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise InputError(f"now={now.isoformat()} has no time zone; pass an aware datetime (e.g. UTC)")
    return now.astimezone(UTC).isoformat(timespec="microseconds")


def _row_thresholds_valid(cargo: CargoPolicy, image: ImageVerdict) -> bool:
    """The thresholds the policy takes from the row (``"model"``) lie in [0, 1], release <= hold.

    Only the row's own values are checked: a policy may pair a number of its own with the model's
    other threshold (a fixed release cut above a low model hold is a valid, strict policy).
    """
    taken = []
    if cargo.release_threshold == "model":
        taken.append(image.threshold)
    if cargo.hold_threshold == "model":
        taken.append(image.hold_threshold)
    if any(v is None or not 0.0 <= v <= 1.0 for v in taken):
        return False
    both = cargo.release_threshold == "model" and cargo.hold_threshold == "model"
    return not both or image.threshold <= image.hold_threshold  # type: ignore[operator]


_MODEL_ONLY = CargoPolicy()
"""The rules an image is judged by where the policy has none for its cargo: its model's own
release and hold thresholds (and no trusted-trader factor)."""


def _said_cargo_types(declaration: Declaration, image: ImageVerdict) -> list[str]:
    """The cargo types an image is said to be of, each once, in this order: its model's (the row's
    ``cargo_type``, then the one its ``model_id`` names), its row's declaration's and its
    shipment's."""
    said = (
        image.cargo_type,
        model_cargo_type(image.model_id),
        image.declaration.get("cargo_type"),
        declaration.cargo_type,
    )
    return list(dict.fromkeys(str(c) for c in said if c))


def _rules_for(
    policy: Policy, declaration: Declaration, image: ImageVerdict
) -> list[tuple[CargoPolicy | None, str]]:
    """The cargo rules an image's score is judged under, each with the words its reasons add.

    The cargo types the image is said to be of: its model's (the row's ``cargo_type``), its row's
    declaration and the shipment's. One of them: its rules. Several (mixed cargo, which fails
    closed as well): each that the policy lists, the model's first, the strictest outcome kept, so
    that declaring ore pictures as packs never judges them by the packs' laxer hold only. None
    listed: ``None``, the model's own thresholds. The model's cargo type not listed (another is):
    ``None`` first as well, so that a crude-oil picture declared as packs is held where its own
    model's hold holds it, whatever the packs' rules say.
    """
    said = _said_cargo_types(declaration, image)
    known = [(policy.cargo_types[c], c) for c in said if c in policy.cargo_types]
    if not known:
        no_rules = ", ".join(repr(c) for c in said)
        return [(None, f" (the model's own threshold: no rules for cargo type {no_rules})")]
    if len(said) == 1:
        return [(known[0][0], "")]
    distinct: list[tuple[CargoPolicy | None, str]] = []
    # the row's cargo type, and the one its model id names (they differ in a row of mixed cargo)
    models = [c for c in (image_cargo_type(image), model_cargo_type(image.model_id)) if c is not None]
    model_cargo = next((c for c in models if c not in policy.cargo_types), None)
    if model_cargo is not None:
        # no rules for the model's cargo: its own thresholds are the only ones validated for it
        distinct.append((None, f" (the model's own threshold: no rules for cargo type {model_cargo!r})"))
    for rules, cargo in known:
        if all(rules != other for other, _ in distinct):
            distinct.append((rules, f" (under the {cargo} rules)"))
    return distinct


def _image_reasons(
    policy: Policy,
    declaration: Declaration,
    image: ImageVerdict,
    trader: TrustedTrader | None,
) -> list[Reason]:
    """The reasons one image contributes (fail-closed cases first, then its score, judged under
    each of :func:`_rules_for`'s rules, the strictest kept)."""
    fc = policy.fail_closed
    name = image.path
    reasons: list[Reason] = []
    if image.error is not None:
        reasons.append(
            Reason(
                rule="fail_closed.image_error",
                tier=fc.image_error,
                image=name,
                message=f"image could not be scored ({image.error}); never released",
            )
        )
    # the model that scored it and its own row's declaration must both agree with the shipment's,
    # a picture that failed too: declared as a listed cargo type, one of an unlisted type would
    # otherwise shed unknown_cargo_type's tier. The model's cargo is the row's cargo_type and the one
    # its model_id names: a row of ore whose score came from a packs' model (an edited row, a model
    # swapped) was released on a score that says nothing of ore.
    by_id = model_cargo_type(image.model_id)
    others = [
        c
        for c in (image.cargo_type, by_id, image.declaration.get("cargo_type"))
        if c and c != declaration.cargo_type
    ]
    if others:
        image_cargo = others[0]
        said = f"image is of cargo type {image_cargo!r}"
        if image_cargo == by_id != image.cargo_type:
            said = f"image was scored by model {image.model_id}, of cargo type {by_id!r}"
            if image.cargo_type:
                said += f" (its row says {image.cargo_type!r})"
        reasons.append(
            Reason(
                rule="fail_closed.mixed_cargo_types",
                tier=fc.mixed_cargo_types,
                image=name,
                message=f"{said}, shipment declared {declaration.cargo_type!r}",
            )
        )
    # a picture of a cargo type the policy does not list is of unknown cargo whatever the shipment
    # declares: declared as a listed type, it shed unknown_cargo_type's tier for mixed_cargo_types'
    unlisted = next((c for c in others if c not in policy.cargo_types), None)
    if unlisted is not None:
        reasons.append(
            Reason(
                rule="fail_closed.unknown_cargo_type",
                tier=fc.unknown_cargo_type,
                image=name,
                message=f"image is of cargo type {unlisted!r}, not in policy {policy.version}; never "
                "released on a policy's rules for other cargo",
            )
        )
    if image.score is not None or image.model_id:
        # before the score's own checks: a score no approved model accounts for (an unlisted model's,
        # or one with no model id), or a row of an unlisted model, is never milder for being out of
        # range, off the training scale, unscored or failed (a row nobody scored names no model)
        reasons.extend(_unapproved_model(policy, declaration, image))
    if image.error is not None:
        return reasons
    if image.score is None:
        reasons.append(
            Reason(
                rule="fail_closed.missing_score",
                tier=fc.missing_score,
                image=name,
                message="image has no score; never released",
            )
        )
        return reasons
    score = image.score
    # NaN compares False with everything, so without this check it would pass as "below threshold".
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        reasons.append(
            Reason(
                rule="fail_closed.invalid_score",
                tier=fc.invalid_score,
                image=name,
                message=f"score {score!r} is not a number in [0, 1]; never released",
            )
        )
        return reasons
    scale = image.scale_vs_training
    if off_training_scale(scale):
        reasons.append(
            Reason(
                rule="fail_closed.off_training_scale",
                tier=fc.off_training_scale,
                image=name,
                score=score,
                message=f"image {describe_scale(scale)}: more than {SCALE_TOLERANCE:g}x off, "
                "so its score was never validated; not released on it",
            )
        )
    if not image.model_id:
        reasons.append(
            Reason(
                rule="fail_closed.missing_model_id",
                tier=fc.missing_model_id,
                image=name,
                score=score,
                message="score has no model id to account for it; never released",
            )
        )
    reasons.extend(_strictest(policy, declaration, image, score, trader)[0])
    return reasons


def _strictest(
    policy: Policy,
    declaration: Declaration,
    image: ImageVerdict,
    score: float,
    trader: TrustedTrader | None,
) -> tuple[list[Reason], CargoPolicy | None]:
    """The reasons of ``score`` under the strictest of :func:`_rules_for`'s rules, with those rules
    (``None``: the model's own thresholds)."""
    judged = [
        (_score_reasons(policy, rules, image, score, trader, said), rules)
        for rules, said in _rules_for(policy, declaration, image)
    ]
    # the first of the strictest: the model's cargo's rules where others judge alike
    return max(judged, key=lambda found: max(r.tier.severity for r in found[0]))


def _release_and_hold(cargo: CargoPolicy, image: ImageVerdict) -> tuple[float | None, float | None]:
    """The release and hold thresholds ``cargo``'s rules take for ``image``: the policy's own
    numbers, or the model's on the image's row where the rules say ``"model"``."""
    release = image.threshold if cargo.release_threshold == "model" else cargo.release_threshold
    hold = image.hold_threshold if cargo.hold_threshold == "model" else cargo.hold_threshold
    return release, hold


def applied_thresholds(
    policy: Policy, decision: ShipmentDecision, image: ImageVerdict, recorded: Reason
) -> tuple[float, float] | None:
    """The release threshold (a trusted trader's factor applied) and the hold threshold by which
    ``policy`` judged ``image``'s score in ``decision``, found as :func:`decide_shipment` found them.

    A score reason records only the threshold the score was compared with last (the release one
    below hold): an officer shown a score of 0.886 over a release cut of 0.010 still needs the hold
    of 0.9 that kept it from a physical inspection. ``recorded`` is that reason, the one the
    decision holds for ``image``'s score.

    None where ``policy`` is not the one the decision was made under (another ``policy_sha256``:
    today's policy says nothing of an older decision's thresholds), where the image's score was not
    judged by thresholds (not scored, out of range, or thresholds missing), or where this code judges
    the score otherwise than ``recorded`` says (another rule, tier, threshold or message), or finds
    another trusted-trader reason than the decision holds (the factor it took, or none): the same
    policy under older decision code gave other thresholds (before pictures were judged under every
    cargo type they are said to be of, an ore picture declared as packs met the packs' hold of 0.9,
    where this code finds the ore model's 0.6), and one matching threshold does not tell them apart.
    """
    if policy.sha256 != decision.policy_sha256 or image.error is not None or image.score is None:
        return None
    score = float(image.score)
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        return None
    declaration = decision.declaration
    source = decision.aeo_tier_source or ("declared_unverified" if declaration.aeo_tier else "none")
    trader, trader_reasons = _trader(policy, declaration, decision.images, source)
    recorded_trader = [r for r in decision.reasons if r.rule.startswith("trusted_trader.")]
    if len(trader_reasons) != len(recorded_trader) or not all(
        map(_same_reason, trader_reasons, recorded_trader)
    ):
        # A score.hold reason pins the hold alone: the release cut is today's code's, and older code
        # took another trader's factor (before 0931031 rows naming two traders took the first's).
        return None
    reasons, rules = _strictest(policy, declaration, image, score, trader)
    if any(r.rule == "fail_closed.missing_threshold" for r in reasons):
        return None
    if not any(_same_reason(found, recorded) for found in reasons):
        return None  # judged otherwise when it was decided: these are not the thresholds it met
    if rules is None:
        rules, trader = _MODEL_ONLY, None
    release, hold = _release_and_hold(rules, image)
    assert release is not None and hold is not None  # no missing_threshold reason
    return (trader.raised(release, hold) if trader is not None else release), hold


def _same_reason(found: Reason, recorded: Reason) -> bool:
    """``found`` says what ``recorded`` says: one rule, tier, image and message (each number in it
    as :func:`_written_apart` writes it), one score and threshold (to a rounding: a record read back
    from JSON)."""

    def near(a: float | None, b: float | None) -> bool:
        return a is None if b is None else a is not None and math.isclose(a, b, rel_tol=1e-9)

    return (
        (found.rule, found.tier, found.image, found.message)
        == (recorded.rule, recorded.tier, recorded.image, recorded.message)
        and near(found.score, recorded.score)
        and near(found.threshold, recorded.threshold)
    )


def _unapproved_model(policy: Policy, declaration: Declaration, image: ImageVerdict) -> Iterator[Reason]:
    """``fail_closed.unapproved_model`` where a cargo type the image is said to be of (its model's,
    its row's declaration, the shipment's) lists the models approved for it and the image's model
    is not among them, or the row names no model (besides ``missing_model_id``, whose tier may be
    milder): the first such cargo type, since one is enough never to release on it."""
    for cargo in _said_cargo_types(declaration, image):
        approved = policy.unapproved(cargo, image.model_id or "")
        if approved is not None:
            model = f"model {image.model_id}" if image.model_id else "no model named in its row"
            yield Reason(
                rule="fail_closed.unapproved_model",
                tier=policy.fail_closed.unapproved_model,
                image=image.path,
                score=image.score,
                message=f"scored by {model}, which policy {policy.version} does not approve for cargo "
                f"type {cargo!r} (approved: {', '.join(approved)}); not released on its score",
            )
            return


def _written_apart(score: float, cut: float) -> tuple[str, str]:
    """``score`` and the ``cut`` it is compared with, each to four places, or to as many more as it
    takes to write two unequal numbers apart (then both to as many): 0.32842 under a release cut of
    0.328425 read "score 0.3284 < release threshold 0.3284". Rounding keeps the order, so written
    apart they read the way they compare. Four places stay the rule otherwise, so that a reason
    recorded before reads as today's (:func:`_same_reason`).

    Not :func:`pipeline.report.score_text`: it writes a score apart from a cut written in fewer
    digits of its own (0.32842 beside 0.328), which keeps them unequal but not in order."""
    digits = 4
    while score != cut and f"{score:.{digits}f}" == f"{cut:.{digits}f}":
        if digits >= 17:  # one text still at 17 places: each float's shortest text tells them apart
            return repr(score), repr(cut)
        digits += 1
    return f"{score:.{digits}f}", f"{cut:.{digits}f}"


def _score_reasons(
    policy: Policy,
    cargo: CargoPolicy | None,
    image: ImageVerdict,
    score: float,
    trader: TrustedTrader | None,
    judged_by: str,
) -> list[Reason]:
    """An image's valid score against one cargo's rules (``None``: the model's own thresholds,
    without a trusted-trader factor); ``judged_by`` ends each message."""
    reasons: list[Reason] = []
    name = image.path
    if cargo is None:
        cargo, trader = _MODEL_ONLY, None
    release, hold = _release_and_hold(cargo, image)
    problem = None
    if release is None or hold is None:
        missing = "threshold" if release is None else "hold_threshold"
        problem = f"policy uses the model's {missing}, the row has none"
    elif not (math.isfinite(release) and math.isfinite(hold)):
        problem = f"thresholds {release!r}/{hold!r} are not finite"
    elif not _row_thresholds_valid(cargo, image):
        # a row's thresholds come from a file anyone could edit: a release cut of 1.5 releases all
        problem = (
            f"the row's thresholds release {image.threshold!r} / hold {image.hold_threshold!r} are not "
            "0 <= release <= hold <= 1"
        )
    if problem is not None:
        reasons.append(
            Reason(
                rule="fail_closed.missing_threshold",
                tier=policy.fail_closed.missing_threshold,
                image=name,
                score=score,
                message=problem + judged_by,
            )
        )
        return reasons
    assert release is not None and hold is not None  # narrowed above
    # The AEO factor widens the release band but never past the hold threshold.
    effective = trader.raised(release, hold) if trader is not None else release
    if score >= hold:
        shown, cut = _written_apart(score, hold)
        reasons.append(
            Reason(
                rule="score.hold",
                tier=policy.image_tiers.at_or_above_hold,
                image=name,
                score=score,
                threshold=hold,
                message=f"score {shown} >= hold {cut}{judged_by}",
            )
        )
    elif score >= effective:  # equality is not released
        shown, cut = _written_apart(score, effective)
        reasons.append(
            Reason(
                rule="score.review",
                tier=policy.image_tiers.at_or_above_release,
                image=name,
                score=score,
                threshold=effective,
                message=f"score {shown} >= release threshold {cut}{judged_by}",
            )
        )
    else:
        shown, cut = _written_apart(score, effective)
        reasons.append(
            Reason(
                rule="score.clear",
                tier=Tier.RELEASE,
                image=name,
                score=score,
                threshold=effective,
                message=f"score {shown} < release threshold {cut}{judged_by}",
            )
        )
    return reasons


_TIER_SOURCE_WORDS = {
    "register": "tier from the trader register",
    "declared_unverified": "tier as declared, not verified against a trader register",
    "none": "no tier",
}


def decide_shipment(
    policy: Policy,
    declaration: Declaration,
    images: Sequence[ImageVerdict],
    *,
    audit_key: bytes,
    now: datetime | None = None,
    aeo_tier_source: AeoTierSource | None = None,
    held_before: HeldBefore | None = None,
) -> ShipmentDecision:
    """Decide one shipment under ``policy``.

    Args:
        policy: the validated policy.
        declaration: the shipment's declaration and flags.
        images: its scored (or failed) image verdicts, in any order; may be empty (fails closed).
        audit_key: HMAC key for random-audit selection; must not be empty.
        now: decision time (aware datetime); defaults to the current UTC time.
        aeo_tier_source: where ``declaration.aeo_tier`` came from, recorded with the decision and
            said in ``trusted_trader.odds``; None: ``"declared_unverified"`` where the declaration
            has a tier, else ``"none"`` (nobody vouched for it).
        held_before: the uncleared holds of other shipments, by id, among those the images'
            ``seen_in`` / ``similar_in`` name (the caller reads them from the audit store, each
            :meth:`EarlierHold.of` its standing decision): a picture of a shipment held on its own
            evidence, sent again under a new id, carries that hold over
            (``override.image_held_before``), not only ``image_reused``'s tier. Keyed by (shipment
            id, content hash) (:data:`HeldBefore`): a finding on an earlier decision, this
            shipment's own too, holding that picture.

    Returns:
        The decision with its reasons, policy version and hash, model ids and ``decided_at``.

    Raises:
        PolicyError: ``audit_key`` is empty (selection would be predictable).
        InputError: ``now`` is a naive datetime.
    """
    if not audit_key:
        raise PolicyError("audit_key is empty; random audits need a secret key (Settings.audit_secret)")
    decided_at = _utc_iso(now)
    reasons: list[Reason] = []
    for flag in OVERRIDE_FLAGS:
        if getattr(declaration, flag):
            reasons.append(
                Reason(
                    rule=f"override.{flag}",
                    tier=getattr(policy.overrides, flag),
                    message=f"declaration flag {flag} is set: inspection whatever the score",
                )
            )
    fc = policy.fail_closed
    if declaration.cargo_type not in policy.cargo_types:
        reasons.append(
            Reason(
                rule="fail_closed.unknown_cargo_type",
                tier=fc.unknown_cargo_type,
                message=f"cargo type {declaration.cargo_type!r} is not in policy {policy.version} "
                f"(known: {', '.join(sorted(policy.cargo_types))}); never released. Each image's "
                "score is judged under the policy's rules for each cargo type its row names that the "
                "policy lists (its model's first), and against its model's own thresholds where the "
                "policy does not list its model's cargo type, the strictest kept (each score's "
                "reason says which)",
            )
        )
    if not images:
        reasons.append(
            Reason(
                rule="fail_closed.no_image", tier=fc.no_image, message="shipment has no image; never released"
            )
        )
    if aeo_tier_source is None:
        aeo_tier_source = "declared_unverified" if declaration.aeo_tier else "none"
    trader, trader_reasons = _trader(policy, declaration, images, aeo_tier_source)
    reasons.extend(trader_reasons)
    for image in images:
        if image.seen_in:
            # the same bytes as a picture of other cargo: reused to pass, or a shipment resubmitted
            # under a new id (to dodge a random audit, say); an officer looks either way
            reasons.append(
                Reason(
                    rule="override.image_reused",
                    tier=policy.overrides.image_reused,
                    image=image.path,
                    message=f"the same picture was decided before in shipment {', '.join(image.seen_in)}",
                )
            )
        reasons.extend(_held_before(policy, declaration.shipment_id, image, held_before or {}))
        if image.similar_in:
            # re-encoded, resized, retouched, mirrored or turned: the same scene, other bytes
            # the bits and the turn are those of the nearest of the shipments named
            nearest = " at the nearest" if len(image.similar_in) > 1 else ""
            turned = f", {image.similar_turn}" if image.similar_turn else ""
            reasons.append(
                Reason(
                    rule="override.image_near_copy",
                    tier=policy.overrides.image_near_copy,
                    image=image.path,
                    message=(
                        f"a near-copy of a picture decided before in shipment {', '.join(image.similar_in)} "
                        f"(perceptual hashes {image.similar_bits} of 256 bits apart{nearest}{turned})"
                    ),
                )
            )
        reasons.extend(_image_reasons(policy, declaration, image, trader))

    random_audit = False
    # drawn whatever the images say, and a floor: drawn only among would-be releases, a physical
    # audit tier made a suspect picture (a remote inspection) lift the hold of a picked shipment
    if policy.random_audit.rate > 0:
        fraction = audit_fraction(audit_key, declaration.shipment_id)
        if fraction < policy.random_audit.rate:
            random_audit = True
            reasons.append(
                Reason(
                    rule="random_audit",
                    tier=policy.random_audit.tier,
                    score=fraction,
                    threshold=policy.random_audit.rate,
                    message=f"picked for a random compliance audit (rate {policy.random_audit.rate})",
                )
            )
    tier = max((r.tier for r in reasons), key=lambda t: t.severity, default=Tier.RELEASE)
    model_ids = list(dict.fromkeys(i.model_id for i in images if i.model_id))
    return ShipmentDecision(
        shipment_id=declaration.shipment_id,
        cargo_type=declaration.cargo_type,
        tier=tier,
        reasons=reasons,
        declaration=declaration,
        images=list(images),
        policy_version=policy.version,
        policy_sha256=policy.sha256,
        model_ids=model_ids,
        random_audit=random_audit,
        decided_at=decided_at,
        aeo_tier_source=aeo_tier_source,
    )


def _trader(
    policy: Policy, declaration: Declaration, images: Sequence[ImageVerdict], aeo_tier_source: AeoTierSource
) -> tuple[TrustedTrader | None, list[Reason]]:
    """The trusted trader whose factor raises ``images``' release thresholds (None: no tier, one
    the policy does not list, or rows naming several traders or tiers), and the shipment's reasons
    about it (``trusted_trader.conflict``, ``trusted_trader.odds``), in the order decided."""
    reasons: list[Reason] = []
    conflicts = trader_conflicts(images)
    trader = (
        policy.trusted_traders.get(declaration.aeo_tier) if declaration.aeo_tier and not conflicts else None
    )
    if conflicts:
        reasons.append(_trader_conflict(conflicts))
    if (
        trader is not None
        and trader.release_odds_factor > 1.0
        and any(
            i.error is None
            and i.score is not None
            and 0.0 <= i.score <= 1.0
            and any(rules is not None for rules, _ in _rules_for(policy, declaration, i))
            for i in images
        )
    ):
        reasons.append(
            Reason(
                rule="trusted_trader.odds",
                tier=Tier.RELEASE,
                message=(
                    f"{declaration.aeo_tier} trader ({_TIER_SOURCE_WORDS[aeo_tier_source]}): "
                    "the odds of each release threshold times "
                    f"{trader.release_odds_factor:g}, never above hold (each score's reason gives the "
                    "threshold applied)"
                ),
            )
        )
    return trader, reasons


def _trader_conflict(conflicts: dict[str, list[Any]]) -> Reason:
    """``trusted_trader.conflict``: the rows name several traders or tiers (first three of each)."""
    named = "; ".join(
        f"{len(values)} {TRADER_FIELDS[key]} ({', '.join(map(repr, values[:3]))}"
        + (", ...)" if len(values) > 3 else ")")
        for key, values in conflicts.items()
    )
    return Reason(
        rule="trusted_trader.conflict",
        tier=Tier.RELEASE,
        message=(
            f"the shipment's rows name {named}: whose AEO tier applies cannot be told, so none does "
            "(no trusted-trader factor, as for an unregistered trader)"
        ),
    )


def decide_rows(
    policy: Policy, rows: Iterable[ImageVerdict], *, audit_key: bytes, register: TraderRegister | None = None
) -> Iterator[ShipmentDecision]:
    """Group image rows by shipment and decide each, in order of each shipment's first row.

    All rows are read before the first decision is yielded, because a shipment's images need not
    be adjacent in the file.

    Raises:
        InputError: a row without a shipment id, or a shipment whose declaration does not validate.
        PolicyError: ``audit_key`` is empty.
    """
    if not audit_key:
        raise PolicyError("audit_key is empty; random audits need a secret key (Settings.audit_secret)")
    for declaration, images in shipments_of(rows, register=register):
        yield decide_shipment(
            policy, declaration, images, audit_key=audit_key, aeo_tier_source=tier_source(register)
        )
