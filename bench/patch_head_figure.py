"""The picture of the patch head in the README: the heatmaps an officer sees, without and with it.

Trains two models on the same ``vacuum_pack`` data (``patch_head=False`` and the defaults) and, for
one test image of each anomaly type, draws the image with its ground-truth outline and each model's
anomaly map as ``load_model(...).predict`` returns it (the map the review page and the scorer show).
The image of each type is picked without looking at the new model: the one at the median of the old
model's scores within that type. The caption ranks the image's score among all good test images.
Run::

    .venv/bin/python -m bench.patch_head_figure --data DATA/vacuum_pack --out docs/img/patch_head.png

where ``DATA`` is a ``clearsight data synth --train-anomalous 8`` folder (the README's figure:
development seed 11, 150 normals, puncture held out).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figure_sheet import caption, score_rank_caption, write_sheet  # noqa: E402
from datasets.decode import decode_image  # noqa: E402
from datasets.mvtec import read_mvtec  # noqa: E402
from models.artifact import load_model  # noqa: E402
from models.tiling import to_rgb_float  # noqa: E402
from pipeline.train import TrainConfig, train_model  # noqa: E402

MODELS = {"without the patch head": {"patch_head": False}, "with the patch head": {}}
SIDE = 256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a vacuum_pack MVTec folder with masks")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    items = read_mvtec(args.data).split("test")
    images = [decode_image(i.path).pixels for i in items]
    good = np.array([i.label == "good" for i in items])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, overrides) in enumerate(MODELS.items()):
            config = TrainConfig(threads=args.threads, cargo_type="vacuum_pack", **overrides)  # type: ignore[arg-type]
            trained = train_model(args.data, Path(tmp) / str(n), config=config)
            preds = load_model(trained.out_dir).predict(images)
            results[name] = (np.array([p.score for p in preds]), [p.anomaly_map for p in preds])

    old_scores = next(iter(results.values()))[0]
    pick = []
    for kind in sorted({str(i.anomaly_type) for i in items if i.label != "good"}):
        idx = np.array([n for n, i in enumerate(items) if i.anomaly_type == kind])
        pick.append(int(idx[np.argsort(old_scores[idx])[len(idx) // 2]]))
    rows = []
    for i in pick:
        rgb = np.ascontiguousarray((to_rgb_float(images[i]) * 255).astype(np.uint8))
        cells = [cv2.resize(rgb, (SIDE, SIDE), interpolation=cv2.INTER_AREA)]
        mask_path = items[i].mask_path
        if mask_path is not None:
            mask = (to_rgb_float(decode_image(mask_path).pixels)[..., 0] > 0.5).astype(np.uint8)
            mask = cv2.resize(mask, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(cells[0], contours, -1, (255, 0, 255), 1, cv2.LINE_AA)
        caption(cells[0], str(items[i].anomaly_type), bold=True)
        for scores, maps in results.values():
            m = cv2.resize(maps[i], (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
            heat = cv2.applyColorMap((m.clip(0, 1) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1]
            cell = (0.55 * heat + 0.45 * cells[0]).astype(np.uint8)
            score_rank_caption(cell, scores, good, i)
            cells.append(cell)
        rows.append(cells)
    write_sheet(args.out, rows, ("image (defect outlined)", *(f"anomaly map, {k}" for k in MODELS)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
