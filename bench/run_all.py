"""Run every benchmark once with its defaults, one after another, and print what each prints.

Each benchmark already measures its own baseline in the same run; this only strings them together
(``make bench``). Expect tens of minutes on two CPU cores: anomalib's coreset dominates.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS = [
    ("image decoding vs one Pillow decode + hash", ["bench.bench_decode"]),
    ("reused pictures: perceptual vs content hash", ["bench.bench_near_copies"]),
    ("audit store vs JSONL", ["bench.bench_audit"]),
    ("audit store opened with the seal key vs without", ["bench.bench_audit_open"]),
    ("a policy's version checked: policy index vs reading the trail", ["bench.bench_policy_check"]),
    ("a picture held in N shipments looked up, old record indexes vs new", ["bench.bench_picture_lookup"]),
    ("batch scorer vs naive loop", ["bench.bench_score"]),
    ("scorer memory, 1k vs 20k images", ["bench.bench_memory"]),
    ("HTTP service vs offline batches", ["bench.bench_serve"]),
    ("real ore photographs with threat-image projection", ["bench.bench_real_ore", "--baseline"]),
    ("Clearsight vs anomalib PatchCore", ["bench.bench_anomalib"]),
    ("held-out-seed synthetic quality vs the first detector", ["bench.bench_quality"]),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only the benchmarks whose module names hold NAME (repeatable), e.g. --only decode",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    chosen = [(t, m) for t, m in BENCHMARKS if not args.only or any(n in m[0] for n in args.only)]
    if not chosen:
        print(f"no benchmark's module holds {' or '.join(args.only)}; these are:", file=sys.stderr)
    if args.list or not chosen:
        for title, module in BENCHMARKS:
            print(f"{module[0]}: {title}")
        return 0 if chosen else 2
    failed = []
    for title, module in chosen:
        print(f"\n=== {title} ({' '.join(module)})", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", *module])
        print(f"=== {title}: exit {code}, {time.perf_counter() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(title)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
