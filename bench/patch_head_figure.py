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
        label = str(items[i].anomaly_type)
        cv2.putText(cells[0], label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2, cv2.LINE_AA)
        for scores, maps in results.values():
            m = cv2.resize(maps[i], (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
            heat = cv2.applyColorMap((m.clip(0, 1) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1]
            cell = (0.55 * heat + 0.45 * cells[0]).astype(np.uint8)
            rank = float(np.mean(scores[good] < scores[i]))
            cv2.putText(
                cell,
                f"score above {rank:.0%} of good",
                (6, SIDE - 10),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
            cells.append(cell)
        rows.append(
            np.concatenate([np.pad(c, ((3, 3), (3, 3), (0, 0)), constant_values=24) for c in cells], 1)
        )
    head = np.full((34, rows[0].shape[1], 3), 24, np.uint8)
    for j, title in enumerate(("image (defect outlined)", *(f"anomaly map, {k}" for k in MODELS))):
        cv2.putText(
            head,
            title,
            (8 + j * (SIDE + 6), 22),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.42,
            (235, 235, 235),
            1,
            cv2.LINE_AA,
        )
    sheet = np.concatenate([head, *rows], 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
