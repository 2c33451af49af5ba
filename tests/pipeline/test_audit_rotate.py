"""Rotating the audit secret (`clearsight audit seal --rotate`), and writers that extend only a chain
whose head carries their seal, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from datasets.errors import AuditError
from pipeline.audit import AuditStore, HeadSealError, SealBrokenError, chain_hash
from pipeline.audit.seal import SealKey
from pipeline.settings import DEVELOPMENT_AUDIT_SECRET, Settings, previous_audit_seal_key
from pipeline.verdicts import Tier

sys.path.insert(0, str(Path(__file__).parent))
from audit_builders import sql  # noqa: E402
from test_audit_seal import KEY, OTHER_KEY, SECRET, _head, decision, fill, forge_clean_outcome  # noqa: E402

NEW_SECRET = "the-new-server-secret-after-the-rotation"
NEW_KEY = SealKey.derive(NEW_SECRET)


def _verify(url: str, key: SealKey) -> tuple[bool, int | None, str | None]:
    with AuditStore.open(url, create=False, seal_key=key) as store:
        report = store.verify()
    return report.ok, report.first_bad, report.problem


def _seals(url: str) -> list[tuple[int, str]]:
    return [tuple(row) for row in sql(url, "SELECT seq, seal FROM audit_records ORDER BY seq")]


def test_rotation_seals_every_record_again_under_the_new_key(db_url: str) -> None:
    fill(db_url)
    with AuditStore.open(db_url, create=False, seal_key=NEW_KEY) as store:
        report = store.rotate_seals(expect=_head(db_url), head=_head(db_url), previous=KEY)
    assert (report.sealed, report.first, report.last, report.rotated) == (5, 1, 5, True)
    assert report.seals == "5 records sealed, every seal matches"
    assert _verify(db_url, NEW_KEY) == (True, None, None)
    assert _verify(db_url, KEY) == (False, 1, "forged")  # the old secret vouches for nothing now
    hashes = dict(tuple(row) for row in sql(db_url, "SELECT seq, record_hash FROM audit_records"))
    assert _seals(db_url) == [(seq, NEW_KEY.seal(hashes[seq])) for seq in range(1, 6)]
    with AuditStore.open(db_url, seal_key=NEW_KEY) as store:  # the restarted service decides and records
        assert store.get("S2").decision.tier is Tier.REMOTE_INSPECTION
        store.record(decision("S5"))
        store.record_outcome("S2", found=None, officer="officer-7")
    assert _verify(db_url, NEW_KEY) == (True, None, None)


def test_rotation_also_seals_the_records_without_a_seal_before_the_head(db_url: str) -> None:
    fill(db_url)
    with AuditStore.open(db_url) as store:  # a writer not given the key: record 6 unsealed
        store.record(decision("S6"))
    with AuditStore.open(db_url, create=False, seal_key=NEW_KEY) as store:
        report = store.rotate_seals(expect=_head(db_url), head=_head(db_url), previous=KEY)
    assert (report.sealed, report.first, report.last) == (6, 1, 6)
    assert _verify(db_url, NEW_KEY) == (True, None, None)


def test_a_writer_still_holding_the_old_secret_appends_nothing_after_a_rotation(db_url: str) -> None:
    """The service left running through the rotation: its next record would carry a seal the new key
    refuses, failing every read that decides on it."""
    fill(db_url)
    with AuditStore.open(db_url, seal_key=KEY) as old_writer:
        with AuditStore.open(db_url, create=False, seal_key=NEW_KEY) as store:
            store.rotate_seals(expect=_head(db_url), head=_head(db_url), previous=KEY)
        with pytest.raises(
            HeadSealError, match=r"audit record 5 fails its seal .*restart this writer with the new"
        ):
            old_writer.record(decision("S7"))
        with pytest.raises(HeadSealError, match=r"audit record 5 fails its seal .*restart this writer with"):
            old_writer.record_outcome("S2", found=None, officer="officer-7")
        with pytest.raises(
            SealBrokenError,
            match=r"audit record 3 fails its seal .*so do the records beside it and the chain's first record "
            r"and its head, carrying another key's seal as it does: if the audit secret was rotated "
            r".*restart this process with",
        ):
            old_writer.get("S3")
        # a shipment whose record is the chain's first (or its head): the other end says so
        with pytest.raises(
            SealBrokenError,
            match="so do the records beside it and the chain's head, carrying another key's seal",
        ):
            old_writer.get("S1")
    assert sql(db_url, "SELECT MAX(seq) FROM audit_records") == [(5,)]
    assert _verify(db_url, NEW_KEY) == (True, None, None)


@pytest.mark.parametrize("how", ["another-secret", "rotated", "forged"])
def test_a_writer_whose_secret_does_not_seal_the_head_is_refused_as_it_opens(db_url: str, how: str) -> None:
    """The service started with the wrong CLEARSIGHT_AUDIT_SECRET said it was ready, then failed every
    decision (500); `score --audit-db` failed only after scoring. Now the writer's open refuses,
    naming the setting, and the store is left as it was."""
    fill(db_url)
    key = KEY
    if how == "another-secret":
        key = OTHER_KEY
    elif how == "rotated":  # a writer restarted with the old secret after the rotation
        with AuditStore.open(db_url, create=False, seal_key=NEW_KEY) as store:
            store.rotate_seals(expect=_head(db_url), head=_head(db_url), previous=KEY)
    else:
        forge_clean_outcome(db_url, lambda _: "ab" * 32)
    head = _head(db_url)
    with pytest.raises(HeadSealError) as raised:
        AuditStore.open(db_url, seal_key=key)
    said = str(raised.value)
    assert f"its head, record {head[0]}, does not carry the seal of this CLEARSIGHT_AUDIT_SECRET" in said
    assert "`clearsight audit verify`" in said and "*Rotating the audit secret*" in said
    assert _head(db_url) == head
    with AuditStore.open(db_url, create=False, seal_key=key) as reader:  # a reader still reads
        assert reader.hash_at(1) is not None


@pytest.mark.parametrize("how", ["left-off", "made-up", "content-rewritten", "column-edited"])
def test_a_keyed_writer_appends_nothing_after_a_forged_head(db_url: str, how: str) -> None:
    """A writer opened before the forgery (its open found every record sealed) buried the forged
    'clean' outcome under records carrying its seal; now it refuses, and verify names the forgery.
    So with the genuine head's content rewritten, its hash and seal left as they were."""
    fill(db_url)
    with AuditStore.open(db_url, seal_key=KEY) as writer:
        if how in ("left-off", "made-up"):
            forged = forge_clean_outcome(
                db_url, (lambda _: None) if how == "left-off" else (lambda _: "ab" * 32)
            )
            said = "carries no seal" if how == "left-off" else "forged or altered"
        elif how == "content-rewritten":
            forged = 5
            rewrite = "UPDATE audit_records SET content = REPLACE(content, 'foreign_object', 'clean')"
            sql(db_url, f"{rewrite} WHERE seq = 5")
            said = "its content does not give its hash"
        else:
            forged = 5
            sql(db_url, "UPDATE audit_records SET shipment_id = 'S9' WHERE seq = 5")
            said = "a column differs from its hashed content"
        with pytest.raises(HeadSealError, match=rf"audit record {forged} fails its seal \({said}"):
            writer.record(decision("S8"))
    assert sql(db_url, "SELECT MAX(seq) FROM audit_records") == [(forged,)]


@pytest.mark.parametrize(
    ("forged", "seal"),
    [
        ([3], "ab" * 32),  # one record alone
        ([1, 3, 5], None),  # seals cleared: a forger's doing, never a rotation's
        ([1, 3, 5], ""),
        ([1, 3, 5], "AB" * 32),  # not a seal any key writes
        ([1, 3, 5], "public"),  # the public development secret's
        ([1, 3, 5], "made-up"),  # hex no key made, beside records 2 and 4 carrying this key's seals
        ([5], "made-up"),  # the forged head alone: a writer refused it suggesting a rotation
    ],
)
def test_a_forgery_is_not_put_down_to_a_rotation(db_url: str, forged: list[int], seal: str | None) -> None:
    """The review's repro: seals cleared on the ends and the record read had the message suggest a
    restart with a new secret, where the store had been forged."""
    fill(db_url)
    writer = AuditStore.open(db_url, seal_key=KEY)  # the service, opened before the forgery
    public = SealKey.derive(DEVELOPMENT_AUDIT_SECRET, weak=True)
    for seq in forged:
        digest = sql(db_url, "SELECT record_hash FROM audit_records WHERE seq = :q", q=seq)[0][0]
        made = (
            public.seal(digest) if seal == "public" else OTHER_KEY.seal(digest) if seal == "made-up" else seal
        )
        sql(db_url, "UPDATE audit_records SET seal = :s WHERE seq = :q", s=made, q=seq)
    if 3 in forged:
        with (
            AuditStore.open(db_url, create=False, seal_key=KEY) as store,
            pytest.raises(SealBrokenError) as raised,
        ):
            store.get("S3")
        assert "rotated" not in str(raised.value)
    with writer:
        if 5 in forged:  # the head too: the writer refuses it, and suggests no rotation either
            with pytest.raises(HeadSealError) as raised:
                writer.record(decision("S9"))
            assert "rotated" not in str(raised.value)


def test_rotation_refuses_a_head_other_than_the_chains(db_url: str) -> None:
    """Records after the published head, sealed with a secret that may have leaked, are carried over
    only once the operator names the head they lead to, having looked at them."""
    fill(db_url)
    published = _head(db_url)
    with AuditStore.open(db_url, seal_key=KEY) as store:
        store.record(decision("S9"))
    before = _seals(db_url)
    with (
        AuditStore.open(db_url, create=False, seal_key=NEW_KEY) as store,
        pytest.raises(
            AuditError,
            match=r"nothing sealed: the chain's head is record 6 with hash [0-9a-f]{64}, not the 5:",
        ),
    ):
        store.rotate_seals(expect=published, head=published, previous=KEY)
    assert _seals(db_url) == before
    with AuditStore.open(db_url, create=False, seal_key=NEW_KEY) as store:
        report = store.rotate_seals(expect=published, head=_head(db_url), previous=KEY)
    assert (report.sealed, report.first, report.last, report.had_no_seal) == (6, 1, 6, 0)


def test_rotation_never_seals_an_unsealed_record_after_the_published_head(db_url: str) -> None:
    """The review's repro: a 'clean' outcome of held S2 appended with no seal by a database writer
    without any secret. Rotation took the head as it stood, sealed it under the new secret, and S2
    was released on its next decision."""
    fill(db_url)
    published = _head(db_url)
    forged = forge_clean_outcome(db_url, lambda _: None)
    before = _seals(db_url)
    with (
        AuditStore.open(db_url, create=False, seal_key=NEW_KEY) as store,
        pytest.raises(
            AuditError,
            match=rf"records after the published head \(record 5\) carry no seal, the last at seq {forged}",
        ),
    ):
        store.rotate_seals(expect=published, head=_head(db_url), previous=KEY)
    assert _seals(db_url) == before


def test_rotation_refuses_a_chain_rewritten_with_the_leaked_secret(db_url: str) -> None:
    """The review's repro: whoever holds the leaked secret turns S3's hold into a RELEASE, and hashes
    and seals the chain again after it; the head published before the leak names it."""
    fill(db_url)
    published = _head(db_url)
    rows = sql(db_url, "SELECT seq, content FROM audit_records ORDER BY seq")
    prev = sql(db_url, "SELECT record_hash FROM audit_records WHERE seq = 2")[0][0]
    for seq, content in rows[2:]:
        body = content.replace("PHYSICAL_INSPECTION", "RELEASE")
        digest = chain_hash(prev, body)
        sql(
            db_url,
            "UPDATE audit_records SET content = :c, prev_hash = :p, record_hash = :h, seal = :s, "
            "tier = CASE WHEN tier = 'PHYSICAL_INSPECTION' THEN 'RELEASE' ELSE tier END WHERE seq = :q",
            c=body,
            p=prev,
            h=digest,
            s=KEY.seal(digest),
            q=seq,
        )
        prev = digest
    sql(db_url, "UPDATE audit_head SET record_hash = :h WHERE id = 1", h=prev)
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:
        assert store.verify().ok  # the leaked secret's seals pass: only the published head tells
    with (
        AuditStore.open(db_url, create=False, seal_key=NEW_KEY) as store,
        pytest.raises(AuditError, match=rf"record 5 has hash {prev}, but {published[1]} was published"),
    ):
        store.rotate_seals(expect=published, head=_head(db_url), previous=KEY)


def test_rotation_refuses_a_seal_the_previous_key_did_not_make(db_url: str) -> None:
    fill(db_url)
    forged = forge_clean_outcome(db_url, lambda digest: OTHER_KEY.seal(digest))
    before = _seals(db_url)
    with (
        AuditStore.open(db_url, create=False, seal_key=NEW_KEY) as store,
        pytest.raises(
            AuditError,
            match=rf"nothing sealed: chain broken at record {forged} \(forged\).*under the previous secret",
        ),
    ):
        store.rotate_seals(expect=_head(db_url), head=_head(db_url), previous=KEY)
    assert _seals(db_url) == before


def test_a_rotation_run_again_says_it_was_done(db_url: str) -> None:
    fill(db_url)
    with AuditStore.open(db_url, create=False, seal_key=NEW_KEY) as store:
        store.rotate_seals(expect=_head(db_url), head=_head(db_url), previous=KEY)
    with (
        AuditStore.open(db_url, create=False, seal_key=NEW_KEY) as store,
        pytest.raises(
            AuditError,
            match=r"record 1 .*carries the new secret's seal already: the store was rotated before",
        ),
    ):
        store.rotate_seals(expect=_head(db_url), head=_head(db_url), previous=KEY)


def test_rotation_refuses_the_same_secret(db_url: str) -> None:
    fill(db_url)
    with (
        AuditStore.open(db_url, create=False, seal_key=KEY) as store,
        pytest.raises(AuditError, match="the previous secret and the new one are the same"),
    ):
        store.rotate_seals(expect=_head(db_url), head=_head(db_url), previous=SealKey.derive(SECRET))


def test_a_trial_store_sealed_with_the_development_secret_is_rotated_to_a_real_one(db_url: str) -> None:
    trial = SealKey.derive(DEVELOPMENT_AUDIT_SECRET, weak=True)
    fill(db_url, key=trial)
    with pytest.raises(SealBrokenError):
        AuditStore.open(db_url, seal_key=NEW_KEY)  # the production server refuses the trial's seals
    with AuditStore.open(db_url, create=False, seal_key=NEW_KEY) as store:
        report = store.rotate_seals(expect=_head(db_url), head=_head(db_url), previous=trial)
    assert _verify(db_url, NEW_KEY) == (True, None, None)
    assert "checked with the public development audit_secret" in report.seals  # they proved nothing
    assert "the heads named vouch for these records, not their old seals" in report.seals


def test_the_previous_secret_comes_from_the_settings() -> None:
    assert previous_audit_seal_key(Settings(audit_secret=NEW_SECRET)) is None
    assert previous_audit_seal_key(Settings(previous_audit_secret=SECRET)) == KEY
    assert previous_audit_seal_key(Settings(previous_audit_secret=DEVELOPMENT_AUDIT_SECRET)).weak
    assert SECRET not in repr(Settings(previous_audit_secret=SECRET))


def test_cli_rotates_the_secret(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import app, run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLEARSIGHT_PREVIOUS_AUDIT_SECRET", raising=False)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", NEW_SECRET)
    fill(db_url)
    seq, digest = _head(db_url)
    anchor = ["--expect", f"{seq}:{digest}", "--db", db_url]
    rotate = ["--rotate", "--head", f"{seq}:{digest}"]
    before = _seals(db_url)
    assert run(app, ["audit", "seal", "--rotate", *anchor]) == 2
    assert "--rotate needs --head SEQ:HASH" in " ".join(capsys.readouterr().err.split())
    assert run(app, ["audit", "seal", "--head", f"{seq}:{digest}", *anchor]) == 2
    assert "--head names the chain's head for --rotate" in " ".join(capsys.readouterr().err.split())
    assert run(app, ["audit", "seal", "--rotate", "--head", "5:x", *anchor]) == 2
    assert "--head '5:x' is not SEQ:HASH" in " ".join(capsys.readouterr().err.split())
    assert run(app, ["audit", "seal", *rotate, *anchor]) == 2
    assert "set CLEARSIGHT_PREVIOUS_AUDIT_SECRET" in " ".join(capsys.readouterr().err.split())
    monkeypatch.setenv("CLEARSIGHT_PREVIOUS_AUDIT_SECRET", SECRET)
    assert run(app, ["audit", "seal", *anchor]) == 2  # set by mistake, from an earlier rotation
    assert "pass --rotate" in " ".join(capsys.readouterr().err.split())
    assert _seals(db_url) == before
    assert run(app, ["audit", "seal", *rotate, *anchor]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        f"sealed all 5 records again under the new secret (seq 1 to 5), vouched for by the published head "
        f"{seq} and the head {seq} named: restart every writer with the new secret"
    ) in out
    assert "seals: 5 records sealed, every seal matches" in out
    monkeypatch.delenv("CLEARSIGHT_PREVIOUS_AUDIT_SECRET")
    assert run(app, ["audit", "verify", "--db", db_url]) == 0
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET)  # the old secret no longer checks
    assert run(app, ["audit", "verify", "--db", db_url]) == 2


def test_a_seal_no_key_writes_is_refused_by_name_not_crashed_on(db_url: str) -> None:
    """The review's repro: a 64-character non-ASCII seal was reported as a parse error (compare_digest
    refuses non-ASCII text), and verify named no record."""
    fill(db_url)
    sql(db_url, "UPDATE audit_records SET seal = :s WHERE seq = 3", s="\u00e9" * 64)
    with AuditStore.open(db_url, create=False, seal_key=KEY) as store:
        with pytest.raises(SealBrokenError, match=r"audit record 3 fails its seal \(forged or altered"):
            store.get("S3")
        report = store.verify()
    assert (report.ok, report.first_bad, report.problem) == (False, 3, "forged")
