"""Each score run's id in every row it writes and in its completion record, under their seals; a
``--resume`` goes on with the run of the rows it keeps (pipeline.score.runner, pipeline.score.kept_content,
pipeline.score.completion). The seals said "some run wrote these bytes": an earlier run's genuine rows
put among today's were told apart from them by nothing."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from decide_builders import decl, img  # noqa: E402
from score_fakes import FakePredictor, write_png  # noqa: E402

from datasets.errors import DatasetFormatError  # noqa: E402
from pipeline import row_seal  # noqa: E402
from pipeline.score import ImageTask, LocalEngine, ModelRouter, iter_rows, score_to_file  # noqa: E402
from pipeline.score.completion import completion_path, completion_seal_key  # noqa: E402
from pipeline.score.done import SCORED  # noqa: E402
from pipeline.score.kept_content import KeptContent  # noqa: E402
from pipeline.score.runner import new_run_id  # noqa: E402
from pipeline.shipment_rows import inputs_key  # noqa: E402
from pipeline.verdict_rows import row_json  # noqa: E402
from pipeline.verdicts import RUN_ID_PATTERN, ImageVerdict, ShipmentDecision  # noqa: E402

SECRET = b"run-id-test-audit-secret"
ROW_KEY = row_seal.row_seal_key(SECRET)
RECORD_KEY = completion_seal_key(SECRET)
EARLIER = "20260101T000000.000000Z-0000000000000000"
LATER = "29990101T000000.000000Z-ffffffffffffffff"


def _engine(model_id: str | None = None) -> LocalEngine:
    return LocalEngine(ModelRouter([FakePredictor(model_id=model_id)]))  # type: ignore[list-item]


def _score(tasks: list[ImageTask], out: Path, **kw: object):  # noqa: ANN202 - the summary
    return score_to_file(tasks, _engine(), out, row_key=ROW_KEY, completion_key=RECORD_KEY, **kw)  # type: ignore[arg-type]


def _record(out: Path) -> dict:
    return json.loads(completion_path(out).read_text())


def _tasks(tmp_path: Path, names: str = "ab") -> list[ImageTask]:
    found = []
    for n, name in enumerate(names):
        found.append(
            ImageTask(str(write_png(tmp_path / "arc" / f"{name}.png", 40 + 20 * n)), shipment_id=f"S{n}")
        )
    return found


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_every_row_of_a_run_and_its_record_name_the_run(tmp_path: Path, suffix: str) -> None:
    """Scored rows and error rows alike, each under its row seal; the record under its seal."""
    tasks = _tasks(tmp_path)
    broken = tmp_path / "arc" / "broken.png"
    broken.write_bytes(b"not a picture")
    tasks.append(ImageTask(str(broken), shipment_id="S9"))
    out = tmp_path / f"rows{suffix}"
    _score(tasks, out)
    rows = list(iter_rows(out))
    assert len(rows) == 3 and sum(r.error is not None for r in rows) == 1
    run = rows[0].run_id
    assert run is not None and re.fullmatch(RUN_ID_PATTERN, run)
    assert {r.run_id for r in rows} == {run} and _record(out)["run_id"] == run
    assert all(row_seal.fault(ROW_KEY, r) is None for r in rows)
    # the seal covers the run id: a row given another run's id no longer verifies
    moved = rows[0].model_copy(update={"run_id": EARLIER})
    assert row_seal.fault(ROW_KEY, moved) == "does not verify"


def test_two_runs_have_two_ids_sorted_as_they_started(tmp_path: Path) -> None:
    tasks = _tasks(tmp_path)
    out = tmp_path / "rows.jsonl"
    _score(tasks, out)
    first = _record(out)["run_id"]
    _score(tasks, out, overwrite=True)
    second = _record(out)["run_id"]
    assert first < second and {r.run_id for r in iter_rows(out)} == {second}
    assert len({new_run_id() for _ in range(100)}) == 100


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_resume_goes_on_with_the_run_of_the_rows_it_keeps(tmp_path: Path, suffix: str) -> None:
    """A run stopped after its first picture, resumed with the rest: one run's rows, one record."""
    tasks = _tasks(tmp_path, "abc")
    out = tmp_path / f"rows{suffix}"
    _score(tasks[:1], out)
    run = _record(out)["run_id"]
    summary = _score(tasks, out, resume=True)
    assert (summary.skipped_done, summary.scored, summary.taken_out) == (1, 2, 0)
    assert [r.run_id for r in iter_rows(out)] == [run] * 3 and _record(out)["run_id"] == run


def _spliced(tmp_path: Path, own: str, other: str) -> tuple[list[ImageTask], Path]:
    """An output of a.png and b.png whose b.png row is replaced by another run's genuine sealed row
    of the same, unchanged picture, scored by another model; its record removed (as an attacker who
    can write the folder would)."""
    tasks = _tasks(tmp_path)
    out = tmp_path / "rows.jsonl"
    _score(tasks, out)
    a, b = list(iter_rows(out))
    rows = [a.model_copy(update={"run_id": own}), b.model_copy(update={"run_id": other, "score": 0.01})]
    out.write_bytes(b"".join(row_json(row_seal.sealed(ROW_KEY, r)) for r in rows))
    completion_path(out).unlink()
    return tasks, out


@pytest.mark.parametrize(
    ("own", "other", "kept", "rescored"),
    [
        (LATER, EARLIER, LATER, "b.png"),  # an earlier run's row among the run's: taken out
        (EARLIER, LATER, LATER, "a.png"),  # the latest run's row is kept, the earlier one's scored again
        (LATER, None, LATER, "b.png"),  # a row without a run id among rows with one: taken out
    ],
    ids=["earlier-row-among-them", "later-row-among-them", "row-without-an-id"],
)
def test_a_kept_row_of_another_run_is_scored_again(
    tmp_path: Path, own: str, other: str | None, kept: str, rescored: str
) -> None:
    tasks, out = _spliced(tmp_path, own, other)
    summary = _score(tasks, out, resume=True)
    assert (summary.taken_out, summary.taken_out_other_run, summary.scored) == (1, 1, 1)
    rows = {Path(r.path).name: r for r in iter_rows(out)}
    assert {r.run_id for r in rows.values()} == {kept} and _record(out)["run_id"] == kept
    fresh = {"a.png": 40 / 255, "b.png": 60 / 255}
    assert rows[rescored].score == pytest.approx(fresh[rescored])  # scored again by this run
    warnings = " ".join(summary.warnings())
    assert f"{tmp_path / 'arc' / rescored}, for one: it is of another score run than the output's" in warnings


def test_an_output_of_a_version_before_run_ids_is_resumed_without_one(tmp_path: Path) -> None:
    """Its rows are kept (sealed, of the pictures as they are), and the rows added name no run
    either, as its record does: one run's output still, which decide takes as such."""
    tasks = _tasks(tmp_path, "abc")
    out = tmp_path / "rows.jsonl"
    _score(tasks[:2], out)
    rows = [row_seal.sealed(ROW_KEY, r.model_copy(update={"run_id": None})) for r in iter_rows(out)]
    out.write_bytes(b"".join(map(row_json, rows)))
    assert b"run_id" not in out.read_bytes()
    completion_path(out).unlink()
    summary = _score(tasks, out, resume=True)
    assert (summary.taken_out, summary.scored) == (0, 1)
    assert [r.run_id for r in iter_rows(out)] == [None] * 3 and "run_id" not in _record(out)


def test_a_resume_whose_kept_rows_are_all_taken_out_takes_a_new_id(tmp_path: Path) -> None:
    """Rows whose seals do not verify adopt nothing: an edited row's run id is no run's word."""
    tasks = _tasks(tmp_path)
    out = tmp_path / "rows.jsonl"
    score_to_file(tasks, _engine(), out)  # no secret: unsealed rows
    before = {r.run_id for r in iter_rows(out)}
    summary = _score(tasks, out, resume=True)
    assert (summary.taken_out_unsealed, summary.taken_out_other_run, summary.scored) == (2, 0, 2)
    after = {r.run_id for r in iter_rows(out)}
    assert len(after) == 1 and after != before


def test_a_csv_row_naming_no_run_is_refused_on_resume(tmp_path: Path) -> None:
    """Read without its seal (no secret), its run id is checked as parsing checks it: adopted, text
    no row may hold was written into every row the resume scored."""
    tasks = _tasks(tmp_path)
    out = tmp_path / "rows.csv"
    score_to_file(tasks, _engine(), out)
    run = next(iter_rows(out)).run_id
    assert run is not None
    out.write_text(out.read_text().replace(run, "x; DROP"))
    with pytest.raises(DatasetFormatError, match=r"rows\.csv:2: run_id 'x; DROP' is not a score run's id"):
        score_to_file(tasks, _engine(), out, resume=True)


def test_a_verdict_without_a_run_id_dumps_and_seals_as_before() -> None:
    """The HTTP service's verdicts, audit records and answers, and rows written before the field:
    nothing of theirs names a run, and a row's seal is over the bytes it was before."""
    row = img(path="a.png", sha256="a" * 64)
    assert "run_id" not in row.model_dump() and "run_id" not in json.loads(row.model_dump_json())
    canonical = row_seal.canonical(row)
    assert b"run_id" not in canonical
    with_one = row.model_copy(update={"run_id": EARLIER})
    assert json.loads(with_one.model_dump_json())["run_id"] == EARLIER
    assert row_seal.seal(ROW_KEY, with_one) != row_seal.seal(ROW_KEY, row)


def test_the_run_id_is_no_input_of_a_decision() -> None:
    """The same pictures and scores, decided again from another run's rows, are answered from the
    record: the idempotency key names no run."""

    def decision(run_id: str | None) -> ShipmentDecision:
        image = img(path="a.png", sha256="a" * 64).model_copy(update={"run_id": run_id})
        return ShipmentDecision(
            shipment_id="S1",
            cargo_type="bulk_ore",
            tier="RELEASE",
            reasons=[],
            declaration=decl(),
            images=[image],
            policy_version="p",
            policy_sha256="0" * 64,
            model_ids=["ore-m1"],
            decided_at="2026-12-08T00:00:00+00:00",
        )

    assert inputs_key(decision(EARLIER)) == inputs_key(decision(LATER)) == inputs_key(decision(None))
    recorded = ShipmentDecision.model_validate_json(decision(EARLIER).model_dump_json())
    assert recorded.images[0].run_id == EARLIER


@pytest.mark.parametrize("bad", ["x", EARLIER + "0", EARLIER.lower().replace("t", "T").replace("z", "")])
def test_a_run_id_no_run_gave_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="run_id"):
        ImageVerdict(path="a.png", run_id=bad)


@pytest.mark.parametrize("strip", [False, True], ids=["as-written", "run-id-stripped"])
def test_a_record_stripped_of_its_run_id_is_refused_as_altered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strip: bool
) -> None:
    """The run id is under the record's seal: taken out (to pass off rows of several runs as one
    finished run's), the seal no longer verifies, and decide decides nothing, --manifest or not."""
    from pipeline.cli import app, run

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET.decode())
    monkeypatch.setenv("COLUMNS", "1000")
    out = tmp_path / "rows.jsonl"
    _score(_tasks(tmp_path), out)
    if strip:
        record = _record(out)
        del record["run_id"]
        completion_path(out).write_text(json.dumps(record) + "\n")
    decisions = tmp_path / "d.jsonl"
    code = run(app, ["decide", "--verdicts", str(out), "--out", str(decisions)])
    assert code == (2 if strip else 0)
    assert decisions.exists() != strip


def test_rows_kept_with_their_picture_absent_are_not_counted_once_a_later_run_takes_them_out() -> None:
    """Rows read (a chunk at a time) and counted as kept, their pictures archived away, then taken out
    for a later run's row: the summary said they were kept while none was left in the output."""
    gone = FileNotFoundError(2, "archived away")
    check = KeptContent(content=lambda paths: dict.fromkeys(paths, gone), chunk=2)
    for n in range(3):
        check.note(bytes([n]) * 16, f"/arc/p{n}.png", "0" * 64, SCORED, run_id=EARLIER)
    check.note(b"z" * 16, "/arc/z.png", "1" * 64, SCORED, run_id=LATER)
    check.finish()
    # each earlier row counted once, as of another run, read before the later run's row or not
    assert (check.run_id, check.other_run, check.absent, sorted(check.stale)) == (LATER, 3, 1, [0, 1, 2, 3])


def test_a_kept_row_of_a_picture_archived_away_is_not_vouched_for_by_the_resume(tmp_path: Path) -> None:
    """Yesterday's run scored q.png's first scan; a new scan was written at q.png today and today's run
    killed; yesterday's sealed q row put in place of the rows and q.png archived away: the resume kept
    the row unchecked, wrote a sealed record over it, and decide released S2 on the old scan's score."""
    tasks = _tasks(tmp_path, "aq")
    yesterday = tmp_path / "yesterday.jsonl"
    _score(tasks, yesterday)
    q_row = [line for line in yesterday.read_bytes().splitlines(keepends=True) if b"q.png" in line]
    q = Path(tasks[1].path)
    write_png(q, 230)  # today's scan at the same name
    out = tmp_path / "rows.jsonl"
    _score(tasks[:1], out)  # today's run, killed after a.png
    completion_path(out).unlink()
    out.write_bytes(b"".join(q_row))
    q.rename(tmp_path / "q-archived.png")
    summary = _score(tasks, out, resume=True)
    rows = {Path(r.path).name: r for r in iter_rows(out)}
    assert rows["q.png"].error is not None and rows["q.png"].score is None  # holds S1
    assert rows["a.png"].score == pytest.approx(40 / 255)
    assert (summary.taken_out, summary.taken_out_absent, summary.skipped_done) == (1, 1, 0)
    assert f"{q}, for one: no file is at its path now" in " ".join(summary.warnings())


@pytest.mark.parametrize("gone", ["written-over", "archived-away"])
def test_a_resume_that_keeps_none_of_the_adopted_runs_rows_takes_a_new_id(tmp_path: Path, gone: str) -> None:
    """Yesterday's sealed row put in place of today's rows, its picture changed or gone since: taken
    out, yet its run's id went into every row the resume scored and into its record, so that those
    could not be told from yesterday's rows by their run id."""
    tasks = _tasks(tmp_path, "aq")
    yesterday = tmp_path / "yesterday.jsonl"
    _score(tasks, yesterday)
    old = _record(yesterday)["run_id"]
    out = tmp_path / "rows.jsonl"
    out.write_bytes(b"".join(line for line in yesterday.read_bytes().splitlines(True) if b"q.png" in line))
    q = Path(tasks[1].path)
    if gone == "written-over":
        write_png(q, 230)
    else:
        q.unlink()
    summary = _score(tasks, out, resume=True)
    assert (summary.taken_out, summary.skipped_done) == (1, 0)
    runs = {r.run_id for r in iter_rows(out)}
    assert runs == {_record(out)["run_id"]} and old not in runs
