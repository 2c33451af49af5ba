"""A command's progress through its stages on stderr: rich's bars on a terminal, plain lines where
stderr is none (a log file, CI, ``nohup``).

Rich's live bars draw nothing while stderr is no terminal, and print once, when they stop: an hour of
``clearsight train`` into a log said nothing for the hour, then every bar at its end."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, ProgressColumn, TaskID

__all__ = ["LINES_PER_STAGE", "StageLines", "count_steps", "stage_progress"]

StageFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, as training calls it."""

LINES_PER_STAGE = 10
"""Lines a stage prints at most besides its first: one at each tenth of it done (its last, done)."""


class StageLines:
    """``progress(stage, done, total)`` as plain lines, ``stage: done/total (elapsed s)``: one when
    a stage begins, then one at each tenth of it done, so that a long stage (fine-tuning's steps)
    shows it moves and a stage of thousands of images prints no more than a short one. With ``rate``
    (a unit: ``"img"``) a line after the first says too how many a second the stage did since its
    start (``, 9.8 img/s``)."""

    def __init__(
        self,
        console: Console,
        *,
        clock: Callable[[], float] = time.monotonic,
        lines: int = LINES_PER_STAGE,
        rate: str = "",
    ) -> None:
        self._console, self._clock, self._lines, self._rate = console, clock, lines, rate
        self._stages: dict[str, tuple[float, int, int]] = {}  # stage -> its start, done, step said

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self._clock()
        step = self._lines * done // total if total > 0 else 0
        seen = self._stages.get(stage)
        if seen is not None and done >= seen[1]:
            start, _, said = seen
            if step <= said:
                self._stages[stage] = (start, done, said)
                return
        else:  # a new stage, or one begun again (counted from the start)
            start = now
        self._stages[stage] = (start, done, step)
        of = f"/{total}" if total > 0 else ""
        elapsed = now - start
        speed = f", {done / elapsed:.1f} {self._rate}/s" if self._rate and elapsed > 0 else ""
        self._console.print(
            f"{stage}: {done}{of} ({elapsed:.0f} s{speed})", markup=False, highlight=False, soft_wrap=True
        )


def count_steps(progress: StageFn, stage: str, total: int) -> Callable[[], None]:
    """``advance()``, one step of ``stage`` done, as ``progress(stage, done, total)``; said begun now,
    unless it has no step to do (``decide`` without a listed picture to read again said so)."""
    done = 0
    if total > 0:
        progress(stage, 0, total)

    def advance() -> None:
        nonlocal done
        done += 1
        progress(stage, done, total)

    return advance


@contextmanager
def stage_progress(
    console: Console, *columns: str | ProgressColumn, transient: bool = False
) -> Iterator[StageFn]:
    """``progress(stage, done, total)`` for the time of the ``with``: a bar per stage, of
    ``columns``, where ``console`` is a terminal, else :class:`StageLines`."""
    if not console.is_terminal:
        yield StageLines(console)
        return
    tasks: dict[str, TaskID] = {}
    with Progress(*columns, console=console, transient=transient) as bar:

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield progress
