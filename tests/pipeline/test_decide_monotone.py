"""Decisions are monotone: more suspicion never gives a milder tier.

Drawn at random (a fixed seed) across the rules: scores against thresholds, unknown and mixed cargo
types, failed images, reused pictures (of a held shipment), trusted traders, declaration flags and
random audits; and, for declaring another cargo type than the pictures' model's, under policies
drawn at random too.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pipeline.decide import EarlierHold, decide_shipment
from pipeline.policy import Policy, parse_policy
from pipeline.verdicts import Declaration, ImageVerdict, Tier

KEY = b"monotone-audit-key"
SCORES = [0.0, 0.1, 0.29, 0.3, 0.5, 0.55, 0.6, 0.79, 0.8, 0.9, 0.95, 1.0]
CARGO = ["bulk_ore", "vacuum_pack", "crude_oil"]  # crude_oil: no rules in the policy
TRIALS = 400


def _policy(audit_tier: str) -> Policy:
    return parse_policy(
        {
            "policy_version": "monotone-1",
            "cargo_types": {
                "bulk_ore": {},
                "vacuum_pack": {"release_threshold": 0.3, "hold_threshold": 0.6},
            },
            "trusted_traders": {"AEOF": {"release_odds_factor": 1.5}},
            "random_audit": {"rate": 0.5, "tier": audit_tier},
        }
    )


def _image(rng: random.Random, n: int) -> ImageVerdict:
    kind = rng.random()
    base: dict[str, Any] = {
        "path": f"i{n}.png",
        "cargo_type": rng.choice(CARGO),
        "threshold": rng.choice([0.3, 0.5]),
        "hold_threshold": rng.choice([0.6, 0.8]),
        "model_id": "m1",
    }
    if rng.random() < 0.15:
        base["seen_in"] = ["S-EARLIER"]
    if kind < 0.08:
        return ImageVerdict(**{**base, "error": "decode failed"})
    if kind < 0.12:
        return ImageVerdict(**{**base, "score": None})
    return ImageVerdict(**{**base, "score": rng.choice(SCORES)})


def _declaration(rng: random.Random, n: int) -> Declaration:
    return Declaration(
        shipment_id=f"S{n}",
        cargo_type=rng.choice(CARGO),
        aeo_tier=rng.choice([None, None, "AEOF"]),
        document_mismatch=rng.random() < 0.05,
    )


# the shipment reused pictures were decided in first stands held: its hold carries over
HELD = {"S-EARLIER": EarlierHold("S-EARLIER", Tier.PHYSICAL_INSPECTION, ("override.radiation_alarm",), 1)}


def _tier(policy: Policy, declaration: Declaration, images: list[ImageVerdict]) -> Tier:
    return decide_shipment(policy, declaration, images, audit_key=KEY, held_before=HELD).tier


def _cases(seed: int) -> Any:
    rng = random.Random(seed)
    for n in range(TRIALS):
        # at least one: a shipment without images fails closed, which one clear image may lift
        images = [_image(rng, i) for i in range(rng.randint(1, 3))]
        yield rng, _declaration(rng, n), images


AUDIT_TIERS = ["REMOTE_INSPECTION", "PHYSICAL_INSPECTION"]


@pytest.mark.parametrize("audit_tier", AUDIT_TIERS)
def test_adding_an_image_never_gives_a_milder_tier(audit_tier: str) -> None:
    policy = _policy(audit_tier)
    for rng, declaration, images in _cases(1):
        before = _tier(policy, declaration, images)
        added = _image(rng, len(images))
        after = _tier(policy, declaration, [*images, added])
        assert after.severity >= before.severity, (declaration, images, added)


@pytest.mark.parametrize("audit_tier", AUDIT_TIERS)
def test_raising_a_score_never_gives_a_milder_tier(audit_tier: str) -> None:
    policy = _policy(audit_tier)
    for rng, declaration, images in _cases(2):
        scored = [n for n, image in enumerate(images) if image.score is not None]
        if not scored:
            continue
        n = rng.choice(scored)
        higher = [s for s in SCORES if s > images[n].score]  # type: ignore[operator]
        if not higher:
            continue
        raised = [*images]
        raised[n] = images[n].model_copy(update={"score": rng.choice(higher)})
        before, after = _tier(policy, declaration, images), _tier(policy, declaration, raised)
        assert after.severity >= before.severity, (declaration, images, raised[n])


@pytest.mark.parametrize("declared", [*CARGO, "iron_ore"])
def test_declaring_another_cargo_type_never_gives_a_milder_tier(declared: str) -> None:
    """Declared as another cargo type than its pictures' model was trained for (one the policy
    lists with laxer thresholds, or one it does not list: a typo, ``iron_ore``), a shipment is
    judged at least as strictly as under its model's cargo type."""
    policy = _policy("REMOTE_INSPECTION")
    for _, declaration, images in _cases(3):
        for image in images:
            image.cargo_type = declaration.cargo_type
        as_scored = _tier(policy, declaration, images)
        other = _tier(policy, declaration.model_copy(update={"cargo_type": declared}), images)
        assert other.severity >= as_scored.severity, (declaration, images)


# Re-declaration under policies drawn at random as well: which cargo types are listed, and with
# which of the model's thresholds or fixed ones, so that a listed cargo's rules may be laxer or
# stricter than an unlisted model's own.
ANY_CARGO = ["bulk_ore", "vacuum_pack", "crude_oil", "wafer"]
FAIL_CLOSED = [
    "no_image", "image_error", "unknown_cargo_type", "mixed_cargo_types", "missing_score",
    "invalid_score", "missing_model_id", "unapproved_model", "missing_threshold", "off_training_scale",
]  # fmt: skip
REDECLARED_TRIALS = 1500


def _any_policy(rng: random.Random) -> Policy:
    def threshold() -> Any:
        return rng.choice(["model", 0.2, 0.4, 0.6, 0.9])

    cargo = {}
    for name in rng.sample(ANY_CARGO, rng.randint(1, 3)):
        release, hold = threshold(), threshold()
        if "model" not in (release, hold) and release > hold:
            release, hold = hold, release
        cargo[name] = {"release_threshold": release, "hold_threshold": hold}
        if rng.random() < 0.3:  # the models it approves: the one that scores, or another
            cargo[name]["models"] = [f"{name}-lite0-{rng.choice(['000000000000000a', '000000000000000b'])}"]
    # each fail-closed tier drawn apart: mixed_cargo_types milder than unknown_cargo_type let a
    # picture of unlisted cargo declared as a listed type shed the stricter tier (forced equal here
    # before, which hid it)
    fail_closed = {case: rng.choice(AUDIT_TIERS) for case in FAIL_CLOSED}
    return parse_policy(
        {
            "policy_version": "monotone-any",
            "cargo_types": cargo,
            "trusted_traders": {"AEOF": {"release_odds_factor": rng.choice([1.0, 1.5, 4.0])}},
            "random_audit": {"rate": rng.choice([0.0, 0.5]), "tier": rng.choice(AUDIT_TIERS)},
            "overrides": {
                "image_reused": rng.choice(["RELEASE", *AUDIT_TIERS]),
                "image_near_copy": rng.choice(["RELEASE", *AUDIT_TIERS]),
            },
            "image_tiers": {
                "at_or_above_hold": "PHYSICAL_INSPECTION",
                "at_or_above_release": rng.choice(AUDIT_TIERS),
            },
            "fail_closed": fail_closed,
        }
    )


def _own_image(rng: random.Random, n: int, cargo: str) -> ImageVerdict:
    release = rng.choice([0.1, 0.3, 0.5])
    base: dict[str, Any] = {
        "path": f"i{n}.png",
        "cargo_type": cargo,
        "threshold": release,
        "hold_threshold": max(release, rng.choice([0.5, 0.6, 0.8, 0.95])),
        "model_id": rng.choice([f"{cargo}-lite0-000000000000000a"] * 3 + [None]),
    }
    if rng.random() < 0.15:
        base["seen_in"] = [rng.choice(["S-EARLIER", "S-RELEASED"])]
    if rng.random() < 0.15:
        base["similar_in"] = [rng.choice(["S-EARLIER", "S-RELEASED"])]
    kind = rng.random()
    if kind < 0.12:
        return ImageVerdict(**{**base, "error": "decode failed"})
    if kind < 0.16:
        return ImageVerdict(**base)
    return ImageVerdict(**{**base, "score": rng.choice(SCORES)})


def test_declaring_another_cargo_type_never_gives_a_milder_tier_under_any_policy() -> None:
    """Whichever cargo types a policy lists and however strictly: declared as any other cargo type
    (listed or not), pictures scored by a model of one cargo type are judged at least as strictly
    as declared as their model's own."""
    rng = random.Random(4)
    milder = []
    for n in range(REDECLARED_TRIALS):
        policy = _any_policy(rng)
        own = rng.choice(ANY_CARGO)
        declaration = Declaration(shipment_id=f"S{n}", cargo_type=own, aeo_tier=rng.choice([None, "AEOF"]))
        images = [_own_image(rng, i, own) for i in range(rng.randint(1, 3))]
        as_scored = _tier(policy, declaration, images)
        for declared in [*ANY_CARGO, "iron_ore"]:
            other = _tier(policy, declaration.model_copy(update={"cargo_type": declared}), images)
            if other.severity < as_scored.severity:
                milder.append((policy.cargo_types, declaration, declared, images, as_scored, other))
    assert not milder, (len(milder), milder[0])
