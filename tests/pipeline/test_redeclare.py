"""Declarations taken again from a manifest: `clearsight decide --manifest`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datasets.errors import DatasetFormatError
from datasets.manifest import write_manifest
from pipeline.redeclare import Redeclared, read_declarations, redeclare
from pipeline.verdicts import ImageVerdict

POLICY = "policy_version: p\ncargo_types:\n  bulk_ore: {release_threshold: 0.5, hold_threshold: 0.8}\n"


def _row(shipment: str, path: str, score: float, **declared: object) -> ImageVerdict:
    return ImageVerdict(
        path=path,
        sha256=f"{abs(hash(path)):064x}"[-64:],
        shipment_id=shipment,
        cargo_type="bulk_ore",
        score=score,
        threshold=0.5,
        hold_threshold=0.8,
        model_id="ore-m1",
        declaration={"shipment_id": shipment, "cargo_type": "bulk_ore", **declared},
    )


def test_a_shipments_rows_merged_as_the_scorer_merges_them(tmp_path: Path) -> None:
    """A flag on any row of the shipment counts, listed image or not: one raised on a row whose
    image was never scored must not be lost."""
    manifest = tmp_path / "m.csv"
    write_manifest(
        manifest,
        [
            {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "trader_id": "T1"},
            {"path": "b.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "radiation_alarm": True},
            {"path": "c.png", "shipment_id": "S9", "cargo_type": "bulk_ore"},
        ],
    )
    declared = read_declarations(manifest)
    assert (declared["S1"]["radiation_alarm"], declared["S1"]["trader_id"]) == (True, "T1")
    done = Redeclared()
    rows = list(redeclare([_row("S1", "a.png", 0.1), _row("S2", "x.png", 0.1)], declared, done))
    assert rows[0].declaration == declared["S1"] and rows[1].declaration["cargo_type"] == "bulk_ore"
    assert (done.shipments, done.unscored) == ({"S1"}, {"S9"})


def test_a_manifest_with_a_flag_spelt_otherwise_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "RadiationAlarm": true}\n'
    )
    with pytest.raises(DatasetFormatError, match="RadiationAlarm"):
        read_declarations(manifest)


def test_cli_decide_takes_an_alarm_raised_after_scoring_from_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The scorer refuses to resume over a changed declaration, and deciding from the rows used the
    declaration as scored: a radiation alarm raised since left the shipment released unless the
    whole archive was scored again."""
    from pipeline.cli import app, run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "redeclare-test-audit-secret")
    verdicts = tmp_path / "rows.jsonl"
    rows = [_row("S1", "a.png", 0.1), _row("S1", "b.png", 0.2), _row("S2", "c.png", 0.1)]
    verdicts.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY + "random_audit: {rate: 0.0001}\n")
    manifest = tmp_path / "m.csv"
    write_manifest(
        manifest,
        [
            {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"},
            {"path": "b.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "radiation_alarm": True},
            {"path": "d.png", "shipment_id": "S3", "cargo_type": "bulk_ore"},
        ],
    )
    base = ["decide", "--verdicts", str(verdicts), "--policy", str(policy)]
    assert run(app, [*base, "--out", "before.jsonl"]) == 0
    assert run(app, [*base, "--out", "after.jsonl", "--manifest", str(manifest)]) == 0
    captured = capsys.readouterr()

    def tiers(name: str) -> dict[str, str]:
        return {
            d["shipment_id"]: d["tier"] for d in map(json.loads, (tmp_path / name).read_text().splitlines())
        }

    assert tiers("before.jsonl") == {"S1": "RELEASE", "S2": "RELEASE"}
    assert tiers("after.jsonl") == {"S1": "PHYSICAL_INSPECTION", "S2": "RELEASE"}
    assert "1 shipments decided under their declaration in" in " ".join(captured.out.split())
    said = " ".join(captured.err.split())
    assert (
        "1 shipment(s) of --manifest have no rows in --verdicts (never scored), so they were not decided"
        in said
    )
    decided = json.loads((tmp_path / "after.jsonl").read_text().splitlines()[0])
    assert decided["declaration"]["radiation_alarm"] is True
    assert "override.radiation_alarm" in {r["rule"] for r in decided["reasons"]}
