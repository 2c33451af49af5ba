"""Verification names a record whose stored columns cannot even be read as the store wrote them: a
blob for text, text that is not UTF-8, a seq that is no number. SQLite keeps what it is given;
PostgreSQL's typed columns refuse such values, so these run on SQLite."""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from pipeline.audit import AuditStore
from pipeline.verdicts import ShipmentDecision

sys.path.insert(0, str(Path(__file__).parent))
import audit_builders  # noqa: E402


def decision(shipment: str) -> ShipmentDecision:
    return audit_builders.decision(shipment)


DAMAGE = [
    # (name, statement on a store of records 1-5, first bad record, what the message says)
    (
        "content-a-blob",
        "UPDATE audit_records SET content = CAST(content AS BLOB) WHERE seq = 3",
        3,
        "record 3: its content is stored as bytes, not text",
    ),
    (
        "content-not-utf8",
        "UPDATE audit_records SET content = CAST(X'7B22FF' AS TEXT) WHERE seq = 3",
        3,
        "record 3: a column is not UTF-8 text (Could not decode to UTF-8 column 'content'",
    ),
    (
        "prev-hash-a-blob",
        "UPDATE audit_records SET prev_hash = CAST(prev_hash AS BLOB) WHERE seq = 2",
        2,
        "record 2: its prev_hash is stored as bytes, not text",
    ),
    (
        "last-seq-text",
        "UPDATE audit_records SET seq = 'x5' WHERE seq = 5",
        5,
        "record 5: its seq is stored as 'x5' (str), not a number",
    ),
    (
        "middle-seq-text",  # read after every number: named where the next record links to it
        "UPDATE audit_records SET seq = 'x3' WHERE seq = 3",
        3,
        "record 3: its seq is stored as 'x3' (str), not a number",
    ),
    (
        "seq-a-fraction",
        "UPDATE audit_records SET seq = 4.5 WHERE seq = 4",
        4,
        "record 4: its seq is stored as '4.5' (float), not a number",
    ),
]


@pytest.mark.parametrize(
    ("statement", "first_bad", "said"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE]
)
def test_verify_names_a_record_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], statement: str, first_bad: int, said: str
) -> None:
    from pipeline.cli import app, run

    db = tmp_path / "audit.db"
    with AuditStore.open(f"sqlite:///{db}") as store:
        for n in range(1, 6):
            store.record(decision(f"S{n}"))
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(statement)
        conn.commit()
    with AuditStore.open(f"sqlite:///{db}", create=False) as store:
        report = store.verify()
    assert (report.ok, report.first_bad, report.problem) == (False, first_bad, "altered")
    assert said in report.message
    assert run(app, ["audit", "verify", "--db", f"sqlite:///{db}"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"chain broken at record {first_bad} (altered): {said}" in err
    assert "run `clearsight audit verify`" not in err
