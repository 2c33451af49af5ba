"""`score --resume` before and after it read each kept row's picture again (session 37).

Usage::

    .venv/bin/python bench/bench_resume_content.py --old-tree /path/to/old/checkout [--files 2000]
        [--per-shipment 4] [--kib 512] [--repeat 5]

Writes ``--files`` pictures of ``--kib`` KiB of random bytes (their content is only hashed, never
decoded), ``--per-shipment`` to a shipment, and the rows a score run would have written for them
(each picture's sha256, a score), then resumes that output over the same pictures,
:func:`pipeline.score.score_to_file` with ``resume=True`` and an engine that refuses to score
anything (every picture has its row), in a process of its own, from ``--old-tree`` (a checkout before
the check: kept by path only) and from this tree (each kept row's file read and compared with its
sha256), alternately, ``--repeat`` times each. The files were just written, so they are read from
the page cache: the figure is the cost of hashing, not of the disk (a cold archive costs one more
read of each picture kept). Reported: the median time of the resume call and of the whole process of
each, their ratios, :func:`pipeline.listed_content.hash_files` alone on the same files, and whether
both kept every row as it was.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_CHILD = """
import sys, time
from pathlib import Path
from pipeline.score import ImageTask, score_to_file

class Refuses:
    def run(self, tasks, *, heatmaps=False):
        for task in tasks:
            raise SystemExit(f"{task.path} has no row: the bench scores nothing")
        yield from ()

root, per = Path(sys.argv[1]), int(sys.argv[2])
tasks = [
    ImageTask(str(p), shipment_id=f"S{n // per:05d}", declaration={"shipment_id": f"S{n // per:05d}",
              "cargo_type": "bulk_ore"})
    for n, p in enumerate(sorted((root / "arc").iterdir()))
]
start = time.perf_counter()
summary = score_to_file(tasks, Refuses(), root / "rows.jsonl", resume=True)
took = time.perf_counter() - start
assert summary.skipped_done == len(tasks), summary
print(took)
"""


def _archive(folder: Path, files: int, per_shipment: int, kib: int) -> Path:
    """The pictures and their rows under ``folder``."""
    from bench.scored_archive import write_scored_archive

    verdicts, _ = write_scored_archive(folder, files, per_shipment, kib)
    return verdicts


def _resume(tree: Path, folder: Path, per_shipment: int) -> tuple[float, float]:
    """(the resume call's seconds, the whole process's)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(folder), str(per_shipment)],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(done.stdout.split()[-1]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-tree", type=Path, required=True)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--per-shipment", type=int, default=4)
    parser.add_argument("--kib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from pipeline.listed_content import WORKERS, hash_files

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        verdicts = _archive(folder, args.files, args.per_shipment, args.kib)
        written = verdicts.read_bytes()
        old, new = [], []
        for _ in range(args.repeat):
            old.append(_resume(args.old_tree.resolve(), folder, args.per_shipment))
            new.append(_resume(ROOT, folder, args.per_shipment))
        same = verdicts.read_bytes() == written
        paths = sorted(str(p) for p in (folder / "arc").iterdir())
        start = time.perf_counter()
        hash_files(paths)
        hashed = time.perf_counter() - start
    size = args.files * args.kib / 1024
    print(f"{args.files} kept pictures of {args.kib} KiB ({size:.0f} MiB), median of {args.repeat}")
    for what, i in (("resume call", 0), ("whole process", 1)):
        o, n = statistics.median(t[i] for t in old), statistics.median(t[i] for t in new)
        print(f"{what:13s} old (path only) {o:6.2f} s, new (content read) {n:6.2f} s, ratio {n / o:.2f}")
    print(f"hash_files alone ({WORKERS} threads): {hashed:.2f} s ({size / hashed:.0f} MiB/s)")
    print(f"rows kept as they were: {same}")


if __name__ == "__main__":
    main()
