"""What an officer may record as found: the review page's list and the outcome routes' check."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.verdicts import Declaration, ImageVerdict, ShipmentDecision, Tier
from serve.findings import finding_types


def _model(names: list[str], pseudo: list[str]) -> SimpleNamespace:
    card = {"detector": {"class_names": ["good", *names, *pseudo]}, "training": {"pseudo_types": pseudo}}
    return SimpleNamespace(card=card)


def _decision(cargo: str, *scored: tuple[str | None, list[str]]) -> ShipmentDecision:
    images = [
        ImageVerdict(
            path=f"{n}.png",
            score=0.5,
            cargo_type=image_cargo,
            type_probabilities={"good": 0.5, **dict.fromkeys(types, 0.1)},
        )
        for n, (image_cargo, types) in enumerate(scored)
    ]
    return ShipmentDecision(
        shipment_id="S1",
        cargo_type=cargo,
        tier=Tier.REMOTE_INSPECTION,
        reasons=[],
        images=images,
        declaration=Declaration(shipment_id="S1", cargo_type=cargo),
        policy_version="t",
        policy_sha256="0" * 64,
        model_ids=[],
        decided_at="2026-12-06T00:00:00+00:00",
    )


MODELS = {
    "bulk_ore": _model(["wet_patch", "foreign_object"], ["synthetic_cutpaste"]),
    "vacuum_pack": _model(["puncture", "seal_defect"], []),
}


@pytest.mark.parametrize(
    ("models", "decision", "accepted"),
    [
        pytest.param(
            MODELS, _decision("bulk_ore"), ["foreign_object", "unknown", "wet_patch"], id="model-types"
        ),
        pytest.param(
            MODELS, _decision("vacuum_pack"), ["puncture", "seal_defect", "unknown"], id="own-cargo-only"
        ),
        pytest.param(
            MODELS,
            _decision("bulk_ore", ("bulk_ore", ["oversize_lump", "synthetic_noise"])),
            ["foreign_object", "oversize_lump", "unknown", "wet_patch"],
            id="and-what-it-was-scored-against",
        ),
        pytest.param(
            {},
            _decision("bulk_ore", (None, ["wet_patch"]), ("vacuum_pack", ["puncture"])),
            ["unknown", "wet_patch"],
            id="no-model-loaded-another-cargo-s-picture-left-out",
        ),
        pytest.param({}, _decision("bulk_ore"), ["unknown"], id="nothing-known"),
        pytest.param(  # a model trained before folders were held to type names: no outcome can name these
            {"bulk_ore": _model(["Foreign Object", "crack-line", "wet_patch"], [])},
            _decision("bulk_ore"),
            ["unknown", "wet_patch"],
            id="only-type-names",
        ),
    ],
)
def test_finding_types(models: dict[str, Any], decision: ShipmentDecision, accepted: list[str]) -> None:
    assert finding_types(models, decision) == accepted
