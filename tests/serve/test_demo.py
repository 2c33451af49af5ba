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


def _a_real_audit_trail(folder: Path) -> bytes:
    """An audit store made in ``folder/audit.db`` (not by the demo); its bytes, to compare after."""
    from pipeline.audit import AuditStore

    folder.mkdir(parents=True, exist_ok=True)
    AuditStore.open(f"sqlite:///{folder / 'audit.db'}").close()
    return (folder / "audit.db").read_bytes()


def test_the_demo_refuses_a_folder_whose_audit_db_it_did_not_write_and_keeps_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    before = _a_real_audit_trail(out)
    assert run(app, ["demo", "--out", str(out), "--size", "64", "--train-good", "10"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("Error:") and str(out / "audit.db") in err
    assert "give another --out, or remove that file yourself" in err
    assert (out / "audit.db").read_bytes() == before  # the demo once deleted it first thing
    assert sorted(p.name for p in out.iterdir()) == ["audit.db"]  # refused before step 1


def test_the_demo_keeps_its_own_audit_db_when_a_step_before_the_audit_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve import demo

    out = tmp_path / "demo"
    out.mkdir()
    demo._replace_the_demos_audit_db(out)  # what a run leaves before its scoring step makes audit.db
    before = _a_real_audit_trail(out)
    (out / "data").mkdir()
    (out / "data" / "notes.txt").write_text("my own notes")  # step 1 refuses a folder it did not make
    assert run(app, ["demo", "--out", str(out), "--size", "64", "--train-good", "10"]) == 2
    assert "step 1" in capsys.readouterr().err
    assert (out / "audit.db").read_bytes() == before
    # the step that records replaces the demo's own, files beside it included
    (out / "audit.db-wal").write_bytes(b"")
    demo._replace_the_demos_audit_db(out)
    assert not (out / "audit.db").exists() and not (out / "audit.db-wal").exists()
    assert (out / demo._DEMO_MARK).is_file()
