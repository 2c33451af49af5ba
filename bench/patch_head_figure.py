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

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figure_models import figure_args, fit_each, test_split  # noqa: E402
from bench.figure_sheet import caption, outline_defect, score_rank_caption, write_sheet  # noqa: E402
from models.tiling import to_rgb_float  # noqa: E402

MODELS = {"without the patch head": {"patch_head": False}, "with the patch head": {}}
SIDE = 256


def main(argv: list[str] | None = None) -> int:
    args = figure_args(__doc__, "a vacuum_pack MVTec folder with masks", argv)
    items, images, good = test_split(args.data)

    def scores_and_maps(predictor):  # type: ignore[no-untyped-def]
        preds = predictor.predict(images)
        return np.array([p.score for p in preds]), [p.anomaly_map for p in preds]

    results = fit_each(args.data, MODELS, cargo_type="vacuum_pack", threads=args.threads, use=scores_and_maps)

    old_scores = next(iter(results.values()))[0]
    pick = []
    for kind in sorted({str(i.anomaly_type) for i in items if i.label != "good"}):
        idx = np.array([n for n, i in enumerate(items) if i.anomaly_type == kind])
        pick.append(int(idx[np.argsort(old_scores[idx])[len(idx) // 2]]))
    rows = []
    for i in pick:
        rgb = np.ascontiguousarray((to_rgb_float(images[i]) * 255).astype(np.uint8))
        cells = [cv2.resize(rgb, (SIDE, SIDE), interpolation=cv2.INTER_AREA)]
        outline_defect(cells[0], items[i].mask_path)
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
