"""`clearsight decide` without --manifest before and after it read each scored row's picture again.

Usage::

    .venv/bin/python bench/bench_decide_content.py --old-tree /path/to/old/checkout [--files 2000]
        [--per-shipment 4] [--kib 64] [--repeat 5] [--manifest-share 0.5]

Writes ``--files`` pictures of ``--kib`` KiB of random bytes (only hashed, never decoded),
``--per-shipment`` to a shipment, and the rows a finished score run would have written of them
(:func:`bench.scored_archive.write_scored_archive`), rows and completion record sealed under this
process's audit secret, as a run with the secret leaves them (a decide with the secret refuses an
unsealed record without --manifest). Then runs the whole command, ``clearsight decide --verdicts
ROWS --out D``, in a process of its own, from ``--old-tree`` (a checkout before the check: no
picture read) and from this tree, alternately, ``--repeat`` times each. The files were just written,
so they are read from the page cache: the figure is the cost of hashing, not of the disk (a cold
archive costs one more read of each picture, as scoring it did). Reported: the median wall time of
each, their ratio, this tree's :func:`pipeline.listed_content.hash_files` alone on the same files
(its default threads), and whether the two commands wrote the same decisions.

With ``--manifest-share F``, both run ``decide --manifest M``, M listing the first F of the shipments
(an alarm raised on a few: 1.0 lists all): ``--old-tree`` a checkout that read only the listed
pictures again, this tree every scored row's, each once.
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

SECRET = "bench-secret-0123456789"

POLICY = (
    "policy_version: bench\ncargo_types:\n  bulk_ore: {release_threshold: 0.5, hold_threshold: 0.8}\n"
    "random_audit: {rate: 0.0001}\n"
)


def _archive(
    folder: Path, files: int, per_shipment: int, kib: int, share: float | None = None
) -> tuple[Path, Path, list[str]]:
    """The pictures and their sealed rows and record under ``folder``, a policy, and with ``share``
    the options of a manifest listing that share of the shipments."""
    from bench.scored_archive import write_scored_archive
    from pipeline.row_seal import sealed
    from pipeline.score.completion import record_completion
    from pipeline.settings import Settings, completion_seal_key, row_seal_key
    from pipeline.verdict_rows import read_verdicts, row_json

    verdicts, listed = write_scored_archive(folder, files, per_shipment, kib)
    settings = Settings.load(audit_secret=SECRET)
    key = row_seal_key(settings)
    rows = [sealed(key, row) for row in read_verdicts(verdicts)]
    verdicts.write_bytes(b"".join(row_json(row) for row in rows))
    record_completion(verdicts, seal_key=completion_seal_key(settings))
    policy = folder / "policy.yaml"
    policy.write_text(POLICY)
    if share is None:
        return verdicts, policy, []
    from datasets.manifest import write_manifest

    shipments = sorted({row["shipment_id"] for row in listed})[: round(share * files / per_shipment)]
    manifest = folder / "manifest.csv"
    write_manifest(manifest, [row for row in listed if row["shipment_id"] in set(shipments)])
    return verdicts, policy, ["--manifest", str(manifest)]


def _decide(tree: Path, verdicts: Path, policy: Path, out: Path, extra: list[str]) -> float:
    argv = [sys.executable, "-c", "from serve.cli import main; main()", "decide", "--verdicts", str(verdicts)]
    argv += ["--policy", str(policy), "--out", str(out), "--overwrite", *extra]
    env = {**os.environ, "PYTHONPATH": str(tree), "CLEARSIGHT_AUDIT_SECRET": SECRET}
    start = time.perf_counter()
    subprocess.run(argv, cwd=tree, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _decisions(out: Path) -> dict[str, tuple[str, list[str]]]:
    return {
        d["shipment_id"]: (d["tier"], sorted(r["rule"] for r in d["reasons"]))
        for d in map(json.loads, out.read_text().splitlines())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-tree", type=Path, required=True)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--per-shipment", type=int, default=4)
    parser.add_argument("--kib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--manifest-share", type=float, default=None)
    args = parser.parse_args()
    from pipeline.listed_content import WORKERS, hash_files

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        verdicts, policy, extra = _archive(
            folder, args.files, args.per_shipment, args.kib, args.manifest_share
        )
        old_out, new_out = folder / "old.jsonl", folder / "new.jsonl"
        old, new = [], []
        for _ in range(args.repeat):
            old.append(_decide(args.old_tree.resolve(), verdicts, policy, old_out, extra))
            new.append(_decide(ROOT, verdicts, policy, new_out, extra))
        paths = sorted(str(p) for p in (folder / "arc").iterdir())
        start = time.perf_counter()
        found = hash_files(paths)
        hashed = time.perf_counter() - start
        assert all(isinstance(digest, str) for digest in found.values())
        same = _decisions(old_out) == _decisions(new_out)
    o, n = statistics.median(old), statistics.median(new)
    size = args.files * args.kib / 1024
    shipments = args.files // args.per_shipment
    print(f"{args.files} pictures of {args.kib} KiB ({size:.0f} MiB), {shipments} shipments")
    if args.manifest_share is not None:
        print(f"--manifest listing {args.manifest_share:.0%} of the shipments")
    before = "listed pictures read" if args.manifest_share is not None else "no picture read"
    print(f"decide, old ({before}): {o:.2f} s median of {args.repeat} ({min(old):.2f}-{max(old):.2f})")
    print(
        f"decide, new (each picture read): {n:.2f} s median of {args.repeat} ({min(new):.2f}-{max(new):.2f})"
        f"  ratio {n / o:.2f}"
    )
    print(f"hash_files alone ({WORKERS} threads): {hashed:.2f} s ({size / hashed:.0f} MiB/s)")
    print(f"same decisions: {same}")


if __name__ == "__main__":
    main()
