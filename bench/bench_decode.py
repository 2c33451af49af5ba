"""Cost of decoding one image: ``datasets.decode.decode_image`` against the unavoidable work, same run.

Usage::

    .venv/bin/python -m bench.bench_decode [--repeats 50]

The baseline is one Pillow decode of the same bytes plus their SHA-256 (the audit hash), which any
reader of the image must pay. ``decode_image`` adds its checks (format, pixel bound, bit depth,
channels) and the conversion to an array. The images are the real ore tiles of
``tests/fixtures/real_ore`` resized to 256 px and encoded as PNG and JPEG. Pairs are timed
interleaved and the median ratio reported, so that a busy machine slows both sides alike.
Target: under 2x the baseline. (That each image is decoded exactly once is a unit test:
``tests/datasets/test_decode.py``.)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datasets.decode import decode_image  # noqa: E402

TILES = ROOT / "tests" / "fixtures" / "real_ore"
TARGET_RATIO = 2.0


def _encoded(fmt: str) -> bytes:
    path = sorted(TILES.rglob("*.png"))[0]
    tile = cv2.resize(decode_image(path).pixels, (256, 256))
    buf = io.BytesIO()
    Image.fromarray(tile).save(buf, fmt)
    return buf.getvalue()


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(data: bytes, repeats: int) -> tuple[float, float]:
    """(median s per decode_image, median s per Pillow decode + hash), timed in interleaved pairs."""

    def baseline() -> None:
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as im:
            np.asarray(im)

    pairs = [(_timed(lambda: decode_image(data)), _timed(baseline)) for _ in range(repeats)]
    return float(np.median([p[0] for p in pairs])), float(np.median([p[1] for p in pairs]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="interleaved pairs per format")
    args = parser.parse_args(argv)
    print("| 256 px image | decode_image | Pillow decode + SHA-256 (baseline) | ratio | target |")
    print("|---|---|---|---|---|")
    for fmt in ("PNG", "JPEG"):
        ours, bare = measure(_encoded(fmt), args.repeats)
        ratio = ours / bare
        verdict = "met" if ratio < TARGET_RATIO else "NOT met"
        target = f"< x{TARGET_RATIO:.0f}: {verdict}"
        print(f"| {fmt} | {ours * 1e3:.2f} ms | {bare * 1e3:.2f} ms | x{ratio:.2f} | {target} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
