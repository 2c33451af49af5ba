"""Row seals: each row `clearsight score` writes under the audit secret carries an HMAC of itself.

Whoever could write a verdict folder could get a held picture's score edited down decided RELEASE and
recorded, the completion record's seal notwithstanding: a `score --resume` kept the edited rows (it
compared the picture's sha256 alone) and sealed a new record over them, and a record removed,
stripped of its seal, replaced by an unsealed "grew past" one, or the output lock held, had decide
take the edited rows with --manifest with a warning at most.
"""

from __future__ import annotations

import fcntl
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from score_fakes import FakePredictor, write_images  # noqa: E402

from datasets.manifest import write_manifest  # noqa: E402
from pipeline.cli import app, run  # noqa: E402
from pipeline.row_seal import ROW_SEAL_LABEL, canonical, fault, row_seal_key, seal, untrusted  # noqa: E402
from pipeline.score import LocalEngine, ModelRouter, iter_rows, iter_tasks, score_to_file  # noqa: E402
from pipeline.score.completion import completion_path, completion_seal_key, record_completion  # noqa: E402
from pipeline.score.decisions import decide_output  # noqa: E402
from pipeline.score.output_lock import lock_path  # noqa: E402
from pipeline.score.summary import ScoreSummary  # noqa: E402
from pipeline.verdicts import ImageVerdict  # noqa: E402

SECRET = "row-seal-test-audit-secret"
ROW_KEY = row_seal_key(SECRET)
POLICY = "policy_version: t\ncargo_types:\n  bulk_ore: {}\nrandom_audit: {rate: 0.0}\n"


def _engine() -> LocalEngine:
    return LocalEngine(ModelRouter([FakePredictor()]), batch_size=1)  # type: ignore[list-item]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ONE: three clean pictures and a defect one (the fake scores 0.98); TWO: one clean picture."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET)
    one = write_images(tmp_path / "arc", [10, 20, 30, 250])
    two = write_images(tmp_path / "arc", [15], prefix="two")
    rows = [{"path": p.name, "shipment_id": "ONE", "cargo_type": "bulk_ore"} for p in one]
    rows += [{"path": p.name, "shipment_id": "TWO", "cargo_type": "bulk_ore"} for p in two]
    write_manifest(tmp_path / "arc" / "manifest.csv", rows)
    (tmp_path / "p.yaml").write_text(POLICY)
    return tmp_path


def _score(env: Path, suffix: str = ".jsonl", **how: object) -> tuple[Path, ScoreSummary]:
    """Score the manifest into ``out/rows<suffix>`` as `clearsight score` does with the secret set."""
    out = env / "out" / f"rows{suffix}"
    tasks = iter_tasks([str(env / "arc" / "manifest.csv")])
    how = {"completion_key": completion_seal_key(SECRET), "row_key": ROW_KEY, **how}
    summary = score_to_file(tasks, _engine(), out, chunk_rows=1, **how)  # type: ignore[arg-type]
    return out, summary


def _lowered(out: Path) -> None:
    """The defect picture's row of ``out`` (JSONL) edited as an attacker would: score 0.001, good."""
    lines = out.read_text().splitlines(keepends=True)
    rows = [json.loads(line) for line in lines]
    (defect,) = [n for n, row in enumerate(rows) if row["score"] > 0.9]
    lines[defect] = json.dumps({**rows[defect], "score": 0.001, "label": "good"}) + "\n"
    out.write_text("".join(lines))


def _decide(env: Path, rows: Path, *extra: str) -> int:
    out = env / "d.jsonl"
    out.unlink(missing_ok=True)
    return run(
        app, ["decide", "--verdicts", str(rows), "--policy", str(env / "p.yaml"), "--out", str(out), *extra]
    )


def _decided(env: Path) -> dict[str, dict]:
    return {d["shipment_id"]: d for d in map(json.loads, (env / "d.jsonl").read_text().splitlines())}


def test_the_row_key_is_derived_for_its_purpose_and_none_for_a_weak_secret() -> None:
    """Never the completion records' key, the audit chain's nor the secret itself."""
    from pipeline.settings import DEVELOPMENT_AUDIT_SECRET, Settings, audit_seal_key
    from pipeline.settings import row_seal_key as of_settings

    settings = Settings.load(audit_secret=SECRET)
    assert of_settings(settings) == ROW_KEY and len(ROW_KEY) == 32
    assert ROW_KEY not in (SECRET.encode(), completion_seal_key(SECRET), audit_seal_key(settings).key)
    assert ROW_SEAL_LABEL == b"clearsight verdict row seal v1"
    assert of_settings(Settings.load(audit_secret=DEVELOPMENT_AUDIT_SECRET)) is None
    assert of_settings(Settings.load(audit_secret="short")) is None


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_every_row_written_with_a_key_carries_a_seal_that_verifies_as_read_back(
    env: Path, suffix: str
) -> None:
    out, _ = _score(env, suffix)
    rows = list(iter_rows(out))
    assert len(rows) == 5
    for row in rows:
        assert row.row_seal is not None and len(row.row_seal) == 64
        assert fault(ROW_KEY, row) is None, row.path
        assert fault(row_seal_key(SECRET + "2"), row) == "does not verify"
    # the seal is the row's, never the verdict's: no dump of it (audit records, answers) holds one
    assert "row_seal" not in rows[0].model_dump() and "row_seal" not in rows[0].model_dump_json()
    edited = rows[0].model_copy(update={"score": 0.001})
    assert fault(ROW_KEY, edited) == "does not verify"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_rows_written_without_a_key_have_no_seal_and_read_as_before(env: Path, suffix: str) -> None:
    out, _ = _score(env, suffix, row_key=None, completion_key=None)
    rows = list(iter_rows(out))
    assert len(rows) == 5 and all(row.row_seal is None for row in rows)
    if suffix == ".jsonl":  # absent, as in rows written before seals
        assert "row_seal" not in out.read_text()
    assert [fault(ROW_KEY, row) for row in rows] == ["missing"] * 5


def test_the_canonical_form_reads_an_empty_text_as_none() -> None:
    """An empty CSV cell reads back as None: a row sealed with "" verifies as read from CSV."""
    row = ImageVerdict(path="a.png", shipment_id="S", error="")
    assert canonical(row) == canonical(row.model_copy(update={"error": None}))
    assert seal(ROW_KEY, row) == seal(ROW_KEY, row.model_copy(update={"error": None}))


def test_an_untrusted_row_is_an_error_row_naming_why_and_without_scores() -> None:
    row = ImageVerdict(
        path="a.png",
        shipment_id="S",
        score=0.001,
        label="good",
        threshold=0.5,
        sha256="ab" * 32,
        phash="0" * 80,
    )
    counted = [0]
    (held,) = untrusted(ROW_KEY, [row], "--verdicts 'v.jsonl'", counted)
    assert counted == [1] and held.score is None and held.label is None and held.threshold == 0.5
    assert held.sha256 is None and held.phash is None  # the audit store indexes no picture for it
    assert held.error is not None and held.error.startswith(
        "row seal missing (row 1 of --verdicts 'v.jsonl')"
    )
    assert "changed after scoring" in held.error and "score its inputs again" in held.error
    assert list(untrusted(None, [row], "x")) == [row]  # no key: nothing to check with


def _record_removed(out: Path) -> None:
    completion_path(out).unlink()


def _seal_stripped(out: Path) -> None:
    import hashlib

    record = json.loads(completion_path(out).read_text())
    data = out.read_bytes()
    record.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    record.pop("seal")
    completion_path(out).write_text(json.dumps(record))


def _grew_past(out: Path) -> None:
    record = json.loads(completion_path(out).read_text())
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    record.update(bytes=0, sha256=empty, rows=0)
    record.pop("seal")
    completion_path(out).write_text(json.dumps(record))


@pytest.mark.parametrize("record", [_record_removed, _seal_stripped, _grew_past], ids=lambda f: f.__name__)
def test_decide_holds_the_shipment_of_an_edited_row_whatever_its_record(
    env: Path, record: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """The edited row of ONE fails closed (its shipment held, the reason naming the row seal), while
    TWO is decided on its own rows and both recorded."""
    out, _ = _score(env)
    _lowered(out)
    record(out)  # type: ignore[operator]
    capsys.readouterr()
    manifest = str(env / "arc" / "manifest.csv")
    assert _decide(env, out, "--manifest", manifest, "--audit-db", f"sqlite:///{env / 'a.db'}") == 0
    err = " ".join(capsys.readouterr().err.split())
    decided = _decided(env)
    assert decided["ONE"]["tier"] == "REMOTE_INSPECTION" and decided["TWO"]["tier"] == "RELEASE"
    reasons = [r for r in decided["ONE"]["reasons"] if r["rule"] == "fail_closed.image_error"]
    assert len(reasons) == 1 and "row seal does not verify (row 4 of --verdicts" in reasons[0]["message"]
    assert "1 row(s) of --verdicts" in err and "have a row seal missing or not verifying" in err


def test_decide_holds_an_edited_row_while_the_output_lock_is_held(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lock held (a run taken as still writing): the record was never looked at."""
    out, _ = _score(env)
    _lowered(out)
    with lock_path(out).open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _decide(env, out, "--manifest", str(env / "arc" / "manifest.csv")) == 0, capsys.readouterr()
    assert _decided(env)["ONE"]["tier"] == "REMOTE_INSPECTION"


def test_decide_takes_sealed_rows_and_without_the_secret_checks_nothing(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = _score(env)
    assert _decide(env, out) == 0, capsys.readouterr().err
    assert {k: d["tier"] for k, d in _decided(env).items()} == {
        "ONE": "PHYSICAL_INSPECTION",
        "TWO": "RELEASE",
    }
    assert "row seal" not in capsys.readouterr().err
    _lowered(out)
    _record_removed(out)
    monkeypatch.delenv("CLEARSIGHT_AUDIT_SECRET")  # the public development default: no key, as before
    assert _decide(env, out, "--manifest", str(env / "arc" / "manifest.csv")) == 0
    assert _decided(env)["ONE"]["tier"] == "RELEASE"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_resume_scores_an_edited_row_again_and_never_seals_it(env: Path, suffix: str) -> None:
    out, _ = _score(env, suffix)
    if suffix == ".jsonl":
        _lowered(out)
    else:  # the defect row's score cell edited down
        lines = out.read_text().splitlines(keepends=True)
        (defect,) = [n for n, line in enumerate(lines) if ",0.98" in line]
        lines[defect] = lines[defect].replace(",0.98", ",0.001", 1)
        out.write_text("".join(lines))
    assert min(r.score or 1 for r in iter_rows(out)) < 0.01  # edited down
    _, summary = _score(env, suffix, resume=True)
    assert summary.taken_out == summary.taken_out_unsealed == 1 and summary.scored == 1
    assert summary.skipped_done == 4
    assert any("1 of them for a row seal missing or not verifying" in w for w in summary.warnings())
    rows = list(iter_rows(out))
    assert len(rows) == 5 and all(fault(ROW_KEY, row) is None for row in rows)
    assert max(r.score or 0 for r in rows) > 0.9 and min(r.score or 1 for r in rows) > 0.01


def test_a_resume_without_the_key_keeps_rows_as_before(env: Path) -> None:
    out, _ = _score(env, row_key=None)
    _, summary = _score(env, resume=True, row_key=None)
    assert summary.taken_out == 0 and summary.skipped_done == 5


def test_score_policy_decides_an_edited_row_as_held(env: Path) -> None:
    """``decide_output`` (score --policy) checks each row with the key too: a row edited in the run's
    own file before the run wrote its record (which then vouches for it; edited after, the record
    refuses the rows)."""
    from pipeline.policy import load_policy

    out, summary = _score(env)
    _lowered(out)
    written = summary.rows_file
    record_completion(out, seal_key=completion_seal_key(SECRET), run_id=summary.run_id, written=written)
    decisions = env / "out" / "rows.decisions.jsonl"
    decide_output(
        out,
        load_policy(env / "p.yaml"),
        audit_key=b"k",
        decisions=decisions,
        audit_url=None,
        summary=summary,
        row_key=ROW_KEY,
        completion_key=completion_seal_key(SECRET),
    )
    tiers = {d["shipment_id"]: d["tier"] for d in map(json.loads, decisions.read_text().splitlines())}
    assert tiers == {"ONE": "REMOTE_INSPECTION", "TWO": "RELEASE"}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_resume_keeps_sealed_rows_with_their_seals(env: Path, suffix: str) -> None:
    """Kept rows go through the resume's rewrites (Parquet's journal, a row taken out) sealed as read."""
    out, _ = _score(env, suffix)
    _, summary = _score(env, suffix, resume=True)
    assert summary.taken_out == 0 and summary.skipped_done == 5
    rows = list(iter_rows(out))
    assert len(rows) == 5 and all(row.row_seal is not None and fault(ROW_KEY, row) is None for row in rows)
