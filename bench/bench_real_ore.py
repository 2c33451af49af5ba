"""Real images: Clearsight on photographs of ore on a conveyor, with threat-image projection (TIP).

Fits Clearsight on some ``full_ore`` tiles of ``/work/shared/data/real/ore_conveyor`` (CDM dataset,
CC BY 4.0 — see bench/README.md), then reports at the model's own release threshold:

* the release rate of the held-out ``full_ore`` tiles (all normal);
* the detection rate on the same held-out tiles with a real photographed object pasted in (public-domain
  cut-outs from scikit-image, see ``bench/tip.py``; random scale, rotation, position, brightness roughly
  matched), for large and for small objects, and image AUROC normal vs TIP;
* what the ``partial_edge`` and ``empty_belt`` tiles score. They are normal scenes but other views than
  the training one (belt edge, rollers, bare belt), so they are expected to score higher: a model
  trained on full ore *should* send a bare belt to an officer rather than release it as ore.

Run::

    .venv/bin/python bench/bench_real_ore.py --train 24 --threads 2 [--sheet tip.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_quality import FIRST_DETECTOR  # noqa: E402
from bench.tip import object_library  # noqa: E402
from datasets.decode import decode_image  # noqa: E402
from datasets.tip import TipConfig, project  # noqa: E402
from pipeline.metrics import image_auroc  # noqa: E402

REAL = Path("/work/shared/data/real/ore_conveyor")
SIZES = {"large": (0.15, 0.35), "small": (0.07, 0.14)}


def read_rgb(folder: Path) -> list[tuple[str, np.ndarray]]:
    """(name, (H, W, 3) uint8 RGB) for every PNG, sorted by name (the tiles are RGBA; alpha is dropped)."""
    out = []
    for path in sorted(folder.glob("*.png")):
        pixels = decode_image(path).pixels
        out.append((path.name, np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels))
    return out


def write_mvtec(root: Path, train: list[tuple[str, np.ndarray]]) -> Path:
    folder = root / "bulk_ore" / "train" / "good"
    folder.mkdir(parents=True)
    for name, rgb in train:
        cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return root / "bulk_ore"


def contact_sheet(images: list[np.ndarray], path: Path, columns: int = 8) -> None:
    rows = [
        np.concatenate(images[i : i + columns], axis=1) for i in range(0, len(images) - columns + 1, columns)
    ]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))


VARIANTS: dict[str, dict[str, Any]] = {
    "current": {},
    "baseline": FIRST_DETECTOR,
    "fine-scale": {"fine_scale": "auto"},  # the opt-in fine-scale bank, where its gate keeps it
    "fine-scale-on": {"fine_scale": "on"},  # ... whatever its gate says
    "fine-tune": {"fine_tune_steps": 600},  # backbone fine-tuned on pseudo-anomalies (opt-in)
    "in-map-pooling": {"zero_padded_pooling": False},  # the 3x3 patch average before session 8
}


def _rows(
    variant: str,
    predictor: Any,
    held: list[np.ndarray],
    tip_sets: dict[str, tuple[list[np.ndarray], list[str]]],
    views: dict[str, list[np.ndarray]],
) -> list[str]:
    """The table rows of one model: held-out normals, each TIP set, the other views."""
    release = predictor.thresholds.release

    def scores(images: list[np.ndarray]) -> np.ndarray:
        return np.array(
            [p.score for lo in range(0, len(images), 16) for p in predictor.predict(images[lo : lo + 16])]
        )

    good = scores(held)
    rows = [
        f"| {variant} | held-out full_ore (normal) | {len(good)} | released {np.mean(good < release):.1%} | "
        f"median score {np.median(good):.3f} |"
    ]
    for label, (images, names) in tip_sets.items():
        scale = SIZES[label]
        tip = scores(images)
        auroc = image_auroc(np.concatenate([good, tip]), np.r_[np.zeros(len(good)), np.ones(len(tip))]).value
        detected = tip >= release
        per_kind = ", ".join(f"{k} {np.mean(detected[np.array(names) == k]):.0%}" for k in sorted(set(names)))
        rows.append(
            f"| {variant} | TIP {label} objects {scale[0]:.2f}-{scale[1]:.2f} of the tile side "
            f"| {len(tip)} | "
            f"detected {np.mean(detected):.1%} (AUROC vs normal {auroc:.4f}) | {per_kind} |"
        )
    for view, images in views.items():
        other = scores(images)
        rows.append(
            f"| {variant} | {view} (normal, other view) | {len(other)} | "
            f"released {np.mean(other < release):.1%} | median score {np.median(other):.3f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL, help="the ore_conveyor folder")
    parser.add_argument(
        "--train", type=int, default=24, help="full_ore tiles to fit on (the rest are tested)"
    )
    parser.add_argument(
        "--per-tile", type=int, default=3, help="TIP images per held-out tile and object size"
    )
    parser.add_argument("--size", type=int, default=256, help="model input side")
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sheet", type=Path, help="write a contact sheet of the TIP images here")
    parser.add_argument(
        "--baseline", action="store_true", help="also the first detector (pad 0, no position norm)"
    )
    parser.add_argument(
        "--variant", choices=tuple(VARIANTS), action="append", help="models to fit (overrides --baseline)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from models.artifact import load_model
    from pipeline.train import TrainConfig, train_model

    full = read_rgb(args.data / "full_ore")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(full))
    train = [full[i] for i in order[: args.train]]
    held = [img for _, img in (full[i] for i in order[args.train :])]
    objects = object_library()

    # The test sets are made once, so every model is scored on the same images.
    tip_sets: dict[str, tuple[list[np.ndarray], list[str]]] = {}
    for label, scale in SIZES.items():
        cfg = TipConfig(scale_range=scale)
        tip_images, names = [], []
        for background in held:
            for _ in range(args.per_tile):
                patch = objects[int(rng.integers(len(objects)))]
                tip_images.append(project(background, patch, rng=rng, config=cfg).image)
                names.append(patch.name.split("-")[0])
        tip_sets[label] = (tip_images, names)
    views = {view: [img for _, img in read_rgb(args.data / view)] for view in ("partial_edge", "empty_belt")}

    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_mvtec(Path(tmp) / "data", train)
        default = ("current", "baseline") if args.baseline else ("current",)
        for variant in args.variant or default:
            config = TrainConfig(
                image_size=args.size, threads=args.threads, cargo_type="bulk_ore", seed=args.seed,
                **VARIANTS[variant],
            )  # fmt: skip
            start = time.perf_counter()
            result = train_model(root, Path(tmp) / variant, config=config)
            fit_s = time.perf_counter() - start
            predictor = load_model(result.out_dir)
            release = predictor.thresholds.release
            print(
                f"{variant}: fit on {len(train)} full_ore tiles in {fit_s:.1f} s; "
                f"model {predictor.model_id}; "
                f"release threshold {release:.4f} ({predictor.thresholds.method})"
            )
            lines += _rows(variant, predictor, held, tip_sets, views)
    print("\n| model | set | images | at the release threshold | notes |\n|---|---|---|---|---|")
    print("\n".join(lines))
    if args.sheet:
        contact_sheet([img for images, _ in tip_sets.values() for img in images[:8]], args.sheet)
        print(f"contact sheet: {args.sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
