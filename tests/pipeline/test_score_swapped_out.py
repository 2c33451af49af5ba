"""Rows renamed over ``--out`` while a score run writes it (pipeline.score.runner, pipeline.score.writer,
pipeline.score.completion): the writer keeps appending to the file it opened, now unlinked, and the
run's completion record, hashing ``--out`` by its name, vouched for an earlier run's genuine sealed
rows (of an older model) under this run's id and seal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from score_fakes import FakePredictor, write_png  # noqa: E402

import pipeline.score.runner as runner  # noqa: E402
from datasets.errors import InputError  # noqa: E402
from pipeline import row_seal  # noqa: E402
from pipeline.score import ImageTask, LocalEngine, ModelRouter, score_to_file  # noqa: E402
from pipeline.score.batch import ScoredRow  # noqa: E402
from pipeline.score.completion import completion_path, completion_seal_key  # noqa: E402
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
