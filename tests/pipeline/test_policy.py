"""Policy loading and validation: the bundled example, the hash, and every refusal's exact message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from datasets.errors import PolicyError
from pipeline.policy import Policy, default_policy_path, load_policy, parse_policy
from pipeline.verdicts import Tier

MINIMAL = {"policy_version": "v1", "cargo_types": {"bulk_ore": {}}}


def test_bundled_example_loads_with_the_documented_rules() -> None:
    policy = load_policy(default_policy_path())
    assert policy.version == "2026.12.2-example"
    assert sorted(policy.cargo_types) == ["bulk_ore", "vacuum_pack"]
    assert policy.cargo_types["bulk_ore"].release_threshold == "model"
    assert policy.cargo_types["vacuum_pack"].hold_threshold == 0.9
    assert policy.overrides.radiation_alarm is Tier.PHYSICAL_INSPECTION
    assert {k: v.release_odds_factor for k, v in policy.trusted_traders.items()} == {
        "AEOF": 1.5,
        "AEOS": 1.25,
    }
    assert (policy.random_audit.rate, policy.random_audit.tier) == (0.03, Tier.REMOTE_INSPECTION)
    assert len(policy.sha256) == 64


def test_defaults_hold_and_fail_closed_to_inspection() -> None:
    policy = parse_policy(MINIMAL)
    assert policy.random_audit.rate == 0.0
    flags = {k: v for k, v in policy.overrides.model_dump().items() if not k.startswith("image_")}
    assert set(flags.values()) == {Tier.PHYSICAL_INSPECTION}  # a declaration flag holds the cargo
    # an officer looks at the picture
    assert policy.overrides.image_reused is policy.overrides.image_near_copy is Tier.REMOTE_INSPECTION
    assert set(policy.fail_closed.model_dump().values()) == {Tier.REMOTE_INSPECTION}
    assert policy.image_tiers.at_or_above_hold is Tier.PHYSICAL_INSPECTION


def test_sha256_ignores_comments_and_key_order_but_not_meaning(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    c = tmp_path / "c.yaml"
    a.write_text('policy_version: "v1"\ncargo_types:\n  bulk_ore: {release_threshold: 0.4}\n')
    b.write_text("# comment\ncargo_types:\n  bulk_ore:\n    release_threshold: 0.40\npolicy_version: v1\n")
    c.write_text('policy_version: "v1"\ncargo_types:\n  bulk_ore: {release_threshold: 0.41}\n')
    assert load_policy(a).sha256 == load_policy(b).sha256
    assert load_policy(a).sha256 != load_policy(c).sha256


def _with(**changes: Any) -> dict[str, Any]:
    return {**MINIMAL, **changes}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            _with(cargo_types={"bulk_ore": {"release_threshold": 1.5}}),
            'cargo_types.bulk_ore.release_threshold = 1.5: must be "model" or a number in [0, 1]',
            id="threshold-1.5",
        ),
        pytest.param(
            _with(cargo_types={"bulk_ore": {"hold_threshold": "auto"}}),
            "cargo_types.bulk_ore.hold_threshold = 'auto': must be \"model\" or a number in [0, 1]",
            id="threshold-word",
        ),
        pytest.param(
            _with(cargo_types={"bulk_ore": {"hold_threshold": True}}),
            'cargo_types.bulk_ore.hold_threshold = True: must be "model" or a number in [0, 1]',
            id="threshold-bool",
        ),
        pytest.param(
            _with(cargo_types={"bulk_ore": {"release_threshold": 0.6, "hold_threshold": 0.5}}),
            "cargo_types.bulk_ore: hold_threshold 0.5 is below release_threshold 0.6; it must be >= it",
            id="hold-below-release",
        ),
        pytest.param(
            _with(cargo_types={"bulk_ore": {"release_treshold": 0.5}}),
            "cargo_types.bulk_ore.release_treshold: unknown key; "
            "accepted keys: release_threshold, hold_threshold, models",
            id="unknown-nested-key",
        ),
        pytest.param(
            _with(exemptions=["AEOF"]),
            "exemptions: unknown key; accepted keys: policy_version, cargo_types, overrides, "
            "trusted_traders, random_audit, image_tiers, fail_closed",
            id="unknown-top-key",
        ),
        pytest.param(
            _with(trusted_traders={"AEOF": {"release_odds_factor": 1.5, "skip_random_audit": True}}),
            "trusted_traders.AEOF.skip_random_audit: unknown key; accepted keys: release_odds_factor",
            id="no-aeo-exemption",
        ),
        pytest.param(
            _with(trusted_traders={"AEOF": {"release_odds_factor": 5}}),
            "trusted_traders.AEOF.release_odds_factor = 5: must be a number from 1 to 4",
            id="aeo-offset-too-big",
        ),
        pytest.param(
            _with(trusted_traders={"AEOF": {"release_odds_factor": 0.5}}),
            "trusted_traders.AEOF.release_odds_factor = 0.5: must be a number from 1 to 4",
            id="aeo-factor-below-one",
        ),
        pytest.param(
            _with(trusted_traders={"AEOF": {"release_odds_factor": True}}),
            "trusted_traders.AEOF.release_odds_factor = True: must be a number from 1 to 4",
            id="aeo-factor-bool",
        ),
        pytest.param(
            _with(trusted_traders={"AEOF": {"release_odds_factor": "2"}}),
            "trusted_traders.AEOF.release_odds_factor = '2': must be a number from 1 to 4",
            id="aeo-factor-text",
        ),
        pytest.param(
            _with(trusted_traders={"AEOF": {"release_odds_factor": float("nan")}}),
            "trusted_traders.AEOF.release_odds_factor = nan: must be a number from 1 to 4",
            id="aeo-factor-nan",
        ),
        pytest.param(
            _with(overrides={"radiation_alarm": "HOLD"}),
            "overrides.radiation_alarm = 'HOLD': must be one of REMOTE_INSPECTION, PHYSICAL_INSPECTION",
            id="bad-tier-name",
        ),
        pytest.param(
            _with(overrides={"radiation_alarm": "RELEASE"}),
            "overrides.radiation_alarm = 'RELEASE': must be one of REMOTE_INSPECTION, PHYSICAL_INSPECTION",
            id="override-cannot-release",
        ),
        pytest.param(
            _with(overrides={"weather_alarm": "PHYSICAL_INSPECTION"}),
            "overrides.weather_alarm: unknown key; accepted keys: radiation_alarm, suspected_solid_waste, "
            "document_mismatch, declared_foreign_inclusions, image_reused, image_near_copy",
            id="unknown-override",
        ),
        pytest.param(
            _with(fail_closed={"no_image": "RELEASE"}),
            "fail_closed.no_image = 'RELEASE': must be one of REMOTE_INSPECTION, PHYSICAL_INSPECTION",
            id="fail-closed-cannot-release",
        ),
        pytest.param(
            _with(random_audit={"rate": 1.5}),
            "random_audit.rate = 1.5: must be a number in [0, 1]",
            id="audit-rate",
        ),
        pytest.param(
            _with(random_audit={"rate": True}),
            "random_audit.rate = True: must be a number in [0, 1]",
            id="audit-rate-yes",
        ),
        pytest.param(
            _with(random_audit={"rate": "0.03"}),
            "random_audit.rate = '0.03': must be a number in [0, 1]",
            id="audit-rate-string",
        ),
        pytest.param(
            _with(overrides={"radiation_alarm": "REMOTE_INSPECTION"}),
            "overrides: radiation_alarm = REMOTE_INSPECTION: a radiation alarm must be "
            "PHYSICAL_INSPECTION (no remote inspection can clear it)",
            id="radiation-is-held",
        ),
        pytest.param(
            _with(
                image_tiers={
                    "at_or_above_hold": "REMOTE_INSPECTION",
                    "at_or_above_release": "PHYSICAL_INSPECTION",
                }
            ),
            "image_tiers: at_or_above_hold = REMOTE_INSPECTION is milder than at_or_above_release = "
            "PHYSICAL_INSPECTION; a higher score must never get a milder tier",
            id="image-tiers-inverted",
        ),
        pytest.param(
            _with(random_audit={"rate": 0.1, "tier": "RELEASE"}),
            "random_audit.tier = 'RELEASE': must be one of REMOTE_INSPECTION, PHYSICAL_INSPECTION",
            id="audit-tier",
        ),
        pytest.param(
            {"cargo_types": {"bulk_ore": {}}},
            "policy_version: required key is missing",
            id="missing-version",
        ),
        pytest.param(
            _with(policy_version="v 1"),
            "policy_version = 'v 1': String should match pattern '^[A-Za-z0-9][A-Za-z0-9._:+-]*$'",
            id="version-with-space",
        ),
        pytest.param(
            _with(cargo_types={}),
            "cargo_types: Dictionary should have at least 1 item after validation, not 0",
            id="no-cargo-types",
        ),
    ],
)
def test_invalid_policies_are_refused_with_the_key_path(data: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(data, source="p.yaml")
    assert str(info.value) == f"p.yaml: invalid policy: {message}"


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy({"cargo_types": {"bulk_ore": {"release_threshold": -1}}, "x": 1}, source="p")
    assert str(info.value) == (
        "p: invalid policy: policy_version: required key is missing; "
        'cargo_types.bulk_ore.release_threshold = -1: must be "model" or a number in [0, 1]; '
        "x: unknown key; accepted keys: policy_version, cargo_types, overrides, trusted_traders, "
        "random_audit, image_tiers, fail_closed"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("- a\n- b\n", "a policy must be a mapping of keys, got list", id="list"),
        pytest.param("", "a policy must be a mapping of keys, got NoneType", id="empty"),
        pytest.param(
            "policy_version: v1\ncargo_types: {bulk_ore: {}}\npolicy_version: v2\n",
            "not valid YAML: duplicate key 'policy_version'; each key may appear once\n"
            '  in "<unicode string>", line 3, column 1:\n    policy_version: v2\n    ^',
            id="duplicate-key",
        ),
        pytest.param(
            "policy_version: p\ncargo_types:\n  bulk_ore: {release_threshold: " + "9" * 5000 + "}\n",
            "not valid YAML: the value '99999999999999999999'... (5,000 characters) cannot be read: an "
            'integer of more than 4,300 digits\n  in "<unicode string>", line 3, column 33:',
            id="integer-past-pythons-limit",
        ),
        pytest.param(
            "policy_version: 2026-13-45\ncargo_types: {bulk_ore: {}}\n",
            "not valid YAML: the value '2026-13-45' cannot be read: month must be in 1..12\n"
            '  in "<unicode string>", line 1, column 17:\n    policy_version: 2026-13-45\n'
            "                    ^",
            id="a-13th-month",
        ),
        pytest.param(
            "policy_version: " + "[" * 5000 + "]" * 5000 + "\n",
            "not valid YAML: a value is nested too deeply",
            id="nested-too-deeply",
        ),
        pytest.param(
            "? [a, b]\n: 1\npolicy_version: v1\n",
            'not valid YAML: while constructing a mapping\n  in "<unicode string>", line 1, column 1:\n'
            '    ? [a, b]\n    ^\nfound unhashable key\n  in "<unicode string>", line 1, column 3:',
            id="a-list-as-a-key",
        ),
        pytest.param(
            "cargo_types:\n  {a: 1}: {}\n",
            "not valid YAML: while constructing a mapping\nfound unhashable key\n"
            '  in "<unicode string>", line 2, column 3:\n      {a: 1}: {}\n      ^',
            id="a-mapping-as-a-key",
        ),
    ],
)
def test_files_that_are_not_policies(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"{path}: {message}")  # a long line is shown in part after


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nope\.yaml: cannot read the policy file \(FileNotFoundError"):
        load_policy(tmp_path / "nope.yaml")


def test_policy_is_immutable() -> None:
    policy = parse_policy(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        policy.policy_version = "v2"  # type: ignore[misc]
    assert isinstance(policy, Policy)


@pytest.mark.parametrize(
    ("written", "value"),
    [("1e-2", 0.01), ("2.5E-1", 0.25), ("+5e-1", 0.5), ("1.0e-2", 0.01), ("0.01", 0.01), (".5", 0.5)],
)
def test_a_threshold_in_exponent_notation_is_a_number(tmp_path: Path, written: str, value: float) -> None:
    """PyYAML reads YAML 1.1, where ``1e-2`` is text: the policy was refused as "not a number"."""
    path = tmp_path / "p.yaml"
    path.write_text(
        "policy_version: t\ncargo_types:\n"
        f"  bulk_ore: {{release_threshold: {written}, hold_threshold: 0.9}}\n"
    )
    assert load_policy(path).cargo_types["bulk_ore"].release_threshold == value


def test_names_and_versions_that_look_like_numbers_stay_as_written(tmp_path: Path) -> None:
    """Only number fields read an exponent: a version 1e3 or an AEO tier 1E1 loaded before."""
    path = tmp_path / "p.yaml"
    path.write_text(
        "policy_version: 2026e1\ncargo_types:\n  20e40: {release_threshold: 5e-1}\n"
        "trusted_traders:\n  1E1: {release_odds_factor: 1.5e0}\nrandom_audit: {rate: 3e-2}\n"
    )
    loaded = load_policy(path)
    assert (loaded.version, list(loaded.cargo_types), list(loaded.trusted_traders)) == (
        "2026e1",
        ["20e40"],
        ["1E1"],
    )
    assert loaded.cargo_types["20e40"].release_threshold == 0.5
    assert (loaded.trusted_traders["1E1"].release_odds_factor, loaded.random_audit.rate) == (1.5, 0.03)
    path.write_text("policy_version: t\ncargo_types:\n  bulk_ore: {release_threshold: '0.5'}\n")
    with pytest.raises(PolicyError, match='must be "model" or a number in \\[0, 1\\]'):
        load_policy(path)  # a number quoted as text is still a typo


@pytest.mark.parametrize(
    ("random_audit", "warned"), [(None, True), ({"rate": 0}, True), ({"rate": 0.01}, False)]
)
def test_a_policy_that_audits_nothing_at_random_says_so(random_audit: dict | None, warned: bool) -> None:
    data: dict[str, Any] = {"policy_version": "t", "cargo_types": {"bulk_ore": {}}}
    if random_audit is not None:
        data["random_audit"] = random_audit
    said = parse_policy(data).warnings()
    assert bool(said) is warned
    if warned:
        assert said[0].startswith("policy t picks no shipment for a random audit (random_audit.rate is 0")
    assert load_policy(default_policy_path()).warnings() == []


# -- the models a policy approves --------------------------------------------------------------------

ORE_MODEL = "bulk_ore-lite0-3f2a9c1b0d4e5f6a"


def _approving(*models: str, cargo: str = "bulk_ore") -> Policy:
    return parse_policy({"policy_version": "v1", "cargo_types": {cargo: {"models": list(models)}}})


def test_an_unchanged_policy_keeps_its_hash() -> None:
    """The approved-models key and its fail-closed tier came after policies were recorded in audit
    trails: a policy that lists no models hashes as it did before (the example's hash then)."""
    assert load_policy(default_policy_path()).sha256 == (
        "348c3b5bdf546ffe4eb891bb82ee6218e5cdff1553c0d0ba6479a3052a6b93ea"
    )
    # where models are listed, the unapproved model's tier can decide, so it counts
    strict = parse_policy(
        {
            **_approving(ORE_MODEL).model_dump(mode="json"),
            "fail_closed": {"unapproved_model": "PHYSICAL_INSPECTION"},
        }
    )
    assert strict.sha256 != _approving(ORE_MODEL).sha256
    assert _approving(ORE_MODEL).sha256 != _approving("bulk_ore-lite0-000000000000000a").sha256
    assert _approving(ORE_MODEL).sha256 != parse_policy(MINIMAL).sha256


@pytest.mark.parametrize(
    ("models", "message"),
    [
        pytest.param(
            ORE_MODEL,
            "cargo_types.bulk_ore.models = 'bulk_ore-lite0-3f2a9c1b0d4e5f6a': must be a non-empty list of "
            "model ids (as model.json's model_id names them, e.g. [bulk_ore-lite0-3f2a9c1b0d4e5f6a]); leave "
            "the key out to take any model's scores",
            id="a-string-not-a-list",
        ),
        pytest.param(
            [],
            "cargo_types.bulk_ore.models: must be a non-empty list of model ids (as model.json's model_id "
            "names them, e.g. [bulk_ore-lite0-3f2a9c1b0d4e5f6a]); leave the key out to take any model's "
            "scores",
            id="empty",
        ),
        pytest.param(
            ["lite0"],
            "cargo_types.bulk_ore.models: 'lite0' is not a model id: <cargo type>-<backbone>-<16 hex "
            "digits> of at most 200 characters, as model.json's model_id names it",
            id="not-an-id",
        ),
        pytest.param(
            ["bulk_ore-lite0-3F2A9C1B0D4E5F6A"],
            "cargo_types.bulk_ore.models: 'bulk_ore-lite0-3F2A9C1B0D4E5F6A' is not a model id: <cargo type>-"
            "<backbone>-<16 hex digits> of at most 200 characters, as model.json's model_id names it",
            id="upper-case-hex",
        ),
        pytest.param(
            [7],
            "cargo_types.bulk_ore.models: 7 is not a model id: <cargo type>-<backbone>-<16 hex digits> of "
            "at most 200 characters, as model.json's model_id names it",
            id="a-number",
        ),
        pytest.param(
            [ORE_MODEL, ORE_MODEL],
            "cargo_types.bulk_ore.models: 'bulk_ore-lite0-3f2a9c1b0d4e5f6a' is listed twice; list each model "
            "once",
            id="twice",
        ),
        pytest.param(
            ["vacuum_pack-lite0-3f2a9c1b0d4e5f6a"],
            "cargo_types.bulk_ore.models: 'vacuum_pack-lite0-3f2a9c1b0d4e5f6a' is not a bulk_ore model id "
            "(bulk_ore-<backbone>-<16 hex digits>: a model id starts with the cargo type it was trained "
            "for, and a model scores only its own cargo)",
            id="another-cargo's-model",
        ),
        pytest.param(
            ["bulk_ore-3f2a9c1b0d4e5f6a"],
            "cargo_types.bulk_ore.models: 'bulk_ore-3f2a9c1b0d4e5f6a' is not a bulk_ore model id (bulk_ore-"
            "<backbone>-<16 hex digits>: a model id starts with the cargo type it was trained for, and a "
            "model scores only its own cargo)",
            id="no-backbone",
        ),
        pytest.param(
            ["lite0-3f2a9c1b0d4e5f6a"],
            "cargo_types.bulk_ore.models: 'lite0-3f2a9c1b0d4e5f6a' is not a bulk_ore model id (bulk_ore-"
            "<backbone>-<16 hex digits>: a model id starts with the cargo type it was trained for, and a "
            "model scores only its own cargo)",
            id="no-cargo-type",
        ),
        pytest.param(
            ["bulk_ore-lite-0-3f2a9c1b0d4e5f6a"],
            "cargo_types.bulk_ore.models: 'bulk_ore-lite-0-3f2a9c1b0d4e5f6a' is not a bulk_ore model id "
            "(bulk_ore-<backbone>-<16 hex digits>: a model id starts with the cargo type it was trained for, "
            "and a model scores only its own cargo)",
            id="a-hyphen-in-the-backbone",
        ),
        # formats 5 and 6 named a model by 8 hex digits of its content hash: 32 bits, which a forged
        # model folder matched in minutes of CPU; a policy approves by id alone, so it takes none
        pytest.param(
            ["bulk_ore-lite0-3f2a9c1b"],
            "cargo_types.bulk_ore.models: 'bulk_ore-lite0-3f2a9c1b' is a model id of 8 hex digits, from a "
            "model trained before this version, which a forged model folder can be made to match in "
            "minutes of CPU; train the model again, and list the id of 16 hex digits that `clearsight "
            "train` prints",
            id="8-hex-of-a-format-6-model",
        ),
        pytest.param(
            [ORE_MODEL, "bulk_ore-lite1-0000000a"],
            "cargo_types.bulk_ore.models: 'bulk_ore-lite1-0000000a' is a model id of 8 hex digits, from a "
            "model trained before this version, which a forged model folder can be made to match in "
            "minutes of CPU; train the model again, and list the id of 16 hex digits that `clearsight "
            "train` prints",
            id="8-hex-beside-a-16-hex-one",
        ),
        pytest.param(
            ["bulk_ore-lite0-3f2a9c1b0d4e"],
            "cargo_types.bulk_ore.models: 'bulk_ore-lite0-3f2a9c1b0d4e' is not a model id: <cargo type>-"
            "<backbone>-<16 hex digits> of at most 200 characters, as model.json's model_id names it",
            id="12-hex",
        ),
    ],
)
def test_approved_models_are_refused_unless_a_list_of_this_cargo_s_ids(models: Any, message: str) -> None:
    data = {"policy_version": "v1", "cargo_types": {"bulk_ore": {"models": models}}}
    with pytest.raises(PolicyError) as info:
        parse_policy(data, source="p.yaml")
    assert str(info.value) == f"p.yaml: invalid policy: {message}"


def test_every_backbone_s_models_can_be_approved() -> None:
    import models.backbones  # noqa: F401 - registers the backbones
    from models.registry import list_models

    assert list_models()
    for backbone in list_models():
        assert _approving(f"bulk_ore-{backbone}-0123abcd0123abcd").cargo_types["bulk_ore"].models


def test_a_cargo_type_with_hyphens_lists_its_own_models() -> None:
    policy = _approving("crude-oil-lite0-000000000000000a", cargo="crude-oil")
    assert policy.cargo_types["crude-oil"].models == ("crude-oil-lite0-000000000000000a",)


@pytest.mark.parametrize(
    ("loaded", "refused"),
    [
        ({"bulk_ore": ORE_MODEL}, None),
        ({"bulk_ore": ORE_MODEL, "vacuum_pack": "vacuum_pack-lite0-00000001"}, None),  # lists none for packs
        ({}, None),
        ({"bulk_ore": "bulk_ore-lite0-000000000000000a"}, "bulk_ore-lite0-000000000000000a for bulk_ore"),
        # a model trained before format 7: its id cannot be listed, so the way out is to retrain it
        ({"bulk_ore": "bulk_ore-lite0-3f2a9c1b"}, "bulk_ore-lite0-3f2a9c1b for bulk_ore"),
    ],
)
def test_check_models_refuses_a_model_the_policy_does_not_approve(
    loaded: dict[str, str], refused: str | None
) -> None:
    policy = _approving(ORE_MODEL)
    if refused is None:
        policy.check_models(loaded)
        return
    with pytest.raises(PolicyError) as info:
        policy.check_models(loaded)
    short = loaded["bulk_ore"].endswith("-3f2a9c1b")
    assert str(info.value) == (
        f"policy v1 does not approve the model loaded: {refused} (approved: {ORE_MODEL}). Its scores would "
        "never release cargo; load an approved model, or list this one under "
        "cargo_types.<cargo type>.models in a new policy_version"
        + (
            " (bulk_ore-lite0-3f2a9c1b: a model id of 8 hex digits, from a model trained before this "
            "version, cannot be listed; train the model again)"
            if short
            else ""
        )
    )
