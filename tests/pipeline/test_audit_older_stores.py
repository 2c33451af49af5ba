"""A store at an older schema version is read as it is by `clearsight audit` and upgraded only by a
writer, on SQLite and the real PostgreSQL: reading it must not lock out the Clearsight that writes it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from datasets.errors import AuditError
from pipeline.audit import SCHEMA_VERSION, AuditStore
from pipeline.verdicts import ShipmentDecision, Tier

sys.path.insert(0, str(Path(__file__).parent))
import audit_builders  # noqa: E402
from audit_builders import sql  # noqa: E402


def decision(shipment: str, tier: Tier = Tier.RELEASE) -> ShipmentDecision:
    return audit_builders.decision(shipment, tier, reason_threshold=0.5)


def state(url: str) -> tuple[int, list[str]]:
    """The store's schema version and its tables."""
    engine = create_engine(url)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version FROM schema_info")).scalar_one()
        tables = sorted(inspect(conn).get_table_names())
    engine.dispose()
    return version, tables


# (version, the index tables a store of it lacks)
OLDER = [(1, ["audit_image_index", "audit_image_likeness"]), (2, ["audit_image_likeness"])]


def older(url: str, version: int, dropped: list[str]) -> str:
    """Two decisions and an outcome, in a store as that version laid it out."""
    with AuditStore.open(url) as store:
        store.record(decision("S1"))
        store.record(decision("S2", Tier.PHYSICAL_INSPECTION))
        store.record_outcome("S1", found=None, officer="o-1")
    for table in dropped:
        sql(url, f"DROP TABLE {table}")
    sql(url, f"UPDATE schema_info SET version = {version}")
    return url


@pytest.mark.parametrize(("version", "dropped"), OLDER, ids=["v1", "v2"])
def test_cli_verify_reads_an_older_store_as_it_is(
    db_url: str, version: int, dropped: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import app, run

    before = state(older(db_url, version, dropped))
    assert run(app, ["audit", "verify", "--no-seals", "--db", db_url]) == 0
    out = " ".join(capsys.readouterr().out.split())
    unchecked = f"image and policy indexes not checked: store at version {version};"
    assert f"3 records verified, chain intact; {unchecked}" in out
    assert state(db_url) == before  # neither upgraded nor given tables


@pytest.mark.parametrize(("version", "dropped"), OLDER, ids=["v1", "v2"])
def test_an_older_store_opened_to_read_takes_outcomes_not_decisions_until_a_writer_upgrades_it(
    db_url: str, version: int, dropped: list[str]
) -> None:
    before = state(older(db_url, version, dropped))
    with AuditStore.open(db_url, create=False) as store:
        assert store.get("S2") is not None
        assert store.sightings([("ab" * 32, None)], other_than="S9", near_copy_bits=0).found == {}
        assert store.record_outcome("S2", found=None, officer="o-2").seq == 4
        with pytest.raises(AuditError, match=f"is at schema version {version}: decisions of this Clearsight"):
            store.record(decision("S3"))
        assert store.verify().ok
    assert state(db_url) == before
    with AuditStore.open(db_url) as store:  # a writer upgrades it, its index made from the chain
        assert (
            store.sightings([("ab" * 32, None)], other_than="S9", near_copy_bits=0).found["ab" * 32].seen_in
        )
        report = store.verify()
    assert (report.ok, report.message) == (True, "4 records verified, chain intact")
    assert state(db_url)[0] == SCHEMA_VERSION


@pytest.mark.parametrize(("version", "dropped"), OLDER, ids=["v1", "v2"])
def test_an_older_store_read_as_it_is_still_has_its_chain_verified(
    db_url: str, version: int, dropped: list[str]
) -> None:
    older(db_url, version, dropped)
    sql(
        db_url,
        "UPDATE audit_records SET content = REPLACE(content, 'PHYSICAL_INSPECTION', 'RELEASE') WHERE seq = 2",
    )
    with AuditStore.open(db_url, create=False) as store:
        report = store.verify()
    assert (report.ok, report.first_bad, report.problem) == (False, 2, "altered")
