"""Shipment decisions: every rule and tier, fail-closed cases, AEO offsets, overrides, random audits,
row grouping, and the `clearsight decide` command."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import math
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from datasets.errors import InputError, PolicyError
from pipeline.decide import EarlierHold, audit_fraction, decide_rows, decide_shipment
from pipeline.policy import default_policy_path, load_policy
from pipeline.verdict_rows import FIELDS, row_data
from pipeline.verdicts import Declaration, ImageVerdict, Reason, ShipmentDecision, Tier

sys.path.insert(0, str(Path(__file__).parent))
from decide_builders import KEY, NOW, H, P, R, decl, img, policy, run_finished, scored, scored_line  # noqa: E402

ORE_MODEL = "bulk_ore-lite0-000000000000000a"


CASES = [
    # id, policy changes, declaration, images, tier, rules
    ("clear", {}, {}, [img(0.2)], R, ["score.clear"]),
    ("just-below-release", {}, {}, [img(0.4999)], R, ["score.clear"]),
    ("equal-release-not-released", {}, {}, [img(0.5)], H, ["score.review"]),
    ("between", {}, {}, [img(0.79)], H, ["score.review"]),
    ("equal-hold", {}, {}, [img(0.8)], P, ["score.hold"]),
    (
        "worst-image-wins",
        {},
        {},
        [img(0.1), img(0.6, "b"), img(0.2, "c")],
        H,
        ["score.clear", "score.review", "score.clear"],
    ),
    (
        "policy-thresholds-beat-model",
        {},
        {"cargo_type": "vacuum_pack"},
        [img(0.35, cargo_type="vacuum_pack")],
        H,
        ["score.review"],
    ),
    (
        "policy-thresholds-need-no-row-thresholds",
        {},
        {"cargo_type": "vacuum_pack"},
        [img(0.1, cargo_type="vacuum_pack", threshold=None, hold_threshold=None)],
        R,
        ["score.clear"],
    ),
    (
        "image-tiers-configurable",
        {"image_tiers": {"at_or_above_release": "PHYSICAL_INSPECTION"}},
        {},
        [img(0.6)],
        P,
        ["score.review"],
    ),
    # hard overrides: whatever the score
    (
        "override-radiation",
        {},
        {"radiation_alarm": True},
        [img(0.01)],
        P,
        ["override.radiation_alarm", "score.clear"],
    ),
    (
        "override-waste",
        {},
        {"suspected_solid_waste": True},
        [img(0.01)],
        P,
        ["override.suspected_solid_waste", "score.clear"],
    ),
    (
        "override-documents",
        {},
        {"document_mismatch": True},
        [img(0.01)],
        P,
        ["override.document_mismatch", "score.clear"],
    ),
    (
        "override-inclusions",
        {},
        {"declared_foreign_inclusions": True},
        [img(0.01)],
        P,
        ["override.declared_foreign_inclusions", "score.clear"],
    ),
    (
        "override-configured-remote",
        {"overrides": {"document_mismatch": "REMOTE_INSPECTION"}},
        {"document_mismatch": True},
        [img(0.01)],
        H,
        ["override.document_mismatch", "score.clear"],
    ),
    (
        "override-remote-but-score-holds",
        {"overrides": {"document_mismatch": "REMOTE_INSPECTION"}},
        {"document_mismatch": True},
        [img(0.9)],
        P,
        ["override.document_mismatch", "score.hold"],
    ),
    (
        "override-beats-aeo",
        {},
        {"aeo_tier": "AEOF", "radiation_alarm": True},
        [img(0.01)],
        P,
        ["override.radiation_alarm", "trusted_trader.odds", "score.clear"],
    ),
    (
        "override-without-images",
        {},
        {"radiation_alarm": True},
        [],
        P,
        ["override.radiation_alarm", "fail_closed.no_image"],
    ),
    # fail closed
    ("no-image", {}, {}, [], H, ["fail_closed.no_image"]),
    (
        "no-image-physical",
        {"fail_closed": {"no_image": "PHYSICAL_INSPECTION"}},
        {},
        [],
        P,
        ["fail_closed.no_image"],
    ),
    (
        "corrupt-image",
        {},
        {},
        [img(None, error="ImageDecodeError: truncated")],
        H,
        ["fail_closed.image_error"],
    ),
    (
        "corrupt-among-clear",
        {},
        {},
        [img(0.1), img(None, "b", error="boom")],
        H,
        ["score.clear", "fail_closed.image_error"],
    ),
    (
        "unknown-cargo-type",
        {},
        {"cargo_type": "crude_oil"},
        [img(0.1, cargo_type="crude_oil")],
        H,
        ["fail_closed.unknown_cargo_type", "score.clear"],
    ),
    # no rules for the cargo: each image judged against its model's own thresholds
    (
        "unknown-cargo-held-on-the-models-hold",
        {},
        {"cargo_type": "crude_oil"},
        [img(0.1, cargo_type="crude_oil"), img(0.99, "b", cargo_type="crude_oil")],
        P,
        ["fail_closed.unknown_cargo_type", "score.clear", "score.hold"],
    ),
    (
        "unknown-cargo-reviewed-on-the-models-release",
        {"fail_closed": {"unknown_cargo_type": "REMOTE_INSPECTION"}},
        {"cargo_type": "crude_oil"},
        [img(0.6, cargo_type="crude_oil")],
        H,
        ["fail_closed.unknown_cargo_type", "score.review"],
    ),
    (
        "unknown-cargo-no-aeo-factor",  # AEOS would raise 0.5 to 0.7 and clear 0.6
        {"image_tiers": {"at_or_above_release": "PHYSICAL_INSPECTION"}},
        {"cargo_type": "crude_oil", "aeo_tier": "AEOS"},
        [img(0.6, cargo_type="crude_oil")],
        P,
        ["fail_closed.unknown_cargo_type", "score.review"],
    ),
    (
        "unknown-cargo-row-without-thresholds",
        {},
        {"cargo_type": "crude_oil"},
        [img(0.1, cargo_type="crude_oil", threshold=None)],
        H,
        ["fail_closed.unknown_cargo_type", "fail_closed.missing_threshold"],
    ),
    (
        "unknown-cargo-corrupt",
        {},
        {"cargo_type": "crude_oil"},
        [img(None, cargo_type="crude_oil", error="x")],
        H,
        ["fail_closed.unknown_cargo_type", "fail_closed.image_error"],
    ),
    (  # declared as listed packs, crude oil's failed picture still fails closed as of other cargo
        "mixed-cargo-corrupt",
        {
            "fail_closed": {
                "unknown_cargo_type": "PHYSICAL_INSPECTION",
                "mixed_cargo_types": "PHYSICAL_INSPECTION",
            }
        },
        {"cargo_type": "vacuum_pack"},
        [img(None, cargo_type="crude_oil", error="x")],
        P,
        ["fail_closed.image_error", "fail_closed.mixed_cargo_types", "fail_closed.unknown_cargo_type"],
    ),
    (
        "mixed-cargo-types",
        {},
        {},
        [img(0.1), img(0.1, "b", cargo_type="vacuum_pack")],
        H,
        ["score.clear", "fail_closed.mixed_cargo_types", "score.clear"],
    ),
    # mixed cargo: each picture judged under its model's cargo's rules too, the strictest kept
    (
        "mixed-judged-under-the-models-cargo",  # the packs' hold 0.9 would make 0.85 a review
        {"cargo_types": {"bulk_ore": {}, "vacuum_pack": {"hold_threshold": 0.9}}},
        {"cargo_type": "vacuum_pack"},
        [img(0.85)],
        P,
        ["fail_closed.mixed_cargo_types", "score.hold"],
    ),
    (
        "mixed-pack-picture-declared-ore",  # the packs' hold 0.6, not ore's 0.8 from the row
        {},
        {},
        [img(0.65, cargo_type="vacuum_pack")],
        P,
        ["fail_closed.mixed_cargo_types", "score.hold"],
    ),
    (
        "mixed-declared-cargo-stricter-wins",  # ore's 0.8 reviews it, the declared packs' 0.6 holds
        {},
        {"cargo_type": "vacuum_pack"},
        [img(0.65)],
        P,
        ["fail_closed.mixed_cargo_types", "score.hold"],
    ),
    (
        "unknown-declared-judged-under-the-models-cargo",
        {
            "cargo_types": {"bulk_ore": {"release_threshold": 0.2}},
            "image_tiers": {"at_or_above_release": "PHYSICAL_INSPECTION"},
        },
        {"cargo_type": "iron_ore"},
        [img(0.3)],
        P,
        ["fail_closed.unknown_cargo_type", "fail_closed.mixed_cargo_types", "score.review"],
    ),
    # the model's cargo not listed: its own thresholds judge it too, whatever is declared
    (
        "mixed-unlisted-models-cargo-held-on-the-models-hold",  # the packs' hold 0.6 would review 0.5
        {},
        {"cargo_type": "vacuum_pack"},
        [img(0.5, cargo_type="crude_oil", threshold=0.2, hold_threshold=0.45)],
        P,
        ["fail_closed.mixed_cargo_types", "fail_closed.unknown_cargo_type", "score.hold"],
    ),
    (
        "mixed-unlisted-models-cargo-reviewed-on-the-models-release",  # the packs' 0.3, AEOS 0.5: clear
        {},
        {"cargo_type": "vacuum_pack", "aeo_tier": "AEOS"},
        [img(0.4, cargo_type="crude_oil", threshold=0.2, hold_threshold=0.9)],
        H,
        [
            "trusted_trader.odds",
            "fail_closed.mixed_cargo_types",
            "fail_closed.unknown_cargo_type",
            "score.review",
        ],
    ),
    (
        "mixed-unlisted-models-cargo-declared-stricter-wins",  # the model's 0.9 reviews, the packs' 0.6 holds
        {},
        {"cargo_type": "vacuum_pack"},
        [img(0.7, cargo_type="crude_oil", threshold=0.2, hold_threshold=0.9)],
        P,
        ["fail_closed.mixed_cargo_types", "fail_closed.unknown_cargo_type", "score.hold"],
    ),
    (  # a policy holding unknown cargo physically, mixed cargo remotely: declared as listed packs,
        # crude oil's clean picture went to remote inspection, declared as crude oil it was held
        "unlisted-picture-declared-listed-keeps-unknown-cargos-tier",
        {
            "fail_closed": {
                "unknown_cargo_type": "PHYSICAL_INSPECTION",
                "mixed_cargo_types": "REMOTE_INSPECTION",
            }
        },
        {"cargo_type": "vacuum_pack"},
        [img(0.1, cargo_type="crude_oil", threshold=0.2, hold_threshold=0.9)],
        P,
        ["fail_closed.mixed_cargo_types", "fail_closed.unknown_cargo_type", "score.clear"],
    ),
    ("missing-score", {}, {}, [img(None)], H, ["fail_closed.missing_score"]),
    (
        "off-training-scale-not-released",
        {},
        {},
        [img(0.1, scale_vs_training=0.25), img(0.1, "b", scale_vs_training=1.0)],
        H,
        ["fail_closed.off_training_scale", "score.clear", "score.clear"],
    ),
    (
        "enlarged-off-scale",
        {},
        {},
        [img(0.1, scale_vs_training=2.5)],
        H,
        ["fail_closed.off_training_scale", "score.clear"],
    ),
    ("within-training-scale", {}, {}, [img(0.1, scale_vs_training=0.5)], R, ["score.clear"]),
    ("older-rows-have-no-scale", {}, {}, [img(0.1, scale_vs_training=None)], R, ["score.clear"]),
    (
        "off-scale-and-hold",
        {"fail_closed": {"off_training_scale": "REMOTE_INSPECTION"}},
        {},
        [img(0.9, scale_vs_training=0.1)],
        P,
        ["fail_closed.off_training_scale", "score.hold"],
    ),
    (
        "off-scale-tier-from-policy",
        {"fail_closed": {"off_training_scale": "PHYSICAL_INSPECTION"}},
        {},
        [img(0.1, scale_vs_training=0.1)],
        P,
        ["fail_closed.off_training_scale", "score.clear"],
    ),
    ("nan-score", {}, {}, [img(math.nan)], H, ["fail_closed.invalid_score"]),
    ("inf-score", {}, {}, [img(math.inf)], H, ["fail_closed.invalid_score"]),
    ("score-above-one", {}, {}, [img(1.5)], H, ["fail_closed.invalid_score"]),
    ("negative-score", {}, {}, [img(-0.1)], H, ["fail_closed.invalid_score"]),
    (
        "missing-model-id",
        {},
        {},
        [img(0.1, model_id=None)],
        H,
        ["fail_closed.missing_model_id", "score.clear"],
    ),
    (  # the policy approves other models for ore: never released on this one's score
        "unapproved-model",
        {"cargo_types": {"bulk_ore": {"models": [ORE_MODEL]}}},
        {},
        [img(0.1)],
        H,
        ["fail_closed.unapproved_model", "score.clear"],
    ),
    (
        "approved-model",
        {"cargo_types": {"bulk_ore": {"models": [ORE_MODEL]}}},
        {},
        [img(0.1, model_id=ORE_MODEL)],
        R,
        ["score.clear"],
    ),
    (  # a high score still holds: failing closed never softens what the score says
        "unapproved-model-holds-on-its-score",
        {"cargo_types": {"bulk_ore": {"models": [ORE_MODEL]}}},
        {},
        [img(0.9)],
        P,
        ["fail_closed.unapproved_model", "score.hold"],
    ),
    (
        "unapproved-model-tier-from-policy",
        {
            "cargo_types": {"bulk_ore": {"models": [ORE_MODEL]}},
            "fail_closed": {"unapproved_model": "PHYSICAL_INSPECTION"},
        },
        {},
        [img(0.1)],
        P,
        ["fail_closed.unapproved_model", "score.clear"],
    ),
    (  # approved for ore, declared as packs whose rules approve other models: mixed, and unapproved
        "approved-for-its-cargo-not-the-declared-one",
        {
            "cargo_types": {
                "bulk_ore": {"models": [ORE_MODEL]},
                "vacuum_pack": {"models": ["vacuum_pack-lite0-000000000000000b"]},
            }
        },
        {"cargo_type": "vacuum_pack"},
        [img(0.1, model_id=ORE_MODEL)],
        H,
        ["fail_closed.mixed_cargo_types", "fail_closed.unapproved_model", "score.clear"],
    ),
    (  # a score no approved model accounts for, whatever missing_model_id's tier: never milder
        "missing-model-id-under-approved-models",
        {
            "cargo_types": {"bulk_ore": {"models": [ORE_MODEL]}},
            "fail_closed": {"unapproved_model": "PHYSICAL_INSPECTION"},
        },
        {},
        [img(0.1, model_id=None)],
        P,
        ["fail_closed.unapproved_model", "fail_closed.missing_model_id", "score.clear"],
    ),
    (  # nor for being out of range
        "invalid-score-of-an-unapproved-model",
        {
            "cargo_types": {"bulk_ore": {"models": [ORE_MODEL]}},
            "fail_closed": {"unapproved_model": "PHYSICAL_INSPECTION"},
        },
        {},
        [img(1.5)],
        P,
        ["fail_closed.unapproved_model", "fail_closed.invalid_score"],
    ),
    (  # a row of an unapproved model is never milder for having failed or lost its score
        "image-error-of-an-unapproved-model",
        {
            "cargo_types": {"bulk_ore": {"models": [ORE_MODEL]}},
            "fail_closed": {"unapproved_model": "PHYSICAL_INSPECTION"},
        },
        {},
        [img(None, error="decode failed")],
        P,
        ["fail_closed.image_error", "fail_closed.unapproved_model"],
    ),
    (
        "missing-score-of-an-unapproved-model",
        {
            "cargo_types": {"bulk_ore": {"models": [ORE_MODEL]}},
            "fail_closed": {"unapproved_model": "PHYSICAL_INSPECTION"},
        },
        {},
        [img(None)],
        P,
        ["fail_closed.unapproved_model", "fail_closed.missing_score"],
    ),
    (  # an image nobody scored (it failed to decode) names no model: nothing to approve
        "image-error-of-no-model-under-approved-models",
        {"cargo_types": {"bulk_ore": {"models": [ORE_MODEL]}}},
        {},
        [img(None, error="decode failed", model_id=None)],
        H,
        ["fail_closed.image_error"],
    ),
    ("missing-release-threshold", {}, {}, [img(0.1, threshold=None)], H, ["fail_closed.missing_threshold"]),
    ("missing-hold-threshold", {}, {}, [img(0.1, hold_threshold=None)], H, ["fail_closed.missing_threshold"]),
    ("nan-threshold", {}, {}, [img(0.1, threshold=math.nan)], H, ["fail_closed.missing_threshold"]),
    (  # an edited row must not release every score
        "release-above-one",
        {},
        {},
        [img(0.9, threshold=1.5, hold_threshold=2.0)],
        H,
        ["fail_closed.missing_threshold"],
    ),
    (
        "release-above-hold",
        {},
        {},
        [img(0.6, threshold=0.7, hold_threshold=0.5)],
        H,
        ["fail_closed.missing_threshold"],
    ),
    ("negative-release", {}, {}, [img(0.1, threshold=-0.1)], H, ["fail_closed.missing_threshold"]),
    # trusted traders
    (
        "aeo-offset-releases",
        {},
        {"aeo_tier": "AEOF"},
        [img(0.52)],
        R,
        ["trusted_trader.odds", "score.clear"],
    ),
    (
        "aeo-offset-still-reviews",
        {},
        {"aeo_tier": "AEOF"},
        [img(0.56)],
        H,
        ["trusted_trader.odds", "score.review"],
    ),
    (
        "aeo-offset-capped-at-hold",
        {},
        {"aeo_tier": "AEOS"},
        [img(0.8)],
        P,
        ["trusted_trader.odds", "score.hold"],
    ),
    (
        "aeo-large-offset",
        {},
        {"aeo_tier": "AEOS"},
        [img(0.69)],
        R,
        ["trusted_trader.odds", "score.clear"],
    ),
    ("unknown-aeo-tier-no-offset", {}, {"aeo_tier": "AEOC"}, [img(0.52)], H, ["score.review"]),
    (
        "aeo-not-exempt-from-fail-closed",
        {},
        {"aeo_tier": "AEOF"},
        [img(None, error="x")],
        H,
        ["fail_closed.image_error"],  # and no word of a threshold no score was compared with
    ),
    (
        "aeo-no-word-without-a-valid-score",
        {},
        {"aeo_tier": "AEOF"},
        [img(float("nan"))],
        H,
        ["fail_closed.invalid_score"],
    ),
    # random audits
    ("random-audit-all", {"random_audit": {"rate": 1.0}}, {}, [img(0.1)], H, ["score.clear", "random_audit"]),
    (
        "random-audit-physical",
        {"random_audit": {"rate": 1.0, "tier": "PHYSICAL_INSPECTION"}},
        {},
        [img(0.1)],
        P,
        ["score.clear", "random_audit"],
    ),
    (
        "random-audit-aeo-not-exempt",
        {"random_audit": {"rate": 1.0}},
        {"aeo_tier": "AEOF"},
        [img(0.1)],
        H,
        ["trusted_trader.odds", "score.clear", "random_audit"],
    ),
    # drawn whatever the images say; the audit's tier a floor
    (
        "random-audit-on-a-review",
        {"random_audit": {"rate": 1.0}},
        {},
        [img(0.6)],
        H,
        ["score.review", "random_audit"],
    ),
    (
        "random-audit-physical-floor-over-a-review",  # a suspect picture must not soften it
        {"random_audit": {"rate": 1.0, "tier": "PHYSICAL_INSPECTION"}},
        {},
        [img(0.1), img(0.6, "b")],
        P,
        ["score.clear", "score.review", "random_audit"],
    ),
    (
        "random-audit-physical-floor-over-fail-closed",
        {"random_audit": {"rate": 1.0, "tier": "PHYSICAL_INSPECTION"}},
        {},
        [img(0.1), img(None, "b", error="decode failed")],
        P,
        ["score.clear", "fail_closed.image_error", "random_audit"],
    ),
    (
        "random-audit-never-lowers-a-hold",
        {"random_audit": {"rate": 1.0}},
        {},
        [img(0.9)],
        P,
        ["score.hold", "random_audit"],
    ),
    (
        "random-audit-on-fail-closed",
        {"random_audit": {"rate": 1.0}},
        {},
        [],
        H,
        ["fail_closed.no_image", "random_audit"],
    ),
    # a picture decided before in another shipment: an officer looks, however clean it scores
    ("image-reused", {}, {}, [img(0.1, seen_in=["S0"])], H, ["override.image_reused", "score.clear"]),
    (
        "image-reused-held-by-policy",
        {"overrides": {"image_reused": "PHYSICAL_INSPECTION"}},
        {},
        [img(0.1), img(0.1, "b", seen_in=["S0", "S9"])],
        P,
        ["score.clear", "override.image_reused", "score.clear"],
    ),
    ("image-seen-nowhere", {}, {}, [img(0.1, seen_in=[])], R, ["score.clear"]),
    (
        "near-copy-only-recorded",  # a site whose pictures vary little
        {"overrides": {"image_near_copy": "RELEASE"}},
        {},
        [img(0.1, similar_in=["S0"], similar_bits=4)],
        R,
        ["override.image_near_copy", "score.clear"],
    ),
    (
        "image-near-copy",  # re-encoded or retouched: other bytes, the same scene
        {},
        {},
        [img(0.1, similar_in=["S0"], similar_bits=2)],
        H,
        ["override.image_near_copy", "score.clear"],
    ),
    (
        "image-reused-and-near-copy",
        {},
        {},
        [img(0.1, seen_in=["S0"], similar_in=["S1"], similar_bits=0)],
        H,
        ["override.image_reused", "override.image_near_copy", "score.clear"],
    ),
    (
        "image-reused-only-recorded",  # one scan of a container shared by several consignments
        {"overrides": {"image_reused": "RELEASE"}},
        {},
        [img(0.1, seen_in=["S0"])],
        R,
        ["override.image_reused", "score.clear"],
    ),
]


@pytest.mark.parametrize(
    ("changes", "declaration", "images", "tier", "rules"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rules(
    changes: dict[str, Any],
    declaration: dict[str, Any],
    images: list[ImageVerdict],
    tier: Tier,
    rules: list[str],
) -> None:
    decision = decide_shipment(policy(**changes), decl(**declaration), images, audit_key=KEY, now=NOW)
    assert [r.rule for r in decision.reasons] == rules
    assert decision.tier is tier
    assert decision.random_audit is ("random_audit" in rules)
    assert decision.tier is max((r.tier for r in decision.reasons), key=lambda t: t.severity, default=R)


def test_an_unapproved_model_s_reason_names_it_and_the_approved_ones() -> None:
    approving = policy(cargo_types={"bulk_ore": {"models": [ORE_MODEL, "bulk_ore-lite1-000000000000000c"]}})
    decision = decide_shipment(approving, decl(), [img(0.1)], audit_key=KEY, now=NOW)
    reason = decision.reasons[0]
    assert (reason.rule, reason.image, reason.score) == ("fail_closed.unapproved_model", "a.png", 0.1)
    assert reason.message == (
        "scored by model ore-m1, which policy test-1 does not approve for cargo type 'bulk_ore' "
        "(approved: bulk_ore-lite0-000000000000000a, bulk_ore-lite1-000000000000000c); not released on "
        "its score"
    )
    nameless = decide_shipment(approving, decl(), [img(0.1, model_id="")], audit_key=KEY, now=NOW)
    assert nameless.reasons[0].message == (
        "scored by no model named in its row, which policy test-1 does not approve for cargo type "
        "'bulk_ore' (approved: bulk_ore-lite0-000000000000000a, bulk_ore-lite1-000000000000000c); not "
        "released on its score"
    )


@pytest.mark.parametrize(
    ("declaration", "score", "rule", "threshold"),
    [
        ({}, 0.5, "score.review", 0.5),
        ({}, 0.85, "score.hold", 0.8),
        ({"aeo_tier": "AEOF"}, 0.52, "score.clear", 0.5 + 0.05),
        ({"aeo_tier": "AEOS"}, 0.69, "score.clear", 0.5 + 0.2),
    ],
)
def test_reasons_carry_score_and_the_threshold_applied(
    declaration: dict[str, Any], score: float, rule: str, threshold: float
) -> None:
    decision = decide_shipment(policy(), decl(**declaration), [img(score)], audit_key=KEY, now=NOW)
    reason = next(r for r in decision.reasons if r.rule == rule)
    assert (reason.image, reason.score, reason.threshold) == ("a.png", score, pytest.approx(threshold))


def test_an_unknown_cargo_types_score_reasons_name_the_models_threshold() -> None:
    """A typo in the cargo type must not hide a score that holds the cargo under its own name."""
    images = [img(0.99, cargo_type="iron_ore", threshold=0.3, hold_threshold=0.6)]
    held = decide_shipment(policy(), decl(cargo_type="bulk_ore"), images, audit_key=KEY, now=NOW)
    unknown = decide_shipment(policy(), decl(cargo_type="iron_ore"), images, audit_key=KEY, now=NOW)
    assert held.tier is unknown.tier is P
    (reason,) = [r for r in unknown.reasons if r.rule == "score.hold"]
    assert (reason.tier, reason.score, reason.threshold) == (P, 0.99, 0.6)
    assert reason.message == (
        "score 0.9900 >= hold 0.6000 (the model's own threshold: no rules for cargo type 'iron_ore')"
    )


PACK_MODEL = "vacuum_pack-lite0-0123456789abcdef"
_BY_PACKS = f"image was scored by model {PACK_MODEL}, of cargo type 'vacuum_pack'"


@pytest.mark.parametrize(
    ("row", "tier", "said"),
    [
        # a packs' model's score on a row of ore: it says nothing of ore, and is never released on;
        # judged under the packs' rules too (their release cut of 0.1, stricter), the strictest kept
        (
            {"model_id": PACK_MODEL},
            H,
            [
                (
                    "fail_closed.mixed_cargo_types",
                    f"{_BY_PACKS} (its row says 'bulk_ore'), shipment declared 'bulk_ore'",
                ),
                ("score.review", "score 0.2000 >= release threshold 0.1000 (under the vacuum_pack rules)"),
            ],
        ),
        (
            {"model_id": PACK_MODEL, "cargo_type": None},
            H,
            [
                ("fail_closed.mixed_cargo_types", f"{_BY_PACKS}, shipment declared 'bulk_ore'"),
                ("score.review", "score 0.2000 >= release threshold 0.1000 (under the vacuum_pack rules)"),
            ],
        ),
        # an id of 8 hex digits (a model of artifact format 5 or 6, which still scores) says it too
        (
            {"model_id": "vacuum_pack-lite0-01234567"},
            H,
            [
                (
                    "fail_closed.mixed_cargo_types",
                    "image was scored by model vacuum_pack-lite0-01234567, of cargo type 'vacuum_pack' "
                    "(its row says 'bulk_ore'), shipment declared 'bulk_ore'",
                ),
                ("score.review", "score 0.2000 >= release threshold 0.1000 (under the vacuum_pack rules)"),
            ],
        ),
        # a cargo type the policy does not list, named by the id alone (a hyphen in it: the
        # backbone's name holds none): of unknown cargo, judged by its model's own thresholds too
        (
            {"model_id": "crude-oil-lite0-0123456789abcdef", "cargo_type": None},
            H,
            [
                (
                    "fail_closed.mixed_cargo_types",
                    "image was scored by model crude-oil-lite0-0123456789abcdef, of cargo type "
                    "'crude-oil', shipment declared 'bulk_ore'",
                ),
                (
                    "fail_closed.unknown_cargo_type",
                    "image is of cargo type 'crude-oil', not in policy test-1; never released on a "
                    "policy's rules for other cargo",
                ),
                (
                    "score.clear",
                    "score 0.2000 < release threshold 0.3000 (the model's own threshold: no rules for "
                    "cargo type 'crude-oil')",
                ),
            ],
        ),
        # the model's own cargo, or an id of no such form: nothing more than before
        ({"model_id": ORE_MODEL}, R, [("score.clear", "score 0.2000 < release threshold 0.3000")]),
        ({"model_id": "ore-m1"}, R, [("score.clear", "score 0.2000 < release threshold 0.3000")]),
        ({"model_id": "vacuum_pack-m1"}, R, [("score.clear", "score 0.2000 < release threshold 0.3000")]),
    ],
)
def test_a_score_of_another_cargo_types_model_is_never_released(
    row: dict[str, Any], tier: Tier, said: list[tuple[str, str]]
) -> None:
    """The cargo type a model id names (``<cargo type>-<backbone>-<hex>``) is the model's too: a
    row whose id names another than its row or its shipment fails closed as mixed cargo."""
    rules = policy(
        cargo_types={"bulk_ore": {}, "vacuum_pack": {"release_threshold": 0.1, "hold_threshold": 0.6}}
    )
    image = img(0.2, threshold=0.3, hold_threshold=0.6, **row)
    decision = decide_shipment(rules, decl(), [image], audit_key=KEY, now=NOW)
    assert (decision.tier, [(r.rule, r.message) for r in decision.reasons]) == (tier, said)


_UNKNOWN_CARGO_SAID = (
    "cargo type 'coal' is not in policy test-1 (known: bulk_ore, vacuum_pack); never released. Each "
    "image's score is judged under the policy's rules for each cargo type its row names that the "
    "policy lists (its model's first), and against its model's own thresholds where the policy does "
    "not list its model's cargo type, the strictest kept (each score's reason says which)"
)


@pytest.mark.parametrize(
    ("image", "score_said"),
    [
        # a listed model cargo: the policy's hold for it (0.6), not the model's own (0.95)
        (
            img(0.92, cargo_type="vacuum_pack", threshold=0.5, hold_threshold=0.95),
            ("score.hold", "score 0.9200 >= hold 0.6000 (under the vacuum_pack rules)"),
        ),
        # an unlisted one: the model's own thresholds
        (
            img(0.92, cargo_type="crude_oil", threshold=0.5, hold_threshold=0.95),
            (
                "score.review",
                "score 0.9200 >= release threshold 0.5000 (the model's own threshold: no rules for "
                "cargo type 'crude_oil', 'coal')",
            ),
        ),
    ],
)
def test_an_unknown_cargo_types_reason_says_which_thresholds_judge_its_images(
    image: ImageVerdict, score_said: tuple[str, str]
) -> None:
    decision = decide_shipment(policy(), decl(cargo_type="coal"), [image], audit_key=KEY, now=NOW)
    said = {r.rule: r.message for r in decision.reasons[::-1]}  # each rule's first reason
    assert said["fail_closed.unknown_cargo_type"] == _UNKNOWN_CARGO_SAID
    assert (score_said[0], said[score_said[0]]) == score_said


@pytest.mark.parametrize(
    ("score", "release", "hold", "rule", "said"),
    [
        # four places where they tell the score from the threshold, as reasons were recorded
        (0.2, 0.5, 0.8, "score.clear", "score 0.2000 < release threshold 0.5000"),
        (0.5, 0.5, 0.8, "score.review", "score 0.5000 >= release threshold 0.5000"),  # equal: equal
        (0.8, 0.5, 0.8, "score.hold", "score 0.8000 >= hold 0.8000"),
        # read "0.3284 < 0.3284": both as many places as it takes to write them apart, in order
        (0.32842, 0.328425, 0.6547, "score.clear", "score 0.32842 < release threshold 0.32843"),
        (0.32843, 0.328425, 0.6547, "score.review", "score 0.328430 >= release threshold 0.328425"),
        (0.654695, 0.3, 0.65469, "score.hold", "score 0.65470 >= hold 0.65469"),
        (0.30000001, 0.3, 0.8, "score.review", "score 0.30000001 >= release threshold 0.30000000"),
        (
            0.5 - 2**-54,
            0.5,
            0.8,
            "score.clear",
            "score 0.4999999999999999 < release threshold 0.5000000000000000",
        ),
        # not apart at 17 places: each float's shortest text
        (1e-20, 2e-20, 0.8, "score.clear", "score 1e-20 < release threshold 2e-20"),
    ],
)
def test_a_reason_writes_its_score_apart_from_its_threshold(
    score: float, release: float, hold: float, rule: str, said: str
) -> None:
    rules = policy(cargo_types={"bulk_ore": {"release_threshold": release, "hold_threshold": hold}})
    decision = decide_shipment(rules, decl(), [img(score)], audit_key=KEY, now=NOW)
    assert [(r.rule, r.message) for r in decision.reasons] == [(rule, said)]


def test_a_mixed_pictures_reasons_name_the_rules_that_judged_it() -> None:
    example = load_policy(default_policy_path())
    ore = img(0.8, threshold=0.3, hold_threshold=0.6)
    decision = decide_shipment(example, decl(cargo_type="vacuum_pack"), [ore], audit_key=KEY, now=NOW)
    assert decision.tier is P
    assert [(r.rule, r.threshold, r.message) for r in decision.reasons] == [
        (
            "fail_closed.mixed_cargo_types",
            None,
            "image is of cargo type 'bulk_ore', shipment declared 'vacuum_pack'",
        ),
        ("score.hold", 0.6, "score 0.8000 >= hold 0.6000 (under the bulk_ore rules)"),
    ]


def test_an_unlisted_models_picture_declared_as_listed_cargo_names_the_models_threshold() -> None:
    """A crude-oil model's 0.8 (its hold 0.6) declared as vacuum packs (release "model", hold 0.9)
    is held as crude oil would be, not sent to remote inspection on the packs' laxer hold."""
    example = load_policy(default_policy_path())
    oil = img(0.8, cargo_type="crude_oil", threshold=0.3, hold_threshold=0.6, model_id="oil-m1")
    as_oil = decide_shipment(example, decl(cargo_type="crude_oil"), [oil], audit_key=KEY, now=NOW)
    as_packs = decide_shipment(example, decl(cargo_type="vacuum_pack"), [oil], audit_key=KEY, now=NOW)
    assert as_oil.tier is as_packs.tier is P
    assert [(r.rule, r.threshold, r.message) for r in as_packs.reasons if r.rule.startswith("score")] == [
        (
            "score.hold",
            0.6,
            "score 0.8000 >= hold 0.6000 (the model's own threshold: no rules for cargo type 'crude_oil')",
        )
    ]


@pytest.mark.parametrize(
    ("aeo_tier", "given", "recorded", "said"),
    [
        ("AEOF", None, "declared_unverified",
         "AEOF trader (tier as declared, not verified against a trader register)"),
        ("AEOF", "register", "register", "AEOF trader (tier from the trader register)"),
        (None, None, "none", None),
        (None, "register", "register", None),
    ],
)  # fmt: skip
def test_a_decision_records_where_its_aeo_tier_came_from(
    aeo_tier: str | None, given: Any, recorded: str, said: str | None
) -> None:
    decision = decide_shipment(
        policy(), decl(aeo_tier=aeo_tier), [img(0.52)], audit_key=KEY, now=NOW, aeo_tier_source=given
    )
    assert decision.aeo_tier_source == recorded
    odds = [r.message for r in decision.reasons if r.rule == "trusted_trader.odds"]
    assert [m.partition(":")[0] for m in odds] == ([said] if said else [])


HOT = EarlierHold("S0", P, ("override.radiation_alarm",), 7)  # held, no officer's outcome yet


@pytest.mark.parametrize(
    ("changes", "image", "tier", "rules"),
    [
        ({}, img(0.1, seen_in=["S0"]), P,
         ["override.image_reused", "override.image_held_before", "score.clear"]),
        ({}, img(0.1, seen_in=["S9"]), H, ["override.image_reused", "score.clear"]),  # S9 released or cleared
        (
            {},
            img(0.1, similar_in=["S9", "S0"], similar_bits=3),
            P,
            ["override.image_held_before", "override.image_near_copy", "score.clear"],
        ),
        (  # near-copies recorded without holding: a look-alike carries no hold either
            {"overrides": {"image_near_copy": "RELEASE"}},
            img(0.1, similar_in=["S0"], similar_bits=3),
            R,
            ["override.image_near_copy", "score.clear"],
        ),
        (  # the same bytes always carry it
            {"overrides": {"image_reused": "RELEASE"}},
            img(0.1, seen_in=["S0"]),
            P,
            ["override.image_reused", "override.image_held_before", "score.clear"],
        ),
    ],
    ids=["same-picture", "not-held", "near-copy", "near-copies-not-holding", "reuse-not-holding"],
)  # fmt: skip
def test_a_picture_of_a_held_shipment_carries_its_hold(
    changes: dict[str, Any], image: ImageVerdict, tier: Tier, rules: list[str]
) -> None:
    decision = decide_shipment(
        policy(**changes), decl(), [image], audit_key=KEY, now=NOW, held_before={"S0": HOT}
    )
    assert ([r.rule for r in decision.reasons], decision.tier) == (rules, tier)
    carried = [r for r in decision.reasons if r.rule == "override.image_held_before"]
    assert all(r.tier is P and "shipment S0, held at PHYSICAL_INSPECTION (override.radiation_alarm; audit "
               "record 7) with no officer's outcome clearing it" in r.message for r in carried)  # fmt: skip


@pytest.mark.parametrize(
    ("reasons", "tier", "cleared", "hold"),
    [
        ([("score.clear", R)], R, False, None),
        ([("override.radiation_alarm", P), ("score.review", H)], P, True, None),
        ([("override.radiation_alarm", P), ("score.review", H)], P, False,
         (P, ("override.radiation_alarm",))),
        ([("override.image_reused", H), ("score.review", H)], H, False,
         (H, ("override.image_reused", "score.review"))),
        # a hold it carried from another shipment, or a random pick, is none of its own evidence
        ([("override.image_held_before", P), ("score.clear", R)], P, False, None),
        ([("random_audit", H), ("score.clear", R)], H, False, None),
        ([("override.image_held_before", P), ("random_audit", P), ("score.clear", R)], P, False, None),
        ([("random_audit", P), ("score.review", H)], P, False, (H, ("score.review",))),
        ([("override.image_held_before", P), ("override.image_reused", H)], P, False,
         (H, ("override.image_reused",))),
    ],
)  # fmt: skip
def test_the_hold_a_standing_decision_carries(
    reasons: list[tuple[str, Tier]], tier: Tier, cleared: bool, hold: tuple[Tier, tuple[str, ...]] | None
) -> None:
    decision = decide_shipment(policy(), decl(shipment_id="S0"), [img(0.1)], audit_key=KEY, now=NOW)
    decision = decision.model_copy(
        update={"tier": tier, "reasons": [Reason(rule=r, tier=t, message="m") for r, t in reasons]}
    )
    found = EarlierHold.of(decision, 3, cleared=cleared)
    assert found == (EarlierHold("S0", *hold, 3) if hold else None)


def test_aeo_offset_is_capped_at_the_hold_threshold() -> None:
    tight = policy(trusted_traders={"AEOS": {"release_odds_factor": 4.0}})
    decision = decide_shipment(tight, decl(aeo_tier="AEOS"), [img(0.79)], audit_key=KEY, now=NOW)
    assert (decision.tier, decision.reasons[-1].threshold) == (R, 0.8)


@pytest.mark.parametrize(
    ("release", "factor", "raised"),
    [(0.01, 1.5, 0.01 * 1.5 / 1.005), (0.5, 3.0, 0.75), (0.0, 4.0, 0.0), (0.2, 1.0, 0.2)],
    ids=["small-cut-times-the-factor", "odds", "zero-stays-zero", "factor-1"],
)
def test_an_aeo_factor_moves_each_release_threshold_on_its_own_scale(
    release: float, factor: float, raised: float
) -> None:
    from pipeline.policy import TrustedTrader

    assert TrustedTrader(release_odds_factor=factor).raised(release, 0.9) == pytest.approx(raised)


def test_release_threshold_0_sends_an_aeo_traders_pack_to_an_officer_too() -> None:
    """The README's setting for vacuum packs until a model meets its target: an offset in score
    points lifted the 0 to 0.05 for an AEOF trader and released a pack scoring 0.04."""
    strict = policy(cargo_types={"bulk_ore": {"release_threshold": 0.0, "hold_threshold": 0.9}})
    decision = decide_shipment(strict, decl(aeo_tier="AEOS"), [img(0.04)], audit_key=KEY, now=NOW)
    assert decision.tier is H


def test_an_offset_in_score_points_is_refused_with_what_replaced_it() -> None:
    with pytest.raises(
        PolicyError, match="threshold_offset \\(score points\\) is replaced by release_odds_factor"
    ):
        policy(trusted_traders={"AEOF": {"threshold_offset": 0.05}})


def test_score_equal_to_an_offset_threshold_is_not_released() -> None:
    decision = decide_shipment(policy(), decl(aeo_tier="AEOF"), [img(0.5 + 0.05)], audit_key=KEY, now=NOW)
    assert decision.tier is H


def test_decision_carries_ids_versions_and_time() -> None:
    p = policy()
    images = [img(0.1, model_id="m2"), img(0.2, "b", model_id="m1"), img(0.3, "c", model_id="m2")]
    tz = timezone(timedelta(hours=8))
    decision = decide_shipment(
        p, decl(trader_id="T9"), images, audit_key=KEY, now=datetime(2026, 11, 5, 18, 30, tzinfo=tz)
    )
    assert decision.model_ids == ["m2", "m1"]
    assert (decision.policy_version, decision.policy_sha256) == ("test-1", p.sha256)
    assert decision.decided_at == "2026-11-05T10:30:00.000000+00:00"
    assert (decision.shipment_id, decision.cargo_type, decision.declaration.trader_id) == (
        "S1",
        "bulk_ore",
        "T9",
    )
    assert [i.path for i in decision.images] == ["a.png", "b", "c"]


def test_naive_time_and_empty_key_are_refused() -> None:
    with pytest.raises(InputError, match=r"now=2026-11-05T10:30:00 has no time zone"):
        decide_shipment(policy(), decl(), [img()], audit_key=KEY, now=datetime(2026, 11, 5, 10, 30))
    with pytest.raises(PolicyError, match="audit_key is empty"):
        decide_shipment(policy(), decl(), [img()], audit_key=b"", now=NOW)


# -- random audits ---------------------------------------------------------------------------------


def test_audit_fraction_is_the_hmac_of_the_shipment_id() -> None:
    digest = hmac.new(KEY, b"S-42", hashlib.sha256).digest()
    assert audit_fraction(KEY, "S-42") == int.from_bytes(digest[:8], "big") / 2**64


def test_random_audit_rate_is_binomial_reproducible_and_key_dependent() -> None:
    ids = [f"SHP-{i:06d}" for i in range(20_000)]
    rate = 0.03
    picked = {s for s in ids if audit_fraction(KEY, s) < rate}
    sigma = math.sqrt(len(ids) * rate * (1 - rate))  # about 24
    assert abs(len(picked) - len(ids) * rate) <= 4 * sigma
    assert picked == {s for s in ids if audit_fraction(KEY, s) < rate}
    other = {s for s in ids if audit_fraction(b"another-key", s) < rate}
    assert abs(len(other) - len(ids) * rate) <= 4 * sigma
    # Independent keys overlap by about rate**2 * n = 18, far from the 600 a shared pick would give.
    assert len(picked & other) < 60
    # decide_shipment picks exactly the same shipments.
    p = policy(random_audit={"rate": rate})
    sample = ids[:300]
    audited = {
        s
        for s in sample
        if decide_shipment(p, decl(shipment_id=s), [img(0.1)], audit_key=KEY, now=NOW).random_audit
    }
    assert audited == picked & set(sample)


# -- grouping rows ---------------------------------------------------------------------------------


def row(shipment: str | None, score: float, path: str, **declaration: Any) -> ImageVerdict:
    return img(score, path, shipment_id=shipment, declaration={"cargo_type": "bulk_ore", **declaration})


def test_rows_grouped_by_shipment_in_order_of_first_appearance() -> None:
    rows = [
        row("B", 0.1, "b1"),
        row("A", 0.9, "a1"),
        row("B", 0.6, "b2"),
        row("C", 0.1, "c1"),
        row("A", 0.1, "a2"),
    ]
    decisions = list(decide_rows(policy(), rows, audit_key=KEY))
    assert [(d.shipment_id, d.tier, [i.path for i in d.images]) for d in decisions] == [
        ("B", H, ["b1", "b2"]),
        ("A", P, ["a1", "a2"]),
        ("C", R, ["c1"]),
    ]


def test_declaration_built_from_rows_flags_or_ed_extras_kept() -> None:
    rows = [
        row("S", 0.1, "a", trader_id="T1", aeo_tier="AEOF", hs_code="2601", radiation_alarm="false"),
        row("S", 0.1, "b", trader_id=" T1", radiation_alarm="true", origin="AU", hs_code="9999"),
    ]
    (decision,) = decide_rows(policy(), rows, audit_key=KEY)
    d = decision.declaration
    assert (d.trader_id, d.aeo_tier, d.radiation_alarm) == ("T1", "AEOF", True)
    assert d.extra == {"hs_code": "2601", "origin": "AU"}
    assert decision.tier is P


_ODDS, _CONFLICT = "trusted_trader.odds", "trusted_trader.conflict"


@pytest.mark.parametrize(
    ("clean", "suspect", "registered", "declared", "tier", "rule"),
    [
        # a clean row naming an AEOF trader lent its tier to another trader's suspect picture
        ({"trader_id": "T-F", "aeo_tier": "AEOF"}, {"trader_id": "T-X"}, None, (None, None), H, _CONFLICT),
        ({"trader_id": "T-F"}, {"trader_id": "T-X"}, {"T-F": "AEOF"}, (None, None), H, _CONFLICT),
        # one trader, two tiers: neither is taken, the register's neither
        (
            {"trader_id": "T-F", "aeo_tier": "AEOF"},
            {"trader_id": "T-F", "aeo_tier": "AEOS"},
            None,
            ("T-F", None),
            H,
            _CONFLICT,
        ),
        (
            {"trader_id": "T-F", "aeo_tier": "AEOF"},
            {"trader_id": "T-F", "aeo_tier": "AEOC"},
            {"T-F": "AEOF"},
            ("T-F", None),
            H,
            _CONFLICT,
        ),
        # rows that agree, or say nothing of the trader, keep its tier (the id stripped, as registered)
        ({"trader_id": "T-F", "aeo_tier": "AEOF"}, {"trader_id": "T-F "}, None, ("T-F", "AEOF"), R, _ODDS),
        ({"trader_id": "T-F"}, {}, {"T-F": "AEOF"}, ("T-F", "AEOF"), R, _ODDS),
        # a row whose trader cells are empty says nothing either, first or not
        (
            {"trader_id": "T-F"},
            {"trader_id": "", "aeo_tier": None},
            {"T-F": "AEOF"},
            ("T-F", "AEOF"),
            R,
            _ODDS,
        ),
        (
            {"trader_id": "T-F", "aeo_tier": "AEOF"},
            {"trader_id": None, "aeo_tier": ""},
            None,
            ("T-F", "AEOF"),
            R,
            _ODDS,
        ),
        # and so does one of blanks (no trader, as registered), first or not
        ({"trader_id": "T-F"}, {"trader_id": "  "}, {"T-F": "AEOF"}, ("T-F", "AEOF"), R, _ODDS),
        ({"trader_id": "T-F", "aeo_tier": "AEOF"}, {"trader_id": " \t"}, None, ("T-F", "AEOF"), R, _ODDS),
    ],
    ids=[
        "traders",
        "traders-registered",
        "tiers",
        "tiers-registered",
        "agree",
        "agree-registered",
        "empty-registered",
        "empty-declared",
        "blank-registered",
        "blank-declared",
    ],
)
@pytest.mark.parametrize("suspect_first", [False, True], ids=["clean-first", "suspect-first"])
def test_rows_naming_different_traders_or_tiers_take_no_aeo_tier(
    clean: dict,
    suspect: dict,
    registered: dict | None,
    declared: tuple,
    tier: Tier,
    rule: str,
    suspect_first: bool,
) -> None:
    """trader_id and aeo_tier came from the shipment's first row unchecked: a clean first row naming
    a registered AEOF trader released a shipment whose suspect row named another trader."""
    from pipeline.trader_register import TraderRegister

    register = TraderRegister(registered, {}, "register.csv") if registered is not None else None
    rows = [row("S", 0.1, "clean", **clean), row("S", 0.52, "suspect", **suspect)]  # AEOF: clear at 0.55
    rows = rows[::-1] if suspect_first else rows
    (decision,) = decide_rows(policy(), rows, audit_key=KEY, register=register)
    assert (decision.declaration.trader_id, decision.declaration.aeo_tier) == declared
    assert decision.tier is tier
    assert rule in {r.rule for r in decision.reasons}


@pytest.mark.parametrize(
    ("key", "value"),
    [("trader_id", 42), ("trader_id", ["T-F"]), ("aeo_tier", {"tier": "AEOF"}), ("aeo_tier", True)],
    ids=["trader-number", "trader-list", "tier-object", "tier-boolean"],
)
@pytest.mark.parametrize("odd_first", [True, False], ids=["first-row", "later-row"])
def test_a_trader_or_tier_that_is_no_text_is_refused_on_any_row(
    key: str, value: Any, odd_first: bool
) -> None:
    """Only the first row's was refused (by the declaration built from it); on a later row it was
    passed over, and the shipment decided."""
    rows = [row("S", 0.1, "clean", trader_id="T-F", aeo_tier="AEOF"), row("S", 0.1, "odd", **{key: value})]
    with pytest.raises(InputError) as info:
        list(decide_rows(policy(), rows[::-1] if odd_first else rows, audit_key=KEY))
    assert str(info.value) == (
        f"shipment 'S': {key} {value!r} of image 'odd' is not text; give it as a string "
        '("T-1", "AEOF") or leave it empty'
    )


def test_the_conflict_names_what_the_rows_give() -> None:
    rows = [
        row("S", 0.1, "a", trader_id="T-F", aeo_tier="AEOF"),
        *(row("S", 0.1, f"b{n}", trader_id=f"T-{n}") for n in range(4)),
    ]
    (decision,) = decide_rows(policy(), rows, audit_key=KEY)
    (said,) = [(r.tier, r.message) for r in decision.reasons if r.rule == _CONFLICT]
    assert said == (
        R,
        "the shipment's rows name 5 traders ('T-F', 'T-0', 'T-1', ...): whose AEO tier applies cannot "
        "be told, so none does (no trusted-trader factor, as for an unregistered trader)",
    )


def test_shipment_id_and_cargo_type_may_come_from_the_declaration_or_the_row() -> None:
    rows = [
        ImageVerdict(
            path="x",
            score=0.1,
            threshold=0.5,
            hold_threshold=0.8,
            model_id="m",
            cargo_type="bulk_ore",
            declaration={"shipment_id": "D1"},
        )
    ]
    (decision,) = decide_rows(policy(), rows, audit_key=KEY)
    assert (decision.shipment_id, decision.cargo_type, decision.tier) == ("D1", "bulk_ore", R)


def test_a_row_declared_as_another_cargo_type_than_its_model_fails_closed() -> None:
    rows = [
        row("S", 0.1, "a"),  # declared bulk ore, scored by the bulk-ore model
        img(0.1, "b", shipment_id="S", cargo_type="bulk_ore", declaration={"cargo_type": "vacuum_pack"}),
    ]
    (decision,) = decide_rows(policy(), rows, audit_key=KEY)
    assert "fail_closed.mixed_cargo_types" in [r.rule for r in decision.reasons]
    assert decision.tier is H


def test_rows_with_different_declared_cargo_types_fail_closed() -> None:
    rows = [
        row("S", 0.1, "a"),
        img(0.1, "b", shipment_id="S", cargo_type=None, declaration={"cargo_type": "vacuum_pack"}),
    ]
    (decision,) = decide_rows(policy(), rows, audit_key=KEY)
    assert [r.rule for r in decision.reasons] == [
        "score.clear",
        "fail_closed.mixed_cargo_types",
        "score.clear",
    ]
    assert decision.tier is H


_UNSHOWN = (
    "control and format characters and line or paragraph separators are not accepted (they do not "
    "show as themselves, and hide or reorder the text around them)"
)


def _unchecked(verdict: ImageVerdict, **declared: Any) -> ImageVerdict:
    """``verdict`` with ``declared`` added to its declaration, past the checks a row is read with."""
    return verdict.model_copy(update={"declaration": {**verdict.declaration, **declared}})


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [row(None, 0.1, "lost.png")],
            "image 'lost.png' has no shipment_id (set the row's shipment_id or declaration)",
        ),
        (
            [img(0.1, "x", shipment_id="S", cargo_type=None)],
            "shipment 'S': no cargo_type in its rows or their declaration",
        ),
        (
            [row("S", 0.1, "a", radiation_alarm="maybe")],
            "shipment 'S': flag radiation_alarm = 'maybe' is not a boolean (true/false, 1/0)",
        ),
        (
            [row("S", 0.1, "a", aeo_tier="A" * 40)],
            "shipment 'S': invalid declaration: aeo_tier = '"
            + "A" * 40
            + "': String should have at most 32 characters",
        ),
        (
            # a row built past ImageVerdict's checks (which refuse it, named): decide's own check
            [_unchecked(row("S", 0.1, "a"), extra={"radiation_alarm": True})],
            "shipment 'S': declaration extra key 'radiation_alarm' looks like 'radiation_alarm'; give it as "
            "radiation_alarm (a flag kept aside under extra would be lost)",
        ),
        (
            [_unchecked(row(None, 0.1, "a.png"), shipment_id=["S1"])],
            "image 'a.png': shipment_id ['S1'] is not text; give the shipment id as a string (\"S1\")",
        ),
        (
            [_unchecked(row(None, 0.1, "a.png"), shipment_id={"a": 1})],
            "image 'a.png': shipment_id {'a': 1} is not text; give the shipment id as a string (\"S1\")",
        ),
        (
            [_unchecked(row(None, 0.1, "a.png"), shipment_id=1001)],
            "image 'a.png': shipment_id 1001 is not text; give the shipment id as a string (\"S1\")",
        ),
        (  # read as 'T-42' on the review page
            [row("S", 0.1, "a", trader_id="\u202e24-T")],
            "shipment 'S': invalid declaration: trader_id = '\\u202e24-T': Value error, trader_id holds "
            f"U+202E (RIGHT-TO-LEFT OVERRIDE): {_UNSHOWN}",
        ),
        (  # read as 'S-42'
            [row("\u202e24-S", 0.1, "a")],
            "shipment '\\u202e24-S': invalid declaration: shipment_id = '\\u202e24-S': Value error, "
            f"shipment_id holds U+202E (RIGHT-TO-LEFT OVERRIDE): {_UNSHOWN}",
        ),
        (  # picks no model, but was decided and recorded, shown reversed
            [row("S", 0.1, "a", cargo_type="\u202ebulk_ore")],
            "shipment 'S': invalid declaration: cargo_type = '\\u202ebulk_ore': Value error, cargo_type "
            f"holds U+202E (RIGHT-TO-LEFT OVERRIDE): {_UNSHOWN}",
        ),
        (
            [row("S", 0.1, "a", hs_code="2601\u200b")],
            f"shipment 'S': invalid declaration: extra = {{'hs_code': '2601\\u200b'}}: Value error, "
            f"extra['hs_code'] holds U+200B (ZERO WIDTH SPACE): {_UNSHOWN}",
        ),
        (  # a line break is free text's, not a key's
            [row("S", 0.1, "a", **{"x_goods\nx_alarm": "no"})],
            "shipment 'S': invalid declaration: extra = {'x_goods\\nx_alarm': 'no'}: Value error, extra key "
            f"'x_goods\\nx_alarm' holds U+000A: {_UNSHOWN}",
        ),
        (  # rewrites the terminal that prints it
            [row("S", 0.1, "a", x_goods="ore\x1b[2J")],
            "shipment 'S': invalid declaration: extra = {'x_goods': 'ore\\x1b[2J'}: Value error, "
            f"extra['x_goods'] holds U+001B: {_UNSHOWN}",
        ),
        (
            [row("S", 0.1, "a", trader_id="T-\t42")],
            "shipment 'S': invalid declaration: trader_id = 'T-\\t42': Value error, trader_id holds "
            f"U+0009: {_UNSHOWN}",
        ),
    ],
    ids=[
        "no-shipment",
        "no-cargo-type",
        "bad-flag",
        "bad-field",
        "flag-under-extra",
        "shipment-a-list",
        "shipment-an-object",
        "shipment-a-number",
        "trader-bidi-control",
        "shipment-bidi-control",
        "cargo-bidi-control",
        "extra-format-character",
        "extra-key-line-break",
        "extra-escape",
        "trader-tab",
    ],
)
def test_bad_rows_are_refused_by_name(rows: list[ImageVerdict], message: str) -> None:
    with pytest.raises(InputError) as info:
        list(decide_rows(policy(), rows, audit_key=KEY))
    assert str(info.value) == message


@pytest.mark.parametrize(
    "declared",
    [
        {"x_goods": "copper ore\nbulk, 20 t"},  # a quoted multi-line CSV cell
        {"x_goods": "copper\tore"},
        {"x_notes": "a\r\nb"},
        {"hs_code": "2603\n"},
        {"extra": {"x_lines": ["one\ntwo", {"x_more": "three\r\n"}]}},
        {"declared_goods": "\u0633\u0646\u06af\u200c\u0622\u0647\u0646"},  # Persian: a non-joiner
        {"x_label": "\U0001f469\u200d\U0001f52c"},  # an emoji sequence: a joiner
    ],
    ids=["newline", "tab", "crlf", "hs-code-newline", "nested", "persian-non-joiner", "emoji-joiner"],
)
def test_tabs_line_breaks_and_joiners_in_extra_text_are_taken(declared: dict[str, Any]) -> None:
    """A batch checks every shipment before it records one: a goods description of two lines, or
    in Persian (written with a zero-width non-joiner), refused as an unshown character, stopped the
    run, and an alarm raised on another shipment went unrecorded. Tabs, line breaks and the joiners
    reorder nothing; extra's values keep them as sent."""
    rows = [row("S1", 0.1, "a", radiation_alarm=True), row("S2", 0.1, "b", **declared)]
    first, second = decide_rows(policy(), rows, audit_key=KEY)
    assert first.tier is P
    assert second.tier is R
    given = declared.get("extra", declared)
    assert all(second.declaration.extra[key] == value for key, value in given.items())


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("threshold", True, "threshold: Value error, expected a number, got True"),
        ("hold_threshold", True, "hold_threshold: Value error, expected a number, got True"),
        ("score", False, "score: Value error, expected a number, got False"),
        ("score", "0.95", "score: Value error, expected a number, got '0.95'"),
        ("scale_vs_training", 0, "scale_vs_training: Input should be greater than 0"),
    ],
)
def test_a_row_with_a_flag_or_text_for_a_number_is_refused(
    tmp_path: Path, field: str, value: Any, said: str
) -> None:
    """``threshold: true`` read as 1.0 released a picture scoring 0.95; a scale of 0 stopped the
    whole run with a ZeroDivisionError."""
    from datasets.errors import DatasetFormatError
    from pipeline.verdict_rows import read_verdicts

    data = json.loads(row("S1", 0.95, "a.png").model_dump_json()) | {field: value}
    path = tmp_path / "v.jsonl"
    path.write_text(json.dumps(data) + "\n")
    with pytest.raises(DatasetFormatError, match="not an image verdict row") as info:
        list(read_verdicts(path))
    assert said in str(info.value)


# -- the CLI ---------------------------------------------------------------------------------------

ROWS = [
    row("S1", 0.2, "s1a.png"),
    row("S1", 0.45, "s1b.png"),
    row("S2", 0.53, "s2.png", aeo_tier="AEOF"),
    row("S3", 0.9, "s3.png"),
    row("S4", 0.1, "s4.png", radiation_alarm=True),
    ImageVerdict(
        path="s5.png",
        shipment_id="S5",
        cargo_type="bulk_ore",
        error="ImageDecodeError: truncated",
        declaration={"cargo_type": "bulk_ore"},
    ),
]
# as the scorer writes them: each picture named by its bytes, which the audit store looks up
ROWS = [r.model_copy(update={"sha256": hashlib.sha256(r.path.encode()).hexdigest()}) for r in ROWS]


def _write(path: Path, rows: list[ImageVerdict]) -> Path:
    if path.suffix == ".parquet":  # written without them below: sealed so
        rows = [r.model_copy(update={"type_probabilities": None}) for r in rows]
    rows = [scored(r) for r in rows]  # sealed, as a score run with the audit secret writes them
    if path.suffix == ".jsonl":
        path.write_text("".join(map(scored_line, rows)))
    elif path.suffix == ".csv":
        fields = list(FIELDS)
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            for r in rows:
                data = row_data(r)
                writer.writerow(
                    {
                        k: ("" if v is None else json.dumps(v) if isinstance(v, dict) else v)
                        for k, v in data.items()
                    }
                )
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        records = []
        for r in rows:
            data = row_data(r)
            data["declaration"] = json.dumps(data["declaration"])
            records.append(data)
        pq.write_table(pa.Table.from_pylist(records), path)
    run_finished(path)  # as a finished score run leaves it
    return path


def _policy_file(tmp_path: Path, name: str, release: float) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"policy_version: {name}\ncargo_types:\n"
        f"  bulk_ore: {{release_threshold: {release}, hold_threshold: 0.8}}\n"
        "trusted_traders:\n  AEOF: {release_odds_factor: 1.5}\n"
    )
    return path


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "cli-test-audit-secret")
    return tmp_path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_cli_decide_reads_every_format(
    cli_env: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import app, run

    verdicts = _write(cli_env / f"v{suffix}", ROWS)
    out = cli_env / "out" / "d.jsonl"
    code = run(
        app,
        [
            "decide",
            "--verdicts",
            str(verdicts),
            "--policy",
            str(_policy_file(cli_env, "p50", 0.5)),
            "--out",
            str(out),
        ],
    )
    assert code == 0, capsys.readouterr().err
    tiers = [(d["shipment_id"], d["tier"]) for d in map(json.loads, out.read_text().splitlines())]
    assert tiers == [
        ("S1", "RELEASE"),
        ("S2", "RELEASE"),
        ("S3", "PHYSICAL_INSPECTION"),
        ("S4", "PHYSICAL_INSPECTION"),
        ("S5", "REMOTE_INSPECTION"),
    ]
    assert "wrote 5 decisions" in capsys.readouterr().out


def test_cli_decide_compares_policies_and_records_once(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.audit import AuditStore
    from pipeline.cli import app, run

    verdicts = _write(cli_env / "v.jsonl", ROWS)
    strict = _policy_file(cli_env, "strict", 0.4)
    lenient = _policy_file(cli_env, "lenient", 0.5)
    db = f"sqlite:///{cli_env / 'audit.db'}"
    args = [
        "decide",
        "--verdicts",
        str(verdicts),
        "--policy",
        str(lenient),
        "--compare-policy",
        str(strict),
        "--out",
        str(cli_env / "d.jsonl"),
        "--audit-db",
        db,
    ]
    assert run(app, args) == 0
    printed = capsys.readouterr().out
    # lenient releases S1 (0.45 < 0.5) and S2 (0.53 < 0.55) that strict (0.4, 0.45) sends to review.
    assert "lenient releases +2 shipments compared with strict (2 shipments change tier)" in " ".join(
        printed.split()
    )
    assert run(app, args) == 2  # the first run's decisions are kept unless told
    assert capsys.readouterr().err.startswith(
        f"Error: --out {str(cli_env / 'd.jsonl')!r} already exists; pass --overwrite to replace it"
    )
    assert run(app, [*args, "--overwrite"]) == 0  # the same inputs again: idempotent, nothing recorded twice
    with AuditStore.open(db, create=False) as store:
        report = store.verify()
        assert (report.ok, report.records_checked) == (True, 5)
        record = store.get("S2")
        assert record is not None and record.idempotency_key is not None
        assert record.idempotency_key.startswith("decision:S2:")


OLDER_ROWS = {  # as score runs before the character check wrote them, by shipment
    "x-newline": {"x_goods": "copper ore\nbulk, 20 t"},
    "x-tab": {"x_goods": "copper\tore"},
    "x-crlf": {"x_notes": "a\r\nb"},
    "trader-shy": {"trader_id": "T\u00ad42"},
    "trader-zwsp": {"trader_id": "T-42\u200b"},
    "trader-bidi": {"trader_id": "\u202e24-T"},
    "extra-bom": {"extra": {"x_a": "\ufeffabc"}},
    "\u202eshipment-bidi": {},  # the shipment id itself
}


def test_cli_decide_takes_an_earlier_score_runs_rows_as_they_were_written(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows a score run wrote under the rules of their day (a soft hyphen or a zero-width space in a
    trader id, a BOM in extra) were refused by the newer character check: the whole run could never
    be decided again, nor an alarm raised since recorded. ``decide --verdicts`` reads them as
    written, as the audit store reads a decision recorded before; new rows keep the check."""
    from pipeline.audit import AuditStore
    from pipeline.cli import app, run

    rows = [
        img(0.1, f"{name}.png", shipment_id=name, sha256=f"{n:064x}", declaration=declared)
        for n, (name, declared) in enumerate(OLDER_ROWS.items(), 1)
    ]
    verdicts = _write(cli_env / "v.jsonl", rows)
    db = f"sqlite:///{cli_env / 'audit.db'}"
    out = cli_env / "d.jsonl"
    args = ["decide", "--verdicts", str(verdicts), "--policy", str(_policy_file(cli_env, "p50", 0.5))]
    assert run(app, [*args, "--out", str(out), "--audit-db", db]) == 0, capsys.readouterr().err
    decided = {d["shipment_id"]: d for d in map(json.loads, out.read_text().splitlines())}
    assert {name: d["tier"] for name, d in decided.items()} == dict.fromkeys(OLDER_ROWS, "RELEASE")
    assert decided["trader-shy"]["declaration"]["trader_id"] == "T\u00ad42"
    assert decided["extra-bom"]["declaration"]["extra"] == {"x_a": "\ufeffabc"}
    with AuditStore.open(db, create=False) as store:
        assert store.verify().ok
        assert store.get("trader-zwsp").decision.declaration.trader_id == "T-42\u200b"
        assert store.get("\u202eshipment-bidi").decision.declaration.shipment_id == "\u202eshipment-bidi"
    # new rows (a score run's own, deciding as it scores) are held to the check
    with pytest.raises(InputError, match="trader_id holds U\\+00AD \\(SOFT HYPHEN\\)"):
        list(decide_rows(policy(), [rows[3]], audit_key=KEY))
    with pytest.raises(InputError, match=r"extra\['x_a'\] holds U\+FEFF"):
        list(decide_rows(policy(), [rows[6]], audit_key=KEY))
    with pytest.raises(InputError, match=r"shipment_id holds U\+202E \(RIGHT-TO-LEFT OVERRIDE\)"):
        list(decide_rows(policy(), [rows[7]], audit_key=KEY))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("v.txt", "", "Error: --verdicts '{p}': suffix '.txt' not accepted (.jsonl, .csv or .parquet)"),
        (
            "v.jsonl",
            "{not json}\n",
            "Error: {p}:1: not JSON (Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1))",
        ),
        (
            "v.jsonl",
            '{"path": "a", "colour": "red"}\n',
            "Error: {p}:1: not an image verdict row (colour: Extra inputs are not permitted)",
        ),
        ("v.csv", "path,score\na,high\n", "Error: {p}:2: column score = 'high' is not a number"),
        # read, decided, then failing the decisions' writer as an "unexpected" error, no line named
        (
            "v.jsonl",
            '{"path": "a", "declaration": {"shipment_id": "S1", "declared_goods": "ore \\ud800"}}\n',
            "Error: {p}:1: '\\ud800' is half a character (a lone UTF-16 surrogate), which no file "
            "or database can store; write the character itself",
        ),
        (
            "v.jsonl",
            '{"path": "a", "x": ' + "[" * 5000 + "]" * 5000 + "}\n",
            "Error: {p}:1: a value is nested too deeply",
        ),
        (
            "v.csv",
            'path,declaration\na,"{""x"": ' + "[" * 5000 + "]" * 5000 + '}"\n',
            "Error: {p}:2: column declaration: a value is nested too deeply",
        ),
        # read by Python, refused by pydantic's writer (255 levels) after deciding
        ("v.jsonl", '{"path": "a", "x": ' + "[" * 300 + "]" * 300 + "}\n",
         "Error: {p}:1: a value is nested more than 64 deep"),
        # half a character as raw bytes, and in a UTF-16 file: no escape to look for
        ("v.jsonl", b'{"path": "a", "declaration": {"shipment_id": "S1", "x_g": "\xed\xa0\x80"}}\n',
         "Error: {p}:1: '\\ud800' is half a character"),
        ("v.jsonl", '{"path": "a", "declaration": {"shipment_id": "S1", "x_g": "\\ud800"}}'.encode("utf-16"),
         "Error: {p}:1: '\\ud800' is half a character"),
    ],
    ids=[
        "suffix", "json", "unknown-field", "csv-number", "half-character", "too-deep", "csv-too-deep",
        "deep-for-the-writer", "raw-half-character", "utf16-half-character",
    ],
)  # fmt: skip
def test_cli_decide_bad_verdicts(
    cli_env: Path, capsys: pytest.CaptureFixture[str], name: str, content: str | bytes, message: str
) -> None:
    from pipeline.cli import app, run

    path = cli_env / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    run_finished(path)  # a finished run's: the rows themselves are refused
    assert run(app, ["decide", "--verdicts", str(path), "--out", str(cli_env / "d.jsonl")]) == 2
    said = capsys.readouterr().err.strip()
    assert said == message.format(p=path) or (
        "half a character" in message and said.startswith(message.format(p=path))
    )


@pytest.mark.parametrize(
    ("out", "extra", "message"),
    [
        (  # its own option named, not also the server's environment variable, which decide does not read
            "d.jsonl",
            ["--audit-db", "notaurl"],
            "Error: audit store URL 'notaurl' is not a SQLAlchemy URL (--audit-db; accepted: sqlite:///FILE, "
            "postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        ("d.csv", [], "Error: --out 'd.csv': decisions are written as JSON lines; name the file .jsonl"),
        ("folder", [], "Error: --out 'folder' is a folder; give the decisions file (JSONL)"),
    ],
    ids=["bad-audit-url", "csv-name", "folder"],
)
def test_cli_decide_writes_nothing_when_it_cannot_finish(
    cli_env: Path, capsys: pytest.CaptureFixture[str], out: str, extra: list[str], message: str
) -> None:
    """A decisions file beside a failed run would look like a finished what-if."""
    from pipeline.cli import app, run

    (cli_env / "folder").mkdir()
    verdicts = _write(cli_env / "v.jsonl", ROWS)
    assert run(app, ["decide", "--verdicts", str(verdicts), "--out", out, *extra]) == 2
    assert capsys.readouterr().err.startswith(message)
    # (the hidden file beside the rows is their completion record)
    assert sorted(p.name for p in cli_env.iterdir() if not p.name.startswith(".")) == ["folder", "v.jsonl"]


@pytest.mark.parametrize(
    ("option", "content"),
    [
        ("--audit-db", None),  # an audit store made by the run itself, holding its decisions
        ("--policy", default_policy_path().read_text()),
        ("--trader-register", "trader_id,aeo_tier\nT-1,AEOF\n"),
    ],
    ids=["audit-store", "policy", "register"],
)
def test_cli_decide_leaves_a_file_named_like_its_out_dot_tmp_alone(
    cli_env: Path, option: str, content: str | None
) -> None:
    """--out d.jsonl was written to d.jsonl.tmp and renamed: an input or audit store of that name
    was truncated and moved onto the decisions file."""
    from pipeline.audit import AuditStore
    from pipeline.cli import app, run

    verdicts = _write(cli_env / "v.jsonl", ROWS)
    named = cli_env / "d.jsonl.tmp"
    given = f"sqlite:///{named}" if content is None else str(named)
    if content is not None:
        named.write_text(content)
    else:  # the store holds the decisions of a first run
        base = ["decide", "--verdicts", str(verdicts), "--audit-db", given]
        assert run(app, [*base, "--out", str(cli_env / "first.jsonl")]) == 0
    before = named.read_bytes()
    assert run(app, ["decide", "--verdicts", str(verdicts), option, given, "--out", "d.jsonl"]) == 0
    if content is not None:
        assert named.read_bytes() == before
    else:  # run again over the same inputs: answered from the store, nothing written to it
        with AuditStore.open(given) as store:
            assert store.verify().ok and len(list(store.iter_records())) == 5
    assert [json.loads(line)["shipment_id"] for line in (cli_env / "d.jsonl").read_text().splitlines()] == [
        "S1",
        "S2",
        "S3",
        "S4",
        "S5",
    ]
    assert not [p.name for p in cli_env.iterdir() if p.name.endswith(".tmp") and p != named]
    (cli_env / "probe").write_text("")  # made as open(path, "w") makes a file: the umask decides
    assert (cli_env / "d.jsonl").stat().st_mode == (cli_env / "probe").stat().st_mode


def test_cli_decide_keeps_the_mode_of_the_out_it_replaces(cli_env: Path) -> None:
    """Renamed onto it, the new --out took the umask's mode: decisions kept to their owner (chmod
    600) came back readable by the group after --overwrite."""
    from pipeline.cli import app, run

    verdicts = _write(cli_env / "v.jsonl", ROWS)
    out = cli_env / "d.jsonl"
    out.write_text("earlier\n")
    out.chmod(0o600)
    assert run(app, ["decide", "--verdicts", str(verdicts), "--out", str(out), "--overwrite"]) == 0
    assert out.stat().st_mode & 0o777 == 0o600 and len(out.read_text().splitlines()) == 5


def test_cli_decide_writes_a_linked_out_where_the_link_points(cli_env: Path) -> None:
    """Renamed onto --out, the decisions file replaced a link --out, and the decisions never reached
    the file it named (``score --out`` is written where its link points)."""
    from pipeline.cli import app, run

    verdicts = _write(cli_env / "v.jsonl", ROWS)
    (cli_env / "archive").mkdir()
    archived = cli_env / "archive" / "d.jsonl"
    archived.write_text("earlier\n")
    archived.chmod(0o600)
    link = cli_env / "d.jsonl"
    link.symlink_to("archive/d.jsonl")
    assert run(app, ["decide", "--verdicts", str(verdicts), "--out", str(link), "--overwrite"]) == 0
    assert link.is_symlink() and len(archived.read_text().splitlines()) == 5
    assert archived.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (cli_env / "archive").iterdir()) == ["d.jsonl"]


def test_cli_decide_leaves_no_temporary_file_when_it_fails(cli_env: Path) -> None:
    from pipeline.cli import app, run

    bad = ROWS[0].model_copy(update={"declaration": {"cargo_type": "bulk_ore", "trader_id": "T" * 200}})
    verdicts = _write(cli_env / "v.jsonl", [bad])
    db = f"sqlite:///{cli_env / 'audit.db'}"
    assert run(app, ["decide", "--verdicts", str(verdicts), "--out", "d.jsonl", "--audit-db", db]) == 2
    kept = [p.name for p in cli_env.iterdir() if not p.name.startswith(("audit.db", ".v.jsonl-"))]
    assert sorted(kept) == ["v.jsonl"]  # with the rows' completion record


@pytest.mark.parametrize("shipment", [["S1"], {"a": 1}], ids=["list", "object"])
@pytest.mark.parametrize("audit", [False, True], ids=["no-store", "store"])
def test_cli_decide_refuses_a_shipment_id_that_is_no_text(
    cli_env: Path, capsys: pytest.CaptureFixture[str], shipment: Any, audit: bool
) -> None:
    """Put in a set to count the shipments, it failed as "unexpected TypeError"; then it was refused
    naming the image alone, not the file and line it is on."""
    from pipeline.cli import app, run

    bad = ROWS[0].model_copy(update={"shipment_id": None, "declaration": {"shipment_id": shipment}})
    verdicts = _write(cli_env / "v.jsonl", [bad])
    store = ["--audit-db", f"sqlite:///{cli_env / 'audit.db'}"] if audit else []
    assert run(app, ["decide", "--verdicts", str(verdicts), "--out", "d.jsonl", *store]) == 2
    assert capsys.readouterr().err.startswith(
        f"Error: {verdicts}:1: not an image verdict row (declaration: Value error, shipment_id {shipment!r} "
        "of image 's1a.png' is not text"
    )
    assert not (cli_env / "d.jsonl").exists()


def test_cli_decide_never_writes_over_its_verdicts(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import app, run

    path = cli_env / "v.jsonl"
    path.write_text("kept\n")
    assert run(app, ["decide", "--verdicts", str(path), "--out", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"Error: --out {str(path.resolve())!r} is also an input")
    assert path.read_text() == "kept\n"


def test_cli_decide_records_no_what_if_that_lowers_a_hold(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.audit import AuditStore
    from pipeline.cli import app, run

    verdicts = _write(cli_env / "v.jsonl", ROWS)
    db = f"sqlite:///{cli_env / 'audit.db'}"
    base = ["decide", "--verdicts", str(verdicts), "--audit-db", db]
    strict = [*base, "--policy", str(_policy_file(cli_env, "strict", 0.4)), "--out", str(cli_env / "s.jsonl")]
    assert run(app, strict) == 0, capsys.readouterr().err
    lenient = [
        *base,
        "--policy",
        str(_policy_file(cli_env, "lenient", 0.5)),
        "--out",
        str(cli_env / "l.jsonl"),
    ]
    assert run(app, lenient) == 2
    captured = capsys.readouterr()
    said = " ".join(captured.out.split())
    assert "wrote 5 decisions" in said and "3 recorded in" in said
    assert 'for 2 not recorded the file has the decision the audit trail holds, marked "refused"' in said
    # counted apart, not as the releases the store refused
    assert "RELEASE │ 0 (0.0 %)" in said and "not recorded │ 2 (40.0 %)" in said
    errors = [line for line in captured.err.splitlines() if line.startswith("Error:")]
    assert errors[0].startswith(
        "Error: 2 decisions were not recorded in the audit store (and 1 more): shipment "
    )
    # the file says what the audit trail holds, never the refused release
    written = {d["shipment_id"]: d for d in map(json.loads, (cli_env / "l.jsonl").read_text().splitlines())}
    assert sorted(written) == ["S1", "S2", "S3", "S4", "S5"]
    with AuditStore.open(db, create=False) as store:
        for shipment in ("S1", "S2"):
            record = store.get(shipment)
            assert record is not None and record.decision.tier is H
            line = written[shipment]
            assert (line["tier"], line["policy_version"]) == ("REMOTE_INSPECTION", "strict")
            assert line["refused"]["tier"] == "RELEASE" and line["refused"]["policy_version"] == "lenient"
            assert line["refused"]["standing_seq"] == record.seq
            assert line["refused"]["why"].startswith(f"shipment {shipment!r} is held (REMOTE_INSPECTION")
        assert all("refused" not in d for s, d in written.items() if s not in ("S1", "S2"))
        assert all('"refused"' not in row.content for row in store.iter_chain())  # never recorded
        assert store.verify().ok


def test_cli_decide_compares_policies_on_this_runs_inputs_where_decisions_are_refused(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A what-if under a lenient policy that the store refuses for S1 and S2 (holds stand), and S7
    resending S4's picture (its radiation-alarm hold carried over): compared with itself nothing
    changes, and compared with the strict policy it releases S1 and S2, as decided now."""
    from pipeline.cli import app, run

    s7 = ROWS[4].model_copy(
        update={"shipment_id": "S7", "path": "s7.png", "declaration": {"cargo_type": "bulk_ore"}}
    )
    db = f"sqlite:///{cli_env / 'audit.db'}"
    strict, lenient = _policy_file(cli_env, "strict", 0.4), _policy_file(cli_env, "lenient", 0.5)
    first = ["decide", "--verdicts", str(_write(cli_env / "first.jsonl", ROWS)), "--audit-db", db]
    assert run(app, [*first, "--policy", str(strict), "--out", str(cli_env / "s.jsonl")]) == 0
    capsys.readouterr()
    verdicts = _write(cli_env / "v.jsonl", [*ROWS, s7])
    args = ["decide", "--verdicts", str(verdicts), "--audit-db", db, "--policy", str(lenient)]
    out = ["--out", str(cli_env / "l.jsonl"), "--overwrite"]
    assert run(app, [*args, "--compare-policy", str(lenient), *out]) == 2
    said = " ".join(capsys.readouterr().out.split())
    assert "lenient releases +0 shipments compared with lenient (0 shipments change tier)" in said
    assert "RELEASE │ 2 (33.3 %) │ 2 (33.3 %) │ +0" in said  # S1 and S2 as decided now
    assert "PHYSICAL_INSPECTION │ 3 (50.0 %) │ 3 (50.0 %) │ +0" in said  # S7 held on both sides
    assert "not recorded (of the above) │ 2 (33.3 %) │ │" in said
    assert run(app, [*args, "--compare-policy", str(strict), *out]) == 2
    said = " ".join(capsys.readouterr().out.split())
    assert "lenient releases +2 shipments compared with strict (2 shipments change tier)" in said
    assert "RELEASE │ 2 (33.3 %) │ 0 (0.0 %) │ +2" in said


def test_cli_decide_records_nothing_under_the_public_audit_secret(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cli import app, run

    monkeypatch.delenv("CLEARSIGHT_AUDIT_SECRET")
    verdicts = _write(cli_env / "v.jsonl", ROWS)
    args = ["decide", "--verdicts", str(verdicts), "--out", str(cli_env / "d.jsonl")]
    assert run(app, [*args, "--audit-db", f"sqlite:///{cli_env / 'audit.db'}"]) == 2
    assert capsys.readouterr().err.startswith(
        "Error: audit_secret is the public development default or shorter"
    )
    assert not (cli_env / "d.jsonl").exists()
    assert run(app, args) == 0  # a file only: decided, with a warning
    assert "Warning: random audits were picked with a weak audit_secret" in " ".join(
        capsys.readouterr().err.split()
    )
    monkeypatch.setenv("CLEARSIGHT_ALLOW_DEVELOPMENT_AUDIT_SECRET", "1")  # a trial may record under it
    assert run(app, [*args, "--audit-db", f"sqlite:///{cli_env / 'audit.db'}", "--overwrite"]) == 0


def test_cli_decide_tells_apart_two_policies_with_one_version(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import app, run

    verdicts = _write(cli_env / "v.jsonl", ROWS)
    (cli_env / "a").mkdir()
    (cli_env / "b").mkdir()
    strict, lenient = _policy_file(cli_env / "a", "same", 0.4), _policy_file(cli_env / "b", "same", 0.5)
    args = ["decide", "--verdicts", str(verdicts), "--policy", str(lenient), "--compare-policy", str(strict)]
    assert run(app, [*args, "--out", str(cli_env / "d.jsonl")]) == 0
    captured = capsys.readouterr()
    a, b = load_policy(lenient).sha256[:8], load_policy(strict).sha256[:8]
    assert f"same ({a}) releases +2 shipments compared with same ({b})" in " ".join(captured.out.split())
    assert "both policies say policy_version 'same' but their rules differ" in " ".join(captured.err.split())


@pytest.mark.parametrize(("score", "tier"), [(0.05, R), (0.2, P), (0.95, P)])
def test_a_fixed_release_cut_above_the_models_hold_is_a_valid_policy(score: float, tier: Tier) -> None:
    """release 0.3 from the policy, hold 0.097 from the model: scores at or above the hold are held."""
    mixed = policy(cargo_types={"bulk_ore": {"release_threshold": 0.3, "hold_threshold": "model"}})
    verdict = img(score, threshold=0.01, hold_threshold=0.097)
    assert decide_shipment(mixed, decl(), [verdict], audit_key=KEY, now=NOW).tier is tier


NO_FIELD = "is not a declaration field (accepted: "


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("RADIATION_ALARM", "looks like 'radiation_alarm'; write it as radiation_alarm"),
        ("radiation alarm", "looks like 'radiation_alarm'; write it as radiation_alarm"),
        ("RadiationAlarm", "looks like 'radiation_alarm'; write it as radiation_alarm"),
        ("radiationalarm", "looks like 'radiation_alarm'; write it as radiation_alarm"),
        ("radiation_alarms", "looks like 'radiation_alarm'; write it as radiation_alarm"),
        ("Radiation_Alarm_Flag", "looks like 'radiation_alarm'; write it as radiation_alarm"),
        ("document-mismatch-flag", "looks like 'document_mismatch'; write it as document_mismatch"),
        ("AeoTier", "looks like 'aeo_tier'; write it as aeo_tier"),
        # a flag under a name of its own, or any key of no field: kept aside, it never reached the rules
        ("solid_waste", NO_FIELD),
        ("foreign_inclusions", NO_FIELD),
        ("radiation", NO_FIELD),
        ("radiation_alarmed", NO_FIELD),
        ("radiation_alarm_level", NO_FIELD),
        ("suspected_solid_waste_code", NO_FIELD),
        ("trader_id_old", NO_FIELD),
        ("trader_id_2", NO_FIELD),
        # a manifest's declaration columns, and its custom x_ columns, even one that names a flag
        ("hs_code", None),
        ("origin", None),
        ("declared_goods", None),
        ("container_id", None),
        ("x_radiation_alarm_cleared_by", None),
    ],
)
def test_a_flag_written_any_way_is_not_kept_aside(key: str, said: str | None) -> None:
    """A flag under another spelling, or under a name of its own, would land in extra and never
    reach the rules: the shipment would be released with its radiation alarm. Only the keys a
    manifest gives a declaration are kept aside."""
    if said is None:
        (decision,) = decide_rows(policy(), [row("S", 0.1, "a", **{key: True})], audit_key=KEY)
        assert (decision.tier, decision.declaration.extra) == (R, {key: True})
        return
    with pytest.raises(ValidationError, match=re.escape(f"key {key!r} of image 'a' {said}")):
        row("S", 0.1, "a", **{key: True})


NO_EXTRA = "is not a declaration column kept under extra (accepted: "


@pytest.mark.parametrize(
    ("key", "said"),
    [
        # a flag under a name of its own one level down: kept aside, it never reached the rules
        ("solid_waste", NO_EXTRA),
        ("radiation", NO_EXTRA),
        ("hs", NO_EXTRA),
        ("extra", NO_EXTRA),
        ("Radiation Alarm", "looks like 'radiation_alarm'; write it as radiation_alarm, not under extra"),
        ("radiation_alarm", "is the field 'radiation_alarm'; write it as radiation_alarm, not under extra"),
        ("shipment_id", "is the field 'shipment_id'; write it as shipment_id, not under extra"),
        # what a declaration keeps under extra: a manifest's declaration columns and custom x_ keys
        ("hs_code", None),
        ("origin", None),
        ("declared_goods", None),
        ("container_id", None),
        ("x_radiation_alarm_cleared_by", None),
    ],
)
def test_a_key_under_extra_is_held_to_the_rule_of_the_declarations_own(key: str, said: str | None) -> None:
    """{"extra": {"solid_waste": true, "radiation": true}} passed the check of a row's declaration
    keys, which looked at the keys above it only: the shipment was released."""
    if said is None:
        (decision,) = decide_rows(policy(), [row("S", 0.1, "a", extra={key: "v"})], audit_key=KEY)
        assert (decision.tier, decision.declaration.extra) == (R, {key: "v"})
        return
    with pytest.raises(ValidationError, match=re.escape(f"extra key {key!r} of image 'a' {said}")):
        row("S", 0.1, "a", extra={key: True})


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_declaration_refuses_a_number_the_audit_trail_cannot_record(number: float) -> None:
    """NaN and infinity (1e400 read from JSON) were kept, and recorded as null: the record said
    nothing was declared where something was."""
    with pytest.raises(ValidationError, match=r"extra key 'declared_weight_t' is -?(nan|inf), not a finite"):
        Declaration(shipment_id="S", cargo_type="bulk_ore", extra={"declared_weight_t": number})
    assert (
        Declaration(shipment_id="S", cargo_type="bulk_ore", extra={"w": 1e308, "n": None}).extra["w"] == 1e308
    )


def test_a_decision_of_an_earlier_version_is_read_with_its_rows_keys_kept_aside(tmp_path: Path) -> None:
    """Rows' declarations an earlier version decided with keys of no field (kept under extra) must
    not make its records, or its decisions files, unreadable: the check is for new rows only."""
    from pipeline.audit import AuditStore

    image = img(0.1).model_copy(update={"declaration": {"cargo_type": "bulk_ore", "hs": "2601"}})
    decision = decide_shipment(policy(), decl(extra={"hs": "2601"}), [image], audit_key=KEY, now=NOW)
    assert ShipmentDecision.model_validate_json(decision.model_dump_json()) == decision
    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        store.record(decision)
        assert store.get("S1").decision == decision  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="key 'hs' of image 'a.png' is not a declaration field"):
        ImageVerdict.model_validate(image.model_dump())  # and new rows are checked after
    under_extra = img(0.1).model_copy(update={"declaration": {"extra": {"solid_waste": True}}})
    decision = decide_shipment(policy(), decl(), [under_extra], audit_key=KEY, now=NOW)
    assert ShipmentDecision.model_validate_json(decision.model_dump_json()) == decision
    with pytest.raises(ValidationError, match="extra key 'solid_waste' of image 'a.png' is not a"):
        ImageVerdict.model_validate(under_extra.model_dump())
    # an id made text by a version that recorded ['S1'] as a shipment of its own
    odd_id = img(0.1).model_copy(update={"declaration": {"shipment_id": ["S1"]}})
    decision = decide_shipment(policy(), decl(), [odd_id], audit_key=KEY, now=NOW)
    assert ShipmentDecision.model_validate_json(decision.model_dump_json()) == decision
    with pytest.raises(ValidationError, match=re.escape("shipment_id ['S1'] of image 'a.png' is not text")):
        ImageVerdict.model_validate(odd_id.model_dump())


def test_cli_decide_takes_aeo_tiers_from_the_register_when_given_one(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unregistered trader declaring AEOF in its rows is released on a lower scrutiny; with the
    authority's register it is decided as what it is, and a registered one keeps its tier."""
    from pipeline.cli import app, run

    rows = [
        row("S1", 0.23, "a.png", trader_id="NOBODY-1", aeo_tier="AEOF"),
        row("S2", 0.23, "b.png", trader_id="TRD-7"),
    ]
    rows = [r.model_copy(update={"sha256": hashlib.sha256(r.path.encode()).hexdigest()}) for r in rows]
    verdicts = _write(cli_env / "v.jsonl", rows)
    policy_file = cli_env / "p.yaml"
    policy_file.write_text(
        "policy_version: t\ncargo_types:\n  bulk_ore: {release_threshold: 0.2, hold_threshold: 0.9}\n"
        "trusted_traders:\n  AEOF: {release_odds_factor: 1.5}\n"
    )
    register = cli_env / "traders.csv"
    register.write_text("trader_id,aeo_tier\nTRD-7,AEOF\n")
    args = ["decide", "--verdicts", str(verdicts), "--policy", str(policy_file)]

    def tiers(out: Path) -> dict[str, str]:
        return {d["shipment_id"]: d["tier"] for d in map(json.loads, out.read_text().splitlines())}

    db = f"sqlite:///{cli_env / 'audit.db'}"
    assert run(app, [*args, "--out", str(cli_env / "as-declared.jsonl"), "--audit-db", db]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "1 shipment(s) decided under the AEO tier their rows declare" in said
    assert "Warning: policy t picks no shipment for a random audit" in said  # this one audits none
    assert tiers(cli_env / "as-declared.jsonl") == {"S1": "RELEASE", "S2": "REMOTE_INSPECTION"}
    assert (
        run(app, [*args, "--out", str(cli_env / "registered.jsonl"), "--trader-register", str(register)]) == 0
    )
    assert tiers(cli_env / "registered.jsonl") == {"S1": "REMOTE_INSPECTION", "S2": "RELEASE"}
    # the audit trail tells the tier the rows declared from the register's
    from pipeline.audit import AuditStore

    with AuditStore.open(db, create=False) as store:
        recorded = store.get("S1").decision  # type: ignore[union-attr]
    assert (recorded.declaration.aeo_tier, recorded.aeo_tier_source) == ("AEOF", "declared_unverified")
    odds = next(r for r in recorded.reasons if r.rule == "trusted_trader.odds")
    assert "not verified against a trader register" in odds.message
    sources = {
        d["shipment_id"]: d["aeo_tier_source"]
        for d in map(json.loads, (cli_env / "registered.jsonl").read_text().splitlines())
    }
    assert sources == {"S1": "register", "S2": "register"}
    register.write_text("trader_id,aeo_tier\nTRD-7,aeof\n")
    assert run(app, [*args, "--out", str(cli_env / "x.jsonl"), "--trader-register", str(register)]) == 2
    assert "gives tier(s) 'aeof' that policy t does not know" in " ".join(capsys.readouterr().err.split())


def test_a_declaration_stored_before_the_loose_check_is_read_as_it_was(tmp_path: Path) -> None:
    """Keys an earlier version kept under extra must not make its records unreadable: the loose
    check is for new declarations only."""
    from pipeline.audit import AuditStore

    declaration = decl(extra={"RadiationAlarm": False, "radiation_alarm_level": 2})
    decision = decide_shipment(policy(), declaration, [img(0.1)], audit_key=KEY, now=NOW)
    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        store.record(decision)
        assert store.get("S1").decision.declaration.extra == declaration.extra  # type: ignore[union-attr]


def test_a_near_copy_is_told_apart_from_the_same_picture() -> None:
    images = [
        img(0.1, seen_in=["S0"]),
        img(0.1, "b", similar_in=["S7", "S8"], similar_bits=4),
        img(0.1, "c", similar_in=["S9"], similar_bits=6, similar_turn="mirrored left to right"),
    ]
    reasons = decide_shipment(policy(), decl(), images, audit_key=KEY, now=NOW).reasons
    said = [r.message for r in reasons if r.rule.startswith("override.image_")]
    assert said == [
        "the same picture was decided before in shipment S0",
        "a near-copy of a picture decided before in shipment S7, S8 "
        "(perceptual hashes 4 of 256 bits apart at the nearest)",
        "a near-copy of a picture decided before in shipment S9 "
        "(perceptual hashes 6 of 256 bits apart, mirrored left to right)",
    ]


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("s_file/d.jsonl", "Error: --out 's_file/d.jsonl': cannot make its folder: 's_file' is a file"),
        (
            "s_file/deeper/d.jsonl",
            "Error: --out 's_file/deeper/d.jsonl': cannot make its folder: 's_file' is a file",
        ),
    ],
    ids=["folder-a-file", "a-file-above"],
)
def test_cli_decide_records_nothing_when_out_cannot_be_written(
    cli_env: Path, capsys: pytest.CaptureFixture[str], out: str, message: str
) -> None:
    """The store held every decision, then writing --out failed (`unexpected NotADirectoryError`)."""
    from pipeline.cli import app, run

    (cli_env / "s_file").write_text("a file where a folder is expected\n")
    verdicts = _write(cli_env / "v.jsonl", ROWS)
    db = f"sqlite:///{cli_env / 'audit.db'}"
    assert run(app, ["decide", "--verdicts", str(verdicts), "--out", out, "--audit-db", db]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not (cli_env / "audit.db").exists()  # checked before the store was opened: nothing recorded


def _score_reason(decision: ShipmentDecision) -> Reason:
    """The one reason that judged a one-image decision's score."""
    (reason,) = (r for r in decision.reasons if r.rule.startswith("score."))
    return reason


def test_applied_thresholds_are_those_the_decision_judged_by_under_its_own_policy_only() -> None:
    """A score reason records one threshold; the review page needs both, found again under the
    decision's own policy: a trusted trader's raised release cut, the policy's own hold."""
    from pipeline.decide import applied_thresholds

    p = policy()
    # AEOS lifts the model's release cut of 0.5 to 0.7, never past the model's hold of 0.8
    ore = decide_shipment(p, decl(aeo_tier="AEOS"), [img(0.6)], audit_key=KEY, now=NOW)
    assert [(r.rule, r.threshold) for r in ore.reasons if r.rule.startswith("score.")] == [
        ("score.clear", pytest.approx(0.7))
    ]
    assert applied_thresholds(p, ore, ore.images[0], _score_reason(ore)) == (pytest.approx(0.7), 0.8)
    # the policy's own numbers for packs, not the model's (0.5 / 0.8)
    pack = img(0.45, cargo_type="vacuum_pack")
    packs = decide_shipment(p, decl(cargo_type="vacuum_pack"), [pack], audit_key=KEY, now=NOW)
    assert applied_thresholds(p, packs, packs.images[0], _score_reason(packs)) == (0.3, 0.6)
    # another policy's thresholds say nothing of this decision
    later = policy(
        policy_version="test-2", cargo_types={"bulk_ore": {}, "vacuum_pack": {"hold_threshold": 0.9}}
    )
    assert applied_thresholds(later, packs, packs.images[0], _score_reason(packs)) is None
    failed = decide_shipment(p, decl(), [img(None, error="unreadable")], audit_key=KEY, now=NOW)
    missing = Reason(rule="score.clear", tier=R, image="a.png", message="no such reason was written")
    assert applied_thresholds(p, failed, failed.images[0], missing) is None


def test_applied_thresholds_are_none_where_this_code_judges_the_score_otherwise_than_recorded() -> None:
    """One policy (same sha256), older decision code: before 28bcc9f an ore picture (model 0.5 / 0.8)
    in a shipment declared as packs (policy 0.5 / 0.9) met the packs' rules only, and 0.85 was
    recorded as score.review over 0.5. Today's code holds it at the ore model's 0.8; the recorded
    release cut 0.5 was found again, so the page said hold 0.800 applied where 0.9 had."""
    from pipeline.decide import applied_thresholds

    p = policy(cargo_types={"bulk_ore": {}, "vacuum_pack": {"release_threshold": 0.5, "hold_threshold": 0.9}})
    today = decide_shipment(p, decl(cargo_type="vacuum_pack"), [img(0.85)], audit_key=KEY, now=NOW)
    assert (_score_reason(today).rule, _score_reason(today).threshold) == ("score.hold", 0.8)
    assert applied_thresholds(p, today, today.images[0], _score_reason(today)) == (0.5, 0.8)
    # the record the older code wrote of the same picture under the same policy
    older = _score_reason(today).model_copy(
        update={
            "rule": "score.review",
            "tier": H,
            "threshold": 0.5,
            "message": "score 0.8500 >= release threshold 0.5000",
        }
    )
    recorded = today.model_copy(
        update={"tier": H, "reasons": [older if r.rule.startswith("score.") else r for r in today.reasons]}
    )
    assert recorded.policy_sha256 == p.sha256
    assert applied_thresholds(p, recorded, recorded.images[0], older) is None
    # a reason alike in all but its message (another rule set's words) is not the one found either
    worded = _score_reason(today).model_copy(update={"message": "score 0.8500 >= hold 0.8000"})
    assert applied_thresholds(p, today, today.images[0], worded) is None


def test_applied_thresholds_are_none_where_the_decision_took_another_trader_than_this_code() -> None:
    """A score.hold reason pins the hold alone; the release cut is found with today's trader logic.
    Before 0931031 rows naming two traders took the first's tier (AEOF here: release 0.5 raised to
    0.55, said in trusted_trader.odds); today none applies (trusted_trader.conflict), and the page
    said "release 0.500" of the held picture of a record whose release cut was 0.55."""
    from pipeline.decide import applied_thresholds

    p = policy()
    rows = [
        img(0.1, "a.png", declaration={"trader_id": "T1", "aeo_tier": "AEOF"}),
        img(0.95, "b.png", declaration={"trader_id": "T2"}),
    ]
    today = decide_shipment(p, decl(trader_id="T1", aeo_tier="AEOF"), rows, audit_key=KEY, now=NOW)
    held = next(r for r in today.reasons if r.rule == "score.hold")
    assert (held.image, held.threshold) == ("b.png", 0.8)
    assert applied_thresholds(p, today, today.images[1], held) == (0.5, 0.8)
    # the record the older code wrote of the same rows under the same policy
    odds = Reason(
        rule=_ODDS,
        tier=R,
        message="AEOF trader (tier as declared, not verified against a trader register): the odds of "
        "each release threshold times 1.22222, never above hold (each score's reason gives the "
        "threshold applied)",
    )
    clear = next(r for r in today.reasons if r.rule == "score.clear")
    raised = clear.model_copy(
        update={"threshold": 0.55, "message": clear.message.replace("0.5000", "0.5500")}
    )
    older = [odds if r.rule == _CONFLICT else raised if r is clear else r for r in today.reasons]
    assert [r.rule for r in older].count(_CONFLICT) == 0 and raised in older
    recorded = today.model_copy(update={"reasons": older})
    assert recorded.policy_sha256 == p.sha256
    # b.png's score.hold is found again, but not the cut the record applied: the release is not known
    assert applied_thresholds(p, recorded, recorded.images[1], held) is None
    assert applied_thresholds(p, recorded, recorded.images[0], raised) is None
