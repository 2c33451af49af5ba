"""Keyed seals on the audit chain, on SQLite and on the real PostgreSQL: a database writer without the
server's secret cannot add or rewrite records unseen, in the store or in an exported chain."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from datasets.errors import AuditError, ConflictError
from pipeline.audit import SCHEMA_VERSION, AuditStore, canonical_json, chain_hash
from pipeline.audit.chain_file import verify_chain_file
from pipeline.audit.seal import SEAL_LABEL, HeadSealError, SealKey
from pipeline.settings import DEVELOPMENT_AUDIT_SECRET, Settings, audit_seal_key
from pipeline.verdicts import ShipmentDecision, Tier

sys.path.insert(0, str(Path(__file__).parent))
import audit_builders  # noqa: E402
from audit_builders import append_forged, sql  # noqa: E402

SECRET = "a-long-server-secret-for-tests-only"
KEY = SealKey.derive(SECRET)
OTHER_KEY = SealKey.derive("another-long-secret-of-some-other-server")


def decision(shipment: str, tier: Tier = Tier.RELEASE, score: float = 0.1) -> ShipmentDecision:
    return audit_builders.decision(shipment, tier, score=score, reason_threshold=0.5)


def fill(url: str, key: SealKey | None = KEY) -> None:
    """Four decisions (S2 held for remote inspection) and an outcome for S3: records 1-5."""
    with AuditStore.open(url, seal_key=key) as store:
        store.record(decision("S1"))
        store.record(decision("S2", Tier.REMOTE_INSPECTION, 0.6))
        store.record(decision("S3", Tier.PHYSICAL_INSPECTION, 0.9))
        store.record(decision("S4"))
        store.record_outcome("S3", found="foreign_object", officer="officer-7")


def forge_clean_outcome(url: str, seal: Callable[[str], str | None]) -> int:
    """What a database writer without the secret does (the review's repro 02): append a 'clean'
    outcome of S2 by an officer of their choosing, backdated, with a valid hash, and move the head.
    ``seal`` gives the seal written beside it. Returns its seq."""
    head_hash = sql(url, "SELECT record_hash FROM audit_head WHERE id = 1")[0][0]
    dec_seq, dec_hash = sql(
        url, "SELECT seq, record_hash FROM audit_records WHERE shipment_id = 'S2' AND kind = 'decision'"
    )[0]
    content = {
        "kind": "outcome",
        "shipment_id": "S2",
        "idempotency_key": None,
        "created_at": "2026-11-05T12:00:00.000000+00:00",
        "decision_seq": dec_seq,
        "decision_hash": dec_hash,
        "outcome": {"found": None, "officer": "officer-7", "notes": "re-inspected, clean"},
    }
    return append_forged(url, content, seal(chain_hash(str(head_hash), canonical_json(content))))


# -- the key -------------------------------------------------------------------------------------


def test_the_seal_key_is_derived_from_the_audit_secret_under_its_own_label() -> None:
    expected = hmac.new(SECRET.encode(), b"clearsight audit seal v1", hashlib.sha256).digest()
    assert SEAL_LABEL == b"clearsight audit seal v1"
    assert KEY.key == expected and KEY.key != SECRET.encode()  # never the random-audit draws' key
    assert KEY.seal("ab" * 32) == hmac.new(expected, ("ab" * 32).encode(), hashlib.sha256).hexdigest()
    settings = Settings(audit_secret=SECRET)
    assert audit_seal_key(settings) == KEY and not audit_seal_key(settings).weak
    assert audit_seal_key(Settings(audit_secret=DEVELOPMENT_AUDIT_SECRET)).weak
    assert SECRET not in repr(KEY) and KEY.key.hex() not in repr(KEY)


# -- the store -----------------------------------------------------------------------------------


def test_a_chain_written_with_the_key_verifies_with_it(db_url: str) -> None:
    fill(db_url)
    seals = sql(db_url, "SELECT record_hash, seal FROM audit_records ORDER BY seq")
    assert [seal for _, seal in seals] == [KEY.seal(str(digest)) for digest, _ in seals]
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:  # `clearsight audit verify`
        report = store.verify()
    assert report.ok, report.message
    assert report.seals == "5 records sealed, every seal matches"


def _seal_of(how: str, url: str) -> Callable[[str], str | None]:
    """The seal a forger without the secret writes beside a record of their own."""
    if how == "copied-from-another":  # a genuine seal, of another record
        return lambda _: str(sql(url, "SELECT seal FROM audit_records WHERE seq = 5")[0][0])
    return {
        "left-off": lambda _: None,
        "made-up": lambda _: "ab" * 32,
        "public-key": SealKey.derive(DEVELOPMENT_AUDIT_SECRET).seal,
    }[how]


@pytest.mark.parametrize("how", ["left-off", "made-up", "public-key", "copied-from-another"])
def test_a_forged_outcome_appended_with_its_head_is_caught_with_the_key(db_url: str, how: str) -> None:
    """The review's repro 02: the forged 'clean' outcome lifts S2's hold, and every hash-only check
    passed it; without the server's secret the forger cannot seal it."""
    fill(db_url)
    forged = forge_clean_outcome(db_url, _seal_of(how, db_url))
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:  # `clearsight audit verify`
        report = store.verify()
    assert (report.ok, report.first_bad, report.problem) == (False, forged, "forged")
    assert report.message == {
        "left-off": f"1 records carry no seal, first at seq {forged}: written without the server's key "
        "(by a writer not given it) or their seals cleared (forged)",
        "public-key": f"record {forged}: its seal does not match: sealed with the public development "
        "secret: written by a server without CLEARSIGHT_AUDIT_SECRET",
    }.get(how, f"record {forged}: forged or altered (its seal does not match)")
    with AuditStore.open(db_url) as store:  # the hashes alone pass it: what the seals add
        assert store.verify().ok


def test_a_record_rewritten_and_resealed_without_the_key_is_caught(db_url: str) -> None:
    """A forger who rewrites an outcome and re-hashes every record after it, head included."""
    fill(db_url)
    content = json.loads(str(sql(db_url, "SELECT content FROM audit_records WHERE seq = 5")[0][0]))
    content["outcome"]["found"] = None  # the finding taken back
    body = canonical_json(content)
    prev = str(sql(db_url, "SELECT prev_hash FROM audit_records WHERE seq = 5")[0][0])
    digest = chain_hash(prev, body)
    sql(db_url, "UPDATE audit_records SET content = :c, record_hash = :h WHERE seq = 5", c=body, h=digest)
    sql(db_url, "UPDATE audit_head SET record_hash = :h WHERE id = 1", h=digest)
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:  # `clearsight audit verify`
        report = store.verify()
    assert (report.ok, report.first_bad, report.problem) == (False, 5, "forged")


def test_a_chain_checked_with_another_key_fails_at_its_first_record(db_url: str) -> None:
    fill(db_url)
    with AuditStore.open(db_url, create=False, seal_key=OTHER_KEY) as store:  # a writer is refused
        report = store.verify()
    assert (report.ok, report.first_bad, report.message) == (
        False,
        1,
        "record 1: forged or altered (its seal does not match)",
    )


def test_an_unsealed_record_after_a_sealed_one_fails(db_url: str) -> None:
    fill(db_url)
    with AuditStore.open(db_url) as store:  # a writer not given the key
        unsealed = store.record(decision("S9")).seq
    assert sql(db_url, f"SELECT seal FROM audit_records WHERE seq = {unsealed}") == [(None,)]
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:  # `clearsight audit verify`
        report = store.verify()
    assert (report.ok, report.first_bad, report.problem) == (False, unsealed, "forged")
    assert report.message.startswith(f"1 records carry no seal, first at seq {unsealed}: ")


def test_a_head_a_writer_without_the_key_appended_is_named_unsealed_not_a_wrong_secret(db_url: str) -> None:
    """A service holding the store (its open found every record sealed) checks its head for
    readiness; a writer not given the key then appends one. The check blamed the service's secret
    (not the store's, or the head forged), where no secret would seal it: it says the head carries no
    seal, and how an operator seals it, as a writer's open says."""
    fill(db_url)
    with AuditStore.open(db_url, seal_key=KEY) as service:
        service.check_head_seal()
        with AuditStore.open(db_url) as writer:  # a writer not given the key
            unsealed = writer.record(decision("S9")).seq
        with pytest.raises(HeadSealError) as raised:
            service.check_head_seal()
    said = str(raised.value)
    assert raised.value.unsealed
    assert (
        f"its head, record {unsealed}, carries no seal: written by a writer not given the server's key"
        in said
    )
    assert (
        f"`clearsight audit seal --expect SEQ:HASH` of a head published at or after record {unsealed}" in said
    )
    assert "CLEARSIGHT_AUDIT_SECRET" not in said


def test_records_a_writer_without_the_key_left_are_refused_until_an_operator_seals_them(db_url: str) -> None:
    """Records before the first sealed one were only reported: a forger who cleared every seal and
    appended a record of their own passed. A writer with the key refuses the store, and seals
    nothing on its own; the operator seals them against a head published earlier."""
    fill(db_url, key=None)  # a store at 5, written through the library without a key
    with pytest.raises(AuditError, match=r"5 records carry \(seq 1 to 5\) no seal: written by a writer"):
        AuditStore.open(db_url, seal_key=KEY)
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:
        report = store.verify()
        with pytest.raises(AuditError, match="5 records carry"):
            store.record_outcome("S2", found=None, officer="officer-1")
    assert (report.ok, report.first_bad, report.problem) == (False, 1, "forged")
    assert report.message.startswith("5 records carry no seal, first at seq 1: ")
    assert sql(db_url, "SELECT count(*) FROM audit_records WHERE seal IS NULL") == [(5,)]
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:
        sealed = store.seal_unsealed(expect=(report.head_seq, report.head_hash))
        assert (sealed.sealed, sealed.first, sealed.last, sealed.upgraded_from) == (5, 1, 5, None)
        store.record_outcome("S2", found=None, officer="officer-1")  # writes are taken again
    with AuditStore.open(db_url, seal_key=KEY) as store:
        store.record(decision("S5"))
        assert store.verify().seals == "7 records sealed, every seal matches"


def test_a_forger_who_clears_every_seal_and_appends_a_record_is_caught(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import app, run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET)
    fill(db_url)
    sql(db_url, "UPDATE audit_records SET seal = NULL")
    forged = forge_clean_outcome(db_url, lambda _: None)
    assert run(app, ["audit", "verify", "--db", db_url]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"chain broken at record 1 (forged): {forged} records carry no seal, first at seq 1" in err
    chain = tmp_path / "chain.jsonl"
    assert run(app, ["audit", "export", "--chain", "--db", db_url, "--out", str(chain)]) == 2
    assert f"{forged} records carry no seal, first at seq 1" in " ".join(capsys.readouterr().err.split())
    assert not chain.exists()
    assert run(app, ["audit", "export", "--chain", "--no-seals", "--db", db_url, "--out", str(chain)]) == 0
    capsys.readouterr()
    assert run(app, ["audit", "verify-file", str(chain)]) == 2
    assert f"chain.jsonl: {forged} records carry no seal, first at seq 1" in " ".join(
        capsys.readouterr().err.split()
    )


def test_a_record_sealed_with_the_public_development_secret_is_named_so(db_url: str, tmp_path: Path) -> None:
    fill(db_url, key=SealKey.derive(DEVELOPMENT_AUDIT_SECRET, weak=True))  # a server run without a secret
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:  # `clearsight audit verify`
        report = store.verify()
    said = (
        "record 1: its seal does not match: sealed with the public development secret: written by a "
        "server without CLEARSIGHT_AUDIT_SECRET"
    )
    assert (report.ok, report.first_bad, report.message) == (False, 1, said)
    with AuditStore.open(db_url, seal_key=None) as store:
        store.export_chain(tmp_path / "chain.jsonl")
    with pytest.raises(AuditError, match="sealed with the public development secret: written by a server"):
        verify_chain_file(tmp_path / "chain.jsonl", seal_key=KEY)


@pytest.mark.parametrize(
    ("key", "said"),
    [
        (None, "seals not checked (no key: set CLEARSIGHT_AUDIT_SECRET to the server's)"),
        (
            SealKey.derive(DEVELOPMENT_AUDIT_SECRET, weak=True),
            "the seals were checked with the public development audit_secret (or one shorter than 16 "
            "characters): anyone can compute them, so they prove nothing",
        ),
    ],
    ids=["no-key", "public-key"],
)
def test_verify_says_what_seals_it_could_not_check(db_url: str, key: SealKey | None, said: str) -> None:
    fill(db_url, key=key)
    forge_clean_outcome(db_url, lambda digest: None if key is None else key.seal(digest))
    with AuditStore.open(db_url, seal_key=key) as store:
        report = store.verify()
    assert report.ok  # nothing to catch it with
    assert said in report.seals


def _as_version_4(url: str) -> None:
    sql(url, "ALTER TABLE audit_records DROP COLUMN seal")  # as a store of version 4 was laid out
    sql(url, "UPDATE schema_info SET version = 4")


def _head(url: str) -> tuple[int, str]:
    seq, digest = sql(url, "SELECT seq, record_hash FROM audit_head WHERE id = 1")[0]
    return int(seq), str(digest)


def test_a_version_4_store_is_read_unsealed_and_sealed_only_by_the_operator(db_url: str) -> None:
    fill(db_url, key=None)
    _as_version_4(db_url)
    published = _head(db_url)
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:  # `clearsight audit verify`
        report = store.verify()
        assert (report.ok, report.first_bad) == (False, 1)  # with the key, nothing unsealed passes
        assert report.message.startswith("5 records carry no seal, first at seq 1")
        assert "the store is at a schema version before seals" in report.message
        assert "`clearsight audit seal --expect SEQ:HASH`" in report.message
        assert store.get("S1") is not None and len(list(store.iter_chain())) == 5
    with AuditStore.open(db_url, create=False) as store:
        assert store.verify().ok  # --no-seals
    # a writer with the key upgrades nothing and seals nothing: it may not vouch for the records
    with pytest.raises(AuditError, match="is at schema version 4, before seals: .* `clearsight audit seal"):
        AuditStore.open(db_url, seal_key=KEY)
    assert sql(db_url, "SELECT version FROM schema_info") == [(4,)]
    assert "seal" not in {c for (c,) in _columns(db_url)}
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:
        sealed = store.seal_unsealed(expect=published)
        assert (sealed.sealed, sealed.first, sealed.last, sealed.upgraded_from) == (5, 1, 5, 4)
        assert (sealed.head_seq, sealed.head_hash) == published
        store.record_outcome("S2", found=None, officer="officer-1")  # the store is writable now
    assert sql(db_url, "SELECT version FROM schema_info") == [(SCHEMA_VERSION,)]
    assert [
        KEY.seal(str(h)) for (h,) in sql(db_url, "SELECT record_hash FROM audit_records ORDER BY seq")
    ] == [s for (s,) in sql(db_url, "SELECT seal FROM audit_records ORDER BY seq")]
    with AuditStore.open(db_url, seal_key=KEY) as store:
        report = store.verify()
    assert (report.ok, report.seals) == (True, "6 records sealed, every seal matches"), report.message


def test_a_store_set_back_to_version_4_over_a_forgery_is_not_sealed_with_it(db_url: str) -> None:
    """The last review's script: a database writer appends a forged 'clean' outcome, drops the seal
    column and sets the version back to 4. The next writer with the key took the store for a first
    upgrade, sealed the forgery with the rest, and released S2; verify with the key then passed."""
    fill(db_url)
    published = _head(db_url)  # the head the operator published before
    forged = forge_clean_outcome(db_url, lambda _: None)
    _as_version_4(db_url)
    with pytest.raises(AuditError, match="is at schema version 4, before seals"):
        AuditStore.open(db_url, seal_key=KEY)  # the service, `score --audit-db`, `decide --audit-db`
    with (
        AuditStore.open(db_url, create=False, seal_key=KEY) as store,
        pytest.raises(
            AuditError,
            match=rf"nothing sealed: records after the published head \(record 5\) carry no seal, the "
            rf"last at seq {forged}: ",
        ),
    ):
        store.seal_unsealed(expect=published)
    assert sql(db_url, "SELECT version FROM schema_info") == [(4,)]  # nothing upgraded, nothing sealed
    assert "seal" not in {c for (c,) in _columns(db_url)}
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:
        assert store.verify().first_bad == 1  # unsealed, every record: for an operator to look at


@pytest.mark.parametrize(
    ("statement", "bad", "problem"),
    [
        ("UPDATE audit_records SET tier = 'RELEASE' WHERE seq = 3", 3, "altered"),
        ("DELETE FROM audit_records WHERE seq = 4", 4, "deleted"),
        ("DELETE FROM audit_image_index WHERE seq = 2", 2, "deleted"),
    ],
    ids=["altered", "deleted", "index-row-deleted"],
)
def test_sealing_refuses_a_broken_chain(db_url: str, statement: str, bad: int, problem: str) -> None:
    fill(db_url, key=None)
    _as_version_4(db_url)
    published = _head(db_url)
    sql(db_url, statement)
    with (
        AuditStore.open(db_url, create=False, seal_key=KEY) as store,
        pytest.raises(AuditError, match=rf"nothing sealed: .* broken at record {bad} \({problem}\)"),
    ):
        store.seal_unsealed(expect=published)
    assert sql(db_url, "SELECT version FROM schema_info") == [(4,)]  # nothing upgraded, nothing sealed
    assert "seal" not in {c for (c,) in _columns(db_url)}
    with AuditStore.open(db_url) as store:  # a writer without the key upgrades it, unsealed, as before
        assert store.verify().problem == problem
    assert sql(db_url, "SELECT COUNT(*) FROM audit_records WHERE seal IS NOT NULL") == [(0,)]


@pytest.mark.parametrize(
    ("expect", "said"),
    [
        ((9, "ab" * 32), "record 9, published with hash abab"),
        ((3, "ab" * 32), "record 3 has hash"),
    ],
    ids=["cut-back", "rewritten"],
)
def test_sealing_refuses_a_head_not_in_the_chain(db_url: str, expect: tuple[int, str], said: str) -> None:
    fill(db_url, key=None)
    with (
        AuditStore.open(db_url, create=False, seal_key=KEY) as store,
        pytest.raises(AuditError, match=f"nothing sealed: {said}"),
    ):
        store.seal_unsealed(expect=expect)
    assert sql(db_url, "SELECT COUNT(*) FROM audit_records WHERE seal IS NOT NULL") == [(0,)]


def test_sealing_keeps_the_seals_there_are_and_refuses_a_wrong_one(db_url: str) -> None:
    fill(db_url)
    with AuditStore.open(db_url) as store:  # a writer not given the key: record 6 unsealed
        store.record(decision("S6"))
    before = sql(db_url, "SELECT seq, seal FROM audit_records WHERE seq <= 5 ORDER BY seq")
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:
        sealed = store.seal_unsealed(expect=_head(db_url))
    assert (sealed.sealed, sealed.first, sealed.last) == (1, 6, 6)
    assert sql(db_url, "SELECT seq, seal FROM audit_records WHERE seq <= 5 ORDER BY seq") == before
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:
        again = store.seal_unsealed(expect=_head(db_url))
    assert (again.sealed, again.first, again.last) == (0, None, None)  # nothing left to seal
    sql(db_url, "UPDATE audit_records SET seal = :s WHERE seq = 2", s="ab" * 32)
    sql(db_url, "UPDATE audit_records SET seal = NULL WHERE seq = 4")
    with (
        AuditStore.open(db_url, create=False, seal_key=KEY) as store,
        pytest.raises(AuditError, match=r"nothing sealed: chain broken at record 2 \(forged\)"),
    ):
        store.seal_unsealed(expect=_head(db_url))
    assert sql(db_url, "SELECT seal FROM audit_records WHERE seq = 4") == [(None,)]


_REWRITERS = {
    "sqlite-trigger": "CREATE TRIGGER swap AFTER UPDATE ON audit_records BEGIN SELECT 1; END",
    "postgres-trigger": (
        "CREATE FUNCTION swap() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; "
        "CREATE TRIGGER swap AFTER UPDATE ON audit_records FOR EACH ROW EXECUTE FUNCTION swap()"
    ),
    "postgres-rule": "CREATE RULE swap AS ON UPDATE TO audit_head DO ALSO SELECT 1",
}


@pytest.mark.parametrize("kind", ["trigger", "rule"])
def test_sealing_refuses_a_store_with_a_trigger_or_a_rule(db_url: str, kind: str) -> None:
    """The review's repro: a trigger firing on the first seal's write rewrote the head record into a
    forged 'clean' outcome (hash and head row to match), and the pages sealed after sealed it.
    Clearsight makes no trigger: one is refused before anything is sealed."""
    dialect = "postgres" if db_url.startswith("postgresql") else "sqlite"
    if f"{dialect}-{kind}" not in _REWRITERS:
        assert dialect == "sqlite" and kind == "rule"  # SQLite has no rules: nothing to refuse
        return
    fill(db_url, key=None)
    sql(db_url, _REWRITERS[f"{dialect}-{kind}"])
    with (
        AuditStore.open(db_url, create=False, seal_key=KEY) as store,
        pytest.raises(
            AuditError, match=rf"nothing sealed: {kind} 'swap' on table audit_\w+: Clearsight makes none"
        ),
    ):
        store.seal_unsealed(expect=_head(db_url))
    assert sql(db_url, "SELECT COUNT(*) FROM audit_records WHERE seal IS NOT NULL") == [(0,)]


def test_a_record_number_held_twice_is_named_and_never_sealed(db_url: str) -> None:
    """The review's repro: with the table rebuilt without its keys, a second row numbered as the last
    of a walk's page was never read by the walk, and the seal's pages sealed it with the rest."""
    fill(db_url, key=None)
    published = _head(db_url)
    sql(db_url, "CREATE TABLE keyless AS SELECT * FROM audit_records")
    sql(db_url, "DROP TABLE audit_records")
    sql(db_url, "ALTER TABLE keyless RENAME TO audit_records")
    forged = forge_clean_outcome(db_url, lambda _: None)
    sql(db_url, f"UPDATE audit_records SET seq = 3 WHERE seq = {forged}")  # a second record 3
    sql(db_url, "UPDATE audit_head SET seq = 5, record_hash = :h", h=published[1])
    with AuditStore.open(db_url, create=False) as store:
        report = store.verify()
    assert (report.ok, report.first_bad, report.problem) == (False, 3, "inserted")
    assert "record 3: its number is held by more than one row" in report.message
    with (
        AuditStore.open(db_url, create=False, seal_key=KEY) as store,
        pytest.raises(AuditError, match="nothing sealed: chain broken at record 3 \\(inserted\\)"),
    ):
        store.seal_unsealed(expect=published)
    assert sql(db_url, "SELECT COUNT(*) FROM audit_records WHERE seal IS NOT NULL") == [(0,)]


def test_sealing_signs_only_the_hashes_the_walk_passed(db_url: str) -> None:
    """The key signed whatever a page read after the walk returned: a rule firing on the first
    seal's write rewrote the head record into a forgery, copied its seal out of the transaction
    (into sequences, which a rollback leaves) and the forger put both back after. Only walked hashes
    are signed now, each write pinned to its row's walked hash."""
    from sqlalchemy import create_engine as engine_of

    from pipeline.audit.seal import seal_walked

    fill(db_url, key=None)
    (h3,), (h4,) = sql(db_url, "SELECT record_hash FROM audit_records WHERE seq IN (3, 4) ORDER BY seq")
    engine = engine_of(db_url)
    try:
        with engine.begin() as conn:  # record 4 as the walk saw it, rewritten since
            assert seal_walked(conn, KEY, [(3, str(h3)), (4, "cd" * 32)]) == 1
    finally:
        engine.dispose()
    assert sql(db_url, "SELECT seq, seal FROM audit_records WHERE seal IS NOT NULL") == [
        (3, KEY.seal(str(h3)))
    ]
    assert str(h4) != "cd" * 32


def test_sealing_finds_a_rule_on_the_tables_outside_the_current_schema(db_url: str) -> None:
    """The review's repro: rules were looked for in current_schema() only; with the search path's
    first schema created by the forger, the audit tables resolved to the next one, and a rule there
    rewrote records as they were sealed."""
    if not db_url.startswith("postgresql"):
        return  # SQLite has no schemas and no rules: its triggers are all looked for
    schema = db_url.rsplit("%3D", 1)[1]
    fill(db_url, key=None)
    first = f"{schema}_first"
    shadowed = db_url.replace(f"%3D{schema}", f"%3D{first}%2C{schema}")
    sql(db_url, f'CREATE SCHEMA "{first}"')
    try:
        sql(db_url, "CREATE RULE swap AS ON UPDATE TO audit_records DO ALSO SELECT 1")
        with (
            AuditStore.open(shadowed, create=False, seal_key=KEY) as store,
            pytest.raises(AuditError, match="nothing sealed: rule 'swap' on table audit_records"),
        ):
            store.seal_unsealed(expect=_head(db_url))
    finally:
        sql(db_url, f'DROP SCHEMA "{first}" CASCADE')
    assert sql(db_url, "SELECT COUNT(*) FROM audit_records WHERE seal IS NOT NULL") == [(0,)]


def test_cli_seal_refuses_the_public_development_secret(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sealed with a key anyone can compute, the records passed the service's open and then failed
    every check with the server's key, with no command left to seal them again."""
    from pipeline.cli import app, run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLEARSIGHT_AUDIT_SECRET", raising=False)
    monkeypatch.delenv("CLEARSIGHT_ALLOW_DEVELOPMENT_AUDIT_SECRET", raising=False)
    fill(db_url, key=None)
    seq, digest = _head(db_url)
    assert run(app, ["audit", "seal", "--expect", f"{seq}:{digest}", "--db", db_url]) == 2
    assert "CLEARSIGHT_AUDIT_SECRET is not set, or is the public development secret" in " ".join(
        capsys.readouterr().err.split()
    )
    assert sql(db_url, "SELECT COUNT(*) FROM audit_records WHERE seal IS NOT NULL") == [(0,)]
    monkeypatch.setenv("CLEARSIGHT_ALLOW_DEVELOPMENT_AUDIT_SECRET", "1")  # a trial store
    assert run(app, ["audit", "seal", "--expect", f"{seq}:{digest}", "--db", db_url]) == 0
    assert "they prove nothing" in " ".join(capsys.readouterr().out.split())


def test_sealing_needs_the_key(db_url: str) -> None:
    fill(db_url, key=None)
    with (
        AuditStore.open(db_url, create=False) as store,
        pytest.raises(AuditError, match=r"sealing needs the server's key \(CLEARSIGHT_AUDIT_SECRET\)"),
    ):
        store.seal_unsealed(expect=_head(db_url))


def test_cli_seal_vouches_for_a_published_head(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import app, run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET)
    fill(db_url, key=None)
    _as_version_4(db_url)
    assert run(app, ["audit", "verify", "--no-seals", "--db", db_url]) == 0
    out = " ".join(capsys.readouterr().out.split())
    seq, digest = _head(db_url)
    assert f"(publish '{seq}:{digest}' to check against later with --expect)" in out
    assert run(app, ["audit", "seal", "--expect", "5:nothex", "--db", db_url]) == 2
    assert "is not SEQ:HASH" in capsys.readouterr().err
    assert run(app, ["audit", "seal", "--db", db_url]) == 2  # --expect is required
    capsys.readouterr()
    assert run(app, ["audit", "seal", "--expect", f"{seq}:{digest}", "--db", db_url]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        f"sealed 5 records (seq 1 to 5), vouched for by head {seq}; upgraded from schema version 4 to 6"
        in out
    )
    assert "seals: 5 records sealed, every seal matches" in out
    assert run(app, ["audit", "verify", "--db", db_url]) == 0
    assert run(app, ["audit", "seal", "--expect", f"{seq}:{digest}", "--db", db_url]) == 0
    assert "no record lacked a seal: nothing sealed" in capsys.readouterr().out


def _columns(url: str) -> list[tuple[str]]:
    from sqlalchemy import inspect

    engine = create_engine(url)
    try:
        return [(c["name"],) for c in inspect(engine).get_columns("audit_records")]
    finally:
        engine.dispose()


@pytest.mark.parametrize("version", [5, 6])
def test_a_store_at_version_5_or_later_without_its_seal_column_is_named_as_damaged(
    db_url: str, version: int
) -> None:
    """Dropping the column would leave every record unsealed, which verify reports but passes; and a
    writer upgrading a store at 5 added it again, empty, before it looked."""
    fill(db_url)
    sql(db_url, "ALTER TABLE audit_records DROP COLUMN seal")
    sql(db_url, f"UPDATE schema_info SET version = {version}")
    for create in (True, False):
        with pytest.raises(
            AuditError, match=f"schema version {version} but column audit_records.seal is missing"
        ):
            AuditStore.open(db_url, create=create, seal_key=KEY)


# -- the exported chain ---------------------------------------------------------------------------


def _export(url: str, path: Path) -> tuple[dict[str, object], list[dict[str, object]]]:
    with AuditStore.open(url, seal_key=KEY) as store:
        store.export_chain(path)
    head, *lines = [json.loads(line) for line in path.read_text().splitlines()]
    return head, lines


def _write(path: Path, head: dict[str, object], lines: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in [head, *lines]))


def test_the_exported_chain_carries_the_seals_and_verifies_with_the_key(db_url: str, tmp_path: Path) -> None:
    fill(db_url)
    chain = tmp_path / "chain.jsonl"
    head, lines = _export(db_url, chain)
    assert [line["seal"] for line in lines] == [KEY.seal(str(line["record_hash"])) for line in lines]
    assert verify_chain_file(chain, seal_key=KEY).seals == "5 records sealed, every seal matches"
    assert verify_chain_file(chain).seals.startswith("seals not checked (no key")
    with pytest.raises(AuditError, match=r"chain.jsonl:2: record 1: forged or altered \(its seal does not"):
        verify_chain_file(chain, seal_key=OTHER_KEY)
    # a record a forger appended to the copy, head line and all: hashes link, the seal is missing
    forged = dict(lines[-1], seq=6, prev_hash=lines[-1]["record_hash"])
    forged["record_hash"] = chain_hash(str(forged["prev_hash"]), str(forged["content"]))
    del forged["seal"]
    _write(chain, {"head_seq": 6, "head_hash": forged["record_hash"]}, [*lines, forged])
    assert verify_chain_file(chain).records == 6  # the hashes alone pass it
    with pytest.raises(AuditError, match="chain.jsonl: 1 records carry no seal, first at seq 6"):
        verify_chain_file(chain, seal_key=KEY)
    forged["seal"] = "ab" * 32
    _write(chain, {"head_seq": 6, "head_hash": forged["record_hash"]}, [*lines, forged])
    with pytest.raises(AuditError, match=r"record 6: forged or altered \(its seal does not match\)"):
        verify_chain_file(chain, seal_key=KEY)


def test_an_export_made_before_seals_verifies_without_the_key_only(db_url: str, tmp_path: Path) -> None:
    fill(db_url, key=None)
    chain = tmp_path / "chain.jsonl"
    with AuditStore.open(db_url) as store:
        store.export_chain(chain)
    head, *lines = [json.loads(line) for line in chain.read_text().splitlines()]
    assert all("seal" not in line for line in lines)  # as an export of an older Clearsight
    with pytest.raises(AuditError, match="chain.jsonl: 5 records carry no seal, first at seq 1"):
        verify_chain_file(chain, seal_key=KEY)
    report = verify_chain_file(chain)  # verify-file --no-seals
    assert report[:4] == (5, 5, head["head_hash"], True)


# -- the commands ----------------------------------------------------------------------------------


def test_cli_verify_and_verify_file_check_the_seals_with_the_servers_secret(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import app, run

    monkeypatch.chdir(tmp_path)  # no .env of the working folder
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET)
    fill(db_url)
    assert run(app, ["audit", "outcome", "S2", "--clean", "--officer", "officer-2", "--db", db_url]) == 0
    assert sql(db_url, "SELECT seal FROM audit_records WHERE seq = 6")[0][0] is not None  # sealed too
    assert run(app, ["audit", "verify", "--db", db_url]) == 0
    assert "seals: 6 records sealed, every seal matches" in capsys.readouterr().out
    chain = tmp_path / "chain.jsonl"
    assert run(app, ["audit", "export", "--chain", "--db", db_url, "--out", str(chain)]) == 0
    capsys.readouterr()
    forged = forge_clean_outcome(db_url, lambda _: "ab" * 32)
    assert run(app, ["audit", "verify", "--db", db_url]) == 2
    said = f"chain broken at record {forged} (forged): record {forged}: forged or altered (its seal does"
    assert said in " ".join(capsys.readouterr().err.split())
    assert run(app, ["audit", "verify", "--db", db_url, "--no-seals"]) == 0
    assert "seals: seals not checked (no key" in " ".join(capsys.readouterr().out.split())
    assert run(app, ["audit", "verify-file", str(chain)]) == 0
    assert "seals: 6 records sealed, every seal matches" in capsys.readouterr().out
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", DEVELOPMENT_AUDIT_SECRET)  # an auditor without it
    assert run(app, ["audit", "verify-file", str(chain)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "record 1: forged or altered (its seal does not match) (checked with the public development" in err
    assert run(app, ["audit", "verify-file", str(chain), "--no-seals"]) == 0


@pytest.mark.parametrize("entry", ["serve", "score"])
def test_the_entry_points_open_the_store_with_the_settings_seal_key(
    tmp_path: Path, entry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server and the batch scorer record sealed, with the key of the one Settings they built."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    if entry == "serve":
        from serve.app import _open_audit
        from serve.settings import ServeSettings

        monkeypatch.chdir(tmp_path)
        store = _open_audit(ServeSettings(audit_db=url, audit_secret=SECRET))
    else:
        from pipeline.score.decisions import _open_audit as open_scorers

        store = open_scorers(url, audit_seal_key(Settings(audit_secret=SECRET)))
    with store:
        store.record(decision("S1"))
    assert sql(url, "SELECT record_hash, seal FROM audit_records") == [
        (digest, KEY.seal(str(digest))) for (digest,) in sql(url, "SELECT record_hash FROM audit_records")
    ]


def test_a_genuine_outcome_moved_to_another_hold_by_swapping_numbers_lifts_nothing(db_url: str) -> None:
    """Sequence numbers are not hashed: swapping two genuine decisions' numbers (S2 held, S5 held
    and cleared) had S5's officer's outcome read as S2's, and the keyed store recorded S2 RELEASED,
    every row passing its seal. The outcome must name the decision it is attached to."""
    from pipeline.audit.seal import SealBrokenError

    fill(db_url)
    with AuditStore.open(db_url, seal_key=KEY) as store:
        cleared = store.record(decision("S5", Tier.PHYSICAL_INSPECTION, 0.9))
        store.record_outcome("S5", found=None, officer="officer-3")
        with pytest.raises(ConflictError):
            store.record(decision("S2", Tier.RELEASE, 0.1))
    held = sql(db_url, "SELECT seq FROM audit_records WHERE shipment_id = 'S2' AND kind = 'decision'")[0][0]
    for statement in (
        "UPDATE audit_records SET seq = -1 WHERE seq = :a",
        "UPDATE audit_records SET seq = :a WHERE seq = :b",
        "UPDATE audit_records SET seq = :b WHERE seq = -1",
    ):
        sql(db_url, statement, a=held, b=cleared.seq)
    with (
        AuditStore.open(db_url, seal_key=KEY) as store,
        # caught where the outcome's number no longer fits the chain, and by what the outcome names
        pytest.raises(SealBrokenError, match="it is not where the chain puts it"),
    ):
        store.record(decision("S2", Tier.RELEASE, 0.1))
    assert sql(
        db_url, "SELECT count(*) FROM audit_records WHERE tier = 'RELEASE' AND shipment_id = 'S2'"
    ) == [(0,)]
