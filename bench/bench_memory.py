"""Constant memory: process RSS after 1k and after 20k images scored in one streaming run.

    .venv/bin/python bench/bench_memory.py --images 20000

Tasks come from a generator over symlinks to a few tiny PNGs (distinct paths, so each counts as an
image); a fast fake predictor (score = mean pixel) keeps the run about the scorer's own memory, not
the model's. RSS is sampled (after a gc) by the predictor as the run passes 1k images and at the end; the
figure is RSS(20k) / RSS(1k) (flat = within 10 %). The only state that grows by design is the set
of path strings done (for --resume and duplicate inputs).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import psutil

from models.inference import GOOD, Prediction, Thresholds
from pipeline.score import ImageTask, LocalEngine, ModelRouter, score_to_file

THRESHOLDS = Thresholds(release=0.5, hold=0.8, target_miss_rate=0.01, method="bench")


class FastPredictor:
    model_id = "bench-fake"
    cargo_type = "bulk_ore"
    thresholds = THRESHOLDS
    card: dict[str, str] = {}

    def __init__(self, marks: Sequence[int]) -> None:
        self.seen = 0
        self.marks = set(marks)
        self.rss: dict[int, int] = {}
        self._process = psutil.Process()

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        out = []
        for image in images:
            score = float(image.mean()) / 255.0
            out.append(
                Prediction(
                    score,
                    GOOD if score < 0.5 else "anomalous",
                    None,
                    {GOOD: 1.0},
                    np.zeros(image.shape[:2], np.float32),
                    THRESHOLDS,
                    self.model_id,
                )
            )
        before = self.seen
        self.seen += len(images)
        for mark in self.marks:
            if before < mark <= self.seen:
                gc.collect()
                self.rss[mark] = self._process.memory_info().rss
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--first", type=int, default=1_000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = []
        for i in range(8):
            path = root / f"src{i}.png"
            cv2.imwrite(str(path), np.full((args.size, args.size, 3), 30 * i, np.uint8))
            sources.append(path)
        links = root / "links"
        links.mkdir()

        def tasks() -> Iterator[ImageTask]:
            for i in range(args.images):
                link = links / f"{i:06d}.png"
                link.symlink_to(sources[i % len(sources)])
                yield ImageTask(str(link), shipment_id=f"S{i // 10}", declaration={"trader_id": f"T{i % 50}"})

        predictor = FastPredictor([args.first, args.images])
        engine = LocalEngine(ModelRouter([predictor]), workers=2, batch_size=16)
        summary = score_to_file(tasks(), engine, root / "out.jsonl", heatmap_dir=root / "heat")
    first, last = predictor.rss[args.first], predictor.rss[args.images]
    print(
        f"{summary.scored} images scored at {summary.images_per_second:.0f} images/s "
        f"(heatmaps on, JSONL out); peak images held: {summary.peak_in_flight} "
        f"(bound {engine.memory_bound})"
    )
    print(f"{'after':<14} {'RSS MiB':>9}")
    print(f"{args.first:>6} images {first / 2**20:>9.1f}")
    print(f"{args.images:>6} images {last / 2**20:>9.1f}")
    print(f"ratio {last / first:.3f} ({'flat, within 10 %' if last / first <= 1.10 else 'GROWS'})")


if __name__ == "__main__":
    main()
