"""Stage progress where stderr is no terminal: plain lines as a stage begins and at each tenth of it,
not rich's bars, which print nothing until the command ends."""

from __future__ import annotations

import io
import sys
from itertools import count
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from decide_builders import img, run_finished  # noqa: E402
from rich.console import Console
from train_builders import write_noise_normals  # noqa: E402

from pipeline.cli import app, run
from pipeline.cli.progress import StageLines, count_steps, stage_progress


def _lines(calls: list[tuple[str, int, int]], *, rate: str = "") -> list[str]:
    out = io.StringIO()
    seconds = count()  # one second per call
    progress = StageLines(
        Console(file=out, force_terminal=False, width=40), clock=lambda: float(next(seconds)), rate=rate
    )
    for call in calls:
        progress(*call)
    return out.getvalue().splitlines()


@pytest.mark.parametrize(
    ("calls", "lines"),
    [
        ([("memory bank", 1, 1)], ["memory bank: 1/1 (0 s)"]),
        ([("memory bank", 1, 1), ("memory bank", 1, 1)], ["memory bank: 1/1 (0 s)"]),  # said once
        # a stage begins, then a line at each tenth done: 2, 4, ... of 20
        (
            [("fine-tune backbone", n, 20) for n in range(1, 21)],
            [
                "fine-tune backbone: 1/20 (0 s)",
                *(f"fine-tune backbone: {n}/20 ({n - 1} s)" for n in range(2, 21, 2)),
            ],
        ),
        # a long stage prints no more than a short one
        (
            [("decode", n, 1000) for n in range(1, 1001)],
            ["decode: 1/1000 (0 s)", *(f"decode: {n}/1000 ({n - 1} s)" for n in range(100, 1001, 100))],
        ),
        # each stage timed from its own start; one begun again is said again
        (
            [("decode", 1, 2), ("decode", 2, 2), ("embed normals", 1, 1), ("decode", 1, 2)],
            ["decode: 1/2 (0 s)", "decode: 2/2 (1 s)", "embed normals: 1/1 (0 s)", "decode: 1/2 (0 s)"],
        ),
        ([("checking", 5, 0), ("checking", 9, 0)], ["checking: 5 (0 s)"]),  # no total known
        # long names and brackets are text, not markup, and never folded
        ([("[bold]x" + "y" * 60, 1, 1)], ["[bold]x" + "y" * 60 + ": 1/1 (0 s)"]),
    ],
    ids=["one", "once", "tenths", "bounded", "restarted", "no-total", "plain"],
)
def test_stage_lines(calls: list[tuple[str, int, int]], lines: list[str]) -> None:
    assert _lines(calls) == lines


def test_a_rate_is_said_from_the_stage_s_start() -> None:
    """Scoring's lines say how many images a second, as its bar does: none on the first line (no time
    gone), then done over the seconds since the stage began (one per call here)."""
    lines = _lines([("scoring", n, 4) for n in range(5)], rate="img")
    assert lines == [
        "scoring: 0/4 (0 s)",
        "scoring: 1/4 (1 s, 1.0 img/s)",
        "scoring: 2/4 (2 s, 1.0 img/s)",
        "scoring: 3/4 (3 s, 1.0 img/s)",
        "scoring: 4/4 (4 s, 1.0 img/s)",
    ]


def test_count_steps_says_a_stage_begun_then_counts_it() -> None:
    calls: list[tuple[str, int, int]] = []
    advance = count_steps(lambda *call: calls.append(call), "deciding", 2)
    assert calls == [("deciding", 0, 2)]  # said as it begins, before any step
    advance()
    advance()
    assert calls == [("deciding", 0, 2), ("deciding", 1, 2), ("deciding", 2, 2)]
    count_steps(lambda *call: calls.append(call), "reading", 0)
    assert calls[-1] == ("deciding", 2, 2)  # a stage of no step is not said


def test_a_terminal_gets_bars_and_a_log_lines() -> None:
    log, terminal = io.StringIO(), io.StringIO()
    with stage_progress(Console(file=log, force_terminal=False)) as progress:
        assert isinstance(progress, StageLines)
    with stage_progress(Console(file=terminal, force_terminal=True)) as progress:
        assert not isinstance(progress, StageLines)
        progress("decode", 1, 2)


def test_train_prints_its_stages_as_lines_into_a_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_noise_normals(tmp_path / "bulk_ore", 8)
    args = ["--image-size", "32", "--pad", "0", "--threads", "1", "--coreset-ratio", "0.5"]
    assert run(app, ["train", "--data", str(tmp_path / "bulk_ore"), "--out", str(tmp_path / "m"), *args]) == 0
    said = [
        line.split(" (")[0] for line in capsys.readouterr().err.splitlines()
    ]  # stderr here is no terminal
    for stage in ("decode: 8/8", "embed normals: 6/6", "calibration: 1/1", "artifact: 1/1"):
        assert stage in said
    assert said[0] == "decode: 1/8"  # from the start, not at the end


def test_synth_prints_its_rendering_as_lines_into_a_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = ["--size", "64", "--train-good", "1", "--train-anomalous", "0", "--test-good", "1"]
    argv = ["data", "synth", "--out", str(tmp_path / "ds"), "--cargo", "bulk_ore", "--workers", "1", *tiny]
    assert run(app, [*argv, "--test-anomalous", "1"]) == 0
    said = [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()]
    assert said[0] == "rendering: 1/6" and said[-1] == "rendering: 6/6"


def test_decide_prints_its_progress_as_lines_into_a_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its bar was transient: into a log it printed nothing at all."""
    rows = tmp_path / "rows.jsonl"
    verdicts = [img(path=f"{n}.png", sha256=f"{n:064x}", shipment_id=f"S-{n}") for n in range(3)]
    rows.write_text("".join(v.model_dump_json() + "\n" for v in verdicts))
    run_finished(rows)  # a finished run's
    assert run(app, ["decide", "--verdicts", str(rows), "--out", str(tmp_path / "d.jsonl")]) == 0
    said = [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()]
    stage = next(line.split(":")[0] for line in said if line.endswith(": 0/3"))
    assert [line for line in said if line.startswith(f"{stage}:")] == [f"{stage}: {n}/3" for n in range(4)]
