"""`clearsight policy check`: a policy validated and shown with the models it will decide with."""

from __future__ import annotations

import shutil
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
    lines = out.splitlines()
    assert lines[0] == f"policy 2026.12.2-example, sha256 {policy.sha256} (every decision records both)"
    assert lines[1:8] == [
        "bulk_ore",
        "  model: none given (--model shows the thresholds as numbers)",
        "  released below: the model's own threshold",
        "  held at or above: the model's own threshold",
        "  AEOF traders released below: the release threshold's (odds x1.5)",
        "  AEOS traders released below: the release threshold's (odds x1.25)",
        "  models approved: any (none listed)",
    ]
    assert "  held at or above: 0.9000 (the policy's)" in lines
    assert "random audit: 3% of all shipments, inspected at least at REMOTE_INSPECTION" in lines
    assert "overrides: PHYSICAL_INSPECTION: radiation_alarm, suspected_solid_waste" in out
    assert lines[-1] == "policy 2026.12.2-example is valid"


def _block(out: str, cargo: str) -> list[str]:
    lines = out.splitlines()
    start = lines.index(cargo) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


def test_thresholds_come_to_numbers_with_the_models(
    models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy = load_policy(default_policy_path())
    ore, pack = read_card(models["ore"]), read_card(models["pack"])
    code, out, err = _check(
        capsys, str(default_policy_path()), "--model", str(models["ore"]), "--model", str(models["pack"])
    )
    assert (code, err) == (0, ""), err
    release, hold = ore["thresholds"]["release"], ore["thresholds"]["hold"]
    raised = min(policy.trusted_traders["AEOF"].raised(release, hold), hold)
    assert _block(out, "bulk_ore")[:4] == [
        f"  model: {ore['model_id']}",
        f"  released below: {release:.4f} (the model's own)",
        f"  held at or above: {hold:.4f} (the model's own)",
        f"  AEOF traders released below: {raised:.4f} (odds x1.5)",
    ]
    assert (
        f"  held at or above: 0.9000 (the policy's; the model's own: {pack['thresholds']['hold']:.4f})"
        in (_block(out, "vacuum_pack"))
    )


@pytest.mark.parametrize(
    ("rules", "shown"),
    [
        pytest.param(  # a score at or above hold is held first: nothing goes to the review tier
            "{release_threshold: 0.9}",
            [
                "  released below: {hold:.4f} (set at 0.9000 (the policy's), above the hold threshold: no "
                "score is sent to the review tier)",
                "  AEOF traders released below: {hold:.4f} (odds x2)",
            ],
            id="release-above-the-model-s-hold",
        ),
        pytest.param(  # nothing released on its score, whoever sends it
            "{release_threshold: 0}",
            ["  released below: 0.0000 (the policy's; the model's own: {release:.4f})",
             "  AEOF traders released below: 0.0000 (odds x2)"],
            id="release-zero",
        ),
    ],
)  # fmt: skip
def test_thresholds_are_shown_as_decide_applies_them(
    tmp_path: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str], rules: str, shown: list[str]
) -> None:
    card = read_card(models["ore"])
    policy = tmp_path / "p.yaml"
    traders = "trusted_traders: {AEOF: {release_odds_factor: 2}}\n"
    policy.write_text(f"policy_version: t\n{traders}cargo_types:\n  bulk_ore: {rules}\n")
    code, out, err = _check(capsys, str(policy), "--model", str(models["ore"]))
    assert (code, err) == (0, ""), err
    block = _block(out, "bulk_ore")
    for line in shown:
        assert line.format(**card["thresholds"]) in block, (line, block)


def test_names_are_shown_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Cargo and trader names were read as rich markup: tanks[/b] crashed, pallets[euro] lost its tag."""
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "policy_version: t\ntrusted_traders: {'[i]AEOF': {release_odds_factor: 2}}\n"
        "cargo_types:\n  'tanks[/b]': {}\n  'pallets[euro]': {}\n"
    )
    code, out, err = _check(capsys, str(policy))
    assert (code, err) == (0, ""), err
    assert {"tanks[/b]", "pallets[euro]"} <= set(out.splitlines())
    assert "  [i]AEOF traders released below: the release threshold's (odds x2)" in out.splitlines()


def test_a_small_audit_rate_is_shown_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("policy_version: t\nrandom_audit: {rate: 0.0004}\ncargo_types:\n  bulk_ore: {}\n")
    assert _check(capsys, str(policy))[1].count("random audit: 0.04% of all shipments") == 1


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
            "policy_version: t\ncargo_types:\n  bulk_ore: {models: [bulk_ore-lite0-000000000000000a]}\n",
            ["ore"],
            "Error: policy t does not approve the model loaded: {ore} for bulk_ore (approved: "
            "bulk_ore-lite0-000000000000000a)",
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
            ["no-weights"],
            "Error: '{no_weights}/weights.safetensors' is missing",
            id="weights-missing",
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
    no_weights = tmp_path / "no-weights"  # a card whose weights are gone: serve refuses it
    shutil.copytree(models["ore"], no_weights)
    (no_weights / "weights.safetensors").unlink()
    dirs = {**models, "no-weights": no_weights}
    args = [arg for name in given for arg in ("--model", str(dirs[name]))]
    code, out, err = _check(capsys, str(policy), *args)
    assert code == 2
    ore = read_card(models["ore"])["model_id"]
    assert err.startswith(
        said.format(ore=ore, ore_dir=models["ore"], policy=policy, no_weights=no_weights)
    ), err
    assert "is valid" not in out
    if given == ["ore"]:  # the lines say which model is not approved before the error does
        assert f"  model: {ore}: NOT APPROVED by this policy" in out.splitlines()
