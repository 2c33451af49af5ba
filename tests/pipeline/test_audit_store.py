"""The audit store on SQLite and on the real PostgreSQL: records, queries, outcomes, export, schema
versions, and verification catching each kind of tampering done with raw SQL."""

from __future__ import annotations

import csv
import json
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, inspect, text

from datasets.errors import AuditError, ConflictError, InputError, PolicyError, SchemaVersionError
from datasets.json_text import MAX_DEPTH
from pipeline.audit import (
    GENESIS_HASH,
    SCHEMA_VERSION,
    AuditStore,
    SealBrokenError,
    canonical_json,
    chain_hash,
)
from pipeline.audit.chain import index_columns
from pipeline.audit.chain_file import write_chain_file
from pipeline.audit.database import parsed_url
from pipeline.audit.export import spreadsheet_safe, write_export
from pipeline.audit.image_indexes import Picture, Sighting
from pipeline.audit.seal import SealKey
from pipeline.decide import decide_shipment
from pipeline.policy import default_policy_path, load_policy
from pipeline.shipment_rows import declaration_from_rows
from pipeline.verdict_rows import read_verdicts
from pipeline.verdicts import Declaration, Reason, ShipmentDecision, Tier

sys.path.insert(0, str(Path(__file__).parent))
import audit_builders  # noqa: E402
from audit_builders import cli_key, sql  # noqa: E402


def decision(shipment: str, tier: Tier = Tier.RELEASE, score: float = 0.1) -> ShipmentDecision:
    return audit_builders.decision(shipment, tier, score=score, reason_threshold=0.5, extra={"hs": "2601"})


def rows(url: str, statement: str) -> list[tuple[object, ...]]:
    return sql(url, statement)


@pytest.fixture
def filled(db_url: str) -> str:
    """Four decisions (seq 1-4) and an outcome for S3 (seq 5)."""
    with AuditStore.open(db_url) as store:
        store.record(decision("S1"))
        store.record(decision("S2", Tier.REMOTE_INSPECTION, 0.6))
        store.record(decision("S3", Tier.PHYSICAL_INSPECTION, 0.9))
        store.record(decision("S4"))
        store.record_outcome("S3", found="foreign_object", officer="officer-7", notes="plastic sheet")
    return db_url


def test_records_chain_and_read_back(filled: str) -> None:
    with AuditStore.open(filled, create=False) as store:
        record = store.get("S3")
        assert record is not None
        assert record.decision == decision("S3", Tier.PHYSICAL_INSPECTION, 0.9)
        assert record.outcome is not None
        assert (record.outcome.found, record.outcome.officer, record.outcome.notes) == (
            "foreign_object",
            "officer-7",
            "plastic sheet",
        )
        assert (record.seq, record.outcome.seq, record.outcome.decision_seq) == (3, 5, 3)
        first = store.get("S1")
        assert first is not None and first.prev_hash == GENESIS_HASH
        assert store.get("nope") is None
        # every stored row satisfies record_hash = sha256(prev_hash + content), linked in order
        chain = rows(filled, "SELECT seq, prev_hash, record_hash, content FROM audit_records ORDER BY seq")
        prev = GENESIS_HASH
        for _seq, prev_hash, record_hash, content in chain:
            assert (prev_hash, record_hash) == (prev, chain_hash(prev, str(content)))
            assert content == canonical_json(json.loads(str(content)))
            prev = str(record_hash)
        assert [c[0] for c in chain] == [1, 2, 3, 4, 5]
        report = store.verify()
        assert (report.ok, report.records_checked, report.first_bad, report.problem) == (True, 5, None, None)
        assert (report.head_seq, report.head_hash) == (5, prev)


def test_list_is_the_review_queue(filled: str) -> None:
    with AuditStore.open(filled) as store:
        store.record(decision("S1", Tier.REMOTE_INSPECTION, 0.55))  # S1 re-decided: seq 6 supersedes seq 1
        seqs = lambda **kw: [r.seq for r in store.list(**kw)]  # noqa: E731
        assert seqs() == [6, 4, 3, 2]
        assert seqs(tiers=[Tier.REMOTE_INSPECTION]) == [6, 2]
        assert seqs(tiers=[Tier.PHYSICAL_INSPECTION, Tier.RELEASE]) == [4, 3]
        assert seqs(pending_outcome=True) == [6, 4, 2]
        assert seqs(pending_outcome=False) == [3]
        assert seqs(limit=2, offset=1) == [4, 3]
        # the page after one that ended at record 6, whatever outcomes took out of the queue since
        assert seqs(before=6) == [4, 3, 2]
        assert seqs(before=4, pending_outcome=True) == [2]
        assert seqs(before=1) == []
        with pytest.raises(
            InputError, match=r"limit=0, offset=0 not accepted \(limit 1 to 10000, offset >= 0\)"
        ):
            store.list(limit=0)
        with pytest.raises(InputError, match=r"before=0 not accepted \(a record number, >= 1\)"):
            store.list(before=0)


def test_outcomes_clean_corrected_and_refused(filled: str) -> None:
    with AuditStore.open(filled) as store:
        clean = store.record_outcome("S1", found=None, officer="officer-2")
        assert (clean.seq, clean.found, clean.decision_seq) == (6, None, 1)
        store.record_outcome("S1", found="wet_patch", officer="officer-3", notes="second look", amend=True)
        record = store.get("S1")
        assert record is not None and record.outcome is not None
        assert (record.outcome.found, record.outcome.officer, record.outcome.seq) == (
            "wet_patch",
            "officer-3",
            7,
        )
        with pytest.raises(InputError) as info:
            store.record_outcome("S9", found=None, officer="o")
        assert str(info.value) == f"no decision recorded for shipment 'S9' in {store.url}"
        with pytest.raises(InputError, match="officer is empty"):
            store.record_outcome("S1", found=None, officer=" ")
        # read back as clean on the API and the review page, as an anomaly in the CSV export
        for word in ("clean", "Good", "none"):
            with pytest.raises(InputError, match=f"found '{word}' names no anomaly type"):
                store.record_outcome("S1", found=word, officer="officer-3", amend=True)
        # a name training keeps for its synthetic classes, refused whichever writer sends it
        with pytest.raises(InputError) as info:
            store.record_outcome("S1", found="synthetic_rubber", officer="officer-3", amend=True)
        assert str(info.value).startswith(
            "outcome of shipment 'S1': found 'synthetic_rubber' is not a type name: lower-case letters"
        )
        assert store.verify().records_checked == 7


def test_idempotency_key_records_once(db_url: str) -> None:
    with AuditStore.open(db_url) as store:
        first = store.record(decision("S1"), idempotency_key="run-1:S1")
        again = store.record(decision("S1", Tier.PHYSICAL_INSPECTION), idempotency_key="run-1:S1")
        same = store.record(decision("S1"), idempotency_key="run-2:S1")  # the same decision, another key
        other = store.record(decision("S1", score=0.2), idempotency_key="run-3:S1")
        assert (first.seq, again.seq, same.seq, other.seq) == (1, 1, 1, 2)
        assert again == first == same
        assert store.verify().records_checked == 2
        with pytest.raises(InputError, match="idempotency_key of length 0 not accepted"):
            store.record(decision("S1"), idempotency_key="")


def _under(shipment: str, version: str, sha: str) -> ShipmentDecision:
    return decision(shipment).model_copy(update={"policy_version": version, "policy_sha256": sha})


@pytest.mark.parametrize(
    ("first", "then", "refused"),
    [
        # the same version under another rule set: which rules decided could not be told
        (("p1", "cd"), ("p1", "ef"), True),
        (("2026.12.2-example", "cd"), ("2026.12.2-example", "ef"), True),
        (("p%_1", "cd"), ("p%_1", "ef"), True),  # LIKE's wildcards in the version taken as text
        (("p1", "cd"), ("p1", "cd"), False),  # the same policy again
        (("p1", "cd"), ("p2", "ef"), False),  # a changed policy under a new version
        (("p%_1", "cd"), ("pX_1", "ef"), False),  # a wildcard matches nothing but itself
        (("p1", "cd"), ("p10", "ef"), False),  # a version that starts another is another
    ],
)
@pytest.mark.parametrize("writer", ["same store", "store opened after", "checked as it starts"])
def test_a_policy_version_recorded_under_another_sha256_is_refused(
    db_url: str, first: tuple[str, str], then: tuple[str, str], refused: bool, writer: str
) -> None:
    """At its first record, or, checked as a run or the service starts (``check_policy``, read
    without the write lock), before it: the service answered its first decision 500."""
    (v1, s1), (v2, s2) = (first[0], first[1] * 32), (then[0], then[1] * 32)
    with AuditStore.open(db_url) as store:
        store.record(_under("S0", "p0", "00" * 32))
        store.record(_under("S1", v1, s1))
        with AuditStore.open(db_url) as fresh:
            write = store if writer == "same store" else fresh
            if refused:
                with pytest.raises(PolicyError) as caught:
                    if writer == "checked as it starts":
                        write.check_policy(v2, s2)
                    write.record(_under("S2", v2, s2))
                message = str(caught.value)
                assert s1 in message and s2 in message and repr(v1) in message and "record 2" in message
                assert "new policy_version" in message
                assert store.verify().records_checked == 2  # nothing appended
            else:
                if writer == "checked as it starts":
                    write.check_policy(v2, s2)
                write.record(_under("S2", v2, s2))
                assert store.verify().records_checked == 3


def test_check_policy_on_an_empty_trail_passes(db_url: str) -> None:
    with AuditStore.open(db_url) as store:
        store.check_policy("p1", "ef" * 32)
        store.record(_under("S1", "p1", "ef" * 32))


@pytest.mark.parametrize("checked_by", ["a record", "check_policy as a run starts"])
def test_a_policy_version_recorded_since_a_store_checked_it_is_refused(db_url: str, checked_by: str) -> None:
    """A store checks a (version, sha256) as a run or the service starts, and again at each write,
    under the lock: one another writer recorded in between is found there."""
    with AuditStore.open(db_url) as store:
        store.record(_under("S1", "p0", "00" * 32))
        if checked_by == "check_policy as a run starts":
            store.check_policy("p1", "ef" * 32)
        with AuditStore.open(db_url) as other:  # another process's store
            assert other.record(_under("S2", "p1", "cd" * 32)).seq == 2
        with pytest.raises(PolicyError, match=f"policy_sha256 {'cd' * 32} \\(record 2\\)"):
            store.record(_under("S3", "p1", "ef" * 32))
        assert sql(db_url, "SELECT seq FROM audit_head") == [(2,)]  # nothing appended


_PAIRS = "SELECT policy_version, policy_sha256, seq FROM audit_policy_versions ORDER BY seq"


def _statements(store: AuditStore) -> list[str]:
    """The SQL the store runs from now on, as sent to the database."""
    sent: list[str] = []
    event.listen(store._db.engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    return sent


def test_a_policy_version_is_checked_in_its_index_not_by_reading_the_records(db_url: str) -> None:
    """Reading every record for it took 2.4 s on a trail of 200,000 records at each start, and each
    write read the records since under the write lock: both are one read of the policy index, which
    holds each pair once, with its first decision."""
    with AuditStore.open(db_url) as store:
        for n, (version, sha) in enumerate([("p0", "00"), ("p1", "cd"), ("p0", "00"), ("p1", "cd")]):
            store.record(_under(f"S{n}", version, sha * 32))
        sent = _statements(store)
        store.check_policy("p1", "cd" * 32)
        (read,) = [statement for statement in sent if "audit_" in statement]  # not BEGIN, no PRAGMA
        assert "FROM audit_policy_versions" in read and "audit_records" not in read
        sent.clear()
        store.record(_under("S9", "p1", "cd" * 32))
        assert not [s for s in sent if "LIKE" in s.upper()]  # no record read by its content
        with pytest.raises(PolicyError, match=f"policy_sha256 {'cd' * 32} \\(record 2\\)"):
            store.check_policy("p1", "ef" * 32)
    assert sql(
        db_url, "SELECT policy_version, policy_sha256, seq FROM audit_policy_versions ORDER BY seq"
    ) == [
        ("p0", "00" * 32, 1),
        ("p1", "cd" * 32, 2),
    ]


@pytest.mark.parametrize("key", [None, cli_key()], ids=["no-key", "sealed"])
def test_a_version_5_store_is_given_its_policy_index_from_its_chain_by_a_writer(
    db_url: str, key: SealKey | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made a page of records at a time (two here); a reader leaves the store at 5, checks nothing
    against an index it lacks, and takes no decision until a writer upgrades it. A writer holding
    the key upgrades a store at 5, its records sealed already."""
    from pipeline.audit import policy_index

    monkeypatch.setattr(policy_index, "_PAGE", 2)
    with AuditStore.open(db_url, seal_key=key) as store:
        for n, (version, sha) in enumerate([("p0", "00"), ("p1", "cd"), ("p1", "cd"), ("p2", "ef")]):
            store.record(_under(f"S{n}", version, sha * 32))
            if n == 1:
                store.record_outcome("S1", found=None, officer="o-1")  # 3: no pair
    sql(db_url, "DROP TABLE audit_policy_versions")  # as a store at 5 is laid out
    sql(db_url, "UPDATE schema_info SET version = 5")
    with AuditStore.open(db_url, create=False, seal_key=key) as store:
        store.check_policy("p1", "ff" * 32)  # nothing to check against: no decision is taken
        with pytest.raises(AuditError, match="is at schema version 5: decisions of this Clearsight"):
            store.record(_under("S9", "p1", "cd" * 32))
        report = store.verify()
        assert report.ok and report.message.endswith("; policy index not checked: store at version 5")
    assert sql(db_url, "SELECT version FROM schema_info") == [(5,)]
    with AuditStore.open(db_url, seal_key=key) as store:
        with pytest.raises(PolicyError, match=f"policy_sha256 {'cd' * 32} \\(record 2\\)"):
            store.check_policy("p1", "ff" * 32)
        assert store.record(_under("S9", "p2", "ef" * 32)).seq == 6
        report = store.verify()
        assert (report.ok, report.message) == (True, "6 records verified, chain intact")
    assert sql(db_url, "SELECT version FROM schema_info") == [(SCHEMA_VERSION,)]
    assert sql(
        db_url, "SELECT policy_version, policy_sha256, seq FROM audit_policy_versions ORDER BY seq"
    ) == [
        ("p0", "00" * 32, 1),
        ("p1", "cd" * 32, 2),
        ("p2", "ef" * 32, 5),
    ]


def test_nan_scores_of_fail_closed_images_are_recorded(db_url: str) -> None:
    bad = decision("S1", Tier.REMOTE_INSPECTION, float("nan"))
    with AuditStore.open(db_url) as store:
        record = store.record(bad)
        assert record.decision.images[0].score is None
        assert store.verify().ok


def test_export_csv_and_jsonl(filled: str, tmp_path: Path) -> None:
    with AuditStore.open(filled) as store:
        assert store.export(tmp_path / "e.csv") == 4
        assert store.export(tmp_path / "e.out", fmt="jsonl") == 4
        with pytest.raises(
            InputError, match=r"export format 'xlsx' for .*e\.xlsx not accepted \(csv or jsonl\)"
        ):
            store.export(tmp_path / "e.xlsx")
    with (tmp_path / "e.csv").open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [(r["seq"], r["shipment_id"], r["tier"], r["outcome"], r["outcome_found"]) for r in table] == [
        ("1", "S1", "RELEASE", "", ""),
        ("2", "S2", "REMOTE_INSPECTION", "", ""),
        ("3", "S3", "PHYSICAL_INSPECTION", "anomalous", "foreign_object"),
        ("4", "S4", "RELEASE", "", ""),
    ]
    lines = [json.loads(line) for line in (tmp_path / "e.out").read_text().splitlines()]
    assert [(r["seq"], r["decision"]["shipment_id"]) for r in lines] == [
        (1, "S1"),
        (2, "S2"),
        (3, "S3"),
        (4, "S4"),
    ]
    assert lines[2]["outcome"]["officer"] == "officer-7"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("+1+1", "'+1+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("cable found under the seal", "cable found under the seal"),
        (3, 3),
        (-0.5, -0.5),  # numbers stay numbers
    ],
)
def test_csv_cells_never_start_a_formula(value: object, shown: object) -> None:
    assert spreadsheet_safe(value) == shown


def test_an_officers_note_is_exported_as_text(db_url: str, tmp_path: Path) -> None:
    with AuditStore.open(db_url) as store:
        store.record(decision("S1", Tier.REMOTE_INSPECTION))
        store.record_outcome("S1", found=None, officer="officer-1", notes='=HYPERLINK("http://evil")')
        store.export(tmp_path / "e.csv")
    with (tmp_path / "e.csv").open(newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["outcome_notes"] == '\'=HYPERLINK("http://evil")'


def _cut_off(rows: Iterable[Any]) -> Iterator[Any]:
    """The rows, then the database gone, as between two pages of a read."""
    yield from rows
    raise AuditError("audit store gone between pages")


EXPORTS: list[tuple[str, Callable[[AuditStore, Path], int]]] = [
    ("e.csv", lambda store, path: write_export(_cut_off(store.iter_records()), path)),
    ("e.jsonl", lambda store, path: write_export(_cut_off(store.iter_records()), path)),
    (
        "chain.jsonl",
        lambda store, path: write_chain_file(_cut_off(store.iter_chain()), path, head=(5, "ab" * 32)),
    ),
]


@pytest.mark.parametrize("earlier", [None, "an earlier, good export\n"], ids=["new", "over-earlier"])
@pytest.mark.parametrize(("name", "write"), EXPORTS, ids=[e[0] for e in EXPORTS])
def test_an_export_cut_off_midway_leaves_no_partial_file(
    filled: str, tmp_path: Path, name: str, write: Callable[[AuditStore, Path], int], earlier: str | None
) -> None:
    """A chain cut off midway is itself a valid chain: verify-file would call a partial copy intact."""
    out = tmp_path / "out"
    out.mkdir()
    if earlier is not None:
        (out / name).write_text(earlier)
    with AuditStore.open(filled, create=False) as store, pytest.raises(AuditError, match="between pages"):
        write(store, out / name)
    assert [p.name for p in out.iterdir()] == ([] if earlier is None else [name])  # no temporary file
    if earlier is not None:
        assert (out / name).read_text() == earlier


@pytest.mark.parametrize("name", ["e.csv", "e.jsonl"])
def test_an_export_written_again_keeps_what_writing_into_the_file_kept(
    filled: str, tmp_path: Path, name: str
) -> None:
    # a file made readable by its owner alone came back readable by all after the rename; an --out
    # link was replaced by a file, the evidence it named left stale; a long name failed
    from pipeline.audit.export import write_export

    private = tmp_path / name
    private.write_text("earlier\n")
    private.chmod(0o600)
    evidence = tmp_path / "evidence" / name
    evidence.parent.mkdir()
    evidence.write_text("earlier\n")
    link = tmp_path / f"latest-{name}"
    link.symlink_to(evidence)
    long_name = tmp_path / ("x" * (250 - len(name)) + name)
    with AuditStore.open(filled, create=False) as store:
        for out in (private, link, long_name):
            write_export(store.iter_records(), out)
    assert oct(private.stat().st_mode & 0o777) == oct(0o600)
    assert link.is_symlink() and evidence.read_text() != "earlier\n"
    assert long_name.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # nothing left


def test_an_export_beside_a_file_in_a_folder_it_may_not_write_keeps_the_earlier_file_on_error(
    filled: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # written in place there, an export cut off midway emptied the earlier export and left a prefix
    # it could not remove (removing needs the folder); staged elsewhere first, it stays as it was
    import os

    from pipeline.audit import export

    real_open = os.open

    def no_new_file_here(path: Any, flags: int, mode: int = 0o777) -> int:
        if Path(path).parent == tmp_path and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, mode)

    out = tmp_path / "e.jsonl"
    out.write_text("an earlier, good export\n")
    monkeypatch.setattr(export.os, "open", no_new_file_here)
    with AuditStore.open(filled, create=False) as store:
        with pytest.raises(AuditError, match="between pages"):
            export.write_export(_cut_off(store.iter_records()), out)
        assert out.read_text() == "an earlier, good export\n"
        assert export.write_export(store.iter_records(), out) == len(out.read_text().splitlines()) > 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_export_that_cannot_be_written_names_the_file_asked_for(filled: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "e.csv"
    with AuditStore.open(filled, create=False) as store, pytest.raises(InputError) as info:
        store.export(missing)
    assert str(info.value) == f"cannot write the export to {missing} (No such file or directory)"


# -- tampering -------------------------------------------------------------------------------------


def _forge(url: str, seq: int, prev_hash: str, shipment: str) -> None:
    """Insert a record a forger built correctly (valid hash for its prev_hash)."""
    content = {
        "kind": "decision",
        "shipment_id": shipment,
        "idempotency_key": None,
        "created_at": "2026-11-05T11:00:00.000000+00:00",
        "decision": json.loads(decision(shipment).model_dump_json()),
    }
    body = canonical_json(content)
    cols = index_columns(content)
    sql(
        url,
        "INSERT INTO audit_records (seq, kind, shipment_id, tier, ref_seq, idempotency_key, created_at, "
        "content, prev_hash, record_hash) VALUES (:seq, :kind, :shipment_id, :tier, :ref_seq, "
        ":idempotency_key, :created_at, :content, :prev, :hash)",
        seq=seq,
        content=body,
        prev=prev_hash,
        hash=chain_hash(prev_hash, body),
        **cols,
    )


def _hash(url: str, seq: int) -> str:
    return str(rows(url, f"SELECT record_hash FROM audit_records WHERE seq = {seq}")[0][0])


def alter_content(url: str) -> None:
    sql(
        url,
        "UPDATE audit_records SET content = REPLACE(content, '\"PHYSICAL_INSPECTION\"', '\"RELEASE\"') "
        "WHERE seq = 3",
    )


def alter_tier_column(url: str) -> None:
    sql(url, "UPDATE audit_records SET tier = 'RELEASE' WHERE seq = 3")


def _lower_scores(value: object) -> object:
    """``value`` with every number 0.9 in it made 0.1 (the score of record 3), nothing else touched."""
    if isinstance(value, dict):
        return {k: _lower_scores(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_scores(v) for v in value]
    return 0.1 if value == 0.9 else value


def alter_and_rehash(url: str) -> None:
    prev = str(rows(url, "SELECT prev_hash FROM audit_records WHERE seq = 3")[0][0])
    # Only the score changes: a text replace of "0.9" would also hit a timestamp like 13:15:00.906.
    stored = json.loads(str(rows(url, "SELECT content FROM audit_records WHERE seq = 3")[0][0]))
    content = canonical_json(_lower_scores(stored))
    assert content != canonical_json(stored)
    sql(
        url,
        "UPDATE audit_records SET content = :c, record_hash = :h WHERE seq = 3",
        c=content,
        h=chain_hash(prev, content),
    )


def alter_outcome(url: str) -> None:
    sql(url, "UPDATE audit_records SET content = REPLACE(content, 'foreign_object', 'none') WHERE seq = 5")


def delete_middle(url: str) -> None:
    sql(url, "DELETE FROM audit_records WHERE seq = 3")


def delete_tail(url: str) -> None:
    sql(url, "DELETE FROM audit_records WHERE seq >= 4")


def delete_and_renumber(url: str) -> None:
    sql(url, "DELETE FROM audit_records WHERE seq = 3")
    sql(url, "UPDATE audit_records SET seq = -seq WHERE seq > 3")
    sql(url, "UPDATE audit_records SET seq = -seq - 1 WHERE seq < 0")
    sql(url, "UPDATE audit_head SET seq = 4")


def insert_at_tail(url: str) -> None:
    _forge(url, 6, _hash(url, 5), "FORGED")


def insert_before_the_first(url: str) -> None:
    """Numbered 0, a record was never walked, yet the store read it (an outcome there lifted a hold)."""
    _forge(url, 0, "e" * 64, "FORGED")


def insert_at_tail_and_move_head(url: str) -> None:
    """A forger who also knows about the head row and the image index: caught only against an
    outside copy of the head."""
    insert_at_tail(url)
    sql(url, "UPDATE audit_head SET seq = 6, record_hash = :h", h=_hash(url, 6))
    sql(url, "INSERT INTO audit_image_index (sha256, shipment_id, seq) VALUES (:h, 'FORGED', 6)", h="ab" * 32)


def insert_in_middle(url: str) -> None:
    sql(url, "UPDATE audit_records SET seq = -seq WHERE seq >= 3")
    sql(url, "UPDATE audit_records SET seq = -seq + 1 WHERE seq < 0")
    # prev_hash is unique, so the forgery cannot claim record 2 as its predecessor: it links elsewhere.
    _forge(url, 3, "f" * 64, "FORGED")
    sql(url, "UPDATE audit_head SET seq = 6")


def swap(url: str) -> None:
    sql(url, "UPDATE audit_records SET seq = -1 WHERE seq = 2")
    sql(url, "UPDATE audit_records SET seq = 2 WHERE seq = 3")
    sql(url, "UPDATE audit_records SET seq = 3 WHERE seq = -1")


def delete_head(url: str) -> None:
    sql(url, "DELETE FROM audit_head")


TAMPERING: list[tuple[Callable[[str], None], bool, int | None, str | None, str]] = [
    (alter_content, False, 3, "altered", "record 3: content does not match its record_hash"),
    (
        alter_tier_column,
        False,
        3,
        "altered",
        "record 3: column tier = 'RELEASE' but the hashed content says 'PHYSICAL_INSPECTION'",
    ),
    (
        alter_and_rehash,
        False,
        3,
        "altered",
        "record 3: record 4 links to a hash it no longer has (altered and "
        "re-hashed, or a record after it deleted and the rest renumbered)",
    ),
    (alter_outcome, False, 5, "altered", "record 5: content does not match its record_hash"),
    (
        delete_middle,
        False,
        3,
        "deleted",
        "record 3 is missing: seq jumps from 2 to 4 and record 4 links to a hash no record has",
    ),
    (delete_tail, False, 4, "deleted", "records 4..5 are missing: the chain ends at 3 but its head says 5"),
    (
        delete_and_renumber,
        False,
        2,
        "altered",
        "record 2: record 3 links to a hash it no longer has (altered and "
        "re-hashed, or a record after it deleted and the rest renumbered)",
    ),
    (
        insert_at_tail,
        False,
        6,
        "inserted",
        "record 6 lies past the chain head (seq 5): the store never appended it",
    ),
    (
        insert_before_the_first,
        False,
        0,
        "inserted",
        "record 0 lies before the chain's first record (seq 1): the store never appended it",
    ),
    (
        insert_in_middle,
        False,
        3,
        "inserted",
        "record 3: records 3..3 were inserted between record 2 and its successor 4",
    ),
    (swap, False, 2, "reordered", "record 2: links to record 3, which comes after it"),
    (delete_head, False, None, "deleted", "the chain head row (audit_head id 1) is missing"),
    (insert_at_tail_and_move_head, True, None, None, "6 records verified, chain intact"),
]


@pytest.mark.parametrize(
    ("tamper", "ok", "first_bad", "problem", "message"), TAMPERING, ids=[t[0].__name__ for t in TAMPERING]
)
def test_verify_names_the_first_tampered_record(
    filled: str,
    tamper: Callable[[str], None],
    ok: bool,
    first_bad: int | None,
    problem: str | None,
    message: str,
) -> None:
    with AuditStore.open(filled) as store:
        head_before = store.verify().head_hash
        tamper(filled)
        report = store.verify()
    assert (report.ok, report.first_bad, report.problem, report.message) == (ok, first_bad, problem, message)
    if ok:  # the rewritten chain is self-consistent; only the head copied out earlier gives it away
        assert report.head_hash != head_before


def test_unparseable_content_is_an_audit_error(filled: str) -> None:
    sql(filled, "UPDATE audit_records SET content = 'not json' WHERE seq = 2")
    with AuditStore.open(filled) as store:
        with pytest.raises(AuditError) as info:
            store.get("S2")
        assert str(info.value) == (
            f"audit store {store.url}: reading shipment 'S2' failed: a stored record does not parse "
            "(JSONDecodeError); run `clearsight audit verify` to find it"
        )
        assert (store.verify().first_bad, store.verify().problem) == (2, "altered")


DAMAGED_WRITES: list[tuple[str, str, Callable[[AuditStore], object], str]] = [
    (
        "content-not-json-record",
        "UPDATE audit_records SET content = '{broken' WHERE seq = 1",
        lambda store: store.record(decision("S1")),
        "recording shipment 'S1' failed: a stored record does not parse (JSONDecodeError)",
    ),
    (
        "content-not-json-outcome",
        "UPDATE audit_records SET content = '{broken' WHERE seq = 1",
        lambda store: store.record_outcome("S1", found=None, officer="o-1", amend=False),
        "recording the outcome of shipment 'S1' failed: a stored record does not parse (JSONDecodeError)",
    ),
    (
        "tier-altered",
        "UPDATE audit_records SET tier = 'WAVE_THROUGH' WHERE seq = 1",
        lambda store: store.record(decision("S1")),
        "recording shipment 'S1' failed: a stored record does not parse (ValueError)",
    ),
    (
        "content-a-list-first-sender",
        "UPDATE audit_records SET content = '[1]' WHERE seq = 1",
        lambda store: store.record(decision("S1"), may_send=lambda first: True),
        "recording shipment 'S1' failed: a stored record does not parse (TypeError)",
    ),
]


@pytest.mark.parametrize(
    ("damage", "write", "said"), [d[1:] for d in DAMAGED_WRITES], ids=[d[0] for d in DAMAGED_WRITES]
)
def test_a_damaged_record_read_by_a_write_is_an_audit_error(
    db_url: str, damage: str, write: Callable[[AuditStore], object], said: str
) -> None:
    """The write path reads stored rows under the lock; a damaged one must not escape as a raw
    JSONDecodeError or ValueError (an HTTP 500) where the read path names it."""
    with AuditStore.open(db_url) as store:
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION, 0.9))
        sql(db_url, damage)
        with pytest.raises(AuditError) as info:
            write(store)
        assert str(info.value) == (
            f"audit store {store.url}: {said}; run `clearsight audit verify` to find it"
        )


HALF = json.loads('"seal \\ud800 broken"')  # what a JSON body may carry
HALF_CHARACTERS: list[tuple[str, Callable[[AuditStore], object], str]] = [
    (
        "outcome-notes",
        lambda store: store.record_outcome("S1", found=None, officer="o-1", notes=HALF),
        "outcome of shipment 'S1': notes",
    ),
    (
        "outcome-officer",
        lambda store: store.record_outcome("S1", found=None, officer=HALF),
        "outcome of shipment 'S1': officer",
    ),
    (
        "outcome-found",
        lambda store: store.record_outcome("S1", found=HALF, officer="o-1"),
        "outcome of shipment 'S1': found",
    ),
    (
        "idempotency-key",
        lambda store: store.record(decision("S2"), idempotency_key=HALF),
        "shipment 'S2': idempotency_key",
    ),
    (
        "declaration-extra",
        lambda store: store.record(
            decision("S2").model_copy(
                update={
                    "declaration": Declaration(shipment_id="S2", cargo_type="bulk_ore", extra={"x": HALF})
                }
            )
        ),
        "decision of shipment 'S2': declaration",
    ),
    (  # pydantic writes a key's half character as U+FFFD: two keys apart only by one became one
        "declaration-extra-key",
        lambda store: store.record(
            decision("S2").model_copy(
                update={
                    "declaration": Declaration(
                        shipment_id="S2", cargo_type="bulk_ore", extra={"x_ref" + HALF: "first"}
                    )
                }
            )
        ),
        "decision of shipment 'S2': declaration",
    ),
]


@pytest.mark.parametrize(
    ("write", "field"), [h[1:] for h in HALF_CHARACTERS], ids=[h[0] for h in HALF_CHARACTERS]
)
def test_half_a_character_in_recorded_text_is_refused_naming_the_field(
    db_url: str, write: Callable[[AuditStore], object], field: str
) -> None:
    """The chain hashes UTF-8: a lone surrogate escaped there as a raw UnicodeEncodeError."""
    with AuditStore.open(db_url) as store:
        store.record(decision("S1"))
        with pytest.raises(InputError) as info:
            write(store)
        assert str(info.value) == (
            f"{field}: '\\ud800' is half a character (a lone UTF-16 surrogate), which no file or "
            "database can store; write the character itself"
        )
        assert store.verify().records_checked == 1  # nothing was written


def test_a_decision_of_rows_nested_as_deep_as_the_reader_takes_is_recorded(
    db_url: str, tmp_path: Path
) -> None:
    """The verdict-row reader takes a row nested :data:`MAX_DEPTH` deep; the decision holds its
    declaration two levels deeper (``images``, the picture). The store once refused it with the
    readers' depth limit, after it was decided, and a batch stopped midway."""
    deep: object = "x"
    for _ in range(MAX_DEPTH - 2):  # the row (1), its declaration (2), then the lists
        deep = [deep]
    row = {
        "path": "a.png",
        "shipment_id": "S1",
        "cargo_type": "bulk_ore",
        "score": 0.1,
        "threshold": 0.3,
        "hold_threshold": 0.6,
        "model_id": "m",
        "declaration": {"cargo_type": "bulk_ore", "x_meta": deep},
    }
    path = tmp_path / "v.jsonl"
    path.write_text(json.dumps(row) + "\n")
    verdicts = list(read_verdicts(path))
    decided = decide_shipment(
        load_policy(default_policy_path()),
        declaration_from_rows("S1", verdicts),
        verdicts,
        audit_key=b"k" * 32,
    )
    with AuditStore.open(db_url) as store:
        assert store.record(decided, idempotency_key="k1").seq == 1
        assert store.get("S1").decision.images[0].declaration == row["declaration"]


def test_cli_verify_exits_non_zero_naming_the_record(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import app, run

    assert run(app, ["audit", "verify", "--no-seals", "--db", filled]) == 0
    assert "5 records verified, chain intact" in capsys.readouterr().out
    swap(filled)
    assert run(app, ["audit", "verify", "--no-seals", "--db", filled]) == 2
    with AuditStore.open(filled) as store:
        shown = store.url
    assert capsys.readouterr().err.strip() == (
        f"Error: {shown}: chain broken at record 2 (reordered): "
        "record 2: links to record 3, which comes after it"
    )


def test_cli_verify_checks_published_heads(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A chain cut back to an earlier record passes every internal check; a published head catches it."""
    from pipeline.cli import app, run

    with AuditStore.open(filled) as store:
        shown, head4, head5 = store.url, store.hash_at(4), store.hash_at(5)
    assert run(app, ["audit", "verify", "--no-seals", "--db", filled]) == 0
    assert f"(publish '5:{head5}' to check against later with --expect)" in " ".join(
        capsys.readouterr().out.split()
    )
    sql(filled, "DELETE FROM audit_records WHERE seq = 5")  # the outcome, cut off with the head moved back
    sql(filled, f"UPDATE audit_head SET seq = 4, record_hash = '{head4}'")
    assert run(app, ["audit", "verify", "--no-seals", "--db", filled]) == 0  # internally consistent
    assert run(app, ["audit", "verify", "--no-seals", "--db", filled, "--expect", f"4:{head4}"]) == 0
    assert "1 published head(s) found unchanged" in capsys.readouterr().out
    assert run(app, ["audit", "verify", "--no-seals", "--db", filled, "--expect", f"5:{head5}"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: {shown}: record 5, published with hash {head5}, is gone: the chain was cut back "
        "(its head is now record 4)"
    )
    assert run(app, ["audit", "verify", "--no-seals", "--db", filled, "--expect", f"3:{'0' * 64}"]) == 2
    assert "record 3 has hash " in capsys.readouterr().err
    assert run(app, ["audit", "verify", "--no-seals", "--db", filled, "--expect", "3:xyz"]) == 2
    assert "is not SEQ:HASH" in capsys.readouterr().err
    # record numbers int() cannot read, or of 5,000 digits: 'unexpected ValueError', exit 1
    for seq in ("\u00b2", "9" * 5000):
        assert run(app, ["audit", "verify", "--no-seals", "--db", filled, "--expect", f"{seq}:{head4}"]) == 2
        assert "is not SEQ:HASH (a record number >= 1" in capsys.readouterr().err


# -- opening ---------------------------------------------------------------------------------------


def test_other_schema_version_is_refused(db_url: str) -> None:
    with AuditStore.open(db_url) as store:
        store.record(decision("S1"))
        shown = store.url
    sql(db_url, "UPDATE schema_info SET version = 99")
    with pytest.raises(SchemaVersionError) as info:
        AuditStore.open(db_url)
    assert str(info.value) == (
        f"audit store {shown} has schema version 99; "
        "this Clearsight reads versions 1 to 6 and writes version 6"
    )


def test_no_schema_without_create(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("sqlite"):  # a missing file is named, and not created by looking
        with pytest.raises(
            AuditError, match=r"does not exist: no file '.*audit\.db' \(decisions are recorded"
        ):
            AuditStore.open(db_url, create=False)
        assert not (tmp_path / "audit.db").exists()
        (tmp_path / "audit.db").write_bytes(b"")  # an empty file: no schema
    with pytest.raises(AuditError, match=r"has no Clearsight schema: it is not an audit store, or nothing"):
        AuditStore.open(db_url, create=False)


def test_reopen_keeps_the_chain(db_url: str) -> None:
    with AuditStore.open(db_url) as store:
        store.record(decision("S1"))
    with AuditStore.open(db_url) as store:
        assert store.record(decision("S2")).seq == 2
        store.ping()


_AT_SIGN = (
    "an '@' not written as %40 moves where its user part ends (a password's '@', in the user part or the "
    "query, which would reach the driver as part of the host's name; write '@', '?' and '#' in a password "
    "or a query value as %40, %3F and %23) (--audit-db or CLEARSIGHT_AUDIT_DB; accepted: sqlite:///FILE, "
    "postgresql+psycopg://USER@HOST:PORT/DB)"
)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "not a url",
            "audit store URL 'not a url' is not a SQLAlchemy URL (--audit-db or CLEARSIGHT_AUDIT_DB; "
            "accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # mistyped, its password echoed whole
            "postgresql+psycopg//u:Tr0ub4dor@127.0.0.1/test",
            "audit store URL '***@127.0.0.1/test' is not a SQLAlchemy URL (--audit-db or "
            "CLEARSIGHT_AUDIT_DB; accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # a "/" in the password ended the hidden part: "Tr0ub/" hidden, "4dor" shown
            "postgresql+psycopg://clearsight:Tr0ub/4dor@db.example:5432x/audit?pass%77ord=Tr0ub4dor",
            "audit store URL 'postgresql+psycopg://***@db.example:5432x/audit?pass%77ord=***' is not a "
            "SQLAlchemy URL (its port is not a number) (--audit-db or CLEARSIGHT_AUDIT_DB; accepted: "
            "sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # an "@" in a password in the query: the URL read as user 127.0.0.1, host 4dor
            "postgresql+psycopg://127.0.0.1:5432/test?password=Tr0ub@4dor",
            "audit store URL 'postgresql+psycopg://127.0.0.1:5432/test?password=***': " + _AT_SIGN,
        ),
        (  # a user name holding an "@", one slash
            "postgresql+psycopg:/u@corp:Tr0ub4dor@h/test",
            "audit store URL 'postgresql+psycopg:/***@h/test' is not a SQLAlchemy URL (--audit-db or "
            "CLEARSIGHT_AUDIT_DB; accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # no scheme, a ":" in the password: "u:" was read as a scheme
            "u:Tr0ub:4dor@127.0.0.1:5432/test",
            "audit store URL 'u:***@127.0.0.1:5432/test' is not a SQLAlchemy URL (--audit-db or "
            "CLEARSIGHT_AUDIT_DB; accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # no scheme, a user name holding an "@": shown whole
            "u@corp:Tr0ub4dor@h/test",
            "audit store URL '***@h/test' is not a SQLAlchemy URL (--audit-db or CLEARSIGHT_AUDIT_DB; "
            "accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # the same with a port
            "u@corp:Tr0ub4dor@h:5432/test",
            "audit store URL '***@h:5432/test' is not a SQLAlchemy URL (--audit-db or CLEARSIGHT_AUDIT_DB; "
            "accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # no scheme, no user name
            ":Tr0ub4dor@h/test",
            "audit store URL '***@h/test' is not a SQLAlchemy URL (--audit-db or CLEARSIGHT_AUDIT_DB; "
            "accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # no scheme, a password starting with "/"
            "u:/Tr0ub4dor@h/test",
            "audit store URL 'u:/***@h/test' is not a SQLAlchemy URL (--audit-db or CLEARSIGHT_AUDIT_DB; "
            "accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # a user name holding a "/": no pattern for the user part matched, the URL shown whole
            "u/x:Tr0ub4dor@h/test",
            "audit store URL '***@h/test' is not a SQLAlchemy URL (--audit-db or CLEARSIGHT_AUDIT_DB; "
            "accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # a newline typed in the password: the same
            "u:Tr0ub4dor\n@h/test",
            "audit store URL 'u:***@h/test' is not a SQLAlchemy URL (--audit-db or CLEARSIGHT_AUDIT_DB; "
            "accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # "u://" for "u:": the password read as the user name of a scheme "u", and shown as one
            "u://Tr0ub4dor@h/test",
            "audit store URL u://***@h/test: backend 'u' is not supported (accepted: sqlite, postgresql)",
        ),
        (  # user and password with their "@host" left off: the password read as a port, shown whole
            "postgresql://postgres:hunter2x/test",
            "audit store URL 'postgresql://postgres:***/test' is not a SQLAlchemy URL (its port is not a "
            "number) (--audit-db or CLEARSIGHT_AUDIT_DB; accepted: sqlite:///FILE, "
            "postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # ... and with no scheme either
            "postgres:hunter2x",
            "audit store URL 'postgres:***' is not a SQLAlchemy URL (--audit-db or CLEARSIGHT_AUDIT_DB; "
            "accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # no scheme at all
            "u:hunter2x@127.0.0.1/test",
            "audit store URL 'u:***@127.0.0.1/test' is not a SQLAlchemy URL (--audit-db or "
            "CLEARSIGHT_AUDIT_DB; accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # one slash: no URL, shown whole
            "postgresql+psycopg:/postgres:hunter2x@127.0.0.1:5432/test",
            "audit store URL 'postgresql+psycopg:/***@127.0.0.1:5432/test' is not a SQLAlchemy URL "
            "(--audit-db or CLEARSIGHT_AUDIT_DB; accepted: sqlite:///FILE, "
            "postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # three slashes: the user part read as the database's name, which the server's error repeated
            "postgresql+psycopg:///postgres:hunter2x@127.0.0.1:5432/test",
            "audit store URL 'postgresql+psycopg:///***@127.0.0.1:5432/test': " + _AT_SIGN,
        ),
        (  # with a user part too: user 'postgres@127.0.0.1', host '4dor'
            "postgresql+psycopg://postgres@127.0.0.1:5432/test?password=Tr0ub@4dor",
            "audit store URL 'postgresql+psycopg://***@127.0.0.1:5432/test?password=***': " + _AT_SIGN,
        ),
        (  # not a secret's value: the same misreading, a host named 'site'
            "postgresql+psycopg://127.0.0.1:5432/test?application_name=ops@site",
            "audit store URL 'postgresql+psycopg://***@site': " + _AT_SIGN,  # hidden as it parses
        ),
        (  # an "@" in the password: its tail became the host's name, and the driver's error said it
            "postgresql+psycopg://clearsight:Tr0ub@4dor@127.0.0.1:1/audit?connect_timeout=1",
            "audit store URL 'postgresql+psycopg://***@127.0.0.1:1/audit?connect_timeout=1': " + _AT_SIGN,
        ),
        (
            "mysql://u:pw@h/db",
            "audit store URL mysql://***@h/db: backend 'mysql' is not supported (accepted: sqlite, "
            "postgresql)",
        ),
        (  # libpq reads a password in the query too, and a key's passphrase (sslpassword)
            "mysql://u@h/db?password=pw&sslpassword=key-pass&charset=utf8&api_token=t0k",
            "audit store URL mysql://***@h/db?password=***&sslpassword=***&charset=utf8&api_token=***: "
            "backend 'mysql' is not supported (accepted: sqlite, postgresql)",
        ),
        (  # a "#" typed for "?": the server's "database does not exist" repeated the password
            "postgresql+psycopg://127.0.0.1:5432/test#password=Tr0ub4dor",
            "audit store URL 'postgresql+psycopg://127.0.0.1:5432/test#password=***': a '#' would be read as "
            "part of the database's name (start a query with '?'; write a '#' in a name as %23) (--audit-db "
            "or CLEARSIGHT_AUDIT_DB; accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # the same, rendered: the database's name "db#password=..." was written %-quoted, whole
            "mysql://u@h/db#password=Tr0ub4dor",
            "audit store URL mysql://***@h/db#password=***: backend 'mysql' is not supported (accepted: "
            "sqlite, postgresql)",
        ),
        (  # ... and in a query value, which runs on past the "#"
            "mysql://u@h/db?charset=utf8#password=Tr0ub4dor",
            "audit store URL mysql://***@h/db?charset=utf8#password=***: backend 'mysql' is not supported "
            "(accepted: sqlite, postgresql)",
        ),
        (  # ... and typed, in a URL that does not parse
            "postgresql+psycopg://h:no-port/test#password=Tr0ub4dor",
            "audit store URL 'postgresql+psycopg://h:***/test#password=***' is not a SQLAlchemy URL (its "
            "port is not a number) (--audit-db or CLEARSIGHT_AUDIT_DB; accepted: sqlite:///FILE, "
            "postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (  # a port that is no number: named, its secrets hidden, not a ValueError's traceback
            "postgresql://u:pw@h:no-port/db?password=pw",
            "audit store URL 'postgresql://***@h:no-port/db?password=***' is not a SQLAlchemy URL (its port "
            "is not a number) (--audit-db or CLEARSIGHT_AUDIT_DB; accepted: sqlite:///FILE, "
            "postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    for opening in (AuditStore.open, AuditStore.check_url, lambda u: AuditStore.open(u, create=False)):
        with pytest.raises(AuditError) as info:
            opening(url)
        assert str(info.value) == message
        for secret in (
            "Tr0ub",
            "4dor",
            "pw&",
            "=pw",
            "hunter2",
        ):  # nor with --debug's traceback  # nor in a traceback (--debug)
            assert secret not in "".join(traceback.format_exception(info.value))


AUDIT_COMMANDS = [
    ["audit", "verify", "--no-seals"],
    ["audit", "report", "--no-seals", "--out", "{tmp}/fr"],
    ["audit", "seal", "--expect", f"1:{'0' * 64}"],
    ["audit", "outcome", "S1", "--officer", "o-1", "--clean"],
    ["audit", "export", "--out", "{tmp}/e.csv"],
    ["audit", "show", "S1"],
    ["audit", "list"],
]


@pytest.mark.parametrize("given", ["--db", "CLEARSIGHT_AUDIT_DB"])
@pytest.mark.parametrize("argv", AUDIT_COMMANDS, ids=[" ".join(a[:2]) for a in AUDIT_COMMANDS])
def test_a_bad_url_names_the_option_of_the_command_that_took_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    given: str,
) -> None:
    """`clearsight audit ...` take the store's URL with --db (or CLEARSIGHT_AUDIT_DB); a bad one
    sent the user to --audit-db, which they answer "No such option"."""
    from pipeline.cli import app, run

    url = "u@corp:Tr0ub4dor@h/test"
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "a-test-secret-sealing-nothing")  # seal asks for one first
    argv = [a.format(tmp=tmp_path) for a in argv]
    if given == "--db":
        argv += ["--db", url]
    else:
        monkeypatch.setenv("CLEARSIGHT_AUDIT_DB", url)
    assert run(app, argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: audit store URL '***@h/test' is not a SQLAlchemy URL ({given}; accepted: "
        "sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)"
    )


@pytest.mark.parametrize(
    ("url", "host", "password"),
    [
        # a "/" in the password, the "@" before any "?": refused for an "@" there was not, for a while
        ("postgresql+psycopg://postgres:Tr0ub/4dor@127.0.0.1:5432/test", "127.0.0.1", "Tr0ub/4dor"),
        ("postgresql+psycopg://u%40corp:p%40ss@127.0.0.1/test", "127.0.0.1", "p@ss"),
        ("postgresql+psycopg:///test?host=/var/run/postgresql", None, None),
        ("sqlite:////tmp/a@b/audit.db", None, None),  # an "@" in a file's path is no user part's
    ],
)
def test_urls_with_odd_characters_are_read_as_written(
    url: str, host: str | None, password: str | None
) -> None:
    parsed = parsed_url(url)
    assert (parsed.host, parsed.password) == (host, password)


def test_a_missing_sqlite_file_is_named_as_typed(tmp_path: Path) -> None:
    """A SQLite URL carries no password: an "@" in a URI-form file name was masked as one."""
    url = f"sqlite:///file:{tmp_path}/audit@2026.db?mode=ro&uri=true"
    with pytest.raises(AuditError, match=re.escape(f"audit store {url} does not exist")):
        AuditStore.open(url, create=False)


@pytest.mark.postgres
def test_unreachable_postgres_hides_the_password() -> None:
    with pytest.raises(AuditError) as info:
        AuditStore.open("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test?connect_timeout=2")
    message = str(info.value)
    assert message.startswith("audit store postgresql+psycopg://postgres:***@127.0.0.1:1/test")
    assert "s3cret" not in message
    assert "open failed (OperationalError" in message


# file names a rendered URL %-quotes, which the store's messages and its field report must write as typed
ODD_FILE_NAMES = ["no such:file.db", "store@2026.db", "aud@2026 #1.db", "a b.db", "x@/y@2026.db"]


@pytest.mark.parametrize("name", ODD_FILE_NAMES[:-1])  # a folder "x@" is hidden with the passphrase
def test_a_missing_sqlite_file_is_named_as_typed_without_its_passphrase(tmp_path: Path, name: str) -> None:
    """SQLCipher's passphrase stands in the user part of a SQLite URL: the missing file's error
    wrote the URL as given, passphrase and all; then the passphrase was hidden up to the file
    name's last "@" ("sqlite+pysqlcipher://:***@2026.db")."""
    url = f"sqlite+pysqlcipher://:s3cret-phrase@/{tmp_path / name}?kdf_iter=64000"
    with pytest.raises(AuditError) as info:
        AuditStore.open(url, create=False)
    assert str(info.value).startswith(
        f"audit store sqlite+pysqlcipher://:***@/{tmp_path / name}?kdf_iter=64000 does not exist"
    )


@pytest.mark.parametrize("name", ODD_FILE_NAMES)
def test_a_sqlite_store_is_named_as_typed(tmp_path: Path, name: str) -> None:
    """The store's URL (in its errors, the CLI's and the field report's files) was rendered, its
    file's name %-quoted: "store@2026.db" written "store%402026.db", a file the user does not have."""
    (tmp_path / "x@").mkdir()
    url = f"sqlite:///{tmp_path / name}"
    with AuditStore.open(url) as store:
        assert store.url == url
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / name).parent.mkdir(exist_ok=True)
    (tmp_path / "bad" / name).write_bytes(b"not a database " * 1000)
    bad = f"sqlite:///{tmp_path / 'bad' / name}"
    with pytest.raises(AuditError) as info:
        AuditStore.open(bad, create=False)
    assert str(info.value).startswith(f"audit store {bad}: open failed (DatabaseError: ")


@pytest.mark.postgres
def test_a_password_in_the_query_is_hidden_as_in_the_user_part(postgres_url: str) -> None:
    """libpq takes ``?password=`` as it takes ``user:password@``: the store's URL, which its
    errors, the CLI and the field report write, showed the first whole."""
    with AuditStore.open(f"{postgres_url}&password=hunter2&sslpassword=key-pass") as store:
        assert store.url == f"{postgres_url}&password=***&sslpassword=***"
    with pytest.raises(AuditError) as info:
        AuditStore.open("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2&password=s3cret")
    assert str(info.value).startswith(
        "audit store postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2&password=***: "
        "open failed"
    )


def test_sqlite_in_memory_works() -> None:
    with AuditStore.open("sqlite://") as store:
        store.record(decision("S1"))
        assert store.verify().records_checked == 1


def test_cli_outcome_show_list_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import app, run

    db = f"sqlite:///{tmp_path / 'audit.db'}"
    with AuditStore.open(db, seal_key=cli_key()) as store:
        store.record(decision("S1"))
        store.record(decision("S2", Tier.PHYSICAL_INSPECTION, 0.9))
    found = ["--found", "wet_patch", "--new-type"]  # the decision's model scored against no type
    assert run(app, ["audit", "outcome", "S2", *found, "--officer", "o-1", "--db", db]) == 0
    assert "recorded outcome of S2 for decision 2 (found wet_patch) as record 3" in capsys.readouterr().out
    assert (
        run(app, ["audit", "outcome", "S1", "--clean", "--found", "x", "--officer", "o-1", "--db", db]) == 2
    )
    assert capsys.readouterr().err.strip() == "Error: give exactly one of --found TYPE or --clean"
    assert run(app, ["audit", "outcome", "S9", "--clean", "--officer", "o-1", "--db", db]) == 2
    assert capsys.readouterr().err.strip() == f"Error: no decision recorded for shipment 'S9' in {db}"
    assert run(app, ["audit", "show", "S2", "--db", db]) == 0
    shown = capsys.readouterr().out
    assert "S2 bulk_ore: PHYSICAL_INSPECTION" in shown and "outcome: wet_patch by o-1" in shown
    assert run(app, ["audit", "list", "--pending", "--db", db]) == 0
    listed = capsys.readouterr().out
    assert "S1" in listed and "S2" not in listed
    assert run(app, ["audit", "export", "--no-seals", "--out", str(tmp_path / "e.jsonl"), "--db", db]) == 0
    assert "exported 2 decisions" in capsys.readouterr().out
    assert run(app, ["audit", "show", "S9", "--db", db]) == 2
    assert capsys.readouterr().err.strip() == "Error: no decision recorded for shipment 'S9'"


def test_an_exclusive_record_refuses_a_second_decision(db_url: str) -> None:
    with AuditStore.open(db_url) as store:
        store.record(decision("S1"), idempotency_key="cli-run:S1")  # re-decided by the CLI: no key check
        first = store.record(decision("S2"), idempotency_key="http:a", exclusive=True)
        again = store.record(decision("S2", Tier.RELEASE), idempotency_key="http:a", exclusive=True)
        assert again == first  # a retry reads the decision back
        for key, shipment in (("http:b", "S2"), ("http:c", "S1")):
            with pytest.raises(
                ConflictError, match=rf"^shipment '{shipment}' was already decided \(audit record"
            ):
                store.record(decision(shipment, Tier.RELEASE), idempotency_key=key, exclusive=True)
        assert store.get("S2").seq == first.seq and store.verify().records_checked == 2


def test_an_exclusive_record_decides_again_on_a_declared_flag_alone(db_url: str) -> None:
    """A shipment sent again was recorded where its new decision was stricter and refused (409)
    otherwise: sending worse or better pictures under a released shipment told a submitter, leaving
    no trace, whether they would pass. Only a flag the declaration raises decides it again."""
    refused = r"^shipment 'S(1|2)' was already decided \(audit record \d\) on other images or another"
    with AuditStore.open(db_url) as store:
        store.record(decision("S1"), idempotency_key="http:a", exclusive=True)
        with pytest.raises(ConflictError, match=refused):  # worse pictures alone
            store.record(
                audit_builders.decision("S1", Tier.PHYSICAL_INSPECTION, score=0.9, rule="score.hold"),
                idempotency_key="http:b",
                exclusive=True,
            )
        store.record(decision("S2", Tier.REMOTE_INSPECTION, 0.6), idempotency_key="http:c", exclusive=True)
        # a flag forcing no more than the latest decision: refused, whatever the pictures add to it
        hot = audit_builders.decision("S2", Tier.PHYSICAL_INSPECTION, score=0.9, rule="score.hold")
        mismatch = Reason(rule="override.document_mismatch", tier=Tier.REMOTE_INSPECTION, message="m")
        with pytest.raises(ConflictError, match=refused):
            store.record(
                hot.model_copy(update={"reasons": [mismatch, *hot.reasons]}),
                idempotency_key="http:d",
                exclusive=True,
            )
        assert [r.seq for r in store.list(limit=10)] == [2, 1]  # nothing recorded
        alarm = audit_builders.decision("S1", Tier.PHYSICAL_INSPECTION, rule="override.radiation_alarm")
        assert store.record(alarm, idempotency_key="http:e", exclusive=True).seq == 3
        assert store.verify().ok


def test_an_exclusive_record_by_tier_takes_a_stricter_decision(db_url: str) -> None:
    """An officer's or admin's send (by_tier) sees every verdict: the flags-only rule, there to keep
    a submitter from reading verdicts off refusals, refused its stricter re-scan and the release
    stood. By tier, worse pictures alone hold the shipment; an equal or milder decision is refused."""
    refused = r"^shipment 'S1' was already decided \(audit record \d\) on other .*only a stricter decision"
    with AuditStore.open(db_url) as store:
        store.record(decision("S1"), idempotency_key="http:a", exclusive=True)
        hot = audit_builders.decision("S1", Tier.PHYSICAL_INSPECTION, score=0.9, rule="score.hold")
        assert store.record(hot, idempotency_key="http:b", exclusive=True, by_tier=True).seq == 2
        for tier in (Tier.REMOTE_INSPECTION, Tier.PHYSICAL_INSPECTION):
            again = audit_builders.decision("S1", tier, score=0.95, rule="score.hold")
            with pytest.raises(ConflictError, match=refused):
                store.record(again, idempotency_key=f"http:{tier.value}", exclusive=True, by_tier=True)
        assert [r.seq for r in store.iter_records()] == [1, 2] and store.verify().ok


def test_a_hold_is_lowered_only_after_an_officers_outcome(db_url: str) -> None:
    with AuditStore.open(db_url) as store:
        held = store.record(decision("S1", Tier.REMOTE_INSPECTION), idempotency_key="policy-a:S1")
        with pytest.raises(
            ConflictError, match=r"^shipment 'S1' is held \(REMOTE_INSPECTION, audit record 1\) and"
        ):
            store.record(decision("S1", Tier.RELEASE), idempotency_key="policy-b:S1")
        raised = store.record(decision("S1", Tier.PHYSICAL_INSPECTION), idempotency_key="policy-c:S1")
        assert raised.seq == held.seq + 1  # a stricter decision is always recorded
        store.record_outcome("S1", found=None, officer="officer-7", decision_seq=raised.seq)
        released = store.record(decision("S1", Tier.RELEASE), idempotency_key="policy-b:S1")
        assert store.get("S1") == released and store.verify().ok


def test_a_hold_is_lowered_only_after_an_outcome_that_found_nothing(db_url: str) -> None:
    """An outcome that found an anomaly lifted the hold as a clean one does: a re-scan or a laxer
    policy then recorded the cargo as released. The latest outcome judges (a correction with amend
    is a later one), for a new decision and for an earlier one run again alike."""
    held = r"^shipment 'S1' is held \(PHYSICAL_INSPECTION, audit record 2\) and this decision would lower"
    with AuditStore.open(db_url) as store:
        first = store.record(decision("S1", Tier.RELEASE), idempotency_key="inputs-a:S1")
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION, 0.95), idempotency_key="inputs-b:S1")
        found = store.record_outcome("S1", found="foreign_object", officer="officer-7", decision_seq=2)
        for key in ("policy-b:S1", "inputs-a:S1"):  # a new decision; the earlier one run again
            with pytest.raises(ConflictError, match=held) as refused:
                store.record(decision("S1", Tier.RELEASE), idempotency_key=key)
            assert f"inspection found 'foreign_object' (audit record {found.seq})" in str(refused.value)
        store.record_outcome("S1", found=None, officer="officer-7", decision_seq=2, amend=True)  # clean
        assert store.record(decision("S1", Tier.RELEASE), idempotency_key="inputs-a:S1") == first
        store.record_outcome("S1", found="unknown", officer="officer-8", decision_seq=2, amend=True)  # back
        with pytest.raises(ConflictError, match=held):
            store.record(decision("S1", Tier.RELEASE), idempotency_key="policy-b:S1")
        standing = store.get("S1")
        assert standing is not None and standing.seq == 2 and standing.outcome is not None
        assert standing.outcome.found == "unknown" and store.verify().records_checked == 5


def test_a_finding_on_a_released_decision_holds_the_shipment_until_corrected(db_url: str) -> None:
    """P1 held, recorded clean by mistake, re-scanned and released (decision 3); the officer records
    what was found on that decision. The release's finding held nothing: the next batch recorded
    RELEASE again with no outcome, the finding gone from the standing record, and P1's picture sent
    again under a new id carried nothing. Only a clean outcome on that decision (amend) lifts it."""
    from pipeline.batch_decisions import earlier_holds
    from pipeline.decide import EarlierHold

    held = (
        r"^shipment 'P1' is held \(PHYSICAL_INSPECTION by what inspection found on its decision at "
        r"RELEASE, audit record 3\) and this decision would lower it to "
    )
    with AuditStore.open(db_url) as store:
        hot = audit_builders.decision("P1", Tier.PHYSICAL_INSPECTION, score=0.95, sha="aa" * 32)
        store.record(hot, idempotency_key="a:P1")
        store.record_outcome("P1", found=None, officer="officer-7")  # by mistake
        store.record(audit_builders.decision("P1", Tier.RELEASE, sha="bb" * 32), idempotency_key="b:P1")
        found = store.record_outcome("P1", found="foreign_object", officer="officer-7", decision_seq=3)
        for tier in (Tier.RELEASE, Tier.REMOTE_INSPECTION):
            again = audit_builders.decision("P1", tier, sha="cc" * 32)
            with pytest.raises(ConflictError, match=held + tier.value) as refused:
                store.record(again, idempotency_key=f"c:P1:{tier.value}")
            assert f"inspection found 'foreign_object' (audit record {found.seq})" in str(refused.value)
        standing = store.get("P1")
        assert standing is not None and standing.seq == 3 and standing.outcome is not None
        assert standing.outcome.found == "foreign_object"
        assert [r.seq for r in store.list(pending_outcome=True)] == []
        sent_again = audit_builders.decision("Q1", sha="aa" * 32, seen_in=["P1"]).images
        assert earlier_holds(store, sent_again) == {
            "P1": EarlierHold("P1", Tier.PHYSICAL_INSPECTION, ("inspection found 'foreign_object'",), 3)
        }
        store.record_outcome("P1", found=None, officer="officer-7", decision_seq=3, amend=True)
        lowered = store.record(
            audit_builders.decision("P1", Tier.RELEASE, sha="cc" * 32), idempotency_key="d:P1"
        )
        assert lowered.seq == 6 and store.verify().records_checked == 6


def test_an_outcome_names_the_decision_inspected_once_there_are_several(db_url: str) -> None:
    """An officer saw decision 1; meanwhile a radiation alarm recorded decision 2. Written without
    decision_seq, the clean outcome judged decision 2, lifting a hold nobody inspected for. A
    shipment decided once takes an outcome without it, as before."""
    from pipeline.audit.store import DecisionUnnamed

    with AuditStore.open(db_url) as store:
        store.record(decision("S1", Tier.REMOTE_INSPECTION, 0.6))
        alarm = audit_builders.decision("S1", Tier.PHYSICAL_INSPECTION, rule="override.radiation_alarm")
        assert store.record(alarm, idempotency_key="batch:S1:alarm").seq == 2
        unnamed = (
            r"^shipment 'S1' was decided more than once \(decisions 1, 2 \(the latest 2\)\): an outcome "
            r"must name the decision the officer inspected \(decision_seq\)"
        )
        with pytest.raises(DecisionUnnamed, match=unnamed) as refused:
            store.record_outcome("S1", found=None, officer="officer-7")
        assert isinstance(refused.value, ConflictError) and refused.value.decisions == [1, 2]
        assert [r.seq for r in store.list(pending_outcome=True)] == [2]  # still to be inspected
        with pytest.raises(ConflictError, match="was decided again since decision 1"):
            store.record_outcome("S1", found=None, officer="officer-7", decision_seq=1)
        assert store.record_outcome("S1", found=None, officer="officer-7", decision_seq=2).decision_seq == 2
        with pytest.raises(DecisionUnnamed):  # a correction too
            store.record_outcome("S1", found="unknown", officer="officer-8")
        store.record(decision("S2"))
        assert store.record_outcome("S2", found=None, officer="officer-7").decision_seq == 4
        assert store.verify().records_checked == 5
    many = DecisionUnnamed("S3", list(range(1, 13)))
    assert "(decisions earlier ones, then 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 (the latest 12))" in str(many)


def test_an_earlier_decision_run_again_does_not_read_released_off_a_later_hold(db_url: str) -> None:
    """A batch run again over earlier inputs (an alarm since cleared in the manifest, an earlier
    policy) was answered from its record, "released", while a hold recorded since stood."""
    with AuditStore.open(db_url) as store:
        first = store.record(decision("S1", Tier.RELEASE), idempotency_key="inputs-a:S1")
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION), idempotency_key="inputs-b:S1")
        with pytest.raises(
            ConflictError, match=r"^shipment 'S1' is held \(PHYSICAL_INSPECTION, audit record 2\)"
        ):
            store.record(decision("S1", Tier.RELEASE), idempotency_key="inputs-a:S1")
        with pytest.raises(ConflictError, match="would lower it to RELEASE"):  # judged by what is returned
            store.record(decision("S1", Tier.PHYSICAL_INSPECTION), idempotency_key="inputs-a:S1")
        assert store.record(decision("S1", Tier.PHYSICAL_INSPECTION), idempotency_key="inputs-b:S1").seq == 2
        store.record_outcome(
            "S1", found=None, officer="officer-3", decision_seq=2
        )  # lifted: the replay may say so
        assert store.record(decision("S1", Tier.RELEASE), idempotency_key="inputs-a:S1") == first
        assert store.verify().records_checked == 3


def test_a_replay_under_a_new_key_does_not_reopen_a_resolved_hold(db_url: str) -> None:
    """Keys of an earlier Clearsight version: the same decision again is a replay, not a new hold."""
    with AuditStore.open(db_url) as store:
        store.record(decision("S1", Tier.REMOTE_INSPECTION), idempotency_key="decision:S1:old-key")
        store.record_outcome("S1", found=None, officer="officer-2")
        replay = store.record(decision("S1", Tier.REMOTE_INSPECTION), idempotency_key="decision:S1:new-key")
        assert replay.seq == 1 and store.list(pending_outcome=True) == []
        assert store.verify().records_checked == 2


def test_the_exported_chain_verifies_without_the_database(
    filled: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import app, run

    chain = tmp_path / "chain.jsonl"
    assert run(app, ["audit", "export", "--no-seals", "--db", filled, "--chain", "--out", str(chain)]) == 0
    assert "exported 5 records, the whole chain up to its head" in capsys.readouterr().out
    head_line, *lines = [json.loads(line) for line in chain.read_text().splitlines()]
    assert [(r["seq"], json.loads(r["content"])["kind"]) for r in lines] == [
        (1, "decision"),
        (2, "decision"),
        (3, "decision"),
        (4, "decision"),
        (5, "outcome"),
    ]
    assert head_line == {"head_seq": 5, "head_hash": lines[-1]["record_hash"]}
    head = f"5:{lines[-1]['record_hash']}"
    assert run(app, ["audit", "verify-file", "--no-seals", str(chain), "--expect", head]) == 0
    assert "5 records verified, chain intact" in capsys.readouterr().out
    # an outcome rewritten in the copy
    altered = [dict(r) for r in lines]
    altered[4]["content"] = altered[4]["content"].replace("officer-7", "officer-9")
    chain.write_text("".join(json.dumps(r) + "\n" for r in [head_line, *altered]))
    assert run(app, ["audit", "verify-file", "--no-seals", str(chain)]) == 2
    assert "record 5: its content does not give its record_hash (altered)" in capsys.readouterr().err
    # cut back: the head line gives it away
    chain.write_text("".join(json.dumps(r) + "\n" for r in [head_line, *lines[:4]]))
    assert run(app, ["audit", "verify-file", "--no-seals", str(chain)]) == 2
    assert "records 5..5 are missing (deleted, or the file was cut off)" in capsys.readouterr().err
    # cut back, head line and all: exit 0 with a note let a script that checks the exit code
    # accept it; refused unless the user says it is an export from before the head line
    chain.write_text("".join(json.dumps(r) + "\n" for r in lines[:4]))
    assert run(app, ["audit", "verify-file", "--no-seals", str(chain)]) == 2
    assert "no head line, so records missing from its end cannot be told" in capsys.readouterr().err
    assert run(app, ["audit", "verify-file", "--no-seals", str(chain), "--headless"]) == 0
    assert "records missing from its end cannot be told" in " ".join(capsys.readouterr().out.split())
    assert run(app, ["audit", "verify-file", "--no-seals", str(chain), "--headless", "--expect", head]) == 2
    assert "ends at record 4, before the published record 5" in capsys.readouterr().err
    chain.write_text("")  # a copy that failed: "0 records verified, chain intact"
    assert run(app, ["audit", "verify-file", "--no-seals", str(chain), "--headless"]) == 2
    assert "empty: no head line and no record" in capsys.readouterr().err
    # a record dropped from the middle
    chain.write_text("".join(json.dumps(r) + "\n" for r in lines[:2] + lines[3:]))
    assert run(app, ["audit", "verify-file", "--no-seals", str(chain)]) == 2
    assert "record 4 follows record 2: records are missing or reordered" in capsys.readouterr().err
    # a line nested a thousand deep: the CLI's "unexpected RecursionError"
    chain.write_text('{"seq": 1, "prev_hash": ' + "[" * 5000 + "]" * 5000 + "}\n")
    assert run(app, ["audit", "verify-file", "--no-seals", str(chain)]) == 2
    assert "1: not a chain record (a value is nested too deeply)" in capsys.readouterr().err
    # an integer of 5,000 digits: json's plain ValueError was an "unexpected" error, exit 1
    chain.write_text('{"seq": ' + "9" * 5000 + "}\n")
    assert run(app, ["audit", "verify-file", "--no-seals", str(chain)]) == 2
    assert "1: not a chain record (ValueError: Exceeds the limit" in capsys.readouterr().err
    chain.write_bytes(b'\xff\xfe{"seq": 1}\n')  # UTF-16, say: an "unexpected UnicodeDecodeError"
    assert run(app, ["audit", "verify-file", "--no-seals", str(chain)]) == 2
    assert "not a chain file: after record 0, byte 0 of a line is not UTF-8" in capsys.readouterr().err


def _chain_lines(url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    chain = [
        {"seq": seq, "prev_hash": prev, "record_hash": digest, "content": content}
        for seq, prev, digest, content in rows(
            url, "SELECT seq, prev_hash, record_hash, content FROM audit_records ORDER BY seq"
        )
    ]
    return {"head_seq": 5, "head_hash": chain[-1]["record_hash"]}, chain


_Lines = Callable[[dict[str, Any], list[dict[str, Any]]], list[Any]]
HEAD_LINES: list[tuple[str, _Lines, str | None]] = [
    ("as-exported", lambda head, chain: [head, *chain], None),
    (
        "head-only",
        lambda head, chain: [head],
        ": ends at record 0, but its head line says the chain ends at record 5: records 1..5 are "
        "missing (deleted, or the file was cut off)",
    ),
    (
        "past-the-head",
        lambda head, chain: [{"head_seq": 4, "head_hash": chain[3]["record_hash"]}, *chain],
        ": ends at record 5 with hash {h5}, but its head line says record 4 with hash {h4}",
    ),
    (
        "other-hash",
        lambda head, chain: [{**head, "head_hash": "ab" * 32}, *chain],
        ": ends at record 5 with hash {h5}, but its head line says record 5 with hash " + "ab" * 32,
    ),
    (
        "head-last",
        lambda head, chain: [*chain, head],
        ":6: a head line where a record belongs (the head is the first line only)",
    ),
    (
        "two-heads",
        lambda head, chain: [head, head, *chain],
        ":2: a head line where a record belongs (the head is the first line only)",
    ),
    (
        "bad-head",
        lambda head, chain: [{"head_seq": "5", "head_hash": None}, *chain],
        ":1: not a head line (head_seq '5' must be a number >= 0, head_hash 'None' a hash)",
    ),
]


@pytest.mark.parametrize(("lines", "said"), [h[1:] for h in HEAD_LINES], ids=[h[0] for h in HEAD_LINES])
def test_a_chain_file_must_end_at_the_head_its_first_line_names(
    filled: str,
    tmp_path: Path,
    lines: _Lines,
    said: str | None,
) -> None:
    from pipeline.audit.chain_file import verify_chain_file

    head, chain = _chain_lines(filled)
    file = tmp_path / "chain.jsonl"
    file.write_text("".join(json.dumps(line) + "\n" for line in lines(head, chain)))
    if said is None:
        assert verify_chain_file(file)[:4] == (5, 5, head["head_hash"], True)
        return
    with pytest.raises(AuditError) as info:
        verify_chain_file(file)
    hashes = {"h4": chain[3]["record_hash"], "h5": chain[4]["record_hash"]}
    assert str(info.value) == str(file) + said.format(**hashes)


@pytest.mark.parametrize(
    ("tamper", "said"),
    [
        ("DELETE FROM audit_records WHERE seq = 5", "the chain ends at record 4 but its head says 5"),
        ("DELETE FROM audit_records WHERE seq >= 4", "the chain ends at record 3 but its head says 5"),
        (
            "UPDATE audit_head SET record_hash = '" + "ab" * 32 + "'",
            "record 5 does not have the hash its head",
        ),
        ("UPDATE audit_head SET seq = 3", "record 5 lies past the chain head (record 3)"),
    ],
    ids=["last-deleted", "tail-deleted", "head-hash", "past-the-head"],
)
def test_a_chain_that_does_not_reach_its_head_is_not_exported(
    filled: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: str, said: str
) -> None:
    """The database says "deleted"; a copy of what is left would verify as a whole chain."""
    from pipeline.cli import app, run

    sql(filled, tamper)
    out = tmp_path / "out"
    out.mkdir()
    assert (
        run(app, ["audit", "export", "--no-seals", "--db", filled, "--chain", "--out", str(out / "c.jsonl")])
        == 2
    )
    error = " ".join(capsys.readouterr().err.split())
    assert said in error and "nothing exported" in error
    assert list(out.iterdir()) == []


def test_cli_show_and_list_escape_what_does_not_show_as_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record written before the character rule (a shipment id "\\u202e24-S", read as S-42) and
    an officer's notes recorded before it (an ESC clears the screen; rich markup, which the rule
    takes, restyles the line) were printed raw; they are printed with those characters escaped, as
    repr writes them, and markup shown as typed."""
    import pipeline.audit.store as store_module
    from pipeline.cli import app, run
    from pipeline.verdicts import declarations_as_scored

    db = f"sqlite:///{tmp_path / 'audit.db'}"
    shipment = "\u202e24-S"
    with declarations_as_scored():  # as an earlier score run's rows were decided, before the rule
        old = decision(shipment, Tier.PHYSICAL_INSPECTION, 0.9)
    with AuditStore.open(db, seal_key=cli_key()) as store:
        store.record(old)
        with monkeypatch.context() as before:  # as a version without the outcome's rule recorded it
            before.setattr(store_module, "check_outcome", lambda *args: None)
            store.record_outcome(
                shipment, found=None, officer="o-\u202e1", notes="wiped \x1b[2J [bold]cable[/]"
            )
    assert run(app, ["audit", "show", shipment, "--db", db]) == 0
    shown = capsys.readouterr().out
    assert run(app, ["audit", "list", "--db", db]) == 0
    listed = capsys.readouterr().out
    for out in (shown, listed):
        assert "\u202e" not in out and "\x1b" not in out, out
    assert "\\u202e24-S bulk_ore: PHYSICAL_INSPECTION" in shown
    assert "\\u202e24-S.png" in shown
    assert "outcome: clean by o-\\u202e1 at " in shown
    assert shown.rstrip().endswith(": wiped \\x1b[2J [bold]cable[/]"), shown
    assert "\\u202e24-S" in listed


def test_an_empty_chain_exports_its_genesis_head(db_url: str, tmp_path: Path) -> None:
    from pipeline.audit.chain_file import verify_chain_file

    with AuditStore.open(db_url) as store:
        assert store.export_chain(tmp_path / "c.jsonl") == 0
    assert verify_chain_file(tmp_path / "c.jsonl")[:4] == (0, 0, GENESIS_HASH, True)


def test_cli_list_and_show_never_cut_a_shipment_id_or_tier_short(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Piped output was cut to 80 columns: the id is what an officer types into `audit outcome`, and
    a grep of the listing must find it whole, beside every column."""
    from pipeline.cli import app, run

    monkeypatch.setenv("COLUMNS", "80")
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    shipment = "SHP-vacuum_pack-2026-11-30-3f2a9c1b-0d4e-4f6a-9b7c-1e2d3c4b5a04"  # 59 characters
    with AuditStore.open(db, seal_key=cli_key()) as store:
        store.record(decision(shipment, Tier.PHYSICAL_INSPECTION, 0.9))
    views = [
        (["list"], ("seq", "shipment", "cargo", "tier", "audit", "outcome", "decided")),
        (["show", shipment], ("rule", "tier", "image", "score", "threshold", "message")),
    ]
    for command, columns in views:
        assert run(app, ["audit", *command, "--db", db]) == 0
        out = capsys.readouterr().out
        assert shipment in out and "PHYSICAL_INSPECTION" in out and "…" not in out, out
        header = next(line for line in out.splitlines() if columns[0] in line and columns[-1] in line)
        assert all(name in header for name in columns), header


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["export", "--chain", "--out", "chain.csv"],
            "the chain is written as JSON lines (what verify-file reads)",
        ),
        (["list", "--limit", "0"], "Invalid value for '--limit': '0' is out of range; accepted: 1 or more"),
    ],
    ids=["chain-as-csv", "limit-0"],
)
def test_cli_audit_refuses_what_it_cannot_give(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    said: str,
) -> None:
    from pipeline.cli import app, run

    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    with AuditStore.open(db, seal_key=cli_key()) as store:
        store.record(decision("S1"))
    assert run(app, ["audit", *argv, "--db", db]) == 2
    assert said in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "chain.csv").exists()


def _with_images(shipment: str, *hashes: str, phash: str | None = None) -> ShipmentDecision:
    base = decision(shipment)
    images = [
        base.images[0].model_copy(update={"path": f"{h[:4]}.png", "sha256": h, "phash": phash})
        for h in hashes
    ]
    return base.model_copy(update={"images": images})


def test_pictures_decided_in_other_shipments_are_found(db_url: str) -> None:
    a, b, c = "aa" * 32, "bb" * 32, "cc" * 32
    with AuditStore.open(db_url) as store:
        store.record(_with_images("S1", a, b))
        store.record(_with_images("S2", b))
        store.record(_with_images("S3", b, c))
        found = store.sightings([(h, None) for h in (a, b, c, "dd" * 32)], other_than="S3", near_copy_bits=0)
        assert {sha: s.seen_in for sha, s in found.found.items()} == {a: ["S1"], b: ["S1", "S2"]}
        most = store.sightings([(b, None)], other_than="S9", near_copy_bits=0, most=2).found
        assert most[b].seen_in == ["S1", "S2"]  # oldest first
        assert store.sightings([], other_than="S1", near_copy_bits=0).found == {}


_P = "94e46b5a2e6d3992" + "3c" * 32  # coarse part, then fine part


def _phash(coarse: tuple[int, ...] = (), fine: int = 0) -> str:
    """``_P`` with the coarse bits at ``coarse`` (from the least significant) and ``fine`` of the
    fine part's bits flipped."""
    value = int(_P[:16], 16)
    for bit in coarse:
        value ^= 1 << bit
    fine_value = int(_P[16:], 16) ^ ((1 << fine) - 1)
    return f"{value:016x}{fine_value:064x}"


@pytest.mark.parametrize(
    ("coarse", "fine", "bits", "found"),
    [
        ((), 0, 40, Sighting([], ["S1"], 0)),  # the same pixels in other bytes (re-saved)
        ((0, 13, 26, 39), 12, 40, Sighting([], ["S1"], 12)),  # one coarse bit in each of four bands
        ((), 40, 40, Sighting([], ["S1"], 40)),
        ((), 41, 40, None),  # framed alike, another texture inside
        ((0, 13, 26, 39, 52), 0, 40, None),  # a coarse bit in every band: 5 apart
        ((59, 60, 61, 62, 63), 0, 40, None),  # 5 apart in one band: a candidate, then too far
        ((), 0, 0, None),  # 0: the same bytes only
    ],
    ids=["resaved", "coarse-4-spread", "fine-at-limit", "fine-past-limit", "coarse-5-spread",
         "coarse-5-one-band", "off"],
)  # fmt: skip
def test_near_copies_are_found_within_the_bits_asked_for(
    db_url: str, coarse: tuple[int, ...], fine: int, bits: int, found: Sighting | None
) -> None:
    a, b = "aa" * 32, "bb" * 32
    with AuditStore.open(db_url) as store:
        store.record(_with_images("S1", a, phash=_P))
        got = store.sightings([(b, _phash(coarse, fine))], other_than="S2", near_copy_bits=bits)
    assert got.found == ({b: found} if found else {}) and got.as_of == 1


_TURNS = tuple(f"{n:016x}" + f"{n:02x}" * 32 for n in range(1, 8))  # a picture's 7 turned hashes, made up


@pytest.mark.parametrize(
    ("stored", "turns", "found"),
    [
        # a mirror image undoes itself; a quarter turn is undone by the other
        (_TURNS[0], _TURNS, Sighting([], ["S1"], 0, "mirrored left to right", _TURNS[0])),
        (_TURNS[4], _TURNS, Sighting([], ["S1"], 0, "turned a quarter turn anticlockwise", _TURNS[4])),
        (_TURNS[5], _TURNS, Sighting([], ["S1"], 0, "turned a quarter turn clockwise", _TURNS[5])),
        (_phash(fine=6), _TURNS, Sighting([], ["S1"], 6)),  # as sent: no turn named
        (_TURNS[0], (), None),  # no turns brought: the picture as sent only
    ],
    ids=["mirrored", "turned-clockwise", "turned-anticlockwise", "as-sent", "no-turns"],
)
def test_a_mirrored_or_turned_copy_is_found_through_the_turns_looked_up(
    db_url: str, stored: str, turns: tuple[str, ...], found: Sighting | None
) -> None:
    """The index keeps each picture's own hash; a lookup brings the new picture's turned hashes. A
    match through its quarter turn clockwise means the new picture is the earlier one turned
    anticlockwise, and the sighting says so."""
    b = "bb" * 32
    with AuditStore.open(db_url) as store:
        store.record(_with_images("S1", "aa" * 32, phash=stored))
        got = store.sightings([Picture(b, _P, turns)], other_than="S2", near_copy_bits=32).found
    assert got == ({b: found} if found else {})


def test_a_turned_copy_decided_since_the_lookup_is_caught_where_the_decision_is_written(db_url: str) -> None:
    """The re-check under the write lock looks up the decision's images with their turns too; the
    turns are not recorded (the index and the chain keep the picture's own hash)."""
    from pipeline.audit.store import ImagesSeenSince

    with AuditStore.open(db_url) as store:
        as_of = store.sightings([], other_than="S2", near_copy_bits=32).as_of
        store.record(_with_images("S1", "aa" * 32, phash=_TURNS[1]))  # a mirror image, decided meanwhile
        late = _with_images("S2", "bb" * 32, phash=_P)
        image = late.images[0].model_copy(update={"phash_turns": _TURNS})
        turned = late.model_copy(update={"images": [image]})
        with pytest.raises(ImagesSeenSince):
            store.record(turned, images_seen_as_of=as_of, near_copy_bits=32)
        told = image.model_copy(
            update={"similar_in": ["S1"], "similar_bits": 0, "similar_turn": "mirrored left to right"}
        )
        record = store.record(
            late.model_copy(update={"images": [told]}), images_seen_as_of=as_of, near_copy_bits=32
        )
        assert record.seq == 2 and record.decision.images[0].phash_turns is None
        chain = [row.content for row in store.iter_chain()]
    assert '"similar_turn":"mirrored left to right"' in chain[-1] and "phash_turns" not in "".join(chain)


def test_the_band_lookup_misses_no_hash_within_its_reach(db_url: str) -> None:
    """Pigeonhole: coarse parts at most COARSE_BITS apart share a band, wherever the bits fall."""
    import random

    rng = random.Random(5)
    stored = [f"{rng.getrandbits(64):016x}{_P[16:]}" for _ in range(40)]
    with AuditStore.open(db_url) as store:
        for n, phash in enumerate(stored):
            store.record(_with_images(f"S{n}", f"{n:064x}", phash=phash))
        probes = []
        for n, phash in enumerate(stored):
            value = int(phash[:16], 16)
            for bit in rng.sample(range(64), 4):
                value ^= 1 << bit
            probes.append((f"{n + 100:064x}", f"{value:016x}{phash[16:]}"))
        got = store.sightings(probes, other_than="none", near_copy_bits=40).found
    assert {sha: s.similar_in for sha, s in got.items()} == {
        sha: [f"S{n}"] for n, (sha, _) in enumerate(probes)
    }


def test_a_shipment_holding_the_same_bytes_is_never_named_a_near_copy(db_url: str) -> None:
    """However many hold it: one scan shared by several consignments may be only recorded
    (image_reused RELEASE), and must not come back as a near-copy (image_near_copy)."""
    a = "aa" * 32
    with AuditStore.open(db_url) as store:
        for n in range(7):
            store.record(_with_images(f"S{n}", a, phash=_P))
        store.record(_with_images("S-NEAR", "bb" * 32, phash=_phash(fine=6)))
        got = store.sightings([(a, _P)], other_than="NEW", near_copy_bits=40).found
        with pytest.raises(ValueError, match="near_copy_bits 65 not in 0 to 64"):
            store.sightings([(a, _P)], other_than="NEW", near_copy_bits=65)
    assert got == {a: Sighting(seen_in=["S0", "S1", "S2", "S3", "S4"], similar_in=["S-NEAR"], similar_bits=6)}


@pytest.mark.parametrize(
    ("tier", "other_than", "by_hash", "among", "after", "limit", "want"),
    [
        (Tier.PHYSICAL_INSPECTION, "ME", True, (), 0, 100, ["S1", "S4", "S5"]),
        (Tier.REMOTE_INSPECTION, "ME", True, (), 0, 100, ["S2"]),  # S4's is superseded
        (Tier.RELEASE, "ME", True, (), 0, 100, []),
        (Tier.PHYSICAL_INSPECTION, "ME", True, (), 1, 1, ["S4"]),  # a page
        (Tier.PHYSICAL_INSPECTION, "NEW", True, (), 0, 100, ["S1", "S4", "S5", "S6"]),
        (Tier.REMOTE_INSPECTION, "NEW", True, (), 0, 100, ["S2", "ME"]),
        (Tier.PHYSICAL_INSPECTION, "ME", False, ("S3", "S6", "ME", "S9"), 0, 100, ["S3", "S6"]),
    ],
)
def test_the_latest_decisions_of_every_shipment_holding_a_picture_are_read_by_tier(
    db_url: str, tier: Tier, other_than: str, by_hash: bool, among: tuple[str, ...], after: int,
    limit: int, want: list[str],
) -> None:  # fmt: skip
    """However many shipments hold it: the earlier holds its copy carries over are looked for among
    all of them. ME decided it after S1 to S5: S6, later, is left out (as in its sightings)."""
    a = "aa" * 32
    physical, remote = Tier.PHYSICAL_INSPECTION, Tier.REMOTE_INSPECTION
    with AuditStore.open(db_url) as store:
        for shipment, tier_of, hashes in [
            ("S1", physical, [a]),
            ("S2", remote, [a]),
            ("S3", physical, ["bb" * 32]),
            ("S4", remote, [a]),
            ("S4", physical, ["cc" * 32]),  # decided again on another picture: its latest
            ("S5", physical, [a]),
            ("ME", remote, [a]),
            ("S6", physical, [a]),
        ]:
            store.record(_with_images(shipment, *hashes).model_copy(update={"tier": tier_of}))
        got = store.latest_decisions_at(
            tier,
            other_than=other_than,
            holding=a if by_hash else None,
            among=among,
            after=after,
            limit=limit,
        )
        with pytest.raises(InputError, match="limit=0 with 0 shipments not accepted"):
            store.latest_decisions_at(tier, other_than="ME", holding=a, limit=0)
    assert [r.decision.shipment_id for r in got] == want
    assert all(r.decision.tier is tier for r in got)


def test_a_near_copy_decided_since_the_lookup_is_caught_where_the_decision_is_written(db_url: str) -> None:
    from pipeline.audit.store import ImagesSeenSince

    with AuditStore.open(db_url) as store:
        store.record(_with_images("S0", "cc" * 32))
        lookup = store.sightings([("bb" * 32, _phash(fine=8))], other_than="S2", near_copy_bits=40)
        assert lookup == ({}, 1, {})  # seen nowhere, as of record 1
        store.record(_with_images("S1", "aa" * 32, phash=_P))  # then decided elsewhere
        late = _with_images("S2", "bb" * 32, phash=_phash(fine=8))
        with pytest.raises(ImagesSeenSince):
            store.record(late, images_seen_as_of=lookup.as_of, near_copy_bits=40)
        again = store.sightings([("bb" * 32, _phash(fine=8))], other_than="S2", near_copy_bits=40)
        assert again.found == {"bb" * 32: Sighting([], ["S1"], 8)} and again.as_of == 2
        image = late.images[0].model_copy(update={"similar_in": ["S1"], "similar_bits": 8})
        told = late.model_copy(update={"images": [image]})
        assert store.record(told, images_seen_as_of=again.as_of, near_copy_bits=40).seq == 3


@pytest.mark.parametrize(
    ("told", "since", "news"),
    [
        ({"seen_in": ["S1"]}, ("bb" * 32, _P), True),  # a near-copy came since: its rule would fire too
        ({"similar_in": ["S1"], "similar_bits": 4}, ("cc" * 32, _P), True),  # the same bytes came since
        ({"seen_in": ["S1"], "similar_in": ["S1"], "similar_bits": 0}, ("cc" * 32, _P), False),
    ],
    ids=["bytes-known-near-copy-since", "near-copy-known-bytes-since", "both-known"],
)
def test_a_rule_that_would_newly_fire_is_news_where_the_decision_is_written(
    db_url: str, told: dict, since: tuple[str, str], news: bool
) -> None:
    from pipeline.audit.store import ImagesSeenSince

    with AuditStore.open(db_url) as store:
        as_of = store.sightings([], other_than="S3", near_copy_bits=40).as_of
        store.record(_with_images("S2", since[0], phash=since[1]))
        base = _with_images("S3", "cc" * 32, phash=_phash(fine=4))
        decision = base.model_copy(update={"images": [base.images[0].model_copy(update=told)]})
        if news:
            with pytest.raises(ImagesSeenSince):
                store.record(decision, images_seen_as_of=as_of, near_copy_bits=40)
        else:
            assert store.record(decision, images_seen_as_of=as_of, near_copy_bits=40).seq == 2


def test_look_alikes_that_are_no_near_copies_do_not_use_up_the_rows_read(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Pictures framed alike share bands; measured by the database first, they do not crowd out an
    older near-copy. Rows within the coarse reach do, the latest first, and that is logged."""
    from pipeline.audit import image_indexes

    monkeypatch.setattr(image_indexes, "_CANDIDATES", 3)
    with AuditStore.open(db_url) as store:
        store.record(_with_images("OLD", "aa" * 32, phash=_P))
        for n in range(4):  # one coarse band shared, 6 bits apart: look-alikes
            store.record(_with_images(f"ALIKE{n}", f"{n:064x}", phash=_phash((0, 1, 13, 14, 26, 27 + n))))
        probe = [("ff" * 32, _phash(fine=2))]
        assert store.sightings(probe, other_than="NEW", near_copy_bits=40).found["ff" * 32].similar_in == [
            "OLD"
        ]
        for n in range(3):  # within reach, another texture: judged, and they fill the rows read
            store.record(_with_images(f"FRAMED{n}", f"{n + 10:064x}", phash=_phash((5,), fine=100)))
        assert store.sightings(probe, other_than="NEW", near_copy_bits=40).found == {}
    assert "only the latest were judged" in caplog.text


def test_look_alikes_of_one_turn_do_not_crowd_out_a_copy_found_as_sent(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each hash of a picture (its own, each turn's) has its own rows to read: pictures that look
    like the picture mirrored, but are not copies of it, fill only the mirror image's."""
    from pipeline.audit import image_indexes

    monkeypatch.setattr(image_indexes, "_CANDIDATES", 3)
    mirrored = _TURNS[0]
    far = f"{mirrored[:16]}{int(mirrored[16:], 16) ^ ((1 << 100) - 1):064x}"  # its layout, another texture
    with AuditStore.open(db_url) as store:
        store.record(_with_images("OLD", "aa" * 32, phash=_P))
        for n in range(3):
            store.record(_with_images(f"ALIKE{n}", f"{n:064x}", phash=far))
        probe = [Picture("ff" * 32, _phash(fine=2), _TURNS)]
        assert store.sightings(probe, other_than="NEW", near_copy_bits=40).found == {
            "ff" * 32: Sighting([], ["OLD"], 2)
        }
    assert "only the latest were judged" in caplog.text and "(mirrored left to right)" in caplog.text


def test_a_shipment_asked_about_again_is_not_taken_for_a_copy_of_a_later_one(db_url: str) -> None:
    """S1 sent its picture first; X reused its bytes and Y a near-copy later. Asked about S1 again (a
    what-if under a new policy, a picture added), the store named X and Y as if S1 had copied them.
    Each picture S1 held is looked for only before S1's first decision holding it; one it never held,
    everywhere."""
    from pipeline.audit.store import ImagesSeenSince

    a, b = "aa" * 32, "bb" * 32
    with AuditStore.open(db_url) as store:
        store.record(_with_images("S1", a, phash=_P))  # seq 1
        store.record(_with_images("X", a, phash=_P))  # seq 2: the same bytes
        store.record(_with_images("Y", "cc" * 32, phash=_phash(fine=4)))  # seq 3: a near-copy
        again = store.sightings([Picture(a, _P)], other_than="S1", near_copy_bits=32)
        assert again.found == {}
        assert store.sightings([Picture(a, _P)], other_than="X", near_copy_bits=32).found == {
            a: Sighting(["S1"], [], None)  # X is the copy: S1 came before it, Y after
        }
        added = store.sightings([Picture(b, _phash(fine=2))], other_than="S1", near_copy_bits=32).found
        assert added[b].similar_in == ["X", "Y"]  # a picture S1 never held: looked for everywhere
        store.record(_with_images("Z", a, phash=_P))  # seq 4: reused again meanwhile
        redone = _with_images("S1", a, phash=_P).model_copy(update={"policy_version": "p2"})
        assert store.record(redone, images_seen_as_of=again.as_of, near_copy_bits=32).seq == 5
        with pytest.raises(ImagesSeenSince):  # Z's reuse is news to a shipment that never held it
            store.record(_with_images("W", a, phash=_P), images_seen_as_of=again.as_of, near_copy_bits=32)


def test_a_near_copy_stays_named_when_its_shipment_holds_the_very_bytes_only_later(db_url: str) -> None:
    """S sent a near-copy of Y's picture; Y later sent S's very bytes. Asked about S again, Y was left
    out of both lookups: of the same bytes (they came after S's), and of near-copies (a shipment
    holding the same bytes at any time was left to the first)."""
    y, s = "11" * 32, "22" * 32
    with AuditStore.open(db_url) as store:
        store.record(_with_images("Y", y, phash=_P))
        store.record(_with_images("S", s, phash=_phash(fine=4)))
        store.record(_with_images("Y", s, phash=_phash(fine=4)).model_copy(update={"policy_version": "p2"}))
        again = store.sightings([Picture(s, _phash(fine=4))], other_than="S", near_copy_bits=32).found
    assert again == {s: Sighting([], ["Y"], 4)}


def test_records_the_lookup_saw_are_not_checked_again_under_the_write_lock(db_url: str) -> None:
    """Only records after ``images_seen_as_of`` are looked at where the decision is written: the
    verdicts carry what the lookup found up to it (here, by construction, nothing), and a shipment
    they name that is decided again since is no news."""
    from pipeline.audit.store import ImagesSeenSince

    with AuditStore.open(db_url) as store:
        store.record(_with_images("S1", "aa" * 32, phash=_P))
        as_of = store.sightings([], other_than="S3", near_copy_bits=40).as_of
        unseen = _with_images("S3", "aa" * 32, phash=_P)  # claims seen nowhere: trusted up to as_of
        assert store.record(unseen, images_seen_as_of=as_of, near_copy_bits=40).seq == 2
        store.record(_with_images("S1", "aa" * 32, "dd" * 32, phash=_P))  # S1 decided again: seq 3
        image = unseen.images[0].model_copy(update={"seen_in": ["S1", "S3"]})
        named = unseen.model_copy(update={"shipment_id": "S4", "images": [image]})
        assert store.record(named, images_seen_as_of=as_of, near_copy_bits=40).seq == 4
        with pytest.raises(ImagesSeenSince):  # what it does check: S4 came since, and this says nothing
            store.record(unseen.model_copy(update={"shipment_id": "S5"}), images_seen_as_of=3)


@pytest.mark.parametrize(
    ("version", "dropped", "near"),
    [
        (1, ["audit_image_index", "audit_image_likeness"], True),  # both made from the chain
        (2, ["audit_image_likeness"], False),  # a v2 decision holds no perceptual hash: made empty
        (3, [], True),  # the same tables: only the version, so that an older Clearsight refuses it
    ],
    ids=["v1", "v2", "v3"],
)
def test_an_older_store_is_upgraded_and_its_image_indexes_built_from_its_chain(
    db_url: str, version: int, dropped: list[str], near: bool
) -> None:
    a = "aa" * 32
    with AuditStore.open(db_url) as store:  # a version-2 decision carried no perceptual hash
        store.record(_with_images("S1", a, phash=_P if version != 2 else None))
    for table in dropped:  # as a store written before the index existed
        sql(db_url, f"DROP TABLE {table}")
    sql(db_url, f"UPDATE schema_info SET version = {version}")
    with AuditStore.open(db_url) as store:
        assert store.sightings([(a, None)], other_than="S2", near_copy_bits=0).found[a].seen_in == ["S1"]
        found = store.sightings([("bb" * 32, _phash((5, 9), 10))], other_than="S2", near_copy_bits=40).found
        assert found == (
            {"bb" * 32: Sighting(seen_in=[], similar_in=["S1"], similar_bits=10)} if near else {}
        )
        assert store.verify().ok  # the indexes made again are those the chain gives
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_info")).scalar() == SCHEMA_VERSION
    engine.dispose()


def test_a_version_3_store_is_upgraded_by_a_writer_and_only_read_by_a_reader(db_url: str) -> None:
    """Reading a store with this Clearsight (`clearsight audit verify`) must not lock an older one
    out: the version moves only when the store is opened to record."""
    a = "aa" * 32
    with AuditStore.open(db_url) as store:
        store.record(_with_images("S1", a, phash=_P))
    sql(db_url, "UPDATE schema_info SET version = 3")
    with AuditStore.open(db_url, create=False) as store:
        assert store.verify().ok and store.get("S1") is not None
        found = store.sightings([("bb" * 32, _phash(fine=4))], other_than="S2", near_copy_bits=32).found
        assert found["bb" * 32].similar_in == ["S1"]  # its indexes are those of 4
        assert store.record_outcome("S1", found=None, officer="o-1").found is None
        with pytest.raises(AuditError, match="is at schema version 3: decisions of this Clearsight"):
            store.record(_with_images("S2", "bb" * 32))
    assert rows(db_url, "SELECT version FROM schema_info") == [(3,)]
    AuditStore.open(db_url).close()
    assert rows(db_url, "SELECT version FROM schema_info") == [(SCHEMA_VERSION,)]


@pytest.mark.parametrize("version", [3, 4], ids=["upgraded-from-3", "at-4"])
def test_a_likeness_index_an_early_build_laid_out_otherwise_is_made_again(db_url: str, version: int) -> None:
    """An early version-3 build laid the likeness index out otherwise; a writer makes it again from
    the chain, as it upgrades the store or at version 4."""
    with AuditStore.open(db_url) as store:
        store.record(_with_images("S1", "aa" * 32, phash=_P))
    sql(db_url, "DROP TABLE audit_image_likeness")
    sql(db_url, "CREATE TABLE audit_image_likeness (phash VARCHAR(16), shipment_id VARCHAR(128), seq BIGINT)")
    sql(db_url, f"UPDATE schema_info SET version = {version}")
    with AuditStore.open(db_url) as store:
        found = store.sightings([("bb" * 32, _phash(fine=4))], other_than="S2", near_copy_bits=32).found
        assert found["bb" * 32].similar_in == ["S1"] and store.verify().ok
    assert rows(db_url, "SELECT version FROM schema_info") == [(SCHEMA_VERSION,)]


@pytest.mark.parametrize(
    ("version", "table"),
    [
        (6, "audit_policy_versions"),
        (4, "audit_image_index"),
        (4, "audit_image_likeness"),
        (3, "audit_image_likeness"),
        (2, "audit_image_index"),
    ],
)
def test_a_store_without_an_image_index_of_its_version_is_named_as_damaged(
    db_url: str, version: int, table: str
) -> None:
    AuditStore.open(db_url).close()
    sql(db_url, f"DROP TABLE {table}")
    sql(db_url, f"UPDATE schema_info SET version = {version}")
    with pytest.raises(AuditError, match=rf"schema version {version} but tables \['{table}'\] are missing"):
        AuditStore.open(db_url)


def test_pictures_decided_elsewhere_since_the_lookup_are_caught_where_the_decision_is_written(
    db_url: str,
) -> None:
    from pipeline.audit.store import ImagesSeenSince

    a = "aa" * 32
    with AuditStore.open(db_url) as store:
        lookup = store.sightings([(a, None)], other_than="S2", near_copy_bits=40)
        store.record(_with_images("S1", a), images_seen_as_of=lookup.as_of)  # seen nowhere, as looked up
        late = _with_images("S2", a)  # looked up before S1 was recorded: seen_in None
        with pytest.raises(ImagesSeenSince):
            store.record(late, images_seen_as_of=lookup.as_of)
        again = store.sightings([(a, None)], other_than="S2", near_copy_bits=40)
        assert again.found == {a: Sighting(["S1"], [], None)}
        told = late.model_copy(update={"images": [late.images[0].model_copy(update={"seen_in": ["S1"]})]})
        assert store.record(told, images_seen_as_of=again.as_of).seq == 2  # decided again, knowing it


def test_an_outcome_is_checked_where_it_is_written(db_url: str) -> None:
    with AuditStore.open(db_url) as store:
        store.record(decision("S1", Tier.REMOTE_INSPECTION, 0.6))
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION, 0.9))  # decided again: seq 2
        with pytest.raises(
            ConflictError, match="was decided again since decision 1: its latest decision is 2"
        ):
            store.record_outcome("S1", found=None, officer="o-1", decision_seq=1)
        store.record_outcome("S1", found="wet_patch", officer="o-1", decision_seq=2, amend=False)
        with pytest.raises(ConflictError, match=r"already has an outcome \(wet_patch, recorded by o-1\)"):
            store.record_outcome("S1", found=None, officer="o-2", decision_seq=2, amend=False)
        # a library caller that does not say amend is refused too: it corrected the finding unawares
        with pytest.raises(ConflictError, match=r"already has an outcome \(wet_patch, recorded by o-1\)"):
            store.record_outcome("S1", found=None, officer="o-2", decision_seq=2)
        assert store.record_outcome("S1", found=None, officer="o-2", decision_seq=2, amend=True).found is None


def test_the_outcome_of_a_decision_since_superseded_is_corrected_with_amend(db_url: str) -> None:
    """S1's inspection recorded a finding on decision 1 by mistake; a radiation alarm then decided S1
    again (decision 4). Every outcome naming decision 1 was refused as decided again, so the finding,
    which holds its pictures whenever sent again, stood for good. A correction (amend) of the outcome
    recorded there is taken, sealed, as decision 1's latest outcome; the later decision stands as
    recorded, pending its own. A first outcome on a superseded decision (S2's 3) is refused, amend
    or not, and so is a correction without amend."""
    alarm = "override.radiation_alarm"
    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S1", Tier.REMOTE_INSPECTION, 0.6))
        mistaken = store.record_outcome("S1", found="foreign_object", officer="officer-7")
        store.record(decision("S2", Tier.REMOTE_INSPECTION, 0.6))
        for shipment in ("S1", "S2"):
            held = audit_builders.decision(shipment, Tier.PHYSICAL_INSPECTION, rule=alarm)
            store.record(held, idempotency_key=f"batch:{shipment}:alarm")  # 4, 5
        refused = [
            ("S1", 1, False, "its latest decision is 4; judge that one, or correct the outcome recorded "
             "on decision 1 (record 2) with amend (the API's amend: true, the CLI's --amend)"),
            ("S2", 3, True, "its latest decision is 5; amend corrects an outcome already recorded, and "
             "decision 3 has none: judge the latest"),
            ("S2", 3, False, "its latest decision is 5; judge that one"),
        ]  # fmt: skip
        for shipment, seq, amend, said in refused:
            with pytest.raises(ConflictError) as why:
                store.record_outcome(shipment, found=None, officer="officer-8", decision_seq=seq, amend=amend)
            assert str(why.value) == f"shipment {shipment!r} was decided again since decision {seq}: {said}"
        corrected = store.record_outcome(
            "S1", found=None, officer="officer-8", notes="misread", decision_seq=1, amend=True
        )
        first, later = store.decisions_of(["S1"])
        assert (corrected.seq, corrected.decision_seq, first.outcome) == (6, 1, corrected)
        assert mistaken.decision_seq == 1 and later.outcome is None and store.get("S1") == later
        assert [r.seq for r in store.list(pending_outcome=True)] == [5, 4]
        report = store.verify()
        assert report.ok and report.records_checked == 6
    (content,) = sql(db_url, "SELECT content FROM audit_records WHERE seq = 6")[0]
    assert json.loads(str(content))["decision_hash"] == first.record_hash


def test_a_clean_outcome_of_a_decision_since_superseded_is_not_corrected_into_a_finding(
    db_url: str,
) -> None:
    """S was held (decision 1), inspected clean (2), then released by a batch (3). A correction of
    decision 1's clean outcome into a finding was taken on decision 1, amend, while S stood released
    with no outcome and in no queue: nobody was told the cargo with a finding was released. It is
    refused as decided again, naming the latest decision and its tier, where the finding holds the
    cargo; so is a correction of T's decision 4, whose finding was corrected to clean (its latest).
    The refusal names who recorded the clean outcome and when (another officer, moments ago, maybe);
    it sent a clean correction (notes fixed) to the latest decision, which nobody inspected, and a
    finding to T's decision 6, which has an outcome of its own: amend that one."""
    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S", Tier.PHYSICAL_INSPECTION, 0.95))
        store.record_outcome("S", found=None, officer="o-1")
        store.record(decision("S", Tier.RELEASE, 0.1), idempotency_key="batch:S")  # 3
        store.record(decision("T", Tier.REMOTE_INSPECTION, 0.6))  # 4
        store.record_outcome("T", found="wet_patch", officer="o-1")
        store.record(decision("T", Tier.PHYSICAL_INSPECTION, 0.9), idempotency_key="batch:T")  # 6
        store.record_outcome("T", found=None, officer="o-2", decision_seq=4, amend=True)  # 7
        store.record_outcome("T", found=None, officer="o-4", decision_seq=6, amend=False)  # 8
        at = {r.outcome.seq: r.outcome.created_at for r in store.decisions_of(["S", "T"]) if r.outcome}
        clean_s = (
            "its latest decision is 3 (RELEASE); amend corrects a finding recorded by mistake, and "
            f"decision 1's outcome is clean (record 2, by o-1 at {at[2]})"
        )
        refused = [
            ("S", 1, "unknown", f"{clean_s}: record a finding on decision 3, the one the shipment stands at"),
            ("S", 1, None, f"{clean_s}: a clean outcome on a superseded decision is not recorded again"),
            ("T", 4, "wet_patch", "its latest decision is 6 (PHYSICAL_INSPECTION); amend corrects a "
             f"finding recorded by mistake, and decision 4's outcome is clean (record 7, by o-2 at {at[7]}): "
             "correct the outcome of decision 6 (record 8), the one the shipment stands at, with amend"),
        ]  # fmt: skip
        for shipment, seq, found, said in refused:
            with pytest.raises(ConflictError) as why:
                store.record_outcome(
                    shipment, found=found, officer="o-3", notes="typo fixed", decision_seq=seq, amend=True
                )
            assert str(why.value) == f"shipment {shipment!r} was decided again since decision {seq}: {said}"
        (first, latest) = store.decisions_of(["S"])
        assert first.outcome is not None and first.outcome.found is None and first.outcome.seq == 2
        assert latest.seq == 3 and latest.outcome is None and store.verify().records_checked == 8


def test_a_forged_clean_outcome_of_a_superseded_decision_fails_its_seal_before_a_refusal(
    db_url: str,
) -> None:
    """The refusal above rests on decision 1's latest outcome: it is read with seals checked, so a
    clean outcome a writer without the secret appended is named as forged, not taken at its word."""
    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        first = store.record(decision("S", Tier.REMOTE_INSPECTION, 0.6))
        store.record_outcome("S", found="wet_patch", officer="o-1")
        store.record(decision("S", Tier.PHYSICAL_INSPECTION, 0.9), idempotency_key="batch:S")  # 3
    forged = {
        "kind": "outcome",
        "shipment_id": "S",
        "idempotency_key": None,
        "created_at": "2026-11-05T10:31:00.000000+00:00",
        "decision_seq": 1,
        "decision_hash": first.record_hash,
        "outcome": {"found": None, "officer": "x", "notes": ""},
    }
    assert audit_builders.append_forged(db_url, forged, "ab" * 32) == 4
    with (
        AuditStore.open(db_url, create=False, seal_key=cli_key()) as store,  # a writer refuses the head
        pytest.raises(SealBrokenError, match="audit record 4 fails its seal"),
    ):
        store.record_outcome("S", found="unknown", officer="o-2", decision_seq=1, amend=True)


def test_a_version_1_store_opened_read_only_is_read_and_not_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    a = "aa" * 32
    with AuditStore.open(f"sqlite:///{path}") as store:
        store.record(_with_images("S1", a))
    sql(f"sqlite:///{path}", "DROP TABLE audit_image_index")
    sql(f"sqlite:///{path}", "UPDATE schema_info SET version = 1")
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    with AuditStore.open(read_only, create=False) as store:  # an auditor's copy
        assert store.get("S1") is not None and store.verify().ok
        assert (
            store.sightings([(a, None)], other_than="S2", near_copy_bits=0).found == {}
        )  # no index to look in
        with pytest.raises(AuditError, match="is at schema version 1: decisions of this Clearsight are"):
            store.record(_with_images("S2", a))
    with pytest.raises(AuditError, match="may not upgrade it to 6"):
        AuditStore.open(read_only)  # a writer is refused at once, not at its first record


def test_an_index_an_early_build_made_is_not_doubled_by_the_upgrade(db_url: str) -> None:
    a, b = "aa" * 32, "bb" * 32
    with AuditStore.open(db_url) as store:
        store.record(_with_images("S1", a, b))
    sql(db_url, "UPDATE schema_info SET version = 1")  # the index table kept, as an early build did
    AuditStore.open(db_url).close()
    assert rows(db_url, "SELECT COUNT(*) FROM audit_image_index") == [(2,)]
    assert rows(db_url, "SELECT COUNT(*) FROM audit_image_likeness") == [(0,)]  # no phash recorded


def _record_indexes(url: str) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        names = [str(index["name"]) for index in inspect(conn).get_indexes("audit_records")]
    engine.dispose()
    return sorted(name for name in names if name.startswith("ix_"))  # not those of unique columns


_NEW_INDEXES = ["ix_audit_records_ref_seq_seq", "ix_audit_records_shipment_id_seq"]
_OLD_INDEXES = ["ix_audit_records_ref_seq", "ix_audit_records_shipment_id"]


def _as_before_the_lookup_indexes(url: str) -> None:
    """The records' indexes of a store made before (shipment_id, seq) and (ref_seq, seq)."""
    for name in _NEW_INDEXES:
        sql(url, f"DROP INDEX {name}")
    sql(url, "CREATE INDEX ix_audit_records_shipment_id ON audit_records (shipment_id)")
    sql(url, "CREATE INDEX ix_audit_records_ref_seq ON audit_records (ref_seq)")


@pytest.mark.parametrize("version", [4, 5], ids=["upgraded-from-4", "at-5"])
def test_a_store_made_before_the_lookup_indexes_is_given_them_by_a_writer(db_url: str, version: int) -> None:
    """A picture held in 2,000 shipments took seconds to look up on a PostgreSQL store not yet
    analysed: its single-column indexes were intersected with every record after each shipment's.
    A writer gives an older store the two-column indexes in their place, its records kept; a reader
    changes nothing."""
    with AuditStore.open(db_url) as store:
        store.record(_with_images("S1", "aa" * 32, phash=_P))
        store.record(_with_images("S2", "aa" * 32, phash=_P))
        store.record(_with_images("S1", "aa" * 32, "bb" * 32, phash=_P))  # decided again: 1 superseded
        store.record_outcome("S1", found="wet_patch", officer="o-1", decision_seq=3)
    assert _record_indexes(db_url) == _NEW_INDEXES  # a new store's
    _as_before_the_lookup_indexes(db_url)
    sql(db_url, f"UPDATE schema_info SET version = {version}")
    AuditStore.open(db_url, create=False).close()
    assert _record_indexes(db_url) == _OLD_INDEXES
    with AuditStore.open(db_url) as store:
        assert _record_indexes(db_url) == _NEW_INDEXES
        assert store.verify().ok and rows(db_url, "SELECT COUNT(*) FROM audit_records") == [(4,)]
        (found,) = store.findings_on(other_than="S3", holding="aa" * 32)
        assert (found.seq, found.outcome.found) == (3, "wet_patch")  # type: ignore[union-attr]
        latest = store.latest_decisions_at(Tier.RELEASE, other_than="S3", holding="aa" * 32)
        assert [(r.seq, r.decision.shipment_id) for r in latest] == [(2, "S2"), (3, "S1")]
    assert rows(db_url, "SELECT version FROM schema_info") == [(SCHEMA_VERSION,)]


def test_a_writer_that_may_not_add_the_lookup_indexes_goes_on_without_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.db"
    with AuditStore.open(f"sqlite:///{path}") as store:
        store.record(_with_images("S1", "aa" * 32))
    _as_before_the_lookup_indexes(f"sqlite:///{path}")
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    with caplog.at_level("WARNING", logger="clearsight.audit"), AuditStore.open(read_only) as store:
        assert store.get("S1") is not None  # opened to record, and read
    assert _record_indexes(read_only) == _OLD_INDEXES
    assert (
        "may not add the indexes ix_audit_records_ref_seq_seq, ix_audit_records_shipment_id_seq"
        in caplog.text
    )


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_writer_leaves_a_replaced_index_a_reader_holds_off_for_a_later_open(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """DROP INDEX waits for PostgreSQL's ACCESS EXCLUSIVE lock, which a long read (``audit verify``
    of a large store) holds off: the writer's open failed after its whole lock wait, blaming
    "another writer", and appends queued behind it meanwhile."""
    with AuditStore.open(db_url) as store:
        store.record(_with_images("S1", "aa" * 32))
    _as_before_the_lookup_indexes(db_url)
    reader = create_engine(db_url)
    try:
        with reader.connect() as conn, conn.begin():
            conn.execute(text("SELECT COUNT(*) FROM audit_records")).one()  # held until the block ends
            with (
                caplog.at_level("INFO", logger="clearsight.audit"),
                AuditStore.open(db_url, busy_timeout_s=3) as store,
            ):
                store.record(_with_images("S2", "aa" * 32))  # the open's own wait is back: it records
            assert _record_indexes(db_url) == sorted(_NEW_INDEXES + _OLD_INDEXES)
            # the second drop waits on the lock the first timed out on: not tried (it waited as long)
            left = [r for r in caplog.records if "is left for a later writer" in r.getMessage()]
            assert len(left) == 1
    finally:
        reader.dispose()
    AuditStore.open(db_url).close()
    assert _record_indexes(db_url) == _NEW_INDEXES


@pytest.mark.parametrize("uri", ["uri=true", "uri=1", "uri=True"])
def test_a_sqlite_file_uri_names_its_file(tmp_path: Path, uri: str) -> None:
    (tmp_path / "c d").mkdir()
    path = tmp_path / "c d" / "audit.db"
    AuditStore.open(f"sqlite:///{path}").close()
    with AuditStore.open(
        f"sqlite:///file:{str(path).replace(' ', '%20')}?mode=ro&{uri}", create=False
    ) as store:
        assert store.verify().ok
    with pytest.raises(AuditError, match="does not exist"):
        AuditStore.open(f"sqlite:///file:{tmp_path}/none.db?mode=ro&{uri}", create=False)


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["--found", "crack"], 0, "recorded outcome of S1 for decision 1 (found crack)"),
        (["--found", "unknown"], 0, "recorded outcome of S1 for decision 1 (found unknown)"),
        (["--found", "banana"], 2,
         "--found 'banana' is not a type the bulk_ore pictures of shipment 'S1' were scored against "
         "(accepted: crack, unknown)"),
        (["--found", "banana", "--new-type"], 0, "recorded outcome of S1 for decision 1 (found banana)"),
        (["--found", "Foreign Object"], 2, "--found 'Foreign Object' is not a type name"),
    ],
    ids=["known", "unknown", "not-known", "new-type", "not-a-name"],
)  # fmt: skip
def test_cli_outcome_names_a_type_the_model_knows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, said: str
) -> None:
    """An outcome stays in the chain for good: a typo must not become a finding."""
    from pipeline.cli import app, run

    db = f"sqlite:///{tmp_path / 'audit.db'}"
    base = decision("S1", Tier.REMOTE_INSPECTION, 0.6)
    probabilities = {"good": 0.4, "crack": 0.5, "synthetic_scratch": 0.1}
    image = base.images[0].model_copy(update={"type_probabilities": probabilities})
    with AuditStore.open(db, seal_key=cli_key()) as store:
        store.record(base.model_copy(update={"images": [image]}))
    assert run(app, ["audit", "outcome", "S1", "--officer", "o-1", *args, "--db", db]) == code
    captured = capsys.readouterr()
    assert said in " ".join((captured.out + captured.err).split())


def test_cli_outcome_takes_no_type_of_another_cargo_s_picture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bulk-ore shipment with a picture scored by the packs' model: the API refused 'puncture' as
    a finding, the CLI recorded it (a puncture is no finding in a bulk-ore wagon)."""
    from pipeline.cli import app, run

    db = f"sqlite:///{tmp_path / 'audit.db'}"
    base = decision("S1", Tier.REMOTE_INSPECTION, 0.6)
    ore = base.images[0].model_copy(update={"type_probabilities": {"good": 0.5, "wet_patch": 0.5}})
    pack = base.images[0].model_copy(
        update={
            "path": "p.png",
            "cargo_type": "vacuum_pack",
            "type_probabilities": {"good": 0.5, "puncture": 0.5},
        }
    )
    with AuditStore.open(db, seal_key=cli_key()) as store:
        store.record(base.model_copy(update={"images": [ore, pack]}))
    assert run(app, ["audit", "outcome", "S1", "--officer", "o-1", "--found", "puncture", "--db", db]) == 2
    assert "(accepted: unknown, wet_patch)" in " ".join(capsys.readouterr().err.split())
    assert run(app, ["audit", "outcome", "S1", "--officer", "o-1", "--found", "wet_patch", "--db", db]) == 0


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_writer_on_postgresql_13_is_refused_and_a_reader_is_not(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.dialects.postgresql.base import PGDialect

    AuditStore.open(db_url).close()
    monkeypatch.setattr(PGDialect, "_get_server_version_info", lambda self, connection: (13, 9))
    with pytest.raises(AuditError, match=r"PostgreSQL 13\.9 is too old; Clearsight needs 14 or later"):
        AuditStore.open(db_url)
    with AuditStore.open(db_url, create=False) as store:  # verify, export: no bit_count
        assert store.verify().ok


@pytest.mark.parametrize(
    ("version", "refused"), [((13, 9), True), ((14, 0), False), ((15, 20), False), (None, False)]
)
def test_a_postgresql_older_than_14_is_refused_at_open(
    version: tuple[int, ...] | None, refused: bool
) -> None:
    from pipeline.audit.migrate import _check_postgres

    if refused:
        with pytest.raises(AuditError, match=r"PostgreSQL 13\.9 is too old; Clearsight needs 14 or later"):
            _check_postgres(version, "postgresql://db/audit")
    else:
        _check_postgres(version, "postgresql://db/audit")


def test_the_decisions_of_shipments_are_read_whole_and_in_order(db_url: str) -> None:
    with AuditStore.open(db_url) as store:
        store.record(decision("S1", Tier.REMOTE_INSPECTION, 0.6))
        store.record(decision("S2"))
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION, 0.9))  # supersedes seq 1
        store.record_outcome("S1", found=None, officer="o-1", decision_seq=3)
        got = store.decisions_of(["S1", "S1", "S9"])
        assert store.decisions_of([]) == []
    assert [(r.seq, r.decision.tier) for r in got] == [
        (1, Tier.REMOTE_INSPECTION),
        (3, Tier.PHYSICAL_INSPECTION),
    ]
    assert got[1].outcome is not None and got[0].outcome is None


def test_a_shipment_is_sent_again_only_by_whom_the_caller_allows(db_url: str) -> None:
    """Checked under the write lock too: two keys racing with one new shipment id."""
    from pipeline.audit.store import FirstSent, SentByAnother

    mine = decision("S1").model_copy(update={"submitted_by": "submitter:aaaaaaaaaaaa"})
    theirs = decision("S1", Tier.PHYSICAL_INSPECTION).model_copy(
        update={"submitted_by": "submitter:bbbbbbbbbbbb"}
    )

    def only(name: str):  # type: ignore[no-untyped-def]
        return lambda first: first.submitted_by == name

    with AuditStore.open(db_url) as store:
        assert store.first_sent("S1") is None
        store.record(mine, idempotency_key="k1", exclusive=True, may_send=only("submitter:aaaaaaaaaaaa"))
        with pytest.raises(SentByAnother, match="^shipment 'S1' was first sent under another key"):
            store.record(
                theirs, idempotency_key="k2", exclusive=True, may_send=only("submitter:bbbbbbbbbbbb")
            )
        with pytest.raises(SentByAnother):  # nor read back under the first sender's key
            other = mine.model_copy(update={"submitted_by": "submitter:bbbbbbbbbbbb"})
            store.record(other, idempotency_key="k1", exclusive=True, may_send=only("submitter:bbbbbbbbbbbb"))
        assert store.first_sent("S1") == FirstSent("submitter:aaaaaaaaaaaa", None, None)
        # an alarm declared since: the one thing that decides a shipment sent again anew
        alarm = Reason(rule="override.radiation_alarm", tier=Tier.PHYSICAL_INSPECTION, message="m")
        stricter = mine.model_copy(update={"tier": Tier.PHYSICAL_INSPECTION, "reasons": [alarm]})
        assert (
            store.record(
                stricter, idempotency_key="k3", exclusive=True, may_send=only("submitter:aaaaaaaaaaaa")
            ).seq
            == 2
        )


@pytest.mark.parametrize(
    ("declared", "sender", "first"),
    [
        (
            {"trader_id": " T-A ", "aeo_tier": "AEOF"},
            "admin:0123456789ab",
            ("admin:0123456789ab", "T-A", "AEOF"),
        ),
        ({"trader_id": ["T-A"]}, 42, (None, None, None)),  # foreign data: no sender, no trader, no 500
        (None, None, (None, None, None)),  # no decision object at all
    ],
    ids=["unstripped", "odd-types", "no-decision"],
)
def test_a_first_record_is_read_as_the_sender_rule_needs_it(
    db_url: str, declared: dict, sender: object, first: tuple
) -> None:
    """Stored as an older version wrote it (a trader id with spaces) or by another tool (odd types)."""
    from pipeline.audit.store import FirstSent

    with AuditStore.open(db_url) as store:
        store.record(decision("S1"))
    (content,) = rows(db_url, "SELECT content FROM audit_records WHERE seq = 1")[0]
    data = json.loads(content)
    if declared is None:
        data["decision"] = None
    else:
        data["decision"]["declaration"].update(declared)
        data["decision"]["submitted_by"] = sender
    sql(db_url, "UPDATE audit_records SET content = :c WHERE seq = 1", c=json.dumps(data))
    with AuditStore.open(db_url, create=False) as store:
        assert store.first_sent("S1") == FirstSent(*first)


@pytest.mark.parametrize(
    ("probabilities", "args", "code", "said"),
    [
        # a model trained without labelled anomalies scores against no type: any name became a finding
        (None, ["--found", "gold_bar"], 2,
         "--found 'gold_bar' is not a type the bulk_ore pictures of shipment 'S1' were scored against: "
         "its model knows none (accepted: unknown); pass --new-type"),
        ({"good": 0.7, "synthetic_scratch": 0.3}, ["--found", "gold_bar"], 2,
         "--found 'gold_bar' is not a type the bulk_ore pictures of shipment 'S1' were scored against: "
         "its model knows none"),
        (None, ["--found", "gold_bar", "--new-type"], 0,
         "recorded outcome of S1 for decision 1 (found gold_bar)"),
        (None, ["--found", "unknown"], 0, "recorded outcome of S1 for decision 1 (found unknown)"),
        # the API and the review page take at most 2,000 characters of notes; the CLI took any
        (None, ["--clean", "--notes", "x" * 2001], 2,
         "--notes is 2001 characters long; an outcome takes at most 2000 (as the API and the review page"),
        (None, ["--clean", "--notes", "é" * 2000], 0, "recorded outcome of S1 for decision 1 (clean)"),
    ],
    ids=["no-types", "synthetic-only", "new-type", "unknown", "notes-too-long", "notes-at-the-limit"],
)  # fmt: skip
def test_cli_outcome_is_held_to_what_the_api_accepts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    probabilities: dict[str, float] | None,
    args: list[str],
    code: int,
    said: str,
) -> None:
    from pipeline.cli import app, run

    db = f"sqlite:///{tmp_path / 'audit.db'}"
    base = decision("S1", Tier.REMOTE_INSPECTION, 0.6)
    image = base.images[0].model_copy(update={"type_probabilities": probabilities})
    with AuditStore.open(db, seal_key=cli_key()) as store:
        store.record(base.model_copy(update={"images": [image]}))
    assert run(app, ["audit", "outcome", "S1", "--officer", "o-1", *args, "--db", db]) == code
    captured = capsys.readouterr()
    assert said in " ".join((captured.out + captured.err).split())
    with AuditStore.open(db, create=False) as store:
        assert store.verify().records_checked == (2 if code == 0 else 1)  # a refused outcome is not chained
