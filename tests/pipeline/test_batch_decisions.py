"""Batch decisions recorded in the audit store look their pictures up there first, as the service does."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.audit import AuditStore
from pipeline.batch_decisions import decide_and_record
from pipeline.policy import parse_policy
from pipeline.score.completion import record_completion
from pipeline.score.summary import ScoreSummary
from pipeline.settings import Settings, completion_seal_key
from pipeline.verdicts import ImageVerdict, ShipmentDecision, Tier

KEY = b"test-audit-key"
POLICY = parse_policy(
    {"policy_version": "t-1", "cargo_types": {"bulk_ore": {}}, "random_audit": {"rate": 0.0}}
)
_P = "94e46b5a2e6d3992" + "3c" * 32  # a perceptual hash: coarse part, then fine part


def _row(shipment: str, sha: str, *, phash: str | None = None, score: float = 0.1) -> ImageVerdict:
    return ImageVerdict(
        path=f"{shipment}-{sha[:4]}.png",
        sha256=sha,
        phash=phash,
        shipment_id=shipment,
        cargo_type="bulk_ore",
        score=score,
        threshold=0.5,
        hold_threshold=0.8,
        model_id="ore-m1",
        declaration={"cargo_type": "bulk_ore"},
    )


def _scored(rows: Path) -> ScoreSummary:
    """The summary of the score run that wrote ``rows`` (their lines given its id, in place), as
    ``score_to_file`` leaves it for ``decide_output``, which decides only that file's rows, each
    naming the run. No completion record (a run may write none: its rows are checked by file and
    run id alone), so that the folder holds only what these tests look for."""
    from pipeline.score.runner import new_run_id

    run_id = new_run_id()
    lines = rows.read_text().splitlines()
    named = (ImageVerdict.model_validate_json(line).model_copy(update={"run_id": run_id}) for line in lines)
    rows.write_text("".join(row.model_dump_json() + "\n" for row in named))
    st = rows.stat()
    return ScoreSummary(run_id=run_id, rows_file=(st.st_dev, st.st_ino))


def _decided(store: AuditStore, rows: list[ImageVerdict]) -> dict[str, Any]:
    return {
        d.shipment_id: (d.tier, [r.rule for r in d.reasons], why)
        for d, why in decide_and_record(POLICY, rows, audit_key=KEY, store=store, near_copy_bits=32)
    }


def test_a_picture_decided_in_an_earlier_batch_goes_to_an_officer(tmp_path: Path) -> None:
    """A shipment picked for a random audit, sent again under a new id in the next batch: released
    before, as the batch never asked the store."""
    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        first = _decided(store, [_row("S-A", "aa" * 32)])
        again = _decided(store, [_row("S-B", "aa" * 32), _row("S-C", "cc" * 32)])
        assert store.get("S-B").decision.images[0].seen_in == ["S-A"]  # type: ignore[union-attr]
    assert first == {"S-A": (Tier.RELEASE, ["score.clear"], None)}
    assert again == {
        "S-B": (Tier.REMOTE_INSPECTION, ["override.image_reused", "score.clear"], None),
        "S-C": (Tier.RELEASE, ["score.clear"], None),
    }


def test_shipments_of_one_batch_sharing_a_picture_or_a_near_copy_are_caught(tmp_path: Path) -> None:
    near = f"{_P[:16]}{int(_P[16:], 16) ^ 0xFF:064x}"  # 8 fine bits off: re-encoded, say
    rows = [_row("S1", "aa" * 32, phash=_P), _row("S2", "aa" * 32), _row("S3", "bb" * 32, phash=near)]
    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        decided = _decided(store, rows)
        # recorded again: the same inputs are the same decisions, not new ones
        assert _decided(store, rows) == decided
        assert store.verify().records_checked == 3
    assert {s: (t, rules) for s, (t, rules, _) in decided.items()} == {
        "S1": (Tier.RELEASE, ["score.clear"]),
        "S2": (Tier.REMOTE_INSPECTION, ["override.image_reused", "score.clear"]),
        "S3": (Tier.REMOTE_INSPECTION, ["override.image_near_copy", "score.clear"]),
    }


def _earlier(db: str, secret: str | None = None) -> None:
    """S-A decided, sealed under ``secret`` where the store is then read with it (the keyed reads
    that carry holds over refuse an unsealed record)."""
    from pipeline.settings import Settings, audit_seal_key

    key = None if secret is None else audit_seal_key(Settings(audit_secret=secret))
    with AuditStore.open(db, seal_key=key) as store:
        _decided(store, [_row("S-A", "aa" * 32)])


def test_clearsight_decide_looks_pictures_up_before_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cli import app, run

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "a-long-enough-test-audit-secret")
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    _earlier(db, "a-long-enough-test-audit-secret")
    from pipeline.row_seal import row_seal_key, sealed
    from pipeline.verdict_rows import row_json

    rows = tmp_path / "rows.jsonl"  # as score writes it under that secret: sealed
    rows.write_bytes(
        row_json(sealed(row_seal_key("a-long-enough-test-audit-secret"), _row("S-B", "aa" * 32)))
    )
    record_completion(rows, seal_key=completion_seal_key(Settings.load()))  # a finished run's
    out = tmp_path / "d.jsonl"
    assert run(app, ["decide", "--verdicts", str(rows), "--out", str(out), "--audit-db", db]) == 0
    decision = json.loads(out.read_text())
    assert decision["tier"] == "REMOTE_INSPECTION" and decision["images"][0]["seen_in"] == ["S-A"]


def test_score_with_a_policy_looks_pictures_up_before_recording(tmp_path: Path) -> None:
    """What `clearsight score --policy --audit-db` runs once its rows are written."""
    from pipeline.score.decisions import decide_output

    db = f"sqlite:///{tmp_path / 'audit.db'}"
    _earlier(db)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(_row("S-B", "aa" * 32).model_dump_json() + "\n")
    decisions = tmp_path / "d.jsonl"
    summary = _scored(rows)
    assert decide_output(rows, POLICY, audit_key=KEY, decisions=decisions, audit_url=db, summary=summary) == 1
    decision = json.loads(decisions.read_text())
    assert decision["tier"] == "REMOTE_INSPECTION" and decision["images"][0]["seen_in"] == ["S-A"]


def test_score_with_a_policy_writes_what_the_trail_holds_for_a_refused_decision(tmp_path: Path) -> None:
    """As `clearsight decide` does: the standing decision marked refused, counted apart, and a
    resume that takes the file for this run's (the standing line carries the earlier policy)."""
    from pipeline.score.decisions import decide_output, made_by_this_run
    from pipeline.score.summary import NOT_RECORDED

    lax = parse_policy(
        {
            "policy_version": "lax",
            "cargo_types": {"bulk_ore": {"release_threshold": 0.99, "hold_threshold": 0.995}},
            "random_audit": {"rate": 0},
        }
    )
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    with AuditStore.open(db) as store:  # held under the strict policy first
        held = decide_and_record(
            POLICY, [_row("S1", "aa" * 32, score=0.9)], audit_key=KEY, store=store, near_copy_bits=32
        )
        assert [d.tier for d, _ in held] == [Tier.PHYSICAL_INSPECTION]
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            _row(s, h, score=0.9).model_dump_json() + "\n" for s, h in [("S1", "aa" * 32), ("S2", "bb" * 32)]
        )
    )
    decisions, summary = tmp_path / "d.jsonl", _scored(rows)
    assert decide_output(rows, lax, audit_key=KEY, decisions=decisions, audit_url=db, summary=summary) == 2
    lines = {d["shipment_id"]: d for d in map(json.loads, decisions.read_text().splitlines())}
    assert lines["S1"]["tier"] == "PHYSICAL_INSPECTION" and lines["S1"]["refused"]["tier"] == "RELEASE"
    assert lines["S2"]["tier"] == "RELEASE" and "refused" not in lines["S2"]
    # counted apart: the RELEASE refused was a release in the summary before
    assert (summary.tiers[NOT_RECORDED], summary.tiers["RELEASE"], summary.tiers["PHYSICAL_INSPECTION"]) == (
        1,
        1,
        0,
    )
    assert len(summary.unrecorded) == 1
    assert made_by_this_run(decisions, rows, lax)  # --resume said the file was not this run's


def test_score_with_a_policy_takes_aeo_tiers_from_the_register(tmp_path: Path) -> None:
    from pipeline.score.decisions import decide_output
    from pipeline.trader_register import read_trader_register

    policy = parse_policy(
        {
            "policy_version": "t-2",
            "cargo_types": {"bulk_ore": {"release_threshold": 0.2, "hold_threshold": 0.9}},
            "trusted_traders": {"AEOF": {"release_odds_factor": 1.5}},
        }
    )
    claimed = _row("S1", "aa" * 32, score=0.23).model_copy(
        update={"declaration": {"cargo_type": "bulk_ore", "trader_id": "NOBODY-1", "aeo_tier": "AEOF"}}
    )
    rows = tmp_path / "rows.jsonl"
    rows.write_text(claimed.model_dump_json() + "\n")
    register = tmp_path / "traders.csv"
    register.write_text("trader_id,aeo_tier\nTRD-7,AEOF\n")
    decisions = tmp_path / "d.jsonl"
    decide_output(
        rows, policy, audit_key=KEY, decisions=decisions, audit_url=None, summary=_scored(rows),
        register=read_trader_register(register),
    )  # fmt: skip
    decision = json.loads(decisions.read_text())
    assert (decision["tier"], decision["declaration"]["aeo_tier"]) == ("REMOTE_INSPECTION", None)


def test_a_bad_declaration_records_nothing_of_its_batch(tmp_path: Path) -> None:
    """Every declaration is checked before the first record: half a batch recorded, and no
    decisions file, is what a failing run left."""
    from datasets.errors import InputError

    bad = _row("S3", "cc" * 32).model_copy(
        update={"declaration": {"cargo_type": "bulk_ore", "aeo_tier": "A" * 40}}
    )
    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        with pytest.raises(InputError, match="shipment 'S3'"):
            _decided(store, [_row("S1", "aa" * 32), _row("S2", "bb" * 32), bad])
        assert store.verify().records_checked == 0


def test_a_scored_picture_without_its_hash_is_refused_not_taken_for_new(tmp_path: Path) -> None:
    """A row whose sha256 was dropped (edited, or from another tool) could not be looked up: the
    picture decided before passed as new and its shipment was released."""
    from datasets.errors import InputError

    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        _decided(store, [_row("S-A", "aa" * 32)])
        unnamed = _row("S-B", "aa" * 32).model_copy(update={"sha256": None})
        with pytest.raises(
            InputError, match=r"image 'S-B-aaaa.png' of shipment 'S-B' was scored but has no sha256"
        ):
            _decided(store, [_row("S-C", "cc" * 32), unnamed])
        assert store.verify().records_checked == 1  # nothing of the batch recorded
        failed = unnamed.model_copy(update={"score": None, "error": "ImageDecodeError: truncated"})
        assert _decided(store, [failed])["S-B"][:2] == (  # held whatever its hash
            Tier.REMOTE_INSPECTION,
            ["fail_closed.image_error"],
        )


@pytest.mark.parametrize("sha", ["", "AA" * 32, "aa" * 31, "zz" * 32, "../etc/passwd"])
def test_a_picture_whose_hash_is_not_a_sha256_is_refused(tmp_path: Path, sha: str) -> None:
    """An uppercase or cut hash never matches the index's: the picture would pass as new."""
    from datasets.errors import InputError

    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        with pytest.raises(InputError, match=f"has sha256 {sha!r}, not 64 lowercase hex digits"):
            _decided(store, [_row("S", "aa" * 32).model_copy(update={"sha256": sha})])
        assert store.verify().records_checked == 0


def test_a_record_an_earlier_version_made_with_any_hash_text_is_read(tmp_path: Path) -> None:
    """Stored decisions are read as they were written: an earlier version took any sha256 text."""
    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        decision = next(iter(_decided(store, [_row("S", "aa" * 32)]).values()))
        assert decision[0] is Tier.RELEASE
        odd = store.get("S").decision  # type: ignore[union-attr]
        image = odd.images[0].model_copy(update={"sha256": "AA" * 32})
        store.record(odd.model_copy(update={"images": [image], "policy_version": "t-0"}))
        assert [r.decision.images[0].sha256 for r in store.iter_records()] == ["aa" * 32, "AA" * 32]


def test_a_batch_decided_again_does_not_flag_the_shipment_that_sent_a_picture_first(tmp_path: Path) -> None:
    """S1 sent the picture, X reused it in a later batch (and was held). Re-deciding S1's batch under
    a new policy flagged S1 as a copy of X: an officer looked again at cargo that had done nothing."""
    stricter = parse_policy(
        {"policy_version": "t-2", "cargo_types": {"bulk_ore": {}}, "random_audit": {"rate": 0.0}}
    )
    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        _decided(store, [_row("S1", "aa" * 32, phash=_P)])
        assert _decided(store, [_row("X", "aa" * 32, phash=_P)])["X"][1] == [
            "override.image_reused",
            "score.clear",
        ]
        again = decide_and_record(
            stricter, [_row("S1", "aa" * 32, phash=_P)], audit_key=KEY, store=store, near_copy_bits=32
        )
        (decision, why), *_ = list(again)
        assert (decision.policy_version, decision.tier, [r.rule for r in decision.reasons], why) == (
            "t-2",
            Tier.RELEASE,
            ["score.clear"],
            None,
        )


def test_a_shipment_decided_again_with_another_shipments_picture_goes_to_an_officer(tmp_path: Path) -> None:
    """S1 comes again holding X's picture too (a rescan added one, or its id was reused): looked up
    only among what was decided before S1's first decision, it went out released."""
    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        _decided(store, [_row("S1", "aa" * 32)])
        _decided(store, [_row("X", "bb" * 32)])
        again = _decided(store, [_row("S1", "aa" * 32), _row("S1", "bb" * 32)])
    assert again["S1"][:2] == (
        Tier.REMOTE_INSPECTION,
        ["score.clear", "override.image_reused", "score.clear"],
    )


def test_compare_policy_with_an_audit_store_compares_like_with_like(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same policy compared with itself changes nothing, though the recorded decisions looked
    pictures up in the store and the compared ones could not."""
    from pipeline.cli import app, run

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "a-long-enough-test-audit-secret")
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text("policy_version: t\ncargo_types:\n  bulk_ore: {}\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(r.model_dump_json() + "\n" for r in (_row("S1", "aa" * 32), _row("S2", "aa" * 32)))
    )
    record_completion(rows, seal_key=completion_seal_key(Settings.load()))  # a finished run's
    args = [
        "decide",
        "--verdicts",
        str(rows),
        "--out",
        str(tmp_path / "d.jsonl"),
        "--policy",
        str(policy_file),
    ]
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    assert run(app, [*args, "--compare-policy", str(policy_file), "--audit-db", db]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "releases +0 shipments" in said and "(0 shipments change tier)" in said


def test_a_decisions_file_is_this_runs_only_when_each_of_its_shipments_is(tmp_path: Path) -> None:
    """A file two runs shared through --decisions, or a what-if kept under another policy, is not
    the run's to write again on --resume: it held S2's decision, which out2 has no row of."""
    from pipeline.decide import decide_rows
    from pipeline.score.decisions import made_by_this_run

    decisions = tmp_path / "shared.decisions.jsonl"
    decided = list(decide_rows(POLICY, [_row("S1", "aa" * 32), _row("S2", "bb" * 32)], audit_key=KEY))
    decisions.write_text("".join(d.model_dump_json() + "\n" for d in decided))
    both, one = tmp_path / "out1.jsonl", tmp_path / "out2.jsonl"
    both.write_text(
        _row("S1", "aa" * 32).model_dump_json() + "\n" + _row("S2", "bb" * 32).model_dump_json() + "\n"
    )
    one.write_text(_row("S1", "aa" * 32).model_dump_json() + "\n")
    other = parse_policy({"policy_version": "t-9", "cargo_types": {"bulk_ore": {}}})
    assert made_by_this_run(decisions, both, POLICY) is True
    assert made_by_this_run(decisions, one, POLICY) is False
    assert made_by_this_run(decisions, both, other) is False
    assert made_by_this_run(decisions, tmp_path / "missing.jsonl", POLICY) is False
    decisions.write_text("")
    assert made_by_this_run(decisions, tmp_path / "missing.jsonl", POLICY) is True
    decisions.write_text("not json\n")
    assert made_by_this_run(decisions, both, POLICY) is False


class _Busy:
    """An audit store whose every write finds the pictures decided elsewhere meanwhile."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def record(self, *args: Any, **kwargs: Any) -> Any:
        from pipeline.audit.store import ImagesSeenSince

        raise ImagesSeenSince("busy")


def test_a_refused_decision_is_handed_back_as_the_decision_that_stands(tmp_path: Path) -> None:
    """The caller writes what it is handed: the decision the trail holds, marked with the one refused."""
    lax = parse_policy(
        {
            "policy_version": "lax",
            "cargo_types": {"bulk_ore": {"release_threshold": 0.99, "hold_threshold": 0.995}},
            "random_audit": {"rate": 0},
        }
    )
    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        ((held, _),) = decide_and_record(
            POLICY, [_row("S1", "aa" * 32, score=0.9)], audit_key=KEY, store=store, near_copy_bits=32
        )
        ((lowered, why),) = decide_and_record(
            lax, [_row("S1", "aa" * 32, score=0.9)], audit_key=KEY, store=store, near_copy_bits=32
        )
        (busy, busy_why), (new, new_why) = decide_and_record(
            lax,
            [_row("S1", "aa" * 32, score=0.9), _row("S2", "bb" * 32)],
            audit_key=KEY,
            store=_Busy(store),  # type: ignore[arg-type]
            near_copy_bits=32,
        )
        assert store.verify().records_checked == 1
    assert held.tier is Tier.PHYSICAL_INSPECTION and held.refused is None
    assert why is not None and why.startswith("shipment 'S1' is held (PHYSICAL_INSPECTION, audit record 1)")
    assert lowered.model_dump(exclude={"refused"}) == held.model_dump()
    assert lowered.refused is not None
    assert (lowered.refused.tier, lowered.refused.policy_version, lowered.refused.standing_seq) == (
        Tier.RELEASE,
        "lax",
        1,
    )
    assert lowered.refused.why == why
    # the pictures kept being decided elsewhere: what stands, or (nothing standing) the decision unrecorded
    assert busy.model_dump(exclude={"refused"}) == held.model_dump() and busy.refused is not None
    assert busy_why is not None and busy.refused.why == busy_why and busy.refused.standing_seq == 1
    assert new.refused is not None and new.refused.standing_seq is None and new.shipment_id == "S2"
    assert new_why is not None and "kept being decided in other shipments" in new_why


def test_a_hold_whose_inspection_found_an_anomaly_is_not_lowered_by_a_rescan(db_url: str) -> None:
    """Held (a picture scoring 0.95), inspected, an anomaly found; then re-scanned, a new picture
    scoring 0.1: the finding lifted the hold as a clean outcome does, the shipment was recorded as
    released, and its picture, sent again under another id, was no longer held."""
    with AuditStore.open(db_url) as store:
        assert _decided(store, [_row("F", "aa" * 32, score=0.95)])["F"][0] is Tier.PHYSICAL_INSPECTION
        store.record_outcome("F", found="unknown", officer="officer-7", notes="scrap cable")
        ((rescan, why),) = decide_and_record(
            POLICY, [_row("F", "bb" * 32)], audit_key=KEY, store=store, near_copy_bits=32
        )
        again = _decided(store, [_row("H", "aa" * 32)])["H"]
        standing = store.get("F")
    assert rescan.tier is Tier.PHYSICAL_INSPECTION and rescan.refused is not None
    assert rescan.refused.tier is Tier.RELEASE and rescan.refused.standing_seq == 1
    assert why is not None and "inspection found 'unknown' (audit record 2)" in why
    assert standing is not None and standing.seq == 1 and standing.outcome is not None
    assert standing.outcome.found == "unknown"
    assert again[0] is Tier.PHYSICAL_INSPECTION and "override.image_held_before" in again[1]


@pytest.mark.parametrize("kind", ["same bytes", "near-copy"])
def test_a_picture_an_anomaly_was_found_in_stays_held_past_a_rescan_inspected_clean(
    db_url: str, kind: str
) -> None:
    """F held on a picture scoring 0.95, inspection found an anomaly; F re-scanned on a new picture
    also scoring 0.95 (the same tier: recorded), the re-scan inspected clean; then the picture the
    anomaly was found in sent again under H: image_reused's remote inspection only, as the hold was
    read from F's latest decision and its clean outcome alone. The re-scan's own picture, inspected
    clean, is not held by the finding."""
    copy = _row("H", "cc" * 32, phash=f"{_P[:16]}{int(_P[16:], 16) ^ 1:064x}")
    with AuditStore.open(db_url) as store:
        assert (
            _decided(store, [_row("F", "aa" * 32, phash=_P, score=0.95)])["F"][0] is Tier.PHYSICAL_INSPECTION
        )
        store.record_outcome("F", found="unknown", officer="officer-7", notes="knife in bag 3, seized")
        assert _decided(store, [_row("F", "bb" * 32, score=0.95)])["F"] == (
            Tier.PHYSICAL_INSPECTION,
            ["score.hold"],
            None,
        )
        store.record_outcome("F", found=None, officer="officer-7", decision_seq=3)
        again = _decided(store, [_row("H", "aa" * 32) if kind == "same bytes" else copy])["H"]
        carried = [
            r.message for r in store.get("H").decision.reasons if r.rule == "override.image_held_before"
        ]  # type: ignore[union-attr]
        rescanned = _decided(store, [_row("K", "bb" * 32)])["K"]
    reused = "override.image_reused" if kind == "same bytes" else "override.image_near_copy"
    assert again[0] is Tier.PHYSICAL_INSPECTION
    assert sorted(again[1]) == sorted([reused, "override.image_held_before", "score.clear"])
    assert (
        len(carried) == 1
        and "in shipment F, held at PHYSICAL_INSPECTION (inspection found 'unknown' in picture F-aaaa.png; "
        "audit record 1)"
        in carried[0]
    )
    assert rescanned[:2] == (Tier.REMOTE_INSPECTION, ["override.image_reused", "score.clear"])


def test_a_held_shipments_picture_sent_again_under_a_new_id_carries_the_hold(tmp_path: Path) -> None:
    """Held for a radiation alarm, sent again with the same picture under a new id and no flag:
    image_reused's remote inspection only, where the hold stood uncleared."""
    hot = _row("S1", "aa" * 32).model_copy(
        update={"declaration": {"cargo_type": "bulk_ore", "radiation_alarm": True}}
    )
    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        assert _decided(store, [hot])["S1"][0] is Tier.PHYSICAL_INSPECTION
        again = _decided(store, [_row("S2", "aa" * 32)])
        store.record_outcome("S1", found="foreign_object", officer="officer:1")  # found something
        still = _decided(store, [_row("S3", "aa" * 32)])
        for shipment in ("S1", "S2", "S3"):
            store.record_outcome(shipment, found=None, officer="officer:1", amend=True)  # inspected: clean
        cleared = _decided(store, [_row("S4", "aa" * 32)])
        carried = next(r for r in store.get("S2").decision.reasons if r.rule == "override.image_held_before")  # type: ignore[union-attr]
    assert again["S2"] == (
        Tier.PHYSICAL_INSPECTION,
        ["override.image_reused", "override.image_held_before", "score.clear"],
        None,
    )
    assert carried.message.startswith(
        "the same picture was decided in shipment S1, held at PHYSICAL_INSPECTION (override.radiation_alarm; "
        "audit record 1)"
    )
    assert still["S3"][0] is Tier.PHYSICAL_INSPECTION
    assert cleared["S4"][:2] == (Tier.REMOTE_INSPECTION, ["override.image_reused", "score.clear"])


def test_a_hold_carries_over_only_on_the_earlier_shipments_own_evidence(tmp_path: Path) -> None:
    """A hold S2 only carried from S1 does not outlive S1's clean outcome, and a random audit's pick
    is not carried to a consignment of the same scan that was not picked."""
    hot = _row("S1", "aa" * 32).model_copy(
        update={"declaration": {"cargo_type": "bulk_ore", "radiation_alarm": True}}
    )
    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        assert _decided(store, [hot])["S1"][0] is Tier.PHYSICAL_INSPECTION
        assert _decided(store, [_row("S2", "aa" * 32)])["S2"][0] is Tier.PHYSICAL_INSPECTION  # carried
        store.record_outcome("S1", found=None, officer="officer:1")  # the only hold about it: clean
        later = _decided(store, [_row("S4", "aa" * 32)])
        carried = [
            r.message for r in store.get("S4").decision.reasons if r.rule == "override.image_held_before"
        ]  # type: ignore[union-attr]
    # image_reused's tier, which S2 stands at on its own (its reuse of S1's picture) and passes on
    assert later["S4"][:2] == (
        Tier.REMOTE_INSPECTION,
        ["override.image_reused", "override.image_held_before", "score.clear"],
    )
    assert len(carried) == 1 and carried[0].startswith(
        "the same picture was decided in shipment S2, held at REMOTE_INSPECTION (override.image_reused; "
    )

    from pipeline.decide import audit_fraction

    rate = 0.3
    picked = next(f"A{i}" for i in range(100) if audit_fraction(KEY, f"A{i}") < rate)
    unpicked = next(f"B{i}" for i in range(100) if audit_fraction(KEY, f"B{i}") >= rate)
    scan = parse_policy(  # one scan shared by the consignments of a container
        {
            "policy_version": "t-scan",
            "cargo_types": {"bulk_ore": {}},
            "overrides": {"image_reused": "RELEASE", "image_near_copy": "RELEASE"},
            "random_audit": {"rate": rate, "tier": "PHYSICAL_INSPECTION"},
        }
    )
    with AuditStore.open(f"sqlite:///{tmp_path / 'scan.db'}") as store:
        decided = {
            d.shipment_id: (d.tier, [r.rule for r in d.reasons])
            for d, _ in decide_and_record(
                scan,
                [_row(picked, "bb" * 32), _row(unpicked, "bb" * 32)],
                audit_key=KEY,
                store=store,
                near_copy_bits=32,
            )
        }
    assert decided == {
        picked: (Tier.PHYSICAL_INSPECTION, ["score.clear", "random_audit"]),
        unpicked: (Tier.RELEASE, ["override.image_reused", "score.clear"]),
    }


def _copy(kind: str, shipment: str, n: int, *, alarm: bool = False) -> ImageVerdict:
    """The ``n``-th copy of one picture in ``shipment``: the very bytes (``kind`` "same bytes"), or
    other bytes ``n`` fine bits from ``_P`` (a near-copy)."""
    if kind == "same bytes":
        copy = _row(shipment, "aa" * 32)
    else:
        copy = _row(shipment, f"{n:064x}", phash=f"{_P[:16]}{int(_P[16:], 16) ^ ((1 << n) - 1):064x}")
    return copy.model_copy(update={"declaration": {"cargo_type": "bulk_ore", "radiation_alarm": alarm}})


@pytest.mark.parametrize("page", [100, 1])
@pytest.mark.parametrize(
    ("kind", "named", "bits"),
    [("same bytes", "seen_in", None), ("near-copies", "similar_in", 1)],  # HOT1 the nearest: 7 - 6
)
def test_a_hold_carries_over_however_many_shipments_decided_the_picture_first(
    db_url: str, monkeypatch: pytest.MonkeyPatch, kind: str, named: str, bits: int | None, page: int
) -> None:
    """Decided in five shipments first, then held for a radiation alarm, then sent again under a new
    id: the lookup names the five oldest only, so the held shipment was never looked at and the
    picture had image_reused's remote inspection only (near-copies alike). All the shipments that
    hold it are looked through, a page at a time, past a hold an officer cleared."""
    from pipeline import batch_decisions

    monkeypatch.setattr(batch_decisions, "_PAGE", page)

    def row(shipment: str, n: int, *, alarm: bool = False) -> ImageVerdict:
        return _copy(kind, shipment, n, alarm=alarm)

    with AuditStore.open(db_url) as store:
        for n in range(5):
            _decided(store, [row(f"E{n}", n)])
        assert _decided(store, [row("HOT0", 5, alarm=True)])["HOT0"][0] is Tier.PHYSICAL_INSPECTION
        store.record_outcome("HOT0", found=None, officer="officer:1")  # inspected: clean
        assert _decided(store, [row("HOT1", 6, alarm=True)])["HOT1"][0] is Tier.PHYSICAL_INSPECTION
        again = _decided(store, [row("NEW", 7)])
        new = store.get("NEW").decision  # type: ignore[union-attr]
        store.record_outcome("HOT1", found=None, officer="officer:1")
        later = _decided(store, [row("LATER", 8)])
    assert again["NEW"][0] is Tier.PHYSICAL_INSPECTION
    assert getattr(new.images[0], named) == ["E0", "E1", "E2", "E3", "E4", "HOT1"]
    assert new.images[0].similar_bits == bits
    carried = [r.message for r in new.reasons if r.tier is Tier.PHYSICAL_INSPECTION]
    assert len(carried) == 1, carried
    assert " shipment HOT1, held at PHYSICAL_INSPECTION (override.radiation_alarm; " in carried[0]
    # both cleared: NEW's physical hold was HOT1's carried over, its own a remote one
    assert later["LATER"][0] is Tier.REMOTE_INSPECTION


@pytest.mark.parametrize("page", [100, 1])
@pytest.mark.parametrize(
    ("kind", "most", "crowded"),
    [
        # HOT and R1..R6 at PHYSICAL_INSPECTION, seven to read: more than six is past the bound
        ("same bytes", 6, True),
        ("same bytes", 7, False),
        # those past the five named only (R5, R6): the near-copies the lookup did not name
        ("near-copies", 1, True),
        ("near-copies", 2, False),
    ],
)
def test_a_picture_held_by_more_decisions_than_are_read_is_held_as_they_are(
    db_url: str, monkeypatch: pytest.MonkeyPatch, kind: str, most: int, crowded: bool, page: int
) -> None:
    """A picture held for a radiation alarm (HOT), sent again under new ids while the hold stood
    (each held on HOT's hold only), then HOT cleared: every later send of it read every one of those
    decisions looking for one held on its own evidence, 10,000 of them in over 6 s a request. The
    look is bounded (``_MOST`` a tier); past the bound the picture is held as they are."""
    from pipeline import batch_decisions

    monkeypatch.setattr(batch_decisions, "_PAGE", page)
    monkeypatch.setattr(batch_decisions, "_MOST", most)

    def row(shipment: str, n: int, *, alarm: bool = False) -> ImageVerdict:
        return _copy(kind, shipment, n, alarm=alarm)

    with AuditStore.open(db_url) as store:
        assert _decided(store, [row("HOT", 0, alarm=True)])["HOT"][0] is Tier.PHYSICAL_INSPECTION
        for n in range(1, 7):
            assert _decided(store, [row(f"R{n}", n)])[f"R{n}"][0] is Tier.PHYSICAL_INSPECTION  # carried
        store.record_outcome("HOT", found=None, officer="officer:1")  # inspected: clean
        read: list[int] = []
        latest_decisions_at = store.latest_decisions_at

        def counted(*args: Any, **kwargs: Any) -> Any:
            got = latest_decisions_at(*args, **kwargs)
            read.append(len(got))
            return got

        monkeypatch.setattr(store, "latest_decisions_at", counted)
        new = _decided(store, [row("NEW", 7)])["NEW"]
        reasons = store.get("NEW").decision.reasons  # type: ignore[union-attr]
    physical = [r.message for r in reasons if r.tier is Tier.PHYSICAL_INSPECTION]
    assert sum(read) <= most + 1
    if crowded:
        assert new[0] is Tier.PHYSICAL_INSPECTION and len(physical) == 1, physical
        assert (
            f"(more than {most} earlier decisions at PHYSICAL_INSPECTION hold this picture, more than are "
            "checked for one held on its own evidence: it is held as they are; audit record "
        ) in physical[0]
    else:  # none holds it on its own evidence at PHYSICAL_INSPECTION: image_reused's tier, as before
        assert new[0] is Tier.REMOTE_INSPECTION and physical == []


@pytest.mark.parametrize("kind", ["same bytes", "near-copies"])
def test_an_uncleared_hold_behind_more_decisions_than_are_read_is_not_shed(
    db_url: str, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """HOT0 held, sent again while its hold stood (each carrying it), HOT0 cleared, then HOT1 held
    on its own evidence (a new radiation alarm) behind them all: a version that sent a picture past
    the bound to remote inspection shed HOT1's uncleared physical hold from a re-send. Past the bound
    the picture is held at the tier read."""
    from pipeline import batch_decisions

    monkeypatch.setattr(batch_decisions, "_PAGE", 2)
    monkeypatch.setattr(batch_decisions, "_MOST", 6)
    with AuditStore.open(db_url) as store:
        assert _decided(store, [_copy(kind, "HOT0", 0, alarm=True)])["HOT0"][0] is Tier.PHYSICAL_INSPECTION
        for n in range(1, 7):
            assert _decided(store, [_copy(kind, f"R{n}", n)])[f"R{n}"][0] is Tier.PHYSICAL_INSPECTION
        store.record_outcome("HOT0", found=None, officer="officer:1")
        assert _decided(store, [_copy(kind, "HOT1", 7, alarm=True)])["HOT1"][0] is Tier.PHYSICAL_INSPECTION
        assert _decided(store, [_copy(kind, "NEW", 8)])["NEW"][0] is Tier.PHYSICAL_INSPECTION


@pytest.mark.parametrize("where", ["earlier decision", "released decision"])
@pytest.mark.parametrize(("kind", "named"), [("same bytes", "seen_in"), ("near-copies", "similar_in")])
def test_a_finding_carries_over_however_many_shipments_decided_the_picture_first(
    db_url: str, kind: str, named: str, where: str
) -> None:
    """Decided in five shipments first, then in F, on which inspection found an anomaly: on F's
    earlier decision (F re-scanned at the same tier on another picture, inspected clean), or on F's
    only decision, released (at a site that releases pictures sent again). The picture sent again
    under a new id names the five oldest only, and the search past them read each shipment's latest
    decision at the tiers stricter than the holds named: the clean re-scan, or nothing at RELEASE,
    so the picture went to remote inspection."""
    lax = parse_policy(
        {
            "policy_version": "t-lax",
            "cargo_types": {"bulk_ore": {}},
            "overrides": {"image_reused": "RELEASE", "image_near_copy": "RELEASE"},
            "random_audit": {"rate": 0.0},
        }
    )

    def first(store: AuditStore, row: ImageVerdict) -> Tier:
        policy = POLICY if where == "earlier decision" else lax
        ((decision, _),) = decide_and_record(policy, [row], audit_key=KEY, store=store, near_copy_bits=32)
        return decision.tier

    with AuditStore.open(db_url) as store:
        for n in range(5):
            first(store, _copy(kind, f"E{n}", n))
        if where == "earlier decision":
            assert (
                first(store, _copy(kind, "F", 5).model_copy(update={"score": 0.95}))
                is Tier.PHYSICAL_INSPECTION
            )
            store.record_outcome("F", found="unknown", officer="officer-7", notes="knife in bag 3, seized")
            rescan = _row("F", "bb" * 32, score=0.95)
            assert _decided(store, [rescan])["F"][:2] == (Tier.PHYSICAL_INSPECTION, ["score.hold"])
            store.record_outcome("F", found=None, officer="officer-7", decision_seq=8)
        else:
            assert first(store, _copy(kind, "F", 5)) is Tier.RELEASE
            store.record_outcome("F", found="foreign_object", officer="officer-7")
        again = _decided(store, [_copy(kind, "NEW", 6)])["NEW"]
        new = store.get("NEW").decision  # type: ignore[union-attr]
    finding = "unknown" if where == "earlier decision" else "foreign_object"
    assert again[0] is Tier.PHYSICAL_INSPECTION
    assert getattr(new.images[0], named) == ["E0", "E1", "E2", "E3", "E4", "F"]
    carried = [r.message for r in new.reasons if r.tier is Tier.PHYSICAL_INSPECTION]
    # the same bytes: the finding is that picture's, named; a near-copy's is near which is not known
    found_in = " in picture F-aaaa.png" if kind == "same bytes" else ""
    assert len(carried) == 1 and (
        f" shipment F, held at PHYSICAL_INSPECTION (inspection found {finding!r}{found_in}; audit record 6)"
        in carried[0]
    ), carried


@pytest.mark.parametrize(
    ("kind", "cleared", "tier", "lookups"),
    [
        ("same bytes", False, Tier.PHYSICAL_INSPECTION, 2),  # refused at the write, looked up again
        ("same bytes", True, Tier.REMOTE_INSPECTION, 1),  # HOT cleared meanwhile too: no hold, no retry
        ("near-copies", False, Tier.PHYSICAL_INSPECTION, 2),
        ("near-copies", True, Tier.REMOTE_INSPECTION, 1),
    ],
)
@pytest.mark.parametrize("held_itself", [False, True], ids=["remote", "held-itself"])
def test_a_hold_recorded_between_a_shipments_lookup_and_its_write_is_carried(
    db_url: str, kind: str, cleared: bool, tier: Tier, lookups: int, held_itself: bool
) -> None:
    """E0 released; NEW looked up (E0 named); HOT, held for a radiation alarm on the same picture,
    recorded by another writer; then NEW written. The write's check of the records since the lookup
    took a picture already named elsewhere as no news ("more names change no decision"), so NEW was
    recorded at image_reused's remote inspection without HOT's hold (same for near-copies). A NEW
    held physically on its own (its own radiation alarm) is written at once: HOT's hold would not
    change its tier, and refusing it left shipments unrecorded under two writers at once."""
    names = "seen_in" if kind == "same bytes" else "similar_in"
    if held_itself:
        tier, lookups = Tier.PHYSICAL_INSPECTION, 1

    def row(shipment: str, n: int, *, alarm: bool = False) -> ImageVerdict:
        if kind == "same bytes":
            copy = _row(shipment, "aa" * 32)
        else:
            copy = _row(shipment, f"{n + 1:064x}", phash=f"{_P[:16]}{int(_P[16:], 16) ^ ((1 << n) - 1):064x}")
        return copy.model_copy(update={"declaration": {"cargo_type": "bulk_ore", "radiation_alarm": alarm}})

    with AuditStore.open(db_url) as store:
        assert _decided(store, [row("E0", 0)])["E0"][0] is Tier.RELEASE
        looked: list[str] = []
        sightings = store.sightings

        def then_another_writer(*args: Any, **kwargs: Any) -> Any:
            got = sightings(*args, **kwargs)
            looked.append(kwargs["other_than"])
            if looked == ["NEW"]:  # HOT is recorded after NEW's first lookup, before its write
                assert _decided(store, [row("HOT", 1, alarm=True)])["HOT"][0] is Tier.PHYSICAL_INSPECTION
                if cleared:
                    store.record_outcome("HOT", found=None, officer="officer:1")
            return got

        store.sightings = then_another_writer  # type: ignore[method-assign]
        decided = _decided(store, [row("NEW", 2, alarm=held_itself)])["NEW"]
        new = store.get("NEW").decision  # type: ignore[union-attr]
    assert decided[0] is tier and decided[2] is None
    assert looked.count("NEW") == lookups
    assert getattr(new.images[0], names) == (["E0"] if cleared or held_itself else ["E0", "HOT"])
    carried = [r.message for r in new.reasons if r.rule == "override.image_held_before"]
    if not cleared and not held_itself:
        assert (
            len(carried) == 1
            and " shipment HOT, held at PHYSICAL_INSPECTION (override.radiation_alarm; " in (carried[0])
        )
    else:
        assert carried == []


@pytest.mark.parametrize("kind", ["same bytes", "near-copies"])
def test_a_finding_recorded_between_a_shipments_lookup_and_its_write_is_carried(
    db_url: str, kind: str
) -> None:
    """E0 released; NEW looked up (E0 named, released: no hold); an officer records what inspection
    found on E0's decision (another writer); then NEW written. The write's check read only the
    decisions recorded since the lookup, and an outcome is none: NEW was recorded at image_reused's
    remote inspection without E0's finding. It is refused at the write and looked up again."""
    names = "seen_in" if kind == "same bytes" else "similar_in"
    with AuditStore.open(db_url) as store:
        assert _decided(store, [_copy(kind, "E0", 0)])["E0"][0] is Tier.RELEASE
        looked: list[str] = []
        sightings, record = store.sightings, store.record

        def counted(*args: Any, **kwargs: Any) -> Any:
            looked.append(kwargs["other_than"])
            return sightings(*args, **kwargs)

        def then_an_officer(*args: Any, **kwargs: Any) -> Any:
            if looked == ["NEW"]:  # after NEW's first lookup and the holds read with it, before its write
                store.record_outcome("E0", found="foreign_object", officer="officer-7")
            return record(*args, **kwargs)

        store.sightings = counted  # type: ignore[method-assign]
        store.record = then_an_officer  # type: ignore[method-assign]
        decided = _decided(store, [_copy(kind, "NEW", 1)])["NEW"]
        new = store.get("NEW").decision  # type: ignore[union-attr]
    assert decided[0] is Tier.PHYSICAL_INSPECTION and decided[2] is None
    assert looked.count("NEW") == 2
    assert getattr(new.images[0], names) == ["E0"]
    carried = [r.message for r in new.reasons if r.rule == "override.image_held_before"]
    assert len(carried) == 1 and (
        " shipment E0, held at PHYSICAL_INSPECTION (inspection found 'foreign_object'; audit record 1)"
        in carried[0]
    ), carried


def test_a_batch_run_again_is_decided_anew_where_a_hold_or_the_tier_source_changed(tmp_path: Path) -> None:
    """Run again over the same rows, a batch is answered from its record; not once the shipment whose
    picture it reused is held since (the hold carries over), nor when a register now vouches for the
    tier the rows declare (recorded as from the register)."""
    from pipeline.trader_register import read_trader_register

    aeo = parse_policy(
        {
            "policy_version": "t-aeo",
            "cargo_types": {"bulk_ore": {}},
            "trusted_traders": {"AEOF": {"release_odds_factor": 1.5}},
            "random_audit": {"rate": 0.0},
        }
    )
    register = tmp_path / "register.csv"
    register.write_text("trader_id,aeo_tier\nT1,AEOF\n")
    traded = _row("C", "cc" * 32).model_copy(
        update={"declaration": {"cargo_type": "bulk_ore", "trader_id": "T1", "aeo_tier": "AEOF"}}
    )

    def run(rows: list[ImageVerdict], **kw: Any) -> list[tuple[str, Tier, str | None, str | None]]:
        return [
            (d.shipment_id, d.tier, d.aeo_tier_source, why)
            for d, why in decide_and_record(aeo, rows, audit_key=KEY, store=store, near_copy_bits=32, **kw)
        ]

    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        run([_row("A", "aa" * 32)])
        assert run([_row("B", "aa" * 32)]) == [("B", Tier.REMOTE_INSPECTION, "none", None)]
        assert run([_row("B", "aa" * 32)]) == [("B", Tier.REMOTE_INSPECTION, "none", None)]
        assert store.get("B").seq == 2  # type: ignore[union-attr]  # answered from the record
        alarm = _row("A", "aa" * 32).model_copy(
            update={"declaration": {"cargo_type": "bulk_ore", "radiation_alarm": True}}
        )
        run([alarm])  # A held since
        assert run([_row("B", "aa" * 32)]) == [("B", Tier.PHYSICAL_INSPECTION, "none", None)]
        assert [r.rule for r in store.get("B").decision.reasons] == [  # type: ignore[union-attr]
            "override.image_reused",
            "override.image_held_before",
            "score.clear",
        ]
        assert run([traded]) == [("C", Tier.RELEASE, "declared_unverified", None)]
        assert run([traded], register=read_trader_register(register)) == [
            ("C", Tier.RELEASE, "register", None)
        ]
        assert store.get("C").decision.aeo_tier_source == "register"  # type: ignore[union-attr]
        seq = store.get("C").seq  # type: ignore[union-attr]
        assert run([traded], register=read_trader_register(register)) == [
            ("C", Tier.RELEASE, "register", None)
        ]
        assert store.get("C").seq == seq  # type: ignore[union-attr]  # run again: nothing recorded twice
        assert store.verify().ok


def test_score_with_a_policy_leaves_a_store_named_like_its_decisions_dot_tmp_alone(tmp_path: Path) -> None:
    """The decisions were written to d.jsonl.tmp and renamed: an audit store of that name (this
    run's own) was truncated, and moved onto the decisions file."""
    from pipeline.score.decisions import decide_output

    db = f"sqlite:///{tmp_path / 'd.jsonl.tmp'}"
    _earlier(db)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(_row("S-B", "aa" * 32).model_dump_json() + "\n")
    decisions = tmp_path / "d.jsonl"
    assert (
        decide_output(rows, POLICY, audit_key=KEY, decisions=decisions, audit_url=db, summary=_scored(rows))
        == 1
    )
    assert json.loads(decisions.read_text())["shipment_id"] == "S-B"
    with AuditStore.open(db, create=False) as store:
        assert store.verify().ok and [r.decision.shipment_id for r in store.iter_records()] == ["S-A", "S-B"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("d.jsonl.tmp")) == [
        "d.jsonl",
        "rows.jsonl",
    ]


def test_a_linked_decisions_file_is_written_where_the_link_points(tmp_path: Path) -> None:
    """Renamed onto it, the decisions file replaced a link, and the decisions never reached the
    file it named."""
    from pipeline.score.decisions import decide_output

    rows = tmp_path / "rows.jsonl"
    rows.write_text(_row("S-B", "aa" * 32).model_dump_json() + "\n")
    (tmp_path / "archive").mkdir()
    archived = tmp_path / "archive" / "rows.decisions.jsonl"
    archived.write_text("earlier\n")
    link = tmp_path / "rows.decisions.jsonl"
    link.symlink_to("archive/rows.decisions.jsonl")
    summary = _scored(rows)
    assert decide_output(rows, POLICY, audit_key=KEY, decisions=link, audit_url=None, summary=summary) == 1
    assert link.is_symlink() and json.loads(archived.read_text())["shipment_id"] == "S-B"
    assert sorted(p.name for p in (tmp_path / "archive").iterdir()) == ["rows.decisions.jsonl"]


def test_the_decisions_file_keeps_the_mode_of_the_one_it_replaces(tmp_path: Path) -> None:
    """Renamed onto it, a new decisions file took the umask's mode: one kept to its owner (chmod
    600) came back readable by the group."""
    from pipeline.score.decisions import decide_output

    rows = tmp_path / "rows.jsonl"
    rows.write_text(_row("S-B", "aa" * 32).model_dump_json() + "\n")
    decisions = tmp_path / "rows.decisions.jsonl"
    decisions.write_text("earlier\n")
    decisions.chmod(0o600)
    summary = _scored(rows)
    assert (
        decide_output(rows, POLICY, audit_key=KEY, decisions=decisions, audit_url=None, summary=summary) == 1
    )
    assert decisions.stat().st_mode & 0o777 == 0o600
    assert json.loads(decisions.read_text())["shipment_id"] == "S-B"


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("货" * 80 + ".jsonl", "货" * 10),  # 246 bytes, 86 characters: 3 bytes each, 10 of them kept
        ("d" * 249 + ".jsonl", "d" * 32),  # 255 bytes, the longest name a file system takes
        ("é" * 100 + ".jsonl", "é" * 16),
        ("d.jsonl", "d.jsonl"),
    ],
    ids=["chinese-246-bytes", "ascii-255-bytes", "accents", "short"],
)
def test_the_decisions_temporary_name_always_fits_beside_them(tmp_path: Path, name: str, kept: str) -> None:
    """The temporary name kept the first 128 characters of the decisions file's: a valid --out name
    of 246 bytes in Chinese made one of over 400 bytes, and the run failed ("File name too long")."""
    from datasets.whole_files import temporary_beside
    from pipeline.score.decisions import decide_output

    tmp, fd = temporary_beside(tmp_path / name)
    os.close(fd)
    assert tmp.parent == tmp_path and re.fullmatch(rf"\.{re.escape(kept)}-[0-9a-f]{{12}}\.tmp", tmp.name)
    assert len(os.fsencode(tmp.name)) <= 50 and tmp.read_bytes() == b""
    tmp.unlink()
    rows = tmp_path / "rows.jsonl"
    rows.write_text(_row("S-B", "aa" * 32).model_dump_json() + "\n")
    decisions = tmp_path / name
    summary = _scored(rows)
    assert (
        decide_output(rows, POLICY, audit_key=KEY, decisions=decisions, audit_url=None, summary=summary) == 1
    )
    assert json.loads(decisions.read_text())["shipment_id"] == "S-B"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "rows.jsonl"])


def test_score_with_a_policy_leaves_no_temporary_file_when_it_fails(tmp_path: Path) -> None:
    from datasets.errors import InputError
    from pipeline.score.decisions import decide_output

    rows = tmp_path / "rows.jsonl"
    bad = _row("S-B", "aa" * 32).model_copy(
        update={"declaration": {"cargo_type": "bulk_ore", "trader_id": "T" * 200}}
    )
    rows.write_text(bad.model_dump_json() + "\n")
    with pytest.raises(InputError, match="trader_id"):
        decide_output(
            rows,
            POLICY,
            audit_key=KEY,
            decisions=tmp_path / "d.jsonl",
            audit_url=None,
            summary=_scored(rows),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_score_with_a_policy_records_nothing_where_its_decisions_cannot_be_written(tmp_path: Path) -> None:
    """The store was opened first; the file's folder, a file, then failed as an unexpected
    FileExistsError, and a failing clean-up of the temporary file could hide the error."""
    from datasets.errors import InputError
    from pipeline.score.decisions import decide_output

    db = f"sqlite:///{tmp_path / 'audit.db'}"
    rows = tmp_path / "rows.jsonl"
    rows.write_text(_row("S-B", "aa" * 32).model_dump_json() + "\n")
    (tmp_path / "s_file").write_text("a file where a folder must go\n")
    decisions = tmp_path / "s_file" / "d.jsonl"
    with pytest.raises(InputError, match=r"^--decisions '.*/s_file/d\.jsonl': cannot write it \("):
        decide_output(rows, POLICY, audit_key=KEY, decisions=decisions, audit_url=db, summary=_scored(rows))
    assert not (tmp_path / "audit.db").exists()  # refused before the store was opened


def test_a_picture_an_anomaly_was_found_in_stays_held_sent_again_under_its_own_shipment(db_url: str) -> None:
    """F held on a picture, inspection found an anomaly; F re-scanned on a new picture, inspected
    clean; then the first picture, scored again by a new model, sent under F itself: released, as
    the lookup leaves the shipment's own decisions out and the store judged only F's latest. Sent
    under another id it was held. The re-scan's picture, inspected clean, is not held."""
    with AuditStore.open(db_url) as store:
        assert _decided(store, [_row("F", "aa" * 32, score=0.95)])["F"][0] is Tier.PHYSICAL_INSPECTION
        store.record_outcome("F", found="unknown", officer="officer-7", notes="seized")
        assert _decided(store, [_row("F", "bb" * 32, score=0.9)])["F"][0] is Tier.PHYSICAL_INSPECTION
        store.record_outcome("F", found=None, officer="officer-7", decision_seq=3)
        rescanned = _decided(store, [_row("F", "bb" * 32, score=0.1)])["F"]
        again = _decided(store, [_row("F", "aa" * 32, score=0.1), _row("F", "cc" * 32, score=0.1)])["F"]
        standing = store.get("F")
    assert rescanned == (Tier.RELEASE, ["score.clear"], None)
    assert again[0] is Tier.PHYSICAL_INSPECTION and again[2] is None
    assert sorted(again[1]) == ["override.image_held_before", "score.clear", "score.clear"]
    assert standing is not None and standing.seq == 6 and standing.outcome is None
    (carried,) = [r for r in standing.decision.reasons if r.rule == "override.image_held_before"]
    assert carried.tier is Tier.PHYSICAL_INSPECTION and carried.image == "F-aaaa.png"
    assert "decided before in this shipment" in carried.message
    assert "inspection found 'unknown'" in carried.message and "audit record 1" in carried.message


@pytest.mark.parametrize("corrected", [None, "foreign_object"], ids=["clean", "another-finding"])
def test_a_finding_corrected_on_a_decision_since_superseded_holds_by_the_correction(
    db_url: str, corrected: str | None
) -> None:
    """F held on picture A, a finding recorded on it by mistake; F re-scanned on picture B, inspected
    clean; A sent again under F itself, held by the finding. The finding on the superseded decision
    could not be corrected, so A stayed held whenever sent again. Corrected to clean, A sent under a
    new id is held no longer (image_reused's remote inspection); corrected to another finding, it is
    held by that one. F's later decision held by the finding stands as recorded, pending its own
    outcome."""
    with AuditStore.open(db_url) as store:
        assert _decided(store, [_row("F", "aa" * 32, score=0.95)])["F"][0] is Tier.PHYSICAL_INSPECTION
        store.record_outcome("F", found="unknown", officer="officer-7", notes="misread the scan")
        assert _decided(store, [_row("F", "bb" * 32, score=0.9)])["F"][0] is Tier.PHYSICAL_INSPECTION
        store.record_outcome("F", found=None, officer="officer-7", decision_seq=3)
        own = _decided(store, [_row("F", "aa" * 32), _row("F", "cc" * 32)])["F"]
        assert own[0] is Tier.PHYSICAL_INSPECTION and "override.image_held_before" in own[1]
        store.record_outcome("F", found=corrected, officer="officer-8", decision_seq=1, amend=True)
        again = _decided(store, [_row("H", "aa" * 32)])["H"]
        held = store.get("H").decision  # type: ignore[union-attr]
        carried = [r.message for r in held.reasons if r.tier is Tier.PHYSICAL_INSPECTION]
        standing = store.get("F")
        pending = [r.decision.shipment_id for r in store.list(pending_outcome=True)]
        assert store.verify().ok
    assert standing is not None and standing.seq == 5 and standing.outcome is None
    assert standing.decision.tier is Tier.PHYSICAL_INSPECTION and pending == ["H", "F"]
    if corrected is None:
        assert again == (Tier.REMOTE_INSPECTION, ["override.image_reused", "score.clear"], None)
    else:
        assert again[0] is Tier.PHYSICAL_INSPECTION and "override.image_held_before" in again[1]
        assert len(carried) == 1 and (
            "shipment F, held at PHYSICAL_INSPECTION (inspection found 'foreign_object' in picture "
            "F-aaaa.png; audit record 1)" in carried[0]
        ), carried


@pytest.mark.parametrize("near_copy", ["RELEASE", "REMOTE_INSPECTION"])
def test_a_finding_holds_the_picture_it_was_made_on_not_another_of_the_shipment_sent_with_a_near_copy(
    db_url: str, near_copy: str
) -> None:
    """F held on picture A, inspection found an anomaly; F re-scanned on picture G, inspected clean.
    H sends G (the same bytes) and a near-copy of G: the near-copy pooled F's finding onto every
    picture of H naming F, so G itself was held at physical inspection as if it were A, the reason
    saying "the same picture" was held by a finding G was never in, and under ``image_near_copy:
    RELEASE`` too. A near-copy carries the finding (the lookup does not say which picture of F it is
    near) only where the policy holds near-copies, naming the picture the finding was made on."""
    policy = parse_policy(
        {
            "policy_version": "t-1",
            "cargo_types": {"bulk_ore": {}},
            "random_audit": {"rate": 0.0},
            "overrides": {"image_near_copy": near_copy},
        }
    )
    other = "0123456789abcdef" + "5a" * 32  # G's perceptual hash, far from A's (_P)
    near = f"{other[:16]}{int(other[16:], 16) ^ 1:064x}"
    with AuditStore.open(db_url) as store:

        def decided(rows: list[ImageVerdict]) -> ShipmentDecision:
            ((decision, why),) = decide_and_record(
                policy, rows, audit_key=KEY, store=store, near_copy_bits=32
            )
            assert why is None
            return decision

        decided([_row("F", "aa" * 32, phash=_P, score=0.95)])
        store.record_outcome("F", found="unknown", officer="officer-7", notes="seized")
        decided([_row("F", "bb" * 32, phash=other, score=0.9)])
        store.record_outcome("F", found=None, officer="officer-7", decision_seq=3)
        both = decided([_row("H", "bb" * 32, phash=other), _row("H", "cc" * 32, phash=near)])
    carried = [(r.image, r.tier, r.message) for r in both.reasons if r.rule == "override.image_held_before"]
    if near_copy == "RELEASE":
        assert both.tier is Tier.REMOTE_INSPECTION and carried == []
    else:
        assert both.tier is Tier.PHYSICAL_INSPECTION
        assert [(image, tier) for image, tier, _ in carried] == [("H-cccc.png", Tier.PHYSICAL_INSPECTION)]
        assert carried[0][2].startswith(
            "a near-copy of a picture was decided in shipment F, held at PHYSICAL_INSPECTION "
            "(inspection found 'unknown' in picture F-aaaa.png; audit record 1)"
        )


def test_a_shipment_that_sent_a_picture_before_another_s_inspection_found_an_anomaly_carries_it(
    db_url: str,
) -> None:
    """E sent a picture first (released), F sent it after and inspection found an anomaly in F. The
    lookup names the shipments that sent a picture before this one first did, and the finding was
    looked for among those only: E sending the picture again, beside a fresh one, was released."""
    with AuditStore.open(db_url) as store:
        assert _decided(store, [_row("E", "aa" * 32)])["E"][0] is Tier.RELEASE
        assert _decided(store, [_row("F", "aa" * 32, score=0.95)])["F"][0] is Tier.PHYSICAL_INSPECTION
        store.record_outcome("F", found="foreign_object", officer="officer-7")
        again = _decided(store, [_row("E", "aa" * 32), _row("E", "cc" * 32)])["E"]
        held = store.get("E").decision  # type: ignore[union-attr]
    assert again[0] is Tier.PHYSICAL_INSPECTION and "override.image_held_before" in again[1], again
    carried = [r.message for r in held.reasons if r.rule == "override.image_held_before"]
    assert any("shipment F" in m and "'foreign_object'" in m for m in carried), carried
