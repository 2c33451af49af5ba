"""`clearsight score`'s progress on stderr: rich's bars on a terminal, plain lines in a log.

Two stages: a resume first reads each kept row's picture again (how many there are is known only once
read), then the inputs are scored. On a terminal each is a bar, the scoring one with its rate and ETA;
into a log (CI, ``nohup``, a scheduler's capture), where a bar prints nothing until the run ends, each
is lines through :class:`pipeline.cli.progress.StageLines`: a night's archive said nothing for hours.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from pipeline.cli.progress import StageLines

__all__ = ["CHECKING", "SCORING", "ScoreBars", "ScoreLines", "score_progress"]

CHECKING = "checking the kept pictures' content"
SCORING = "scoring"


class _RateColumn(ProgressColumn):
    """Images per second, from rich's moving speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- img/s" if speed is None else f"{speed:.1f} img/s", style="progress.data.speed")


class _Only(ProgressColumn):
    """``column`` for the tasks added with ``kind=kind``, blank for the others: the reading of a
    resume's kept pictures is no count of images scored, and has no rate or ETA of theirs."""

    def __init__(self, kind: str, column: ProgressColumn) -> None:
        super().__init__()
        self._kind = kind
        self._column = column

    def render(self, task: Task) -> Any:
        return self._column.render(task) if task.fields.get("kind") == self._kind else Text("")


class ScoreBars:
    """The two stages as rich bars (a terminal): use as a context manager."""

    def __init__(self, console: Console, *, total: int, resume: bool) -> None:
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            _Only("scoring", MofNCompleteColumn()),
            _Only("scoring", _RateColumn()),
            _Only("scoring", TextColumn("ETA")),
            _Only("scoring", TimeRemainingColumn()),
            _Only("checking", TextColumn("{task.completed:.0f} read")),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._total, self._resume = total, resume
        self._checking: TaskID | None = None
        self._scoring: TaskID | None = None

    def __enter__(self) -> ScoreBars:
        self._bar.__enter__()
        if self._resume:
            self._checking = self._bar.add_task(CHECKING, total=None, kind="checking")
        # the scoring bar's clock starts once the kept pictures are read
        self._scoring = self._bar.add_task(
            SCORING, total=self._total, start=self._checking is None, kind="scoring"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)  # type: ignore[arg-type]

    def checked(self) -> None:
        """One kept row's picture read again."""
        if self._checking is not None:
            self._bar.advance(self._checking)

    def checked_all(self) -> None:
        """Every kept picture read: that bar finished, at the count read; the scoring clock starts."""
        if self._checking is not None:
            read = next(task.completed for task in self._bar.tasks if task.id == self._checking)
            self._bar.update(self._checking, description="checked the kept pictures' content", total=read)
            self._bar.stop_task(self._checking)
        assert self._scoring is not None
        self._bar.start_task(self._scoring)

    def scored(self) -> None:
        """One input handled (scored, kept from the output, or refused)."""
        assert self._scoring is not None
        self._bar.advance(self._scoring)

    def counted(self, notes: list[str]) -> None:
        """What the count of inputs holds besides new scores (duplicates, rows kept), said on the bar."""
        assert self._scoring is not None
        self._bar.update(self._scoring, description=f"{SCORING} ({'; '.join(notes)})")


class ScoreLines:
    """The two stages as plain lines (a log): ``scoring: 500/5000 (48 s, 10.4 img/s)`` as scoring
    begins and at each tenth of it; the kept pictures' reading once as it begins and once read."""

    def __init__(
        self, console: Console, *, total: int, resume: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._console, self._clock = console, clock
        self._lines = StageLines(console, clock=clock, rate="img")
        self._total, self._resume = total, resume
        self._read = self._scored = 0
        self._began = 0.0

    def __enter__(self) -> ScoreLines:
        self._began = self._clock()
        if self._resume:
            self._say(f"{CHECKING}: begun")
        else:
            self._lines(SCORING, 0, self._total)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def checked(self) -> None:
        self._read += 1

    def checked_all(self) -> None:
        if self._resume:  # no count of images scored: no rate of theirs
            self._say(
                f"checked the kept pictures' content: {self._read} read ({self._clock() - self._began:.0f} s)"
            )
            self._lines(SCORING, 0, self._total)

    def scored(self) -> None:
        self._scored += 1
        self._lines(SCORING, self._scored, self._total)

    def counted(self, notes: list[str]) -> None:
        self._say(f"{SCORING}: {'; '.join(notes)}")

    def _say(self, line: str) -> None:
        self._console.print(line, markup=False, highlight=False, soft_wrap=True)


def score_progress(console: Console, *, total: int, resume: bool) -> ScoreBars | ScoreLines:
    """Bars where ``console`` is a terminal, else lines."""
    if console.is_terminal:
        return ScoreBars(console, total=total, resume=resume)
    return ScoreLines(console, total=total, resume=resume)
