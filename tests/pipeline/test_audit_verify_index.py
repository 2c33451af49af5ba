"""Verification of the image indexes against the chain, on SQLite and the real PostgreSQL: a row of a
decision's pictures missing, altered or extra names the record, as the chain's own damage does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.audit import AuditStore
from pipeline.audit.writing import decision_json
from pipeline.verdicts import ShipmentDecision, Tier

sys.path.insert(0, str(Path(__file__).parent))
import audit_builders  # noqa: E402
from audit_builders import sql  # noqa: E402

_P = "0123456789abcdef" + "55" * 32  # a perceptual hash: 16 coarse hex digits, 64 fine


def decision(shipment: str, sha: str, tier: Tier = Tier.RELEASE, phash: str | None = _P) -> ShipmentDecision:
    return audit_builders.decision(shipment, tier, sha=sha, phash=phash, reason_threshold=0.5)


@pytest.fixture
def held(db_url: str) -> str:
    """S1 released (seq 1), S2 held for physical inspection (seq 2), an outcome of S1 (seq 3)."""
    with AuditStore.open(db_url) as store:
        store.record(decision("S1", "aa" * 32))
        store.record(decision("S2", "ef" * 32, Tier.PHYSICAL_INSPECTION))
        store.record_outcome("S1", found=None, officer="o-1")
    return db_url


_EXACT = "INSERT INTO audit_image_index (sha256, shipment_id, seq) VALUES ('{}', '{}', {})"
TAMPERING = [
    # (name, statements, first bad record, problem, what the message says)
    (
        "held-picture-deleted",
        ["DELETE FROM audit_image_index WHERE shipment_id = 'S2'"],
        2,
        "deleted",
        "record 2: audit_image_index lacks the row of its picture (sha256 '" + "ef" * 32 + "')",
    ),
    (
        "held-likeness-deleted",
        ["DELETE FROM audit_image_likeness WHERE shipment_id = 'S2'"],
        2,
        "deleted",
        f"record 2: audit_image_likeness lacks the row of its picture (phash '{_P}')",
    ),
    (
        "moved-to-another-shipment",
        ["UPDATE audit_image_index SET shipment_id = 'S9' WHERE seq = 2"],
        2,
        "altered",
        "record 2: a row of audit_image_index says shipment_id 'S9' where its content gives 'S2'",
    ),
    (
        "band-altered",
        ["UPDATE audit_image_likeness SET band0 = band0 + 1 WHERE seq = 1"],
        1,
        "altered",
        "record 1: a row of audit_image_likeness says band0",
    ),
    (
        "extra-picture-of-a-decision",
        [_EXACT.format("bb" * 32, "S1", 1)],
        1,
        "inserted",
        "record 1: audit_image_index holds a row its content does not give (sha256 '" + "bb" * 32 + "')",
    ),
    (
        "row-for-an-outcome",
        [_EXACT.format("bb" * 32, "S1", 3)],
        3,
        "inserted",
        "record 3 is not a decision (kind 'outcome'), yet audit_image_index holds a row for it",
    ),
    (
        "row-past-the-head",
        [_EXACT.format("bb" * 32, "S7", 9)],
        9,
        "inserted",
        "audit_image_index holds a row for record 9, which the chain does not hold (its head is record 3)",
    ),
    (
        "row-before-the-first",
        [_EXACT.format("bb" * 32, "S7", 0)],
        0,
        "inserted",
        "audit_image_index holds a row for record 0, which the chain does not hold",
    ),
]


@pytest.mark.parametrize(
    ("statements", "first_bad", "problem", "said"), [t[1:] for t in TAMPERING], ids=[t[0] for t in TAMPERING]
)
def test_verify_names_the_record_whose_index_rows_were_tampered_with(
    held: str, statements: list[str], first_bad: int, problem: str, said: str
) -> None:
    with AuditStore.open(held, create=False) as store:
        assert store.verify().ok
        for statement in statements:
            sql(held, statement)
        report = store.verify()
    assert (report.ok, report.first_bad, report.problem, report.in_index) == (False, first_bad, problem, True)
    assert said in report.message


def test_a_held_picture_s_index_rows_deleted_fail_cli_verify(
    held: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deleting them let the same picture, sent again under a new id, be released while verify said
    "chain intact"."""
    from pipeline.cli import app, run

    sql(held, "DELETE FROM audit_image_index WHERE shipment_id = 'S2'")
    assert run(app, ["audit", "verify", "--db", held]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "image index broken at record 2 (deleted): record 2: audit_image_index lacks the row" in err


def test_an_intact_store_verifies_with_its_index(held: str) -> None:
    with AuditStore.open(held) as store:
        store.record(decision("S4", "aa" * 32))  # a picture sent again: a second row of its hash
        report = store.verify()
    assert (report.ok, report.message) == (True, "4 records verified, chain intact")


_CD, _EF = "cd" * 32, "ef" * 32  # the sha256 the decisions are recorded under, and another
_PAIR = "INSERT INTO audit_policy_versions (policy_version, policy_sha256, seq) VALUES ('{}', '{}', {})"
POLICY_TAMPERING = [
    # (name, statements, first bad record, problem, what the message says)
    (
        "pair-deleted",
        ["DELETE FROM audit_policy_versions"],
        1,
        "deleted",
        "record 1: audit_policy_versions lacks the row of its policy, the first decision under it "
        f"(policy_version 'p1', policy_sha256 '{_CD}'): a policy version missing from the index passes "
        "when recorded under another policy_sha256",
    ),
    (
        "sha256-altered",
        [f"UPDATE audit_policy_versions SET policy_sha256 = '{_EF}'"],
        1,
        "altered",
        f"record 1: a row of audit_policy_versions says policy_sha256 '{_EF}' where its content gives "
        f"'{_CD}'",
    ),
    (
        "first-decision-moved",
        ["UPDATE audit_policy_versions SET seq = 2"],
        1,
        "deleted",
        "record 1: audit_policy_versions lacks the row of its policy",
    ),
    (
        "pair-added",
        [_PAIR.format("p1", _EF, 2)],
        2,
        "inserted",
        f"record 2: audit_policy_versions holds a row its content does not give (policy_version 'p1', "
        f"policy_sha256 '{_EF}')",
    ),
    (
        "pair-for-an-outcome",
        [_PAIR.format("p2", _EF, 3)],
        3,
        "inserted",
        "record 3 is not a decision (kind 'outcome'), yet audit_policy_versions holds a row for it",
    ),
    (
        "pair-past-the-head",
        [_PAIR.format("p2", _EF, 9)],
        9,
        "inserted",
        "audit_policy_versions holds a row for record 9, which the chain does not hold (its head is "
        "record 3)",
    ),
]


@pytest.mark.parametrize(
    ("statements", "first_bad", "problem", "said"),
    [t[1:] for t in POLICY_TAMPERING],
    ids=[t[0] for t in POLICY_TAMPERING],
)
def test_verify_names_the_record_whose_policy_index_row_was_tampered_with(
    held: str, statements: list[str], first_bad: int, problem: str, said: str
) -> None:
    with AuditStore.open(held, create=False) as store:
        assert store.verify().ok
        for statement in statements:
            sql(held, statement)
        report = store.verify()
    assert (report.ok, report.first_bad, report.problem) == (False, first_bad, problem)
    assert (report.in_index, report.index) == (True, "policy index")
    assert said in report.message


def test_a_policy_pair_deleted_lets_the_version_pass_under_other_rules_and_fails_cli_verify(
    held: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The write's check reads the index alone: a pair deleted from it lets its version be recorded
    under another sha256, and only verify tells."""
    from pipeline.cli import app, run

    sql(held, "DELETE FROM audit_policy_versions")
    reused = decision("S4", "aa" * 32).model_copy(update={"policy_sha256": _EF})
    with AuditStore.open(held) as store:
        assert store.record(reused).seq == 4
    assert run(app, ["audit", "verify", "--db", held]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "policy index broken at record 1 (deleted): record 1: audit_policy_versions lacks the row" in err


def test_a_decision_appended_without_its_policy_pair_is_named(held: str) -> None:
    """As a writer that does not keep the index appends one (an older Clearsight left running through
    the upgrade, or a database writer): its version was not checked, and verify names it."""
    # no picture: its image index rows would be named missing first
    later = decision("S5", "aa" * 32).model_copy(update={"policy_version": "p9", "images": []})
    content = {
        "kind": "decision",
        "shipment_id": "S5",
        "idempotency_key": None,
        "created_at": later.decided_at,
        "decision": decision_json(later),
    }
    assert audit_builders.append_forged(held, content, None) == 4
    with AuditStore.open(held, create=False) as store:
        report = store.verify()
    assert (report.ok, report.first_bad, report.problem) == (False, 4, "deleted")
    assert report.index == "policy index"
    assert "(policy_version 'p9', policy_sha256 '" + _CD + "')" in report.message
