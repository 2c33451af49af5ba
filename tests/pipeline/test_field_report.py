"""The field report: what the officers' inspections recorded in the audit trail say of the models,
from hand-built records (the figures against hand-computed values) and through the CLI on a real store."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from datasets.errors import AuditError
from pipeline.audit import AuditRecord, AuditStore, OutcomeRecord
from pipeline.audit.seal import SealKey
from pipeline.field_report import ALL, FieldReport, GroupFigures, field_report, would_be_tier
from pipeline.field_report_page import render_field_report
from pipeline.verdicts import Reason, Tier

sys.path.insert(0, str(Path(__file__).parent))
import audit_builders  # noqa: E402

SECRET = "a-long-field-report-secret-for-tests"

AUDIT = Reason(rule="random_audit", tier=Tier.REMOTE_INSPECTION, message="picked")


def _decision(
    shipment: str,
    kind: str,
    *,
    cargo: str = "bulk_ore",
    day: str = "2026-11-05",
    score: float = 0.1,
    model: str = "ore-m1",
):
    """A decision of ``kind``: 'release', 'audited' (a would-be release picked for audit) or 'hold'."""
    tier = {"release": Tier.RELEASE, "audited": Tier.REMOTE_INSPECTION, "hold": Tier.PHYSICAL_INSPECTION}[
        kind
    ]
    base = audit_builders.decision(
        shipment, Tier.PHYSICAL_INSPECTION if kind == "hold" else Tier.RELEASE, score=score
    )
    reasons = list(base.reasons) + ([AUDIT] if kind == "audited" else [])
    images = [i.model_copy(update={"cargo_type": cargo, "model_id": model}) for i in base.images]
    return base.model_copy(
        update={
            "tier": tier,
            "reasons": reasons,
            "random_audit": kind == "audited",
            "cargo_type": cargo,
            "images": images,
            "model_ids": [model],
            "decided_at": f"{day}T10:00:00.000000+00:00",
        }
    )


_SEQ = iter(range(1, 10**9))


def _record(decision, found: str | None | bool = False) -> AuditRecord:
    """A record of ``decision``; ``found``: False no outcome, None clean, a type found."""
    seq = next(_SEQ)
    outcome = None
    if found is not False:
        outcome = OutcomeRecord(
            seq=seq + 1,
            record_hash="ef" * 32,
            prev_hash="ab" * 32,
            created_at=decision.decided_at,
            shipment_id=decision.shipment_id,
            decision_seq=seq,
            found=found,
            officer="officer-1",
        )
    return AuditRecord(
        seq=seq,
        record_hash="ab" * 32,
        prev_hash="cd" * 32,
        created_at=decision.decided_at,
        decision=decision,
        outcome=outcome,
    )


def _population(
    releases: int, audited: int, audited_found: int, holds: int, holds_found: int, prefix: str = "", **kw
) -> list:
    records = []
    for i in range(releases - audited):
        records.append(_record(_decision(f"{prefix}R{i}", "release", **kw)))
    for i in range(audited):
        records.append(
            _record(
                _decision(f"{prefix}A{i}", "audited", **kw), "foreign_object" if i < audited_found else None
            )
        )
    for i in range(holds):
        records.append(
            _record(_decision(f"{prefix}H{i}", "hold", **kw), "wet_patch" if i < holds_found else None)
        )
    return records


@pytest.mark.parametrize(
    ("reasons", "tier", "expected"),
    [
        (
            [("score.clear", Tier.RELEASE), ("random_audit", Tier.REMOTE_INSPECTION)],
            Tier.REMOTE_INSPECTION,
            Tier.RELEASE,
        ),
        (
            [
                ("score.clear", Tier.RELEASE),
                ("score.review", Tier.REMOTE_INSPECTION),
                ("random_audit", Tier.PHYSICAL_INSPECTION),
            ],
            Tier.PHYSICAL_INSPECTION,
            Tier.REMOTE_INSPECTION,
        ),
        (
            [("override.radiation_alarm", Tier.PHYSICAL_INSPECTION)],
            Tier.PHYSICAL_INSPECTION,
            Tier.PHYSICAL_INSPECTION,
        ),
        ([("random_audit", Tier.REMOTE_INSPECTION)], Tier.REMOTE_INSPECTION, Tier.REMOTE_INSPECTION),
        ([], Tier.RELEASE, Tier.RELEASE),
    ],
)
def test_the_tier_a_decision_would_have_had_without_its_audit(reasons, tier, expected) -> None:
    decision = _decision("S", "release").model_copy(
        update={"tier": tier, "reasons": [Reason(rule=r, tier=t, message="m") for r, t in reasons]}
    )
    assert would_be_tier(_record(decision)) is expected


def test_the_figures_against_hand_computed_values() -> None:
    """80 would-be releases, 10 of them audited (1 anomalous); 20 holds (10 anomalous): R = 0.8,
    p_r = 0.1, p_h = 0.5, so 0.08 / (0.08 + 0.1) of the anomalous cargo was released."""
    report = field_report(_population(80, 10, 1, 20, 10))
    g = report.by_cargo[ALL]
    assert (g.decided, g.would_release, g.audited, g.audited_inspected, g.audited_found) == (
        100,
        80,
        10,
        10,
        1,
    )
    assert (g.held, g.held_inspected, g.held_found) == (20, 20, 10)
    assert g.tiers == {"RELEASE": 70, "REMOTE_INSPECTION": 10, "PHYSICAL_INSPECTION": 20}
    point, (low, high) = g.miss_rate()
    assert point == pytest.approx(0.08 / 0.18)
    assert 0 < low < point < high < 0.95
    assert g.miss_rate() == g.miss_rate()  # seeded: the report is reproducible
    assert list(report.by_cargo) == [ALL, "bulk_ore"] and report.by_cargo["bulk_ore"].decided == 100
    assert [m.shipment_id for m in report.misses] == ["A0"] and report.misses[0].found == "foreign_object"
    block = report.as_json()["by_cargo_type"][ALL]
    assert block["anomalous_share_among_released"] == 0.1
    assert (
        block["anomalous_share_among_released_interval"][0]
        < 0.1
        < block["anomalous_share_among_released_interval"][1]
    )
    assert block["found_in_audits"] == {"foreign_object": 1}


@pytest.mark.parametrize(
    ("population", "target", "said"),
    [
        ((80, 10, 0, 20, 10), 0.01, "not known: no random audit of a would-be release has an outcome yet"),
        ((80, 0, 0, 20, 10), 0.01, "not known: no random audit of a would-be release has an outcome yet"),
        ((80, 10, 1, 0, 0), 0.01, "not known: no hold has an outcome yet"),
        ((80, 10, 0, 20, 0), 0.01, "not known: every inspection found the cargo clean"),
        ((1000, 200, 20, 100, 50), 0.01, "ABOVE the 1.0% target: estimated 66.7%"),
        ((1000, 200, 0, 100, 50), 0.3, "within the 30.0% target: estimated 0.0%"),
        ((1000, 200, 0, 100, 50), 0.25, "not known yet: estimated 0.0% (95 % interval 0.0% to 29.2%)"),
        (
            (5, 1, 0, 4, 1),
            0.01,
            "not known yet: estimated 0.0% (95 % interval 0.0% to",
        ),  # never ABOVE on nothing,
        ((1000, 200, 1, 100, 50), 0.05, "not known yet: estimated 9.1%"),
        # one decimal wrote these targets "0.0%" and "0.1%"
        ((1000, 200, 20, 100, 50), 0.0001, "ABOVE the 0.01% target: estimated 66.7%"),
        ((1000, 200, 20, 100, 50), 0.0005, "ABOVE the 0.05% target: estimated 66.7%"),
        ((1000, 200, 0, 100, 50), 0.00123, "not known yet: estimated 0.0% (95 % interval 0.0% to 29.2%) "
         "spans the 0.123% target"),
    ],
)  # fmt: skip
def test_the_verdict_against_the_target(population, target: float, said: str) -> None:
    releases, audited, found, holds, held_found = population
    records = _population(releases, audited, found, holds, held_found)
    if population == (80, 10, 0, 20, 10):  # the audits picked, none inspected yet
        records = [r.model_copy(update={"outcome": None}) if r.decision.random_audit else r for r in records]
    assert field_report(records, target=target).by_cargo[ALL].verdict(target).startswith(said)


def test_a_shipment_counts_by_its_latest_inspected_decision_in_the_window() -> None:
    """The review's repro: a batch decided again under a new policy a day later (no outcome on the
    new decisions) erased every audit finding from the figures and the list of misses."""
    early = _record(_decision("S1", "audited", day="2026-11-02"), "foreign_object")
    later = _record(_decision("S1", "audited", day="2026-11-10"))  # decided again: no outcome
    held = _record(_decision("S3", "hold", day="2026-11-03"))
    held_again = _record(_decision("S3", "release", day="2026-11-11"))
    other = _record(_decision("S2", "release", day="2026-11-20", cargo="vacuum_pack"))
    report = field_report([early, later, held, held_again, other])
    g = report.by_cargo[ALL]
    assert (g.decided, g.audited_inspected, g.audited_found, g.held) == (3, 1, 1, 0)  # S3 by its latest
    assert [m.shipment_id for m in report.misses] == ["S1"]
    assert list(report.by_week) == ["2026-W45", "2026-W46", "2026-W47"]
    window = field_report(
        [early, later, held, held_again, other],
        since=datetime(2026, 11, 5, tzinfo=UTC),
        until=datetime(2026, 11, 12, tzinfo=UTC),
    )
    assert window.by_cargo[ALL].decided == 2 and window.misses == []  # the inspection lies before it
    assert window.records_read == 5 and list(window.by_cargo) == [ALL, "bulk_ore"]


def test_an_audits_finding_stays_when_the_shipment_is_decided_and_inspected_again() -> None:
    """The review's repros: audited A0 found anomalous, then re-run under a retrained model that
    holds it, an officer's outcome lifting that hold (or confirming on a later plain release): the
    finding left the audits' sample, and the verdict went from ABOVE to 'within'."""
    audit = _record(_decision("A0", "audited", day="2026-11-02"), "foreign_object")
    held_later = _record(_decision("A0", "hold", day="2026-11-09"), "foreign_object")
    audit_open = _record(_decision("A1", "audited", day="2026-11-02"))  # its outcome went to the re-run
    released_later = _record(_decision("A1", "release", day="2026-11-09"), "seal_defect")
    held_before = _record(_decision("A2", "hold", day="2026-11-01"), "tear")  # a finding before the audit
    audit_after = _record(_decision("A2", "audited", day="2026-11-03"))
    report = field_report([held_before, audit, audit_open, audit_after, held_later, released_later])
    g = report.by_cargo[ALL]
    assert (g.decided, g.audited, g.audited_inspected, g.audited_found, g.held) == (3, 3, 2, 2, 0)
    assert sorted((m.shipment_id, m.found, m.decision_seq) for m in report.misses) == [
        ("A0", "foreign_object", audit.seq),
        ("A1", "seal_defect", audit_open.seq),
    ]


def test_a_later_clean_inspection_does_not_wash_out_the_audits_finding() -> None:
    """The third review's repro: the audit found the object (and it was seized); the re-run under
    the retrained model held the shipment, and the officer lifting that hold found it clean. The
    verdict went from ABOVE to 'within'."""
    audit = _record(_decision("A0", "audited", day="2026-11-02"), "foreign_object")
    lifted = _record(_decision("A0", "hold", day="2026-11-09"), None)
    clean_audit = _record(_decision("A1", "audited", day="2026-11-02"), None)
    report = field_report([audit, clean_audit, lifted])
    g = report.by_cargo[ALL]
    assert (g.audited_inspected, g.audited_found, g.held) == (2, 1, 0)
    assert [(m.shipment_id, m.found, m.decision_seq) for m in report.misses] == [
        ("A0", "foreign_object", audit.seq)
    ]


def test_a_holds_finding_stays_when_a_later_inspection_finds_the_shipment_clean(db_url: str) -> None:
    """The fifth review's repro: X held, inspection found an anomaly (the object seized), re-scanned
    at the same tier, inspected clean, then released. X counted by its latest inspected decision,
    held and found clean: held_found 0, and the miss-rate estimate lost a seizure."""
    with AuditStore.open(db_url) as store:
        hot = audit_builders.decision("X", Tier.PHYSICAL_INSPECTION, score=0.95, sha="a1" * 32)
        store.record(hot, idempotency_key="1:X")
        store.record_outcome("X", found="foreign_object", officer="officer-7", notes="knife seized")
        rescan = audit_builders.decision("X", Tier.PHYSICAL_INSPECTION, score=0.9, sha="a3" * 32)
        store.record(rescan, idempotency_key="3:X")
        store.record_outcome("X", found=None, officer="officer-7", decision_seq=3)
        store.record(audit_builders.decision("X", Tier.RELEASE, sha="a2" * 32), idempotency_key="2:X")
        g = field_report(store.iter_records()).by_cargo[ALL]
    assert (g.decided, g.held, g.held_inspected, g.held_found) == (1, 1, 1, 1)
    assert g.holds_by_tier == {"PHYSICAL_INSPECTION": [1, 1, 1]}


@pytest.mark.parametrize(("corrected", "found"), [(None, 0), ("tear", 1)], ids=["clean", "another-finding"])
def test_a_finding_corrected_on_a_decision_since_superseded_counts_as_corrected(
    db_url: str, corrected: str | None, found: int
) -> None:
    """X held, a finding recorded by mistake, re-scanned at the same tier and inspected clean; then
    the finding corrected with amend on the superseded decision: X is counted by that decision's
    latest outcome, the correction."""
    with AuditStore.open(db_url) as store:
        hot = audit_builders.decision("X", Tier.PHYSICAL_INSPECTION, score=0.95, sha="a1" * 32)
        store.record(hot, idempotency_key="1:X")
        store.record_outcome("X", found="foreign_object", officer="officer-7", notes="misread")
        rescan = audit_builders.decision("X", Tier.PHYSICAL_INSPECTION, score=0.9, sha="a3" * 32)
        store.record(rescan, idempotency_key="3:X")
        store.record_outcome("X", found=None, officer="officer-7", decision_seq=3)
        store.record_outcome("X", found=corrected, officer="officer-8", decision_seq=1, amend=True)
        g = field_report(store.iter_records()).by_cargo[ALL]
    assert (g.decided, g.held, g.held_inspected, g.held_found) == (1, 1, 1, found)


def test_a_holds_finding_counts_at_the_tier_it_was_found_at() -> None:
    """Found at remote inspection, held at physical since and found clean there, then released: the
    shipment counts as a remote hold found anomalous, what that tier's inspection found."""
    remote = _record(
        _decision("Y", "hold", day="2026-11-02").model_copy(update={"tier": Tier.REMOTE_INSPECTION}), "tear"
    )
    physical = _record(_decision("Y", "hold", day="2026-11-03"), None)
    released = _record(_decision("Y", "release", day="2026-11-04"))
    clean = _record(_decision("Z", "hold", day="2026-11-02"), None)
    g = field_report([remote, clean, physical, released]).by_cargo[ALL]
    assert (g.decided, g.held, g.held_inspected, g.held_found) == (2, 2, 2, 1)
    assert g.holds_by_tier == {"REMOTE_INSPECTION": [1, 1, 1], "PHYSICAL_INSPECTION": [1, 1, 0]}


@pytest.mark.parametrize("column", ["ref_seq-elsewhere", "ref_seq-nowhere", "read-twice"])
def test_an_outcome_pointed_elsewhere_between_the_walk_and_its_lookup_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, column: str
) -> None:
    """The third review's repro: outcomes are looked up by their ref_seq column, which is not hashed;
    pointed at another record meanwhile (and restored), AUD-0's finding was attached to nothing."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    _store(url)
    outcome = audit_builders.sql(
        url, "SELECT seq FROM audit_records WHERE kind = 'outcome' ORDER BY seq LIMIT 1"
    )[0][0]
    to = 1 if column == "ref_seq-elsewhere" else outcome

    def point_it_elsewhere() -> None:
        audit_builders.sql(url, "UPDATE audit_records SET ref_seq = :to WHERE seq = :q", to=to, q=outcome)

    if column == "read-twice":  # each page's outcomes read as they are, and once more
        _writer_between_walk_and_lookup(monkeypatch, twice=True)
    else:
        _writer_between_walk_and_lookup(monkeypatch, point_it_elsewhere)
    with (
        AuditStore.open(url, create=False, seal_key=SealKey.derive(SECRET)) as store,
        pytest.raises(AuditError, match=rf"outcome record {outcome} changed while the chain was read"),
    ):
        list(store.checked_decisions(seals=store.seal_check()))


@pytest.mark.parametrize("audits", [10_283, 10_392])
def test_within_is_never_said_before_the_exact_bound_allows_it(audits: int) -> None:
    """The fourth review's repro, the README's example (10 % of holds anomalous, 74 % released): at
    10,284 clean audits the verdict said "within" while saying 10,393 were needed at least; the
    draws' sample quantile of a fixed seed sat inside the exact bound in every report."""
    g = GroupFigures(
        decided=100_000, would_release=74_000, held=26_000, held_inspected=26_000, held_found=2_600
    )
    g.audited = g.audited_inspected = audits
    g.holds_by_tier = {"PHYSICAL_INSPECTION": [26_000, 26_000, 2_600]}
    assert g.audits_to_show(0.01) == 10_393
    assert not g.verdict(0.01).startswith("within")


def test_a_finding_recorded_past_the_window_counts_for_the_audit_within_it() -> None:
    """The fourth review's repro: audits on the 5th, a retrained model's hold on the 6th with the
    finding recorded on it; a report --until the 6th lost every finding and said "within"."""
    audit = _record(_decision("A0", "audited", day="2026-11-05"))
    held = _record(_decision("A0", "hold", day="2026-11-06"), "foreign_object")
    clean = _record(_decision("A1", "audited", day="2026-11-05"), None)
    report = field_report([audit, clean, held], until=datetime(2026, 11, 6, tzinfo=UTC))
    g = report.by_cargo[ALL]
    assert (g.decided, g.audited_inspected, g.audited_found, g.held) == (2, 2, 1, 0)
    assert [(m.shipment_id, m.found) for m in report.misses] == [("A0", "foreign_object")]


def test_a_finding_from_an_audit_before_the_window_counts_for_no_hold_within_it() -> None:
    """The fifth review's repro: audited on the 5th, held by the retrained model on the 6th with the
    finding recorded on that hold; a report --since the 6th counted last week's miss as this week's
    catch by a hold."""
    audit = _record(_decision("A0", "audited", day="2026-11-05"))
    held = _record(_decision("A0", "hold", day="2026-11-06"), "foreign_object")
    fresh = _record(_decision("H1", "hold", day="2026-11-06"), None)
    g = field_report([audit, held, fresh], since=datetime(2026, 11, 6, tzinfo=UTC)).by_cargo[ALL]
    assert (g.decided, g.held, g.held_inspected, g.held_found, g.audited) == (2, 2, 1, 0, 0)
    # the sixth review's repro: the audit's finding recorded on it already (clean), this week's hold
    # inspected anew and found clean: that inspection is the hold's, not dropped
    recorded = _record(_decision("A2", "audited", day="2026-11-05"), None)
    held_again = _record(_decision("A2", "hold", day="2026-11-06"), None)
    g = field_report([recorded, held_again, fresh], since=datetime(2026, 11, 6, tzinfo=UTC)).by_cargo[ALL]
    assert (g.decided, g.held, g.held_inspected, g.held_found) == (2, 2, 2, 0)


def test_holds_are_weighed_per_tier() -> None:
    """90 remote holds (10 inspected, 1 anomalous) and 10 physical ones (10 inspected, 8): pooled,
    9 of 20 (0.45); per tier, 0.9 x 0.1 + 0.1 x 0.8 = 0.17. A tier with holds but no outcome leaves
    the share unknown (the review's repro: pooled, the physical holds' 0.6 stood in for 900 remote
    holds, and the verdict said "within")."""
    records = _population(100, 20, 0, 0, 0)
    for i in range(90):
        remote = _decision(f"RH{i}", "hold").model_copy(update={"tier": Tier.REMOTE_INSPECTION})
        remote = remote.model_copy(
            update={
                "reasons": [r.model_copy(update={"tier": Tier.REMOTE_INSPECTION}) for r in remote.reasons]
            }
        )
        records.append(_record(remote, ("tear" if i == 0 else None) if i < 10 else False))
    for i in range(10):
        records.append(_record(_decision(f"PH{i}", "hold"), "wet_patch" if i < 8 else None))
    g = field_report(records).by_cargo[ALL]
    assert g.holds_by_tier == {"REMOTE_INSPECTION": [90, 10, 1], "PHYSICAL_INSPECTION": [10, 10, 8]}
    assert (g.tiers_without_outcome, g.anomalous_among_held) == ([], pytest.approx(0.17))
    untouched = _record(_decision("XH", "hold").model_copy(update={"tier": Tier.REMOTE_INSPECTION}))
    g = field_report([*records[:100], untouched, *records[-10:]]).by_cargo[ALL]  # no remote outcome
    assert (g.tiers_without_outcome, g.anomalous_among_held, g.miss_rate()) == (
        ["REMOTE_INSPECTION"],
        None,
        (None, None),
    )
    assert g.verdict(0.01).startswith("not known: the 1 REMOTE_INSPECTION holds have no outcome yet")


def test_models_are_counted_apart() -> None:
    records = _population(10, 2, 1, 5, 2, model="ore-m1") + [
        _record(_decision(f"N{i}", "release", model="ore-m2")) for i in range(4)
    ]
    report = field_report(records)
    assert {k: v.decided for k, v in report.by_model.items()} == {"ore-m1": 15, "ore-m2": 4}


def test_the_target_is_bounded() -> None:
    with pytest.raises(
        ValueError, match=r"target miss rate 1.5 not accepted \(a share above 0 and below 1\)"
    ):
        field_report([], target=1.5)


def test_the_page_leads_with_the_verdict_and_draws_the_weeks() -> None:
    records = _population(80, 10, 1, 20, 10) + _population(50, 5, 0, 10, 4, prefix="W2-", day="2026-11-12")
    report = field_report(records)
    page = render_field_report(report, store="sqlite:///audit.db")
    assert page.index("Anomalous cargo released, per cargo type") < page.index("Week by week")
    assert 'class="verdict fail"><strong><bdi>all cargo</bdi></strong>: ABOVE the 1.0% target' in page
    assert page.count('aria-label="Shipments decided per week, by tier"') == 1
    assert "target 1.0%" in page and "<script" not in page
    assert "A0" in page and "foreign_object" in page  # the field's miss, to label for retraining
    empty = render_field_report(field_report([]), store="x")
    assert "no week has audit and hold outcomes yet" in empty and "None: no random audit" in empty


def test_a_small_target_is_written_with_its_significant_digits() -> None:
    """``--target-miss-rate 0.0001`` read "0.0%" in the page's text and the chart's target line, and
    the chart's y axis, quarters of its top with one decimal, read 0.0%, 0.0%, 0.1%, 0.1%, 0.1%."""
    report = field_report(_population(80, 10, 1, 20, 10), target=0.0001)
    page = render_field_report(report, store="sqlite:///audit.db")
    assert "Target: at most 0.01% of anomalous cargo released." in page
    assert "ABOVE the 0.01% target" in page and ">target 0.01%</text>" in page
    (chart,) = re.findall(r'<svg[^>]*aria-label="Estimated share.*?</svg>', page, re.S)
    assert re.findall(r'class="tick">([^<]*%)</text>', chart) == ["0.00%", "0.05%", "0.10%"]


def test_the_would_be_releases_are_not_called_released_beside_a_tier_chart_that_draws_audits_held() -> None:
    """The tables' "released" column counted the would-be releases picked for a random audit (66.7 %
    of 60 shipments), while the tier chart below drew RELEASE for 30 of them: the audited are drawn at
    the tier they were inspected at. The column says what it counts, and the chart's note why."""
    report = field_report(_population(40, 10, 1, 20, 10))
    block = report.by_cargo[ALL]
    assert (block.decided, block.would_release, block.tiers["RELEASE"]) == (60, 40, 30)
    page = render_field_report(report, store="sqlite:///audit.db")
    heads = re.findall(r"<thead><tr>(.*?)</tr></thead>", page)
    assert [re.findall(r"<th>(.*?)</th>", h)[2] for h in heads[:3]] == [
        "would release (released or audited)"
    ] * 3
    assert "<th>released</th>" not in page
    assert "<td>66.7 %</td>" in page
    assert "drawn at the tier it was inspected at, not as RELEASE" in page


def test_each_chart_titles_its_x_axis() -> None:
    """The charts' x axes had labels ("2026-W45") and no title: they read as dates."""
    records = _population(80, 10, 1, 20, 10) + _population(50, 5, 0, 10, 4, prefix="W2-", day="2026-11-12")
    page = render_field_report(field_report(records), store="sqlite:///audit.db")
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(charts) == 2
    for chart in charts:
        (title,) = re.findall(r'<text x="([0-9.]+)" y="([0-9.]+)"[^>]*class="axis">ISO week</text>', chart)
        assert title == ("379", "252")  # centred under the plot, below the week labels


def test_each_picture_of_a_miss_is_isolated_so_that_no_name_reorders_the_others() -> None:
    """The pictures were joined bare into one cell: a file name holding U+202E reversed itself and
    every name after it ('2.png' read as 'gnp.2'). Each name is isolated in its own <bdi>."""
    base = _decision("A0", "audited")
    paths = ("/arc/\u202egnp.1.png", "/arc/2.png", "/arc/3.png")
    images = [base.images[0].model_copy(update={"path": path}) for path in paths]
    report = field_report([_record(base.model_copy(update={"images": images}), "foreign_object")])
    page = render_field_report(report, store="sqlite:///audit.db")
    (cell,) = re.findall(r'<td colspan="7" class="path">(.*?)</td>', page, re.S)
    assert cell == "<bdi>/arc/\u202egnp.1.png</bdi>  ·  <bdi>/arc/2.png</bdi>  ·  <bdi>/arc/3.png</bdi>"


def test_a_cargo_type_recorded_before_the_character_rule_reorders_no_figure() -> None:
    """The verdict line printed the cargo type bare: "\\u202ebulk_ore" (recorded before the rule)
    reversed the figures after it, the interval's "84.0%" read as "0.48%". Every recorded name (a
    cargo type, models, a shipment id, a finding) is isolated in its own <bdi>, in the verdicts and
    the tables; the charts' labels are ISO weeks, never a recorded name."""
    cargo, model = "\u202ebulk_ore", "\u202eore-m1"
    records = _population(80, 10, 1, 20, 10, cargo=cargo, model=model)
    page = render_field_report(field_report(records), store="sqlite:///audit.db")
    verdicts = re.findall(r'<div class="verdict [^"]*">.*?</div>', page, re.S)
    assert any(f"<strong><bdi>{cargo}</bdi></strong>: ABOVE" in line for line in verdicts), verdicts
    assert f"<tr><td><bdi>{cargo}</bdi></td>" in page and f"<tr><td><bdi>{model}</bdi></td>" in page
    assert "<tr><td><bdi>A0</bdi></td>" in page and f"<td><bdi>{model}</bdi></td></tr>" in page
    assert re.sub(r"<bdi>.*?</bdi>", "", page).count("\u202e") == 0


def test_an_empty_group_has_no_rates() -> None:
    g = GroupFigures()
    assert (g.released_share, g.anomalous_among_released, g.miss_rate()) == (None, None, (None, None))
    assert isinstance(field_report([]), FieldReport)


# -- through the CLI, on a real store ------------------------------------------------------------


def _writer_between_walk_and_lookup(
    monkeypatch: pytest.MonkeyPatch, act: Callable[[], object] | None = None, *, twice: bool = False
) -> None:
    """A database writer's moment between the walk of the chain and an outcome lookup, simulated by
    wrapping the lookup (the store's own code runs unchanged): ``act`` runs before each lookup;
    ``twice`` reads each page's outcomes twice."""
    import pipeline.audit.store as store_module

    real = store_module.records_of

    def between(conn, rows, **kw):
        if act is not None:
            act()
        found = real(conn, rows, **kw)
        return found + real(conn, rows, **kw) if twice else found

    monkeypatch.setattr(store_module, "records_of", between)


def _store(url: str) -> None:
    key = SealKey.derive(SECRET)
    with AuditStore.open(url, seal_key=key) as store:
        for i in range(6):
            store.record(_decision(f"REL-{i}", "release"))
        for i in range(4):
            store.record(_decision(f"AUD-{i}", "audited"))
        store.record_outcome("AUD-0", found="foreign_object", officer="officer-1")
        for i in range(1, 4):
            store.record_outcome(f"AUD-{i}", found=None, officer="officer-1")
        for i in range(2):
            store.record(_decision(f"HOLD-{i}", "hold", score=0.95))
        store.record_outcome("HOLD-0", found="wet_patch", officer="officer-2")
        store.record_outcome("HOLD-1", found=None, officer="officer-2")


def test_cli_writes_the_report_of_a_verified_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import app, run

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    _store(url)
    out = tmp_path / "field"
    assert run(app, ["audit", "report", "--db", url, "--out", str(out)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert (
        "all cargo: 12 shipments, 10 would be released (released or audited; 4 audited and inspected, "
        "1 found anomalous)" in said
    )
    assert "seals: 18 records sealed, every seal matches" in said
    figures = json.loads((out / "field_report.json").read_text())
    block = figures["by_cargo_type"][ALL]
    assert (block["anomalous_share_among_released"], block["anomalous_share_among_held"]) == (0.25, 0.5)
    assert block["field_miss_rate"] == pytest.approx(0.25 * 10 / 12 / (0.25 * 10 / 12 + 0.5 * 2 / 12))
    assert [m["shipment_id"] for m in figures["misses"]] == ["AUD-0"]
    assert "AUD-0.png" in (out / "field_report.html").read_text()
    # kept unless told, and bad values named
    assert run(app, ["audit", "report", "--db", url, "--out", str(out)]) == 2
    assert "already holds field_report.json, field_report.html; pass --overwrite" in " ".join(
        capsys.readouterr().err.split()
    )
    assert (
        run(app, ["audit", "report", "--db", url, "--out", str(out), "--overwrite", "--since", "5 Nov"]) == 2
    )
    assert "--since '5 Nov' is not a date" in capsys.readouterr().err
    assert (
        run(
            app, ["audit", "report", "--db", url, "--out", str(out), "--overwrite", "--target-miss-rate", "2"]
        )
        == 2
    )
    assert "--target-miss-rate 2.0 not accepted" in capsys.readouterr().err
    args = ["--since", "2026-11-06", "--until", "2026-11-05"]
    assert run(app, ["audit", "report", "--db", url, "--out", str(out), "--overwrite", *args]) == 2
    assert "is not after --since" in capsys.readouterr().err


@pytest.mark.postgres
def test_the_report_hides_a_password_given_in_the_urls_query(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """libpq reads ``?password=`` as it reads ``user:password@``: the report named its store with
    the first whole (``password=hunter2``)."""
    from pipeline.cli import app, run

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET)
    _store(postgres_url)
    out = tmp_path / "field"
    url = f"{postgres_url}&password=hunter2&sslpassword=key-pass"
    assert run(app, ["audit", "report", "--db", url, "--out", str(out)]) == 0
    page = (out / "field_report.html").read_text()
    said = capsys.readouterr()
    assert "hunter2" not in page + said.out + said.err and "key-pass" not in page
    assert "password=***&amp;sslpassword=***" in page


def test_cli_prints_a_cargo_type_as_text_and_writes_both_files_or_neither(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The review's repros: a cargo type 'ore[/]' (a manifest may declare any) ended the command with
    an unexpected MarkupError; an HTML file that could not be replaced left the new JSON beside it."""
    from pipeline.cli import app, run

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    with AuditStore.open(url, seal_key=SealKey.derive(SECRET)) as store:
        store.record(_decision("ODD-1", "release", cargo="ore[/]"))
    out = tmp_path / "field"
    assert run(app, ["audit", "report", "--db", url, "--out", str(out)]) == 0
    assert "ore[/]: 1 shipments, 1 would be released" in capsys.readouterr().out
    before = (out / "field_report.json").read_text()
    (out / "field_report.html").unlink()
    (out / "field_report.html").mkdir()  # cannot be replaced by a file
    with AuditStore.open(url, seal_key=SealKey.derive(SECRET)) as store:
        store.record(_decision("ODD-2", "release", cargo="ore[/]"))
    assert run(app, ["audit", "report", "--db", url, "--out", str(out), "--overwrite"]) == 2
    assert (out / "field_report.json").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["field_report.html", "field_report.json"]  # no leftovers


def test_cli_draws_no_figures_from_a_trail_that_does_not_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forged 'clean' outcome would have lowered the anomalous share the audits found."""
    from pipeline.cli import app, run

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    _store(url)
    audit_builders.sql(url, "UPDATE audit_records SET seal = NULL WHERE seq = 11")
    out = tmp_path / "field"
    assert run(app, ["audit", "report", "--db", url, "--out", str(out)]) == 2
    assert "no figures drawn: they are not drawn from a trail that does not verify" in " ".join(
        capsys.readouterr().err.split()
    )
    assert not (out / "field_report.json").exists()


@pytest.mark.parametrize("rewrite", ["content", "content-and-hash"])
def test_an_outcome_rewritten_between_the_walk_and_its_lookup_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rewrite: str
) -> None:
    """The review's repro: a database writer flipped the audit's 'foreign_object' to clean after
    the walk had checked the chain and before the outcomes were looked up, and restored it after;
    the figures counted the clean one and every seal 'matched'. (The writer's moment is simulated by
    wrapping the lookup; the store's own code runs unchanged.)"""
    from pipeline.audit import chain_hash

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    _store(url)

    def flip_the_finding() -> None:
        seq, prev, content = audit_builders.sql(
            url,
            "SELECT seq, prev_hash, content FROM audit_records WHERE kind = 'outcome' ORDER BY seq LIMIT 1",
        )[0]
        forged = content.replace('"foreign_object"', "null")
        digest = chain_hash(prev, forged) if rewrite == "content-and-hash" else None
        sets = "content = :c" + (", record_hash = :h" if digest else "")
        audit_builders.sql(url, f"UPDATE audit_records SET {sets} WHERE seq = :q", c=forged, h=digest, q=seq)

    _writer_between_walk_and_lookup(monkeypatch, flip_the_finding)
    key = SealKey.derive(SECRET)
    with (
        AuditStore.open(url, create=False, seal_key=key) as store,
        pytest.raises(AuditError, match=r"outcome record \d+ changed while the chain was read"),
    ):
        field_report(store.checked_decisions(seals=store.seal_check()))


def test_an_outcomes_columns_edited_between_the_walk_and_its_lookup_are_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fourth review's repro: the outcome's created_at and shipment_id were taken from the
    columns beside its content, which no check compares on a read apart from the walk; an export
    wrote 2030-01-01 and another shipment's id."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    _store(url)
    _writer_between_walk_and_lookup(
        monkeypatch,
        lambda: audit_builders.sql(
            url,
            "UPDATE audit_records SET created_at = '2030-01-01', shipment_id = 'ELSE' WHERE kind = 'outcome'",
        ),
    )
    with AuditStore.open(url, create=False, seal_key=SealKey.derive(SECRET)) as store:
        records = list(store.checked_decisions(seals=store.seal_check()))
    outcomes = [r.outcome for r in records if r.outcome is not None]
    assert outcomes and all(o.shipment_id != "ELSE" and not o.created_at.startswith("2030") for o in outcomes)


@pytest.mark.parametrize(
    ("decided", "labels"), [(1, ["0", "1"]), (3, ["0", "1", "3"]), (41, ["0", "20", "41"])]
)
def test_the_shipments_chart_labels_whole_numbers_at_their_heights(decided: int, labels: list[str]) -> None:
    """Its middle line, at half the top, was labelled round(top / 2): "0" at 0.5 with one shipment
    (the axis read 0, 0, 1), "20" drawn at 20.5 with 41."""
    from pipeline.field_report_page import _y, weekly_tiers_svg

    week = GroupFigures(decided=decided)
    week.tiers["RELEASE"] = decided
    svg = str(weekly_tiers_svg({"2026-W45": week}))
    drawn = re.findall(r'<text x="[^"]*" y="([^"]*)" text-anchor="end" class="tick">([^<]*)<', svg)
    assert [label for _, label in drawn] == labels
    for y, label in drawn:  # each label is drawn 4 px below the line of its value
        assert float(y) == pytest.approx(_y(int(label), decided) + 4, abs=0.05)
