"""The completion record of a score output, and `clearsight decide` refusing rows without one.

`clearsight decide --verdicts ROWS` on the rows of a scoring run killed partway, or still running,
released a shipment whose other pictures were never scored, and recorded the release.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from blocking import unblocked  # noqa: E402
from score_fakes import FakePredictor, write_images  # noqa: E402

from datasets.errors import DatasetFormatError, InputError  # noqa: E402
from datasets.manifest import write_manifest  # noqa: E402
from pipeline.cli import app, run  # noqa: E402
from pipeline.cli.decide import read_finished  # noqa: E402
from pipeline.row_seal import row_seal_key  # noqa: E402
from pipeline.score import LocalEngine, ModelRouter, iter_rows, iter_tasks, score_to_file  # noqa: E402
from pipeline.score.batch import ScoredRow  # noqa: E402
from pipeline.score.completion import (  # noqa: E402
    MAX_RECORD_BYTES,
    completion_path,
    incomplete,
    record_completion,
    record_decisions,
    vouched_decisions,
    vouched_for_another,
)
from pipeline.score.output_lock import OutputLock, held_by, lock_output, lock_path  # noqa: E402
from pipeline.score.sources import ImageTask  # noqa: E402
from pipeline.settings import Settings, completion_seal_key

ROW_KEY = row_seal_key("completion-test-audit-secret")
"""The row seal key of the env's audit secret: the rows scored as `clearsight score` scores them with it
set, so that decide (which has it) takes them."""
POLICY = "policy_version: t\ncargo_types:\n  bulk_ore: {}\nrandom_audit: {rate: 0.0}\n"


def _engine() -> LocalEngine:
    return LocalEngine(ModelRouter([FakePredictor()]), batch_size=1)  # type: ignore[list-item]


class _KilledAfter:
    """The fake engine, stopped (as by Ctrl-C) once ``rows`` rows are out: a run that never ends."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def run(self, tasks: Iterator[ImageTask], *, heatmaps: bool = False) -> Iterator[ScoredRow]:
        for number, row in enumerate(_engine().run(tasks, heatmaps=heatmaps)):
            if number == self.rows:
                raise KeyboardInterrupt
            yield row


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A manifest of shipment ONE: three clean pictures, then a defect one (the fake scores 0.98)."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "completion-test-audit-secret")
    pictures = write_images(tmp_path / "arc", [10, 20, 30, 250])
    rows = [{"path": p.name, "shipment_id": "ONE", "cargo_type": "bulk_ore"} for p in pictures]
    write_manifest(tmp_path / "arc" / "manifest.csv", rows)
    (tmp_path / "p.yaml").write_text(POLICY)
    return tmp_path


def _listed(env: Path) -> list[dict[str, str]]:
    import csv

    with (env / "arc" / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _score(env: Path, engine: object, **how: bool) -> Path:
    out = env / "out" / "rows.jsonl"
    tasks = iter_tasks([str(env / "arc" / "manifest.csv")])
    from pipeline.settings import Settings, completion_seal_key

    how = {"completion_key": completion_seal_key(Settings.load()), **how}  # as `clearsight score` seals
    score_to_file(tasks, engine, out, chunk_rows=1, row_key=ROW_KEY, **how)  # type: ignore[arg-type]
    return out


def _decide(env: Path, rows: Path, *extra: str) -> int:
    out = env / "d.jsonl"
    out.unlink(missing_ok=True)
    return run(
        app, ["decide", "--verdicts", str(rows), "--policy", str(env / "p.yaml"), "--out", str(out), *extra]
    )


def _tiers(env: Path) -> list[tuple[str, str]]:
    return [
        (d["shipment_id"], d["tier"]) for d in map(json.loads, (env / "d.jsonl").read_text().splitlines())
    ]


def test_a_finished_run_records_its_rows_and_a_run_stopped_partway_leaves_no_record(env: Path) -> None:
    out = _score(env, _engine())
    record = json.loads(completion_path(out).read_text())
    data = out.read_bytes()
    assert (record["bytes"], record["sha256"], record["rows"]) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
        4,
    )
    assert record["rows_file"] == "rows.jsonl" and record["finished_at"]
    assert incomplete(out) is None
    # an --overwrite run stopped after two rows: the earlier run's record is gone before OUT is cut
    with pytest.raises(KeyboardInterrupt):
        _score(env, _KilledAfter(2), overwrite=True)
    assert len(list(iter_rows(out))) == 2
    assert not completion_path(out).exists()
    assert "no completion record" in (incomplete(out) or "")
    # the run resumed to its end writes it again; a --resume stopped at once (a picture listed since)
    # removes it before it touches OUT
    _score(env, _engine(), resume=True)
    assert incomplete(out) is None
    more = write_images(env / "arc", [40], prefix="late")
    listed = [{"path": p.name, "shipment_id": "ONE", "cargo_type": "bulk_ore"} for p in more]
    manifest = env / "arc" / "manifest.csv"
    write_manifest(manifest, [*_listed(env), *listed])
    with pytest.raises(KeyboardInterrupt):
        _score(env, _KilledAfter(0), resume=True, retry_errors=True)
    assert not completion_path(out).exists() and len(list(iter_rows(out))) == 4
    _score(env, _engine(), resume=True)
    assert json.loads(completion_path(out).read_text())["rows"] == 5


def test_decide_refuses_the_rows_of_a_run_stopped_partway(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Decided on the three clean pictures alone, shipment ONE was released; its fourth picture, a
    defect the run never reached, holds it."""
    with pytest.raises(KeyboardInterrupt):
        out = env / "out" / "rows.jsonl"
        _score(env, _KilledAfter(3))
    assert len(list(iter_rows(out))) == 3
    capsys.readouterr()
    assert _decide(env, out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: --verdicts {str(out)!r}: it has no completion record")
    assert "stopped before its end, is still running" in " ".join(err.split())
    assert f"--out {out} --resume" in err.replace("\n", "") and "pass --manifest MANIFEST" in err
    assert not (env / "d.jsonl").exists()
    # with the manifest, each listed picture without a row holds its shipment: decided, said
    assert _decide(env, out, "--manifest", str(env / "arc" / "manifest.csv")) == 0, capsys.readouterr().err
    assert _tiers(env) == [("ONE", "REMOTE_INSPECTION")]  # the never-scored picture's error row
    assert "Note: --verdicts" in capsys.readouterr().err
    # the run finished: decided on every picture
    _score(env, _engine(), resume=True)
    assert _decide(env, out) == 0, capsys.readouterr().err
    assert _tiers(env) == [("ONE", "PHYSICAL_INSPECTION")]


def test_decide_refuses_rows_changed_since_their_run_finished(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _score(env, _engine())
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]))  # the defect picture's row cut away
    capsys.readouterr()
    assert _decide(env, out) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(f"Error: --verdicts {str(out)!r}: it changed since the score run completed it")
    assert not (env / "d.jsonl").exists()


def test_decide_says_a_score_run_is_still_writing_the_rows(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _score(env, _engine())
    with lock_output(out):  # a run into it now holds its lock (a --resume started meanwhile)
        capsys.readouterr()
        assert _decide(env, out) == 2
        err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(
        f"Error: --verdicts {str(out)!r}: a score run (process {os.getpid()}) is still writing it"
    )
    assert "wait for that run to end" in err
    assert _decide(env, out) == 0  # that run ended (here, without touching the rows)


def test_a_score_run_starting_while_decide_looks_for_one_is_not_refused(env: Path) -> None:
    """decide looked for a run writing the rows by taking a shared lock on the output's lock file:
    a score run into the output starting in that instant was refused as if another run wrote it."""
    out = _score(env, _engine())
    # a run killed with -9 leaves its lock file, saying it held its read lock (one that did not, or
    # a run of a Clearsight before read locks, is still looked for with a shared flock)
    lock_path(out).write_text("4242 ofd\n")
    started: list[OutputLock] = []
    assert held_by(out, looking=lambda: started.append(lock_output(out))) is None  # none was, then
    with started[0]:
        assert held_by(out) == f"process {os.getpid()}"  # the run started is seen from then on
    assert held_by(out) is None and not lock_path(out).exists()


def test_decide_says_a_run_holding_the_lock_without_its_read_lock_is_still_writing_the_rows(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """held_by took a run for none wherever it found no read lock: a score run of a Clearsight before
    read locks (still going through an upgrade) holds the flock alone, and decide said the rows had
    no completion record (stopped, or still running?) instead of naming that run."""
    out = _score(env, _engine())
    fd = os.open(lock_path(out), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")  # its id alone, as such a run writes it
        assert held_by(out) == "process 4242"
        capsys.readouterr()
        assert _decide(env, out) == 2
        err = " ".join(capsys.readouterr().err.split())
    finally:
        os.close(fd)
    assert err.startswith(f"Error: --verdicts {str(out)!r}: a score run (process 4242) is still writing it")
    assert held_by(out) is None


def test_held_by_names_a_run_whose_read_lock_was_refused(monkeypatch: pytest.MonkeyPatch, env: Path) -> None:
    """A run whose file system refused it the read lock (refused quietly: the flock is what keeps runs
    apart) holds the flock alone, and held_by took it for none."""
    out = _score(env, _engine())
    ofd_setlk = getattr(fcntl, "F_OFD_SETLK", None)
    real = fcntl.fcntl

    def refused(fd: int, cmd: int, arg: int | bytes = 0) -> int | bytes:
        if cmd == ofd_setlk:
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        return real(fd, cmd, arg)

    with monkeypatch.context() as patched:
        patched.setattr(fcntl, "fcntl", refused)
        lock = lock_output(out)
    with lock:
        assert held_by(out) == f"process {os.getpid()}"
    assert held_by(out) is None


def _scored_and_three_clean(env: Path, suffix: str) -> tuple[Path, Path]:
    """A finished run's rows of ONE (its defect picture last) and, apart, another finished run's
    rows of its three clean pictures alone, both as ``suffix``."""
    out, clean = env / "out" / f"rows{suffix}", env / "other" / f"clean{suffix}"
    score_to_file(
        iter_tasks([str(env / "arc" / "manifest.csv")]), _engine(), out, chunk_rows=1, row_key=ROW_KEY
    )
    manifest = env / "arc" / "clean.csv"
    write_manifest(manifest, _listed(env)[:3])
    score_to_file(iter_tasks([str(manifest)]), _engine(), clean, chunk_rows=1, row_key=ROW_KEY)
    assert incomplete(out) is None and incomplete(clean) is None
    return out, clean


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_decide_reads_the_rows_it_checked_though_others_are_renamed_over_them_before_the_read(
    env: Path, suffix: str
) -> None:
    """decide hashed the rows by their name, then opened the name again to read them: rows renamed
    over the file in between (another run's, the defect picture's row not among them) were decided as
    if the record vouched for them, and ONE was released."""
    out, clean = _scored_and_three_clean(env, suffix)
    scored = list(iter_rows(out))
    rows, unfinished = read_finished(out, None, checked=lambda: os.replace(clean, out))
    assert unfinished is None
    assert len(rows) == 4 and rows == scored  # the defect picture's row among them


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_decide_refuses_rows_written_into_between_the_check_and_the_read(env: Path, suffix: str) -> None:
    """Rows written into the file checked (a run into it started, and cut it) were read from it and
    decided as if the record vouched for them."""
    out, clean = _scored_and_three_clean(env, suffix)

    def written_over() -> None:
        with out.open("r+b") as fh:
            fh.write(clean.read_bytes())
            fh.truncate()

    with pytest.raises(InputError) as refused:
        read_finished(out, None, checked=written_over)
    said = " ".join(str(refused.value).split())
    assert said.startswith(f"--verdicts {str(out)!r}: it changed while it was read"), said


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_decide_refuses_rows_appended_to_between_the_check_and_the_read_as_changed(
    env: Path, suffix: str
) -> None:
    """Bytes a run into the file (a --resume) appended between the check and the read, a line cut
    short among them, were told as a row that does not parse (JSONL: not JSON; Parquet: not a readable
    Parquet file), not as rows that changed while they were read."""
    out, _ = _scored_and_three_clean(env, suffix)

    def appended() -> None:
        with out.open("ab") as fh:
            fh.write(out.read_bytes()[:10])

    with pytest.raises(InputError) as refused:
        read_finished(out, None, checked=appended)
    said = " ".join(str(refused.value).split())
    assert said.startswith(f"--verdicts {str(out)!r}: it changed while it was read"), said
    assert f"{out.stat().st_size} bytes" in said


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_rows_that_do_not_parse_and_did_not_change_are_refused_as_they_are(env: Path, suffix: str) -> None:
    """A file vouched for that does not parse (its record written over it) is told as it is: no
    change was made while it was read."""
    out, _ = _scored_and_three_clean(env, suffix)
    out.write_bytes(out.read_bytes()[:-10])
    size, sha256 = len(out.read_bytes()), hashlib.sha256(out.read_bytes()).hexdigest()
    record = json.loads(completion_path(out).read_text())
    completion_path(out).write_text(json.dumps({**record, "bytes": size, "sha256": sha256}))
    with pytest.raises(DatasetFormatError, match="not JSON|not a readable Parquet file"):
        read_finished(out, None)


def _two_shipments(env: Path) -> tuple[Path, Path]:
    """The manifest of ONE (four pictures, the defect one last) then TWO (one picture), and a
    correction manifest listing TWO only."""
    two = write_images(env / "arc", [15], prefix="two")
    listed = [{"path": p.name, "shipment_id": "TWO", "cargo_type": "bulk_ore"} for p in two]
    both, two_only = env / "arc" / "both.csv", env / "arc" / "two_only.csv"
    write_manifest(both, [*_listed(env), *listed])
    write_manifest(two_only, listed)
    return both, two_only


def test_decide_manifest_refuses_unfinished_rows_of_a_shipment_it_does_not_list(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A correction manifest of TWO lifted the completion check for every shipment of the rows: a
    killed run's three clean rows of ONE released it (its defect picture never scored), and TWO,
    listed with no row at all, was left undecided though the note said its pictures hold it."""
    both, two_only = _two_shipments(env)
    out = env / "out" / "rows.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score_to_file(iter_tasks([str(both)]), _KilledAfter(3), out, chunk_rows=1, row_key=ROW_KEY)  # type: ignore[arg-type]
    assert {r.shipment_id for r in iter_rows(out)} == {"ONE"}
    capsys.readouterr()
    audit = f"sqlite:///{env / 'audit.db'}"
    assert _decide(env, out, "--manifest", str(two_only), "--audit-db", audit) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(f"Error: --verdicts {str(out)!r}: it has no completion record"), err
    assert f"--manifest {str(two_only)!r} does not list shipment 'ONE'" in err
    assert f"--out {out} --resume" in err and "lists every shipment of the rows" in err
    assert not (env / "d.jsonl").exists() and not (env / "audit.db").exists()
    # the manifest the run scored lists both: ONE held on its picture never scored, and TWO, which
    # the run never reached, decided (held) too
    assert _decide(env, out, "--manifest", str(both)) == 0, capsys.readouterr().err
    assert _tiers(env) == [("ONE", "REMOTE_INSPECTION"), ("TWO", "REMOTE_INSPECTION")]
    err = " ".join(capsys.readouterr().err.split())
    assert "a shipment it lists with no row at all too" in err and "never scored" in err
    # rows a finished run vouches for: a listed shipment with no row is another batch's, undecided
    _score(env, _engine(), overwrite=True)
    assert _decide(env, out, "--manifest", str(both)) == 0, capsys.readouterr().err
    assert _tiers(env) == [("ONE", "PHYSICAL_INSPECTION")]


def test_a_resume_that_keeps_rows_its_inputs_do_not_list_writes_no_record(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run of ONE and TWO killed in ONE, resumed with TWO's manifest alone, wrote the record: it
    vouched for the three clean rows of ONE the resume never checked, and decide released ONE (its
    defect picture never scored)."""
    both, two_only = _two_shipments(env)
    out = env / "out" / "rows.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score_to_file(iter_tasks([str(both)]), _KilledAfter(3), out, chunk_rows=1, row_key=ROW_KEY)  # type: ignore[arg-type]
    summary = score_to_file(
        iter_tasks([str(two_only)]), _engine(), out, resume=True, chunk_rows=1, row_key=ROW_KEY
    )
    assert [r.shipment_id for r in iter_rows(out)] == ["ONE"] * 3 + ["TWO"]
    assert not completion_path(out).exists()
    assert summary.kept_unlisted == 3
    assert any("3 rows kept from the earlier run are of pictures" in w for w in summary.warnings())
    capsys.readouterr()
    assert _decide(env, out) == 2
    assert "it has no completion record" in capsys.readouterr().err
    # resumed with the inputs the run was given: every row listed, the record written, ONE held
    key = completion_seal_key(Settings.load())
    summary = score_to_file(
        iter_tasks([str(both)]),
        _engine(),
        out,
        resume=True,
        chunk_rows=1,
        row_key=ROW_KEY,
        completion_key=key,
    )
    assert summary.kept_unlisted == 0 and incomplete(out) is None
    assert _decide(env, out) == 0, capsys.readouterr().err
    assert _tiers(env) == [("ONE", "PHYSICAL_INSPECTION"), ("TWO", "RELEASE")]


def _defect_scores_lowered(out: Path) -> None:
    """The rows of ``out`` with the defect picture's score (the one the fake gives 0.98) set to
    0.001, as whoever may write the file could edit it; the rest as written."""
    lines = out.read_text().splitlines(keepends=True)
    rows = [json.loads(line) for line in lines]
    (defect,) = [n for n, row in enumerate(rows) if row["score"] > 0.9]
    lines[defect] = json.dumps({**rows[defect], "score": 0.001}) + "\n"
    out.write_text("".join(lines))


def test_decide_refuses_rows_edited_since_their_run_finished_with_a_manifest_too(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --manifest, rows edited after their run finished (the held picture's score set to 0.001)
    were taken for an unfinished run's, with a note: ONE was released and the release recorded."""
    out = _score(env, _engine())
    _defect_scores_lowered(out)
    audit = env / "audit.db"
    capsys.readouterr()
    manifest = str(env / "arc" / "manifest.csv")
    assert _decide(env, out, "--manifest", manifest, "--audit-db", f"sqlite:///{audit}") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(f"Error: --verdicts {str(out)!r}: it changed since the score run completed it"), err
    assert "bytes it vouched for are not all there as written" in err
    assert "nothing was decided (with or without --manifest)" in err and "score its inputs again" in err
    assert not (env / "d.jsonl").exists() and not audit.exists()
    assert _decide(env, out) == 2  # without it, as before
    assert "score its inputs again" in capsys.readouterr().err


def test_decide_takes_rows_that_grew_past_what_their_record_vouches_for_as_unfinished(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file whose bytes the record vouched for are all there, more after them (a run appended to
    it), is unfinished, not altered: refused without --manifest (finish the run), decided with one,
    each listed picture without a row holding its shipment."""
    out = _score(env, _engine())
    first = out.read_text().splitlines(keepends=True)[0]
    with out.open("a") as fh:
        fh.write(first)  # the first picture's row once more, as a run appending to it writes one
    capsys.readouterr()
    assert _decide(env, out) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(f"Error: --verdicts {str(out)!r}: it changed since the score run completed it"), err
    assert "and more after them (a score run appended to it since)" in err
    assert f"--out {out} --resume" in err and "score its inputs again" not in err
    assert _decide(env, out, "--manifest", str(env / "arc" / "manifest.csv")) == 0, capsys.readouterr().err
    assert _tiers(env) == [("ONE", "PHYSICAL_INSPECTION")]
    assert "Note: --verdicts" in capsys.readouterr().err


def test_the_record_removed_while_the_rows_are_hashed_is_a_run_started_not_an_edit(env: Path) -> None:
    """A score run into the rows that starts while decide hashes them removes the record before it
    rewrites them: the rows are unfinished then (a --manifest may decide them), not altered."""
    out = _score(env, _engine())
    record = completion_path(out)

    class _RunStarts:  # the open rows, read as a run into them starts partway through
        def __init__(self) -> None:
            self._fh = out.open("rb")

        def read(self, size: int) -> bytes:
            record.unlink(missing_ok=True)
            out.write_text(out.read_text()[:-20] + "\n")
            return self._fh.read(size)

    from pipeline.score.completion import _incomplete

    unvouched, vouched = _incomplete(Path(os.path.realpath(out)), _RunStarts(), None)  # type: ignore[arg-type]
    assert vouched is None and unvouched is not None and not unvouched.altered
    assert "its completion record was removed or written again meanwhile" in unvouched.why


def _forged(out: Path) -> None:
    """The rows of ``out`` edited (the defect picture's score lowered) and their completion record
    written again to match them, as whoever may write both can: its byte size and sha256 are plain
    arithmetic."""
    _defect_scores_lowered(out)
    record = json.loads(completion_path(out).read_text())
    data = out.read_bytes()
    record.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    completion_path(out).write_text(json.dumps(record))


def _sealed_score(env: Path) -> Path:
    """A finished run's rows of ONE (any earlier ones replaced), its record sealed with the key of
    the env's audit secret."""
    from pipeline.settings import Settings, completion_seal_key

    key = completion_seal_key(Settings.load())
    assert key is not None
    out = env / "out" / "rows.jsonl"
    tasks = iter_tasks([str(env / "arc" / "manifest.csv")])
    score_to_file(tasks, _engine(), out, overwrite=True, completion_key=key, row_key=ROW_KEY)
    return out


def test_the_completion_key_is_derived_for_its_purpose_and_none_for_a_weak_secret() -> None:
    """Not the audit secret itself, nor the audit chain's seal key: a seal of one is never another's."""
    from pipeline.settings import DEVELOPMENT_AUDIT_SECRET, Settings, audit_seal_key, completion_seal_key

    secret = "completion-test-audit-secret"
    settings = Settings.load(audit_secret=secret)
    key = completion_seal_key(settings)
    assert key is not None and len(key) == 32
    assert key not in (secret.encode(), audit_seal_key(settings).key)
    assert key != completion_seal_key(Settings.load(audit_secret=secret + "2"))
    assert completion_seal_key(Settings.load(audit_secret=DEVELOPMENT_AUDIT_SECRET)) is None
    assert completion_seal_key(Settings.load(audit_secret="short")) is None


def test_decide_refuses_rows_whose_record_was_written_again_to_match_them(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows edited and their record's byte size and sha256 computed again to match were decided
    without a word: ONE released. The record is sealed where the run has the audit secret, and a seal
    that does not verify is refused, with --manifest too, nothing decided or recorded."""
    out = _sealed_score(env)
    record = json.loads(completion_path(out).read_text())
    assert isinstance(record["seal"], str) and len(record["seal"]) == 64
    capsys.readouterr()
    assert _decide(env, out) == 0, capsys.readouterr().err  # as written: the seal verifies
    assert _tiers(env) == [("ONE", "PHYSICAL_INSPECTION")]
    _forged(out)
    audit = env / "audit.db"
    for extra in ([], ["--manifest", str(env / "arc" / "manifest.csv"), "--audit-db", f"sqlite:///{audit}"]):
        capsys.readouterr()
        assert _decide(env, out, *extra) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert err.startswith(f"Error: --verdicts {str(out)!r}: its completion record"), err
        assert "carries a seal that does not verify under the audit secret" in err
        assert "score its inputs again" in err
        assert not (env / "d.jsonl").exists() and not audit.exists()


def test_a_sealed_record_is_not_checked_without_the_audit_secret(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """decide without the secret (the public development default) cannot check a seal: the rows are
    taken on their byte size and sha256, as before, and said not to be vouched for by a seal."""
    out = _sealed_score(env)
    monkeypatch.delenv("CLEARSIGHT_AUDIT_SECRET")
    from pipeline.settings import Settings, completion_seal_key

    assert completion_seal_key(Settings.load()) is None
    told: list[str] = []
    rows, unfinished = read_finished(out, None, seal_key=None, unsealed=told.append)
    assert len(rows) == 4 and unfinished is None
    assert told == ["its completion record's seal was not checked: no audit secret here, or a weak one"]


def test_an_unsealed_record_vouches_for_nothing_where_decide_has_the_secret(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record without a seal (an older version's, or a run without the audit secret) vouches for
    nothing where decide has the secret: its size and sha256 anyone who edits the rows can redo (an
    earlier run's sealed row put in place of today's, its picture archived, was released), so it is
    taken as no record. Without the secret it is taken; recorded in an audit store, the decisions are
    said to stand on rows anyone who could write the file could have changed."""
    out = _score(env, _engine(), completion_key=None)  # type: ignore[arg-type]  # unsealed
    assert "seal" not in json.loads(completion_path(out).read_text())
    capsys.readouterr()
    assert _decide(env, out) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "its completion record carries no seal" in err and "vouches for nothing" in err
    env_secret = os.environ.pop("CLEARSIGHT_AUDIT_SECRET")
    try:
        assert _decide(env, out) == 0, capsys.readouterr().err  # a what-if only: nothing to say
        assert "not sealed" not in capsys.readouterr().err
    finally:
        os.environ["CLEARSIGHT_AUDIT_SECRET"] = env_secret
    out = _sealed_score(env)
    assert _decide(env, out, "--audit-db", f"sqlite:///{env / 'audit2.db'}") == 0, capsys.readouterr().err
    assert "not sealed" not in capsys.readouterr().err


def test_an_output_and_its_record_copied_under_another_name_are_refused(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The record names its rows file, under its seal: an earlier finished output and its record
    copied under today's name vouched for rows no run wrote there, and released on them."""
    out = _sealed_score(env)
    copy = env / "out" / "today.jsonl"
    shutil.copyfile(out, copy)
    shutil.copyfile(completion_path(out), completion_path(copy))
    capsys.readouterr()
    assert _decide(env, copy) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "is of rows written as 'rows.jsonl', not 'today.jsonl'" in err
    assert _decide(env, out) == 0, capsys.readouterr().err  # under its own name: taken


@pytest.mark.parametrize("kind", ["FIFO", "character device"])
def test_a_record_that_is_no_regular_file_is_refused_naming_it_without_reading_it(
    env: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """Whoever can write the verdicts folder can put a FIFO at the record's name (decide blocked on
    it forever) or a link to a device (to ``/dev/zero``: decide read it until memory ran out, 5 GB);
    it is refused as a record that does not parse is: unfinished rows, nothing decided."""
    out = _score(env, _engine())
    record = completion_path(out)
    record.unlink()
    if kind == "FIFO":
        os.mkfifo(record)
    else:
        record.symlink_to("/dev/null")
    capsys.readouterr()
    assert unblocked(record, lambda: _decide(env, out)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(
        f"Error: --verdicts {str(out)!r}: its completion record {str(record)!r} cannot be read"
    )
    assert f"not a regular file: a {kind}" in err
    assert not (env / "d.jsonl").exists()
    # a score run into OUT reads the decisions its record names, first: none named
    assert unblocked(record, lambda: vouched_decisions(out)) is None
    assert unblocked(record, lambda: vouched_for_another(env / "d.jsonl", env / "other.jsonl")) is None


def test_a_record_longer_than_any_clearsight_writes_is_not_read_past_its_limit(env: Path) -> None:
    """A record is read no further than :data:`MAX_RECORD_BYTES`: a genuine one with spaces after it
    (which JSON takes) beyond that is no record Clearsight wrote, and not read whole."""
    out = _score(env, _engine())
    record = completion_path(out)
    with record.open("a") as fh:
        fh.write(" " * MAX_RECORD_BYTES)
    assert "larger than any completion record Clearsight writes" in (incomplete(out) or "")


def test_the_longest_record_clearsight_writes_is_read(tmp_path: Path) -> None:
    """The limit is far above any record: rows named with 255 bytes and decisions kept elsewhere,
    both under real paths near ``PATH_MAX``, each byte a control character (six in JSON)."""
    part = "\x01" * 250

    def deep(top: Path) -> Path:
        folder = top
        while len(os.fsencode(folder / part)) < 3800:
            folder /= part
        folder.mkdir(parents=True)
        return folder

    out = deep(tmp_path / "r") / ("\x01" * 249 + ".jsonl")
    out.write_bytes(b"{}\n")
    decisions = deep(tmp_path / "d") / ("\x01" * 255)
    decisions.write_bytes(b"{}\n")
    record_completion(out)
    assert record_decisions(out, decisions)
    assert 40_000 < completion_path(out).stat().st_size < MAX_RECORD_BYTES
    assert incomplete(out) is None and vouched_decisions(out) == decisions


@pytest.mark.parametrize("kind", ["FIFO", "character device"])
def test_a_decisions_file_that_is_no_regular_file_is_not_read(env: Path, kind: str) -> None:
    """The decisions file beside the rows is for whoever writes the verdicts folder to replace: a
    FIFO there blocked a score run (reading the decisions its record names, or a ``--resume`` asking
    whether the file is its own) before it began; a link to a device was read as the run's own
    decisions (``/dev/null``: none, so this run's) or without end (``/dev/zero``)."""
    from pipeline.score.decisions import load_policy_file, made_by_this_run

    out = _score(env, _engine())
    decisions = env / "out" / "rows.decisions.jsonl"
    decisions.write_text("")
    assert record_decisions(out, decisions) and vouched_decisions(out) == decisions
    decisions.unlink()
    if kind == "FIFO":
        os.mkfifo(decisions)
    else:
        decisions.symlink_to("/dev/null")
    assert unblocked(decisions, lambda: vouched_decisions(out)) is None
    assert (
        unblocked(decisions, lambda: made_by_this_run(decisions, out, load_policy_file(env / "p.yaml")))
        is False
    )

    def named() -> str:
        try:
            record_decisions(out, decisions)
        except OSError as exc:
            return str(exc)
        return "recorded"

    assert f"not a regular file: a {kind}" in str(unblocked(decisions, named))


@pytest.mark.parametrize("kind", ["FIFO", "character device"])
def test_a_lock_file_that_is_no_regular_file_is_held_by_no_run_and_taken_by_none(
    env: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """Whoever can write the verdicts folder can put a FIFO at the lock file's name: decide, asking
    whether a run holds it, blocked opening it until a writer came, forever; a run took it (or a link
    to a device) for its lock. No run makes such a file: none holds it, and a run refuses it."""
    out = _score(env, _engine())
    lock = lock_path(out)
    if kind == "FIFO":
        os.mkfifo(lock)
    else:
        lock.symlink_to("/dev/null")
    assert unblocked(lock, lambda: held_by(out)) is None
    capsys.readouterr()
    assert unblocked(lock, lambda: _decide(env, out)) == 0, capsys.readouterr().err
    assert _tiers(env) == [("ONE", "PHYSICAL_INSPECTION")]

    def taken() -> str:
        try:
            lock_output(out).release()
        except InputError as exc:
            return str(exc)
        return "taken"

    said = " ".join(str(unblocked(lock, taken)).split())
    assert f"its lock file {str(lock)!r} is not a regular file" in said
    assert os.path.lexists(lock)  # left for whoever put it there to see


def test_a_lock_file_that_is_a_link_is_refused_and_what_it_leads_to_left_as_it_is(env: Path) -> None:
    """Whoever can write the verdicts folder can put a link at the lock file's name: a run took the
    file it led to for its lock, cut it and wrote its process id into it (any file the run could
    write), then removed the link."""
    out = env / "out" / "rows.jsonl"
    out.parent.mkdir()
    victim = env / "notes.txt"
    victim.write_text("an officer's notes\n")
    lock_path(out).symlink_to(victim)
    with pytest.raises(InputError, match="is not a regular file"):
        lock_output(out).release()
    assert victim.read_text() == "an officer's notes\n" and lock_path(out).is_symlink()
    assert held_by(out) is None
