"""`clearsight policy check`: a policy validated and shown with the models it will decide with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from score_fakes import tiny_model_dir  # noqa: E402

from models.artifact import read_card  # noqa: E402
from pipeline.cli import app, run  # noqa: E402
from pipeline.policy import default_policy_path, load_policy  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "ore": tiny_model_dir(root, "bulk_ore", seed=0),
        "pack": tiny_model_dir(root, "vacuum_pack", seed=1),
        "oil": tiny_model_dir(root, "crude_oil", seed=2),
    }


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(app, ["policy", "check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_example_policy_is_shown_with_its_hash(capsys: pytest.CaptureFixture[str]) -> None:
    policy = load_policy(default_policy_path())
    code, out, err = _check(capsys, str(default_policy_path()))
    assert (code, err) == (0, "")
    assert f"sha256 {policy.sha256} (every decision records it)" in out
    assert "random audit: 3.0% of all shipments, inspected at least at REMOTE_INSPECTION" in out
    assert "overrides: PHYSICAL_INSPECTION: radiation_alarm, suspected_solid_waste" in out
    assert "odds x1.5" in out and "the model's own" in out
    assert out.rstrip().endswith("policy 2026.12.2-example is valid")


def test_thresholds_come_to_numbers_with_the_models(
    models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy = load_policy(default_policy_path())
    ore, pack = read_card(models["ore"]), read_card(models["pack"])
    code, out, err = _check(
        capsys, str(default_policy_path()), "--model", str(models["ore"]), "--model", str(models["pack"])
    )
    assert (code, err) == (0, ""), err
    ore_row = next(line for line in out.splitlines() if "bulk_ore" in line)
    release, hold = ore["thresholds"]["release"], ore["thresholds"]["hold"]
    raised = policy.trusted_traders["AEOF"].raised(release, hold)
    for shown in (
        ore["model_id"],
        f"{release:.4f} (the model's own)",
        f"{hold:.4f} (the model's own)",
        f"{raised:.4f}",
    ):
        assert shown in ore_row, (shown, ore_row)
    pack_row = next(line for line in out.splitlines() if "vacuum_pack" in line)
    assert f"0.9000 (the model's own: {pack['thresholds']['hold']:.4f})" in pack_row


def test_a_model_of_a_cargo_type_without_rules_is_warned_about(
    models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    oil = read_card(models["oil"])["model_id"]
    code, out, _ = _check(capsys, str(default_policy_path()), "--model", str(models["oil"]))
    assert code == 0
    assert (
        f"Warning: the policy has no rules for cargo type 'crude_oil' of model {oil}: its shipments are "
        "never released (fail_closed.unknown_cargo_type)"
    ) in out


@pytest.mark.parametrize(
    ("policy_text", "given", "said"),
    [
        pytest.param(
            "policy_version: t\ncargo_types:\n  bulk_ore: {models: [bulk_ore-lite0-0000000a]}\n",
            ["ore"],
            "Error: policy t does not approve the model loaded: {ore} for bulk_ore (approved: "
            "bulk_ore-lite0-0000000a)",
            id="unapproved",
        ),
        pytest.param(
            "policy_version: t\ncargo_types:\n  bulk_ore: {release_threshold: 2}\n",
            [],
            'Error: {policy}: invalid policy: cargo_types.bulk_ore.release_threshold = 2: must be "model" '
            "or a number in [0, 1]",
            id="invalid",
        ),
        pytest.param(
            "policy_version: t\ncargo_types:\n  bulk_ore: {}\n",
            ["ore", "ore"],
            "Error: --model '{ore_dir}' and the model {ore} are both bulk_ore models; give one model per "
            "cargo type, as serve and score load them",
            id="two-of-one-cargo",
        ),
    ],
)
def test_what_serve_and_score_would_refuse_is_refused(
    tmp_path: Path,
    models: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    policy_text: str,
    given: list[str],
    said: str,
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(policy_text)
    args = [arg for name in given for arg in ("--model", str(models[name]))]
    code, out, err = _check(capsys, str(policy), *args)
    assert code == 2
    ore = read_card(models["ore"])["model_id"]
    assert err.startswith(said.format(ore=ore, ore_dir=models["ore"], policy=policy)), err
    assert "is valid" not in out
    if given == ["ore"]:  # the table says which model is not approved before the error does
        assert f"({ore}: NOT APPROVED)" in out
