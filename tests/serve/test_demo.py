"""`clearsight demo` (the README's main command) end to end, small, twice over the same folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from serve.cli import app, run  # the pipeline's CLI with `serve` and `demo` added


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_again_over_its_own_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLEARSIGHT_AUDIT_SECRET", raising=False)
    # the demo allows itself the development secret in this process's environment, for its steps
    monkeypatch.setenv("CLEARSIGHT_ALLOW_DEVELOPMENT_AUDIT_SECRET", "0")
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--size", "64", "--train-good", "10"]
    for attempt in ("first", "again"):  # a newcomer runs it twice: nothing of the first run refuses
        assert run(app, argv) == 0, f"{attempt}: {capsys.readouterr().err[-2000:]}"
        printed = capsys.readouterr().out
        assert "HTTP round trip: shipment HTTP-" in printed
        assert "held or audited shipments inspected, each finding taken from the synthetic ground truth" in (
            " ".join(printed.split())
        )
        # and takes it back: the tests after it in this process recorded under the public secret
        assert os.environ["CLEARSIGHT_ALLOW_DEVELOPMENT_AUDIT_SECRET"] == "0"
    for name in ("preview.png", "scores.jsonl", "scores.decisions.jsonl", "audit.db", "trader_register.csv"):
        assert (out / name).is_file(), name
    for cargo in ("bulk_ore", "vacuum_pack"):
        assert (out / "models" / cargo / "model.json").is_file()
        assert (out / "reports" / cargo / "report.html").is_file()
    # the officers' simulated findings reach the field report: every held shipment of the batch
    field = json.loads((out / "field" / "field_report.json").read_text())["by_cargo_type"]["all cargo"]
    batch = [json.loads(line) for line in (out / "scores.decisions.jsonl").read_text().splitlines()]
    assert field["holds_inspected"] + field["random_audits_inspected"] == sum(
        d["tier"] != "RELEASE" for d in batch
    )
    assert (out / "field" / "field_report.html").is_file()
    http = json.loads((out / "http_decision.json").read_text())
    receipt, record = http["receipt"], http["record"]
    assert "decision" not in receipt and receipt["tier"] == record["decision"]["tier"]  # the submitter's view
    assert record["decision"]["submitted_by"].startswith("submitter:")
    register = (out / "trader_register.csv").read_text().splitlines()
    assert register[0] == "trader_id,aeo_tier,submitters" and len(register) > 1
    # the run's submitter sends every trader's shipments: the register names its key, not the key
    assert {line.rsplit(",", 1)[1] for line in register[1:]} == {record["decision"]["submitted_by"]}
