"""Peak memory of `clearsight score` on large photographs, with and without the pixel budget.

    .venv/bin/python bench/bench_large_images.py --model runs/demo/models/bulk_ore --images 40

Writes ``--images`` JPEGs of ``--width`` x ``--height`` (24 megapixels by default, a phone or DSLR
photo of a stockpile), then runs the real CLI twice on them in fresh processes: with
``--max-pixels-in-flight`` at ``--budget`` (default 400 million, the CLI's default) and with a
budget so large that only the image-count window (``2 * workers * batch_size``) bounds what is
held, as before the budget existed. It prints
each run's peak RSS (sampled every 20 ms), wall time, and the ratios between them.
Any trained model works; ``make demo`` leaves one in ``runs/demo/models``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import psutil


def write_photos(folder: Path, count: int, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 40, width // 40, 3), dtype=np.uint8)
    base = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for i in range(count):
        image = np.roll(base, i * 97, axis=1)  # each file its own bytes
        cv2.imwrite(str(folder / f"photo{i:03d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])


def run_once(
    photos: Path, model: Path, out: Path, budget: int, workers: int, batch: int
) -> tuple[float, float]:
    """(peak RSS in GiB, seconds) of one `clearsight score` run in a child process, sampled every 20 ms."""
    argv = [
        sys.executable,  # the running interpreter's clearsight, wherever its environment lies
        "-m",
        "serve.cli",
        "score",
        str(photos),
        "--model",
        str(model),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--batch-size",
        str(batch),
        "--max-pixels-in-flight",
        str(budget),
    ]
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    if child.returncode != 0:
        raise SystemExit(f"clearsight score failed with exit code {child.returncode}")
    return peak / 2**30, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--budget", type=int, default=400_000_000, help="--max-pixels-in-flight of the first arm"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        write_photos(photos, args.images, args.width, args.height)
        megapixels = args.width * args.height / 1e6
        print(
            f"{args.images} JPEGs of {args.width} x {args.height} ({megapixels:.0f} MP), "
            f"workers {args.workers}, batch {args.batch_size}"
        )
        results = {}
        for name, budget in {"budget": args.budget, "window": 10**15}.items():
            results[name] = run_once(
                photos, args.model, Path(tmp) / f"{name}.jsonl", budget, args.workers, args.batch_size
            )
            print(f"{name:>6}: peak RSS {results[name][0]:.2f} GiB, {results[name][1]:.1f} s")
        (rss_b, s_b), (rss_w, s_w) = results["budget"], results["window"]
        print(f"budget / window: peak RSS {rss_b / rss_w:.2f}x, time {s_b / s_w:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
