"""Reads that decide check the seals of the records they decide on, on SQLite and the real
PostgreSQL: a forged outcome never lifts a hold (in the store's own check, nor as a hold carried
over to a picture sent again), and a forged decision is never replayed. Without a key the store reads
as before, which the first test shows is what a forger counted on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from datasets.errors import AuditError, InputError
from pipeline.audit import AuditStore, SealBrokenError, SealKey, canonical_json
from pipeline.audit.store import QueuePage
from pipeline.batch_decisions import earlier_holds
from pipeline.verdicts import ShipmentDecision, Tier

sys.path.insert(0, str(Path(__file__).parent))
import audit_builders  # noqa: E402
from audit_builders import append_forged, sql  # noqa: E402

SECRET = "a-long-server-secret-for-tests-only"
KEY = SealKey.derive(SECRET)


def decision(
    shipment: str, tier: Tier = Tier.RELEASE, *, seen_in: list[str] | None = None
) -> ShipmentDecision:
    return audit_builders.decision(shipment, tier, seen_in=seen_in)


def forge_clean_outcome(url: str, shipment: str, seal: str | None = None) -> int:
    dec_seq, dec_hash = sql(
        url,
        "SELECT seq, record_hash FROM audit_records WHERE shipment_id = :s AND kind = 'decision' "
        "ORDER BY seq DESC",
        s=shipment,
    )[0]
    content = {
        "kind": "outcome",
        "shipment_id": shipment,
        "idempotency_key": None,
        "created_at": "2026-11-05T12:00:00.000000+00:00",
        "decision_seq": dec_seq,
        "decision_hash": dec_hash,
        "outcome": {"found": None, "officer": "officer-7", "notes": "re-inspected, clean"},
    }
    return append_forged(url, content, seal)


def held(url: str, key: SealKey | None) -> None:
    """S1 released, S2 held for physical inspection: records 1 and 2."""
    with AuditStore.open(url, seal_key=key) as store:
        store.record(decision("S1"))
        store.record(decision("S2", Tier.PHYSICAL_INSPECTION))


SEALS = {"left-off": lambda _: None, "made-up": lambda _: "ab" * 32}


def test_without_a_key_a_forged_outcome_lifts_the_hold(db_url: str) -> None:
    """What the forger counted on, and what a store without the key still does."""
    held(db_url, None)
    forge_clean_outcome(db_url, "S2")
    with AuditStore.open(db_url) as store:
        assert store.record(decision("S2", Tier.RELEASE)).decision.tier is Tier.RELEASE


@pytest.mark.parametrize("how", sorted(SEALS))
def test_a_forged_outcome_does_not_lift_a_hold(db_url: str, how: str) -> None:
    """Forged while the service runs: a writer opening the store later refuses it at once where the
    record carries no seal (:func:`test_a_writer_refuses_a_store_with_a_record_forged_unsealed`)."""
    held(db_url, KEY)
    with AuditStore.open(db_url, seal_key=KEY) as store:
        forged = forge_clean_outcome(db_url, "S2", SEALS[how](None))
        with pytest.raises(
            SealBrokenError,
            match=rf"audit record {forged} fails its seal \(.*\): run `clearsight audit verify`",
        ):
            store.record(decision("S2", Tier.RELEASE))
        # shown to an officer, it would pass for an inspection: a read to show is checked too
        with pytest.raises(SealBrokenError, match=f"audit record {forged} fails its seal"):
            store.get("S2")
        with pytest.raises(SealBrokenError, match=f"audit record {forged} fails its seal"):
            store.list(pending_outcome=False)
        assert [r.decision.shipment_id for r in store.list(pending_outcome=True)] == ["S1"]  # not listed
        # the hold carried over to the picture sent again under another id
        with pytest.raises(SealBrokenError, match=f"audit record {forged} fails its seal"):
            earlier_holds(store, decision("S9", seen_in=["S2"]).images)
        with pytest.raises(SealBrokenError, match=f"audit record {forged} fails its seal"):
            store.latest_decisions_at(Tier.PHYSICAL_INSPECTION, other_than="S9", holding="ab" * 32)
    assert sql(db_url, "SELECT MAX(seq) FROM audit_records") == [(forged,)]  # nothing recorded


def test_a_writer_refuses_a_store_with_a_record_forged_unsealed(db_url: str) -> None:
    held(db_url, KEY)
    forged = forge_clean_outcome(db_url, "S2", None)
    with pytest.raises(AuditError, match=rf"record {forged} carries no seal: written by a writer not given"):
        AuditStore.open(db_url, seal_key=KEY)
    with (
        AuditStore.open(db_url, create=False, seal_key=KEY) as store,  # `clearsight audit outcome`
        pytest.raises(AuditError, match="then, if they are genuine, seal them with `clearsight audit seal"),
    ):
        store.record_outcome("S2", found=None, officer="officer-1")
    assert sql(db_url, "SELECT MAX(seq) FROM audit_records") == [(forged,)]  # nothing recorded


def test_a_genuine_outcome_pointed_at_a_held_decision_is_caught(db_url: str) -> None:
    """The seal covers the hash, the hash the content: a column moved alone would pass a seal check."""
    held(db_url, KEY)
    with AuditStore.open(db_url, seal_key=KEY) as store:
        store.record_outcome("S1", found=None, officer="officer-1")  # record 3, of S1's decision 1
    sql(db_url, "UPDATE audit_records SET ref_seq = 2, shipment_id = 'S2' WHERE seq = 3")
    with (
        # opened to read, as by a service started before the edit: a writer's open refuses the head
        AuditStore.open(db_url, create=False, seal_key=KEY) as store,
        pytest.raises(SealBrokenError, match=r"audit record 3 fails its seal \(a column differs"),
    ):
        store.record(decision("S2", Tier.RELEASE))


def test_an_outcome_rewritten_under_its_seal_is_caught(db_url: str) -> None:
    held(db_url, KEY)
    with AuditStore.open(db_url, seal_key=KEY) as store:
        store.record_outcome("S2", found="foreign_object", officer="officer-1")  # record 3
    content = json.loads(sql(db_url, "SELECT content FROM audit_records WHERE seq = 3")[0][0])
    content["outcome"]["found"] = None  # the finding taken back, hash and seal left as they were
    sql(db_url, "UPDATE audit_records SET content = :c WHERE seq = 3", c=canonical_json(content))
    with (
        AuditStore.open(db_url, create=False, seal_key=KEY) as store,  # a writer's open refuses the head
        pytest.raises(SealBrokenError, match=r"audit record 3 fails its seal \(its content does not give"),
    ):
        earlier_holds(store, decision("S9", seen_in=["S2"]).images)


@pytest.mark.parametrize("how", sorted(SEALS))
def test_a_forged_decision_is_never_replayed(db_url: str, how: str) -> None:
    """A decision appended under a retry's idempotency key: the retry would read 'released' off it."""
    held(db_url, KEY)
    decided = json.loads(decision("S2", Tier.RELEASE).model_dump_json())
    content = {
        "kind": "decision",
        "shipment_id": "S2",
        "idempotency_key": "k-forged",
        "created_at": "2026-11-05T12:00:00.000000+00:00",
        "decision": decided,
    }
    with AuditStore.open(db_url, seal_key=KEY) as store:
        forged = append_forged(db_url, content, SEALS[how](None))
        with pytest.raises(SealBrokenError, match=f"audit record {forged} fails its seal"):
            store.replayed("k-forged", "S2")
        with pytest.raises(SealBrokenError, match=f"audit record {forged} fails its seal"):
            store.record(decision("S2", Tier.RELEASE), idempotency_key="k-forged")


def test_sealed_records_are_read_and_decided_on_as_before(db_url: str) -> None:
    held(db_url, KEY)
    with AuditStore.open(db_url, seal_key=KEY) as store:
        store.record_outcome("S2", found=None, officer="officer-1")
        assert store.record(decision("S2", Tier.RELEASE)).decision.tier is Tier.RELEASE  # lifted
        assert earlier_holds(store, decision("S9", seen_in=["S2"]).images) == {}
        assert store.verify().ok


def test_cli_show_and_list_check_seals_unless_told_not_to(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`audit show` printed a forged 'clean' outcome as an officer's; `--no-seals` is how an operator
    looks at records before vouching for them."""
    from pipeline.cli import app, run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET)
    held(db_url, KEY)
    forged = forge_clean_outcome(db_url, "S2", "ab" * 32)
    for argv in (["audit", "show", "S2"], ["audit", "list"]):
        assert run(app, [*argv, "--db", db_url]) == 2
        assert f"audit record {forged} fails its seal" in " ".join(capsys.readouterr().err.split())
    assert run(app, ["audit", "show", "S2", "--no-seals", "--db", db_url]) == 0
    assert "outcome: clean by officer-7" in capsys.readouterr().out


def test_a_sealed_decision_renumbered_past_a_hold_is_caught(db_url: str) -> None:
    """The review's repro: record numbers are not hashed, so moving a genuine, sealed RELEASE past
    the same shipment's later hold made it the latest decision read back, and the service answered
    RELEASE as if the hold were gone. A record read must stand where the chain puts it."""
    with AuditStore.open(db_url, seal_key=KEY) as store:
        store.record(decision("SHP-X"))  # record 1: released
        store.record(decision("SHP-X", Tier.PHYSICAL_INSPECTION))  # record 2: held
    sql(db_url, "UPDATE audit_records SET seq = 1000 WHERE seq = 1")
    with AuditStore.open(db_url, seal_key=KEY) as store:
        for read in (lambda: store.get("SHP-X"), lambda: store.record(decision("SHP-X"))):
            with pytest.raises(
                SealBrokenError, match=r"audit record 1000 fails its seal \(it is not where the chain"
            ):
                read()
    assert sql(db_url, "SELECT MAX(seq) FROM audit_records") == [(1000,)]  # nothing recorded


def test_a_review_page_lists_the_records_that_pass_and_names_those_that_fail(db_url: str) -> None:
    """One record failing its seal made :meth:`AuditStore.list` raise for the whole page, and the
    officers' review queue answered 500 for everyone. :meth:`AuditStore.list_page` lists the
    decisions that pass, each checked with its own outcomes, and names apart, by the record that
    fails and the shipment its column names, each one that does not; nothing of its content is read
    out. :meth:`AuditStore.list` still raises, for the callers that must not go on."""
    with AuditStore.open(db_url, seal_key=KEY) as store:
        for shipment in ("S1", "S2", "S3", "S4", "S5"):  # records 1 to 5
            store.record(decision(shipment, Tier.PHYSICAL_INSPECTION))
        store.record_outcome("S3", found="foreign_object", officer="officer-1")  # record 6
        sql(db_url, "UPDATE audit_records SET seal = NULL WHERE seq = 2")  # S2's decision unsealed
        forged = forge_clean_outcome(db_url, "S4", "ab" * 32)  # record 7: S4's hold 'lifted'
        page = store.list_page(limit=10)
        assert [(r.seq, r.decision.shipment_id) for r in page.records] == [(5, "S5"), (3, "S3"), (1, "S1")]
        assert page.records[1].outcome is not None and page.records[1].outcome.found == "foreign_object"
        assert [(f.seq, f.shipment_id) for f in page.failed] == [(forged, "S4"), (2, "S2")]
        assert page.failed[0].why.startswith(f"audit record {forged} fails its seal (forged or altered")
        assert page.failed[1].why.startswith("audit record 2 fails its seal (carries no seal")
        assert (page.listed, page.last_seq) == (5, 1)
        # a page is cut by the decisions it holds, those that fail too: the next one starts below
        first = store.list_page(limit=2)
        assert [r.seq for r in first.records] == [5] and [f.seq for f in first.failed] == [forged]
        assert (first.listed, first.last_seq) == (2, 4)
        second = store.list_page(limit=2, before=first.last_seq)
        assert [r.seq for r in second.records] == [3] and [f.seq for f in second.failed] == [2]
        assert (second.listed, second.last_seq) == (2, 2)
        pending = store.list_page(tiers=[Tier.PHYSICAL_INSPECTION], pending_outcome=True)
        assert [r.seq for r in pending.records] == [5, 1] and [f.seq for f in pending.failed] == [2]
        assert store.list_page(before=1) == QueuePage(records=[], failed=[], listed=0, last_seq=None)
        with pytest.raises(SealBrokenError, match="audit record 2 fails its seal"):  # decisions first
            store.list()
        with pytest.raises(InputError, match="limit=0"):
            store.list_page(limit=0)


def test_a_review_page_of_a_store_read_without_the_key_fails_none(db_url: str) -> None:
    held(db_url, KEY)
    sql(db_url, "UPDATE audit_records SET seal = NULL WHERE seq = 2")
    with AuditStore.open(db_url, create=False) as store:
        page = store.list_page()
        assert ([r.seq for r in page.records], page.failed) == ([2, 1], [])


def test_a_failing_hold_is_named_by_its_sealed_content_not_by_its_edited_column(db_url: str) -> None:
    """The review's repro: SHP-1's genuine hold given SHP-0's id by its column alone was shown as
    'Shipment SHP-0 ... fails its seal', hiding SHP-0's own card and naming SHP-1 nowhere."""
    with AuditStore.open(db_url, seal_key=KEY) as store:
        store.record(decision("SHP-0", Tier.PHYSICAL_INSPECTION))  # record 1
        store.record(decision("SHP-1", Tier.PHYSICAL_INSPECTION))  # record 2
    sql(db_url, "UPDATE audit_records SET shipment_id = 'SHP-0' WHERE seq = 2")
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:  # read: a writer refuses the head
        page = store.list_page(limit=10)
    assert [(f.seq, f.shipment_id) for f in page.failed] == [(2, "SHP-1 (its record's column says SHP-0)")]
    sql(db_url, "UPDATE audit_records SET content = content || ' ' WHERE seq = 2")  # its hash lost too
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:
        page = store.list_page(limit=10)
    assert [f.shipment_id for f in page.failed] == ["SHP-0 (as its record's column says: unverified)"]
