"""Batch-scoring throughput: the streaming runner vs a naive loop, same model, same images, one run.

    .venv/bin/python bench/bench_score.py --images 120 --size 512 --input-size 128

The model is a real artifact (``models.artifact.save_artifact`` / ``load_model``): a Lite0-structured
PatchCore detector at ``--input-size`` with timm's random initialisation (no weights file is read;
speed does not depend on the weights' values) and a bank of real embeddings. The images are
``--size`` px JPEGs with ore-like noise, so decoding costs what a camera archive's would.

- naive: for each image, decode, ``predict([image])``, write its JSON row and flush;
- runner (threads / processes): ``score_to_file`` with a LocalEngine (decode pool of ``--workers``,
  ``--batch-size`` images per predict call, chunked fsynced writes).

Figures are images/s and the ratio to the naive loop measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from datasets.decode import DecodeLimits, decode_image
from models.artifact import load_model, save_artifact
from models.detector import DetectorConfig, build_detector
from pipeline.score import ImageTask, LocalEngine, ModelRouter, score_to_file
from pipeline.score.local_engine import Parallelism


def build_model(root: Path, input_size: int) -> Path:
    torch.manual_seed(0)
    config = DetectorConfig(
        backbone="lite0",
        input_size=input_size,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        proj_dim=64,
        bank_size=1024,
        class_names=("good", "foreign_object"),
    )
    det = build_detector(config)
    with torch.no_grad():
        patches, _ = det.embed(torch.rand(4, 3, input_size, input_size) - 0.5)
        flat = patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1])
        bank = flat[torch.randint(0, flat.shape[0], (1024,))]
        det.bank.bank.copy_(bank)
        det.bank.bank_sq.copy_(bank.pow(2).sum(1))
    card = {
        "cargo_type": "bulk_ore",
        "preprocessing": {"tiling": {"tile_size": 0, "overlap": 0}},
        "thresholds": {"release": 0.5, "hold": 0.8, "target_miss_rate": 0.01, "method": "bench"},
    }
    return save_artifact(root / "model", det.eval(), card)


def write_images(folder: Path, n: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = rng.integers(60, 200, (size // 16, size // 16, 3), dtype=np.uint8)
        image = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image.astype(np.int16) + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def naive(paths: list[Path], model_dir: Path, out: Path) -> float:
    predictor = load_model(model_dir)
    start = time.perf_counter()
    with out.open("w") as fh:
        for path in paths:
            image = decode_image(path, limits=DecodeLimits())
            (prediction,) = predictor.predict([image.pixels])
            row = {"path": str(path), "sha256": image.sha256, "score": prediction.score}
            fh.write(json.dumps(row) + "\n")
            fh.flush()
    return len(paths) / (time.perf_counter() - start)


def runner(
    paths: list[Path], model_dir: Path, out: Path, *, workers: int, batch: int, mode: Parallelism
) -> float:
    predictor = load_model(model_dir, batch_size=batch)
    engine = LocalEngine(ModelRouter([predictor]), workers=workers, batch_size=batch, parallelism=mode)
    start = time.perf_counter()
    summary = score_to_file([ImageTask(str(p)) for p in paths], engine, out, overwrite=out.exists())
    elapsed = time.perf_counter() - start
    assert summary.scored == len(paths), summary
    return len(paths) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--size", type=int, default=512, help="side of the JPEGs")
    parser.add_argument("--input-size", type=int, default=128, help="the model's input size")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_model(root, args.input_size)
        paths = write_images(root / "images", args.images, args.size)
        # Warm up both paths once (first torch call, page cache) before anything is timed.
        naive(paths[:4], model_dir, root / "warm.jsonl")
        figures = {
            "naive loop": naive(paths, model_dir, root / "naive.jsonl"),
            "runner, threads": runner(
                paths,
                model_dir,
                root / "t.jsonl",
                workers=args.workers,
                batch=args.batch_size,
                mode="threads",
            ),
            "runner, processes": runner(
                paths,
                model_dir,
                root / "p.jsonl",
                workers=args.workers,
                batch=args.batch_size,
                mode="processes",
            ),
        }
    base = figures["naive loop"]
    print(
        f"{args.images} JPEGs {args.size}px, Lite0 PatchCore at {args.input_size}px, "
        f"workers={args.workers}, batch={args.batch_size}, torch threads={args.threads}"
    )
    print(f"{'engine':<20} {'images/s':>9} {'vs naive':>9}")
    for name, rate in figures.items():
        print(f"{name:<20} {rate:>9.2f} {rate / base:>8.2f}x")


if __name__ == "__main__":
    main()
