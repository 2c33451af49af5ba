"""Memory and time of a ``--resume`` over an output that already holds N rows.

    .venv/bin/python -m bench.bench_resume [--rows 200000]

Writes an output of ``--rows`` scored rows (8 pictures a shipment, 50 folders), then resumes over the
same tasks: every one is found done. Reports, by ``tracemalloc``:

* what the rows done take once read (``open_output``), and the peak while every task is checked
  against them (``score_to_file``'s pending filter);
* the baseline, in the same run: the same rows held as the scorer held them before session 26, a
  dict of absolute path -> {shipment: 16-hex-digit declaration digest}, and the same check's peak
  with a second such dict of the identities seen.

Since session 37 a resume reads each kept row's picture again as the rows are read
(:mod:`pipeline.score.kept_content`), and ``now`` includes that. Without ``--with-files`` no picture
is there (each row is counted as archived away, its content not compared); with it, each row's
picture is written (64 bytes of its own) and its sha256 put in the row, so that every file is read
and found the same.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.score import ImageTask
from pipeline.score.kept_content import KeptContent
from pipeline.score.runner import _pending
from pipeline.score.summary import ScoreSummary
from pipeline.score.writer import open_output
from pipeline.verdicts import ImageVerdict


def _declaration(i: int) -> dict[str, str]:
    return {"shipment_id": f"SHP-{i // 8:07d}", "cargo_type": "bulk_ore", "trader_id": "TRD-1"}


def _path(root: Path, i: int) -> str:
    return str(root / f"terminal-{i % 50:02d}" / f"img{i:07d}.png")


def _tasks(root: Path, n: int) -> Iterator[ImageTask]:
    for i in range(n):
        yield ImageTask(
            _path(root, i),
            shipment_id=f"SHP-{i // 8:07d}",
            cargo_type="bulk_ore",
            declaration=_declaration(i),
        )


def _measure(work: Callable[[], int]) -> tuple[float, float]:
    """(MB held after ``work``'s first step, which it returns, and MB at its peak)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    held = work() - base
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held / 1e6, (peak - base) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--with-files", action="store_true", help="write each row's picture")
    args = parser.parse_args()
    n = args.rows
    root = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    out = root / "out.jsonl"
    with out.open("w") as fh:
        for i in range(n):
            sha256 = "ab" * 32
            if args.with_files:
                picture = Path(_path(root, i))
                picture.parent.mkdir(exist_ok=True)
                picture.write_bytes(data := os.urandom(64))
                sha256 = hashlib.sha256(data).hexdigest()
            row = ImageVerdict(
                path=_path(root, i),
                sha256=sha256,
                shipment_id=f"SHP-{i // 8:07d}",
                cargo_type="bulk_ore",
                score=0.1,
                threshold=0.5,
                hold_threshold=0.8,
                model_id="m",
                declaration=_declaration(i),
            )
            fh.write(row.model_dump_json() + "\n")

    kept: list[object] = []

    def now() -> int:
        content = KeptContent()
        writer, done = open_output(out, resume=True, overwrite=False, content=content)
        assert content.taken_out == 0, content.first_stale
        kept.append(writer)
        held = tracemalloc.get_traced_memory()[0]
        left = sum(1 for _ in _pending(_tasks(root, n), done, ScoreSummary(), None))
        assert left == 0, left
        return held

    def baseline() -> int:
        def digest(declaration: object) -> str:
            text = json.dumps(declaration or {}, sort_keys=True, separators=(",", ":"), default=str)
            return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

        done: dict[str, dict[str | None, str]] = {}
        with out.open("rb") as fh:
            for line in fh:
                row = json.loads(line)
                done.setdefault(row["path"], {})[row["shipment_id"]] = digest(row["declaration"])
        held = tracemalloc.get_traced_memory()[0]
        rows = {os.path.normpath(os.path.abspath(p)): v for p, v in done.items()}
        seen: dict[tuple[str, str | None], str] = {}
        for task in _tasks(root, n):
            path = os.path.normpath(os.path.abspath(task.path))
            scored = rows.get(path, {})
            assert scored.get(task.shipment_id) == digest(task.declaration)
            seen[(path, task.shipment_id)] = scored[task.shipment_id]
        return held

    for name, work in (("baseline (dict of paths)", baseline), ("now (Done)", now)):
        held, peak = _measure(work)
        # no time: the baseline reads rows with json.loads, not the validating reader the scorer uses
        print(f"{name:26s} {n:,} rows: {held:6.0f} MB once read, {peak:6.0f} MB at the peak")
    for writer in kept:
        writer.close()  # type: ignore[attr-defined]
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
