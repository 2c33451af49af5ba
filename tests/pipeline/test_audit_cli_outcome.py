"""`clearsight audit outcome` is held to the API's rules for an outcome already recorded and for the
decision judged: a second outcome only with --amend, and --decision-seq refused once decided again."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.audit import AuditStore
from pipeline.verdicts import ShipmentDecision, Tier

sys.path.insert(0, str(Path(__file__).parent))
import audit_builders  # noqa: E402
from audit_builders import cli_key  # noqa: E402


def decision(shipment: str, tier: Tier) -> ShipmentDecision:
    return audit_builders.decision(shipment, tier, score=0.9, rule="score.hold")


CASES = [
    # (name, arguments after the officer's first outcome on decision 1, exit code, said, outcome then)
    ("second-refused", ["--clean"], 2,
     "already has an outcome for decision 1 (found wet_patch, recorded by o-1 at", "wet_patch"),
    ("second-amends", ["--clean", "--amend"], 0, "recorded outcome of S1 (clean) as record 3", "clean"),
    ("same-decision-refused", ["--clean", "--decision-seq", "1"], 2,
     "pass --amend to record a correction", "wet_patch"),
    ("same-decision-amends", ["--clean", "--decision-seq", "1", "--amend"], 0, "as record 3", "clean"),
    ("no-such-decision", ["--clean", "--decision-seq", "7", "--amend"], 2,
     "shipment 'S1' has no decision 7", "wet_patch"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "code", "said", "then"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_outcome_overwrites_an_outcome_only_when_told(
    db_url: str, capsys: pytest.CaptureFixture[str], args: list[str], code: int, said: str, then: str
) -> None:
    from pipeline.cli import app, run

    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION))
    first = [
        "audit",
        "outcome",
        "S1",
        "--officer",
        "o-1",
        "--found",
        "wet_patch",
        "--new-type",
        "--db",
        db_url,
    ]
    assert run(app, first) == 0
    capsys.readouterr()
    assert run(app, ["audit", "outcome", "S1", "--officer", "o-2", *args, "--db", db_url]) == code
    captured = capsys.readouterr()
    assert said in " ".join((captured.out + captured.err).split())
    if code:
        assert captured.err.startswith("Error: ")
    with AuditStore.open(db_url, create=False) as store:
        outcome = store.get("S1").outcome  # type: ignore[union-attr]
        assert outcome is not None and (outcome.found or "clean") == then
        assert store.verify().records_checked == (3 if code == 0 else 2)


def test_cli_outcome_for_a_decision_since_superseded_is_refused(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import app, run

    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S1", Tier.REMOTE_INSPECTION))
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION))  # decided again: record 2
    argv = ["audit", "outcome", "S1", "--officer", "o-1", "--clean", "--db", db_url]
    assert run(app, [*argv, "--decision-seq", "1"]) == 2
    assert "was decided again since decision 1: its latest decision is 2" in capsys.readouterr().err
    assert run(app, [*argv, "--decision-seq", "2"]) == 0
