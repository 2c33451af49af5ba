"""Verdict rows to shipments: the idempotency key of a batch decision (:func:`inputs_key`), which
changes with every input a decision rests on and stays the one recorded before where nothing that
decides has changed.

The rows' grouping into shipments and their declarations are tested through ``decide_rows`` in
test_decide.py (its "grouping rows" section), beside the decisions they lead to."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.decide import EarlierHold, decide_rows, decide_shipment
from pipeline.policy import default_policy_path, load_policy
from pipeline.shipment_rows import inputs_key
from pipeline.verdicts import ImageVerdict, Tier

sys.path.insert(0, str(Path(__file__).parent))
from decide_builders import KEY, NOW, H, P, R, decl, img, policy  # noqa: E402

HOT = EarlierHold("S0", P, ("override.radiation_alarm",), 7)  # held, no officer's outcome yet


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"declaration": {"radiation_alarm": True}}, "an alarm raised after the first decision"),
        ({"declaration": {"aeo_tier": "AEOF"}}, "another trader status"),
        ({"threshold": 0.3}, "the model's release threshold"),
        ({"hold_threshold": 0.9}, "the model's hold threshold"),
        ({"scale_vs_training": 0.25}, "the image's scale"),
    ],
)
def test_the_batch_key_changes_with_every_input_of_a_decision(change: dict, why: str) -> None:
    policy = load_policy(default_policy_path())
    base = ImageVerdict(
        path="a.png",
        shipment_id="K1",
        cargo_type="bulk_ore",
        score=0.2,
        threshold=0.5,
        hold_threshold=0.8,
        model_id="m",
        scale_vs_training=1.0,
    )
    first = next(decide_rows(policy, [base], audit_key=b"k"))
    declared = change.get("declaration")
    other = base.model_copy(update={k: v for k, v in change.items() if k != "declaration"})
    if declared:
        other = other.model_copy(update={"declaration": declared})
    second = next(decide_rows(policy, [other], audit_key=b"k"))
    assert inputs_key(first) != inputs_key(second), why
    assert inputs_key(first) == inputs_key(next(decide_rows(policy, [base], audit_key=b"k")))


def _declared(path: str, **declared: Any) -> ImageVerdict:
    return img(
        0.1, path, declaration={"shipment_id": "K1", "cargo_type": "bulk_ore", "trader_id": "T-1", **declared}
    )


@pytest.mark.parametrize(
    ("declared", "tier", "why"),
    [
        ({"cargo_type": "vacuum_pack"}, H, "a picture re-declared as other cargo: fails closed"),
        ({"trader_id": "T-2"}, R, "another trader named on the second row"),
    ],
    ids=["cargo", "trader"],
)
def test_the_batch_key_changes_with_each_rows_own_declaration(declared: dict, tier: Tier, why: str) -> None:
    """Each picture's own declared cargo type was left out of the key: a picture re-declared as
    another cargo (never released) was answered by the audit store with the release recorded before."""
    alike = [_declared("a.png"), _declared("b.png")]
    first = next(decide_rows(policy(), alike, audit_key=KEY))
    second = next(decide_rows(policy(), [alike[0], _declared("b.png", **declared)], audit_key=KEY))
    assert (first.tier, second.tier) == (R, tier), why
    assert inputs_key(first) != inputs_key(second), why
    assert inputs_key(second) == inputs_key(
        next(decide_rows(policy(), [alike[0], _declared("b.png", **declared)], audit_key=KEY))
    )


def test_the_batch_key_of_rows_declaring_alike_is_the_one_recorded_before() -> None:
    """Rows that all carry one declaration are keyed as earlier versions keyed them, so that a run
    again over unchanged inputs is answered from the record those versions made (not recorded anew)."""
    decision = next(decide_rows(policy(), [_declared("a.png"), _declared("b.png")], audit_key=KEY))
    # as the version before the rows' declarations went into the key computed it: a change here makes
    # every run again over recorded inputs a new decision, so only on purpose
    recorded = "4198fa37625f9139d23cf9cb86ad202b175d371cd5b481518f23e5b987bd3396"
    assert inputs_key(decision) == f"decision:K1:{recorded}"


_FREE = {
    "container_id": "MSCU1234565",
    "hs_code": "2601",
    "origin": "BR",
    "declared_goods": "ore",
    "x_bay": "01",
}


@pytest.mark.parametrize(
    "other",
    [
        {"container_id": "MSCU7654321"},
        {"hs_code": "2602"},
        {"origin": "CL"},
        {"declared_goods": "copper ore"},
        {"x_bay": "02"},
        {"trader_id": " T-1 "},  # stripped, as registered and as the rows are decided
        {"radiation_alarm": "false", "aeo_tier": ""},  # read as no flag and no tier
    ],
    ids=["container", "hs-code", "origin", "goods", "x-key", "trader-spaced", "empty-values"],
)
def test_the_batch_key_leaves_out_what_decides_nothing_in_the_rows_declarations(other: dict) -> None:
    """Each row's whole declaration went into the key where the rows differed at all: rows written
    by `clearsight score`, each with its manifest row's own container id or x_ column, were keyed
    anew, and a run again after another record of the shipment (a what-if under another policy)
    was recorded a second time instead of being answered from its record."""
    rows = [_declared("a.png", **_FREE), _declared("b.png", **{**_FREE, **other})]
    alike = [_declared("a.png", **_FREE), _declared("b.png", **_FREE)]
    decided = next(decide_rows(policy(), rows, audit_key=KEY))
    assert inputs_key(decided) == inputs_key(next(decide_rows(policy(), alike, audit_key=KEY)))


def test_the_batch_key_of_rows_differing_in_free_keys_is_the_one_recorded_before() -> None:
    rows = [
        _declared("a.png", container_id="MSCU1234565", hs_code="2601", x_bay="01"),
        _declared("b.png", container_id="MSCU7654321", hs_code="2601", x_bay="02"),
    ]
    # as the version before the rows' declarations went into the key computed it
    recorded = "6ec0b8cf326647d29393d993043d35c52a1445d49f4e53cc7874ff4066f4a0e7"
    assert inputs_key(next(decide_rows(policy(), rows, audit_key=KEY))) == f"decision:K1:{recorded}"


@pytest.mark.parametrize(
    ("rows", "recorded"),
    [
        pytest.param(  # a flag raised on one row only: OR-ed into the shipment's declaration
            [_declared("a.png", radiation_alarm=True), _declared("b.png", radiation_alarm=False)],
            "42dd960088321140d95296f29fe3d866d4553cf63c7f74174eb8ffe75b775e34",
            id="flag-on-one-row",
        ),
        pytest.param(  # a trader named on one row only: the shipment's
            [
                _declared("a.png"),
                img(0.1, "b.png", declaration={"shipment_id": "K1", "cargo_type": "bulk_ore"}),
            ],
            "4198fa37625f9139d23cf9cb86ad202b175d371cd5b481518f23e5b987bd3396",
            id="trader-on-one-row",
        ),
    ],
)
def test_the_batch_key_of_rows_that_say_alike_what_decides_is_the_one_recorded_before(
    rows: list[ImageVerdict], recorded: str
) -> None:
    """Each row's flags and trader went into the key where the rows differed in them: a flag raised
    on one row only (as a manifest raises it) keyed anew a decision its shipment's declaration
    already keys, so a run again over unchanged inputs recorded a second copy (keys as 8ca61ba's)."""
    assert inputs_key(next(decide_rows(policy(), rows, audit_key=KEY))) == f"decision:K1:{recorded}"


def test_the_batch_key_changes_with_the_holds_carried_and_where_the_tier_came_from() -> None:
    """A hold raised on another shipment since, or a register confirming the declared tier, is a
    new decision, not one answered by the record made before."""
    images = [img(0.1, seen_in=["S0"])]
    first = decide_shipment(policy(), decl(aeo_tier="AEOF"), images, audit_key=KEY, now=NOW)
    again = decide_shipment(
        policy(), decl(aeo_tier="AEOF"), images, audit_key=KEY, now=NOW + timedelta(hours=1)
    )
    held = decide_shipment(
        policy(), decl(aeo_tier="AEOF"), images, audit_key=KEY, now=NOW, held_before={"S0": HOT}
    )
    registered = decide_shipment(
        policy(), decl(aeo_tier="AEOF"), images, audit_key=KEY, now=NOW, aeo_tier_source="register"
    )
    assert inputs_key(first) == inputs_key(again)  # a run again: the same key
    assert len({inputs_key(first), inputs_key(held), inputs_key(registered)}) == 3
