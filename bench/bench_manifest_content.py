"""`clearsight decide --manifest` before and after it read each listed picture again (session 37).

Usage::

    .venv/bin/python bench/bench_manifest_content.py --old-tree /path/to/old/checkout [--files 2000]
        [--per-shipment 4] [--kib 512] [--repeat 3]

Writes ``--files`` pictures of ``--kib`` KiB of random bytes (their content is only hashed, never
decoded), ``--per-shipment`` to a shipment, the rows a score run would have written for them (each
picture's sha256, a score, a completion record) and a manifest listing them all, then runs the whole
command, ``clearsight decide --verdicts ROWS --manifest M --out D``, in a process of its own, from
``--old-tree`` (a checkout before the check: pictures matched by path only) and from this tree,
alternately, ``--repeat`` times each. The files were just written, so they are read from the page
cache: the figure is the cost of hashing, not of the disk (a cold archive costs one more read of each
picture, as scoring it did). Reported: the median wall time of each, their ratio, the time this
tree's :func:`pipeline.listed_content.hash_files` takes alone on the same files (one thread, and its
default number, :data:`~pipeline.listed_content.WORKERS`), and whether the two commands wrote the
same decisions.
"""

from __future__ import annotations

import argparse
import json
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

POLICY = (
    "policy_version: bench\ncargo_types:\n  bulk_ore: {release_threshold: 0.5, hold_threshold: 0.8}\n"
    "random_audit: {rate: 0.0001}\n"
)


def _archive(folder: Path, files: int, per_shipment: int, kib: int) -> tuple[Path, Path, Path]:
    """The pictures, their rows (completed) and the manifest under ``folder``."""
    from bench.scored_archive import write_scored_archive
    from datasets.manifest import write_manifest
    from pipeline.score.completion import record_completion

    verdicts, listed = write_scored_archive(folder, files, per_shipment, kib)
    record_completion(verdicts)
    manifest = folder / "manifest.csv"
    write_manifest(manifest, listed)
    policy = folder / "policy.yaml"
    policy.write_text(POLICY)
    return verdicts, manifest, policy


def _decide(tree: Path, verdicts: Path, manifest: Path, policy: Path, out: Path) -> float:
    argv = [sys.executable, "-c", "from serve.cli import main; main()", "decide", "--verdicts", str(verdicts)]
    argv += ["--manifest", str(manifest), "--policy", str(policy), "--out", str(out), "--overwrite"]
    env = {**os.environ, "PYTHONPATH": str(tree), "CLEARSIGHT_AUDIT_SECRET": "bench-secret-0123456789"}
    start = time.perf_counter()
    subprocess.run(argv, cwd=tree, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _tiers(out: Path) -> dict[str, str]:
    return {d["shipment_id"]: d["tier"] for d in map(json.loads, out.read_text().splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-tree", type=Path, required=True)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--per-shipment", type=int, default=4)
    parser.add_argument("--kib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from pipeline.listed_content import WORKERS, hash_files

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        verdicts, manifest, policy = _archive(folder, args.files, args.per_shipment, args.kib)
        old_out, new_out = folder / "old.jsonl", folder / "new.jsonl"
        old, new = [], []
        for _ in range(args.repeat):
            old.append(_decide(args.old_tree.resolve(), verdicts, manifest, policy, old_out))
            new.append(_decide(ROOT, verdicts, manifest, policy, new_out))
        paths = sorted(str(p) for p in (folder / "arc").iterdir())
        hashed = {}
        for workers in (1, WORKERS):
            start = time.perf_counter()
            hash_files(paths, workers=workers)
            hashed[workers] = time.perf_counter() - start
        same = _tiers(old_out) == _tiers(new_out)
    o, n = statistics.median(old), statistics.median(new)
    size = args.files * args.kib / 1024
    shipments = args.files // args.per_shipment
    print(f"{args.files} pictures of {args.kib} KiB ({size:.0f} MiB), {shipments} shipments")
    print(f"decide --manifest, old (path only): {o:.2f} s median of {args.repeat}")
    print(f"decide --manifest, new (content read): {n:.2f} s median of {args.repeat}  ratio {n / o:.2f}")
    for workers, took in hashed.items():
        print(f"hash_files alone, {workers} thread(s): {took:.2f} s ({size / took:.0f} MiB/s)")
    print(f"same decisions: {same}")


if __name__ == "__main__":
    main()
