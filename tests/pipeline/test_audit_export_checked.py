"""`clearsight audit export` (CSV, JSONL and --chain) checks each record's hash, columns and link as
it reads them, on SQLite and the real PostgreSQL: an export of a tampered store is refused, leaving
no file and any earlier export as it was."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.audit import AuditStore
from pipeline.verdicts import ShipmentDecision, Tier

sys.path.insert(0, str(Path(__file__).parent))
import audit_builders  # noqa: E402
from audit_builders import sql  # noqa: E402


def decision(shipment: str, tier: Tier = Tier.RELEASE) -> ShipmentDecision:
    return audit_builders.decision(shipment, tier)


TAMPERING = [
    (
        "content-released",
        "UPDATE audit_records SET content = REPLACE(content, 'PHYSICAL_INSPECTION', 'RELEASE'), "
        "tier = 'RELEASE' WHERE seq = 3",
        "record 3: content does not match its record_hash",
    ),
    (
        "tier-column",
        "UPDATE audit_records SET tier = 'RELEASE' WHERE seq = 3",
        "record 3: column tier = 'RELEASE' but the hashed content says 'PHYSICAL_INSPECTION'",
    ),
    (
        "outcome-moved",  # an outcome pointed at another decision by its column
        "UPDATE audit_records SET ref_seq = 2 WHERE seq = 5",
        "record 5: column ref_seq = 2 but the hashed content says 3",
    ),
    (
        "middle-deleted",
        "DELETE FROM audit_records WHERE seq = 3",
        "record 4 does not link to record 2 before it",
    ),
]
EXPORTS = [("csv", []), ("jsonl", []), ("jsonl", ["--chain"])]


@pytest.mark.parametrize("earlier", [False, True], ids=["new", "over-earlier"])
@pytest.mark.parametrize(("suffix", "flags"), EXPORTS, ids=["csv", "jsonl", "chain"])
@pytest.mark.parametrize(("statement", "said"), [t[1:] for t in TAMPERING], ids=[t[0] for t in TAMPERING])
def test_an_export_of_a_tampered_store_is_refused_naming_the_record(
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    statement: str,
    said: str,
    suffix: str,
    flags: list[str],
    earlier: bool,
) -> None:
    from pipeline.cli import app, run

    with AuditStore.open(db_url) as store:
        store.record(decision("S1"))
        store.record(decision("S2", Tier.REMOTE_INSPECTION))
        store.record(decision("S3", Tier.PHYSICAL_INSPECTION))
        store.record(decision("S4"))
        store.record_outcome("S3", found="foreign_object", officer="o-7")
    out = tmp_path / "out"
    out.mkdir()
    target = out / f"export.{suffix}"
    # the records were written without a key: what is checked here is each record's hash and link
    argv = ["audit", "export", *flags, "--no-seals", "--db", db_url, "--out", str(target)]
    if earlier:
        assert run(app, argv) == 0
    before = target.read_bytes() if earlier else None
    capsys.readouterr()
    sql(db_url, statement)
    assert run(app, [*argv, "--overwrite"] if earlier else argv) == 2  # told to replace it, and refused
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("Error: ") and said in err and "nothing exported" in err
    assert [p.name for p in out.iterdir()] == ([target.name] if earlier else [])  # no partial file
    if earlier:
        assert target.read_bytes() == before


SECRET = "a-long-server-secret-for-tests-only"


@pytest.mark.parametrize(("suffix", "flags"), EXPORTS, ids=["csv", "jsonl", "chain"])
@pytest.mark.parametrize(
    ("statement", "said"),
    [
        # a record rewritten whole: hash and link made again, its seal left as it was
        (
            # its first two digits changed: 'ff' put in their place left one seal in 256 as it was
            "UPDATE audit_records SET seal = CASE WHEN SUBSTR(seal, 1, 2) = 'ff' THEN 'ee' ELSE 'ff' END "
            "|| SUBSTR(seal, 3) WHERE seq = 3",
            "record 3: forged or altered",
        ),
        ("UPDATE audit_records SET seal = NULL WHERE seq = 4", "1 records carry no seal, first at seq 4"),
    ],
    ids=["seal-wrong", "seal-cleared"],
)
def test_an_export_with_the_key_checks_every_seal(
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    statement: str,
    said: str,
    suffix: str,
    flags: list[str],
) -> None:
    from pipeline.cli import app, run
    from pipeline.settings import Settings, audit_seal_key

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET)
    with AuditStore.open(db_url, seal_key=audit_seal_key(Settings(audit_secret=SECRET))) as store:
        for shipment in ("S1", "S2", "S3", "S4"):
            store.record(decision(shipment))
    target = tmp_path / f"export.{suffix}"
    argv = ["audit", "export", *flags, "--db", db_url, "--out", str(target)]
    sql(db_url, statement)
    assert run(app, argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("Error: ") and said in err and "nothing exported" in err
    assert not target.exists()


@pytest.mark.parametrize(("suffix", "flags"), EXPORTS, ids=["csv", "jsonl", "chain"])
def test_an_export_keeps_an_existing_file_unless_told_and_never_replaces_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, flags: list[str]
) -> None:
    from pipeline.cli import app, run

    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    with AuditStore.open(db_url) as store:
        store.record(decision("S1"))
    # a dataset's manifest or a scoring run's rows, which the export replaced without asking
    target = tmp_path / f"rows.{suffix}"
    target.write_text("shipment_id,path\nS9,a.png\n")
    argv = ["audit", "export", *flags, "--no-seals", "--db", db_url, "--out", str(target)]
    assert run(app, argv) == 2
    assert capsys.readouterr().err == (
        f"Error: --out {str(target)!r} already exists; pass --overwrite to replace it\n"
    )
    assert target.read_text() == "shipment_id,path\nS9,a.png\n"
    assert run(app, [*argv, "--overwrite"]) == 0
    assert "S1" in target.read_text()
    # told to replace the store itself, it refuses: the export would destroy the audit trail
    store_file = tmp_path / "audit.db"
    before = store_file.read_bytes()
    argv = ["audit", "export", *flags, "--no-seals", "--db", db_url, "--out", str(store_file), "--overwrite"]
    assert run(app, argv) == 2
    assert "is the --db file: writing it would destroy the audit trail" in capsys.readouterr().err
    assert store_file.read_bytes() == before
