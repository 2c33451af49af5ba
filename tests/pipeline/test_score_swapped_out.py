"""Rows renamed over ``--out`` while a score run writes it (pipeline.score.runner, pipeline.score.writer,
pipeline.score.completion): the writer keeps appending to the file it opened, now unlinked, and the
run's completion record, hashing ``--out`` by its name, vouched for an earlier run's genuine sealed
rows (of an older model) under this run's id and seal."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from score_fakes import FakePredictor, tiny_model_dir, write_images, write_png  # noqa: E402

import pipeline.score.runner as runner  # noqa: E402
from datasets.errors import InputError  # noqa: E402
from datasets.manifest import write_manifest  # noqa: E402
from models.inference import Prediction  # noqa: E402
from pipeline import row_seal  # noqa: E402
from pipeline.audit import AuditStore  # noqa: E402
from pipeline.cli import app, run  # noqa: E402
from pipeline.policy import (
    default_policy_path,  # noqa: E402
    parse_policy,  # noqa: E402
)
from pipeline.score import ImageTask, LocalEngine, ModelRouter, iter_rows, score_to_file  # noqa: E402
from pipeline.score.batch import ScoredRow  # noqa: E402
from pipeline.score.completion import completion_path, completion_seal_key, record_completion  # noqa: E402
from pipeline.score.decisions import decide_output  # noqa: E402
from pipeline.score.summary import ScoreSummary  # noqa: E402
from pipeline.score.writer import journal_path  # noqa: E402

SECRET = b"swapped-out-test-audit-secret"
ROW_KEY = row_seal.row_seal_key(SECRET)
RECORD_KEY = completion_seal_key(SECRET)
REPLACED = "is not the file this run wrote its rows into"


class _Swapping(LocalEngine):
    """Renames ``staged`` onto ``target`` once the first row is out (someone who can write the
    folder, watching it): the run's own rows go on into the file its writer opened."""

    def __init__(self, staged: Path, target: Path) -> None:
        super().__init__(ModelRouter([FakePredictor(model_id="ore-m2")]))  # type: ignore[list-item]
        self.staged, self.target = staged, target

    def run(self, tasks: Iterable[ImageTask], *, heatmaps: bool = False) -> Iterator[ScoredRow]:
        for n, row in enumerate(super().run(tasks, heatmaps=heatmaps)):
            if n == 1:
                os.replace(self.staged, self.target)
            yield row


def _tasks(tmp_path: Path) -> list[ImageTask]:
    return [
        ImageTask(str(write_png(tmp_path / "arc" / f"{name}.png", 40 + 20 * n)), shipment_id=f"S{n}")
        for n, name in enumerate("abc")
    ]


def _yesterday(tmp_path: Path, tasks: list[ImageTask], suffix: str) -> Path:
    """A finished, sealed output of the same pictures by another run (an older model's)."""
    staged = tmp_path / "old" / f"rows{suffix}"
    engine = LocalEngine(ModelRouter([FakePredictor(model_id="ore-m1")]))  # type: ignore[list-item]
    score_to_file(tasks, engine, staged, row_key=ROW_KEY, completion_key=RECORD_KEY)
    return staged


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_no_record_is_written_for_rows_renamed_over_the_output(tmp_path: Path, suffix: str) -> None:
    tasks = _tasks(tmp_path)
    staged = _yesterday(tmp_path, tasks, suffix)
    out = tmp_path / f"rows{suffix}"
    with pytest.raises(InputError, match=rf"^output '{out}' {REPLACED} \(device \d+, inode \d+; it is"):
        score_to_file(
            tasks, _Swapping(staged, out), out, chunk_rows=1, row_key=ROW_KEY, completion_key=RECORD_KEY
        )
    assert not completion_path(out).exists()


def test_no_parquet_is_made_of_a_journal_renamed_over_the_run_s(tmp_path: Path) -> None:
    """A Parquet run's rows go to its journal, converted by its name once the run ends."""
    tasks = _tasks(tmp_path)
    staged = _yesterday(tmp_path, tasks, ".jsonl")  # a journal holds JSONL rows
    out = tmp_path / "rows.parquet"
    with pytest.raises(InputError, match=rf"^output '{journal_path(out)}' {REPLACED}"):
        score_to_file(
            tasks,
            _Swapping(staged, journal_path(out)),
            out,
            chunk_rows=1,
            row_key=ROW_KEY,
            completion_key=RECORD_KEY,
        )
    assert not out.exists() and not completion_path(out).exists()


def test_no_record_is_written_for_a_parquet_file_renamed_over_the_finished_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = _tasks(tmp_path)
    staged = _yesterday(tmp_path, tasks, ".parquet")
    out = tmp_path / "rows.parquet"
    finish = runner.finish_output

    def finished_then_replaced(path: Path, written: tuple[int, int] | None = None) -> tuple[int, int] | None:
        made = finish(path, written)
        os.replace(staged, path)
        return made

    monkeypatch.setattr(runner, "finish_output", finished_then_replaced)
    with pytest.raises(InputError, match=rf"^output '{out}' {REPLACED}"):
        score_to_file(tasks, LocalEngine(ModelRouter([FakePredictor()])), out, completion_key=RECORD_KEY)  # type: ignore[list-item]
    assert not completion_path(out).exists()


# ------------------------------------------------ score --policy: decide_output decides the run's rows

POLICY = parse_policy(
    {
        "policy_version": "swap-1",
        "cargo_types": {"bulk_ore": {"release_threshold": 0.5, "hold_threshold": 0.8}},
        "random_audit": {"rate": 0.0},
    }
)


def _listed(tmp_path: Path) -> list[ImageTask]:
    """S1's picture is bright (0.90: held by today's model), S2's dark."""
    pictures = [("a.png", "S1", 230), ("b.png", "S2", 60)]
    return [
        ImageTask(
            str(write_png(tmp_path / "arc" / n, level)),
            s,
            "bulk_ore",
            {"shipment_id": s, "cargo_type": "bulk_ore"},
        )
        for n, s, level in pictures
    ]


class _Older(FakePredictor):
    """An older model: the same fake, its scores a third of today's (misses S1's anomaly)."""

    def _one(self, image: np.ndarray) -> Prediction:
        found = super()._one(image)
        return found._replace(score=found.score * 0.3, label="good", anomaly_type=None)


def _run(tasks: list[ImageTask], out: Path, model_id: str, **kw: object) -> ScoreSummary:
    predictor = _Older("bulk_ore", model_id) if model_id == "ore-m1" else FakePredictor("bulk_ore", model_id)
    engine = LocalEngine(ModelRouter([predictor]))  # type: ignore[list-item]
    return score_to_file(tasks, engine, out, row_key=ROW_KEY, completion_key=RECORD_KEY, **kw)  # type: ignore[arg-type]


def _decide(out: Path, summary: ScoreSummary) -> dict[str, str]:
    decisions = out.with_name("d.jsonl")
    decide_output(
        out,
        POLICY,
        audit_key=b"k",
        decisions=decisions,
        audit_url=None,
        summary=summary,
        row_key=ROW_KEY,
        completion_key=RECORD_KEY,
    )
    return {d["shipment_id"]: d["tier"] for d in map(json.loads, decisions.read_text().splitlines())}


def _yesterdays(tmp_path: Path, tasks: list[ImageTask]) -> Path:
    """Yesterday's finished output of the same pictures: genuine sealed rows of another run and an
    older model, with their own sealed record."""
    old = tmp_path / "old" / "rows.jsonl"
    _run(tasks, old, "ore-m1")
    assert {r.model_id for r in iter_rows(old)} == {"ore-m1"}
    return old


def _renamed_over(old: Path, out: Path, *, record: bool) -> None:
    os.replace(old, out)
    if record:  # its record too: rows and record agree, as `clearsight decide` takes them
        os.replace(completion_path(old), completion_path(out))


def test_score_policy_decides_the_rows_of_the_run(tmp_path: Path) -> None:
    tasks = _listed(tmp_path)
    out = tmp_path / "rows.jsonl"
    summary = _run(tasks, out, "ore-m2")
    assert summary.completed and summary.run_id == next(iter_rows(out)).run_id
    assert _decide(out, summary) == {"S1": "PHYSICAL_INSPECTION", "S2": "RELEASE"}


@pytest.mark.parametrize("record", [False, True], ids=["rows", "rows-and-their-record"])
def test_score_policy_decides_no_rows_renamed_over_its_output(tmp_path: Path, record: bool) -> None:
    """Renamed over OUT once the run recorded its rows, before it decides (the record renamed along
    with them agrees with them: `clearsight decide` would take them): S1 was released on the older
    model's score."""
    tasks = _listed(tmp_path)
    old = _yesterdays(tmp_path, tasks)
    out = tmp_path / "rows.jsonl"
    summary = _run(tasks, out, "ore-m2")
    _renamed_over(old, out, record=record)
    with pytest.raises(InputError, match=rf"^output '{out}': it is not the file this run wrote \(device"):
        _decide(out, summary)
    assert not out.with_name("d.jsonl").exists()


def test_score_policy_decides_no_rows_edited_in_the_file_it_wrote(tmp_path: Path) -> None:
    """Yesterday's row of S1 put in place of today's in the run's own file: its record says otherwise."""
    tasks = _listed(tmp_path)
    old = _yesterdays(tmp_path, tasks)
    out = tmp_path / "rows.jsonl"
    summary = _run(tasks, out, "ore-m2")
    yesterday = old.read_bytes().splitlines(keepends=True)
    with out.open("r+b") as fh:  # in place: the same file
        today = fh.read().splitlines(keepends=True)
        fh.seek(0)
        fh.truncate()
        fh.write(yesterday[0] + today[1])
    with pytest.raises(InputError, match=rf"^output '{out}': it changed since the score run completed it"):
        _decide(out, summary)


def test_score_policy_decides_no_rows_whose_record_was_written_again(tmp_path: Path) -> None:
    """The record written again unsealed (to match rows edited in place): this run sealed its own."""
    tasks = _listed(tmp_path)
    out = tmp_path / "rows.jsonl"
    summary = _run(tasks, out, "ore-m2")
    record_completion(out, run_id=summary.run_id)
    with pytest.raises(InputError, match=r"its completion record carries no seal.*this run sealed the one"):
        _decide(out, summary)


def test_score_policy_decides_no_row_of_another_run_where_it_wrote_no_record(tmp_path: Path) -> None:
    """A run may finish without a record (a resume's rows taken out of pictures it does not list):
    its file is still checked, and every row in it must name the run."""
    tasks = _listed(tmp_path)
    old = _yesterdays(tmp_path, tasks)
    out = tmp_path / "rows.jsonl"
    summary = _run(tasks[1:], out, "ore-m2")
    completion_path(out).unlink()
    summary.completed = False
    with out.open("ab") as fh:  # yesterday's genuine sealed row of S1, in the run's own file
        fh.write(old.read_bytes().splitlines(keepends=True)[0])
    with pytest.raises(InputError, match=r"the row of '.*a\.png' names score run '\d{8}T.*', and this run"):
        _decide(out, summary)


def test_decide_output_refuses_a_summary_of_no_run(tmp_path: Path) -> None:
    tasks = _listed(tmp_path)
    out = tmp_path / "rows.jsonl"
    _run(tasks, out, "ore-m2")
    with pytest.raises(InputError, match="the summary given names no file a score run wrote"):
        _decide(out, ScoreSummary())


@pytest.fixture(scope="module")
def ore_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models"), "bulk_ore", seed=0)


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_clearsight_score_policy_refuses_rows_renamed_over_its_output(
    tmp_path: Path,
    ore_model: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    resume: bool,
) -> None:
    """End to end: yesterday's sealed rows of the manifest (another run, an older model) renamed over
    --out once the run has recorded its rows, as it goes to decide them: exit 2, nothing decided or
    recorded, fresh or resumed."""
    import pipeline.score
    import pipeline.settings

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET.decode())
    monkeypatch.setenv("COLUMNS", "1000")
    arc = tmp_path / "arc"
    pictures = write_images(arc, [230, 60])
    manifest = arc / "manifest.csv"
    write_manifest(
        manifest,
        [{"path": p.name, "shipment_id": f"S{n}", "cargo_type": "bulk_ore"} for n, p in enumerate(pictures)],
    )
    settings = pipeline.settings.Settings.load()
    staged = tmp_path / "old" / "rows.jsonl"
    score_to_file(
        pipeline.score.iter_tasks([str(manifest)]),
        LocalEngine(ModelRouter([_Older("bulk_ore", "ore-m1")])),  # type: ignore[list-item]
        staged,
        row_key=pipeline.settings.row_seal_key(settings),
        completion_key=pipeline.settings.completion_seal_key(settings),
    )
    out = tmp_path / "out" / "rows.jsonl"
    audit = f"sqlite:///{tmp_path / 'audit.db'}"
    argv = ["score", str(manifest), "--model", str(ore_model), "--out", str(out)]
    argv += ["--policy", str(default_policy_path()), "--audit-db", audit]
    if resume:  # a run killed once its first row was written, resumed
        assert run(app, argv) == 0, capsys.readouterr().err
        with out.open("r+b") as fh:
            fh.truncate(len(fh.readline()))
        completion_path(out).unlink()
        out.with_name("rows.decisions.jsonl").unlink()
        argv.append("--resume")
    recorded = _recorded(audit)
    deciding = pipeline.score.decide_output

    def renamed_over_then_decided(rows: Path, *args: object, **kwargs: object) -> int:
        os.replace(staged, rows)
        os.replace(completion_path(staged), completion_path(rows))
        return deciding(rows, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline.score, "decide_output", renamed_over_then_decided)
    capsys.readouterr()
    assert run(app, argv) == 2
    err = capsys.readouterr().err
    assert f"Error: output {str(out)!r}: it is not the file this run wrote (device" in err, err
    assert "nothing was decided or recorded" in err
    assert not out.with_name("rows.decisions.jsonl").exists() and _recorded(audit) == recorded


def _recorded(audit: str) -> list[str]:
    if not Path(audit.removeprefix("sqlite:///")).exists():
        return []
    with AuditStore.open(audit) as store:
        return [r.decision.shipment_id for r in store.iter_records()]
