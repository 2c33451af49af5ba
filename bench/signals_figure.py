"""The picture of the signals in the README: what each fused signal saw on the worst-handled images.

Trains the default model on a ``vacuum_pack`` folder and draws its three worst false alarms (the
highest-scoring clean test images) and three worst misses (the lowest-scoring anomalous ones). Each
row shows the image (the defect outlined), the one-class map and the patch head's map (the two
halves of the anomaly map the scorer and the review page show, ``Detector.signal_maps``), each map
captioned with its signal's calibrated log-odds (``Prediction.signal_log_odds``); the image is
captioned with its score and where it ranks among the clean test images. Run::

    .venv/bin/python -m bench.signals_figure --data DATA/vacuum_pack --out docs/img/signals.png

where ``DATA`` is a ``clearsight data synth --train-anomalous 8`` folder (the README's figure:
development seed 11, 150 normals, puncture held out).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figure_models import figure_args, fit_each, test_split  # noqa: E402
from bench.figure_sheet import caption, heat_cell, outline_defect, write_sheet  # noqa: E402
from models.tiling import stitch_maps, to_rgb_float  # noqa: E402
from pipeline.signal_evidence import SIGNAL_NAMES  # noqa: E402

SIDE = 256
PER_GROUP = 3


def _signals(predictor, images):  # type: ignore[no-untyped-def]
    """Per image: its prediction and its (one-class, patch head) maps at the image's own size."""
    det, scorer = predictor.detector, predictor.scorer
    preds = predictor.predict(images)
    maps = []
    with torch.inference_mode():
        for raw, rects, (h, w) in scorer.raw_outputs(images):
            halves = det.signal_maps(raw.map_raw, raw.patch_map)
            maps.append([stitch_maps(m.numpy(), rects, h, w, scorer.tiling.overlap) for m in halves])
    return preds, maps


def main(argv: list[str] | None = None) -> int:
    args = figure_args(__doc__, "a vacuum_pack MVTec folder with masks", argv)
    items, images, good = test_split(args.data)
    preds, maps = fit_each(
        args.data,
        {"default": {}},
        cargo_type="vacuum_pack",
        threads=args.threads,
        use=lambda predictor: _signals(predictor, images),
    )["default"]
    scores = np.array([p.score for p in preds])
    order = np.argsort(scores)
    false_alarms = [int(i) for i in order[::-1] if good[i]][:PER_GROUP]
    misses = [int(i) for i in order if not good[i]][:PER_GROUP]
    rows = []
    for i in false_alarms + misses:
        rgb = np.ascontiguousarray((to_rgb_float(images[i]) * 255).astype(np.uint8))
        cells = [heat_cell(rgb, side=SIDE)]
        outline_defect(cells[0], items[i].mask_path)
        kind = "clean" if good[i] else str(items[i].anomaly_type)
        caption(cells[0], f"{kind}: score {scores[i]:.3f}", bold=True)
        rank = float(np.mean(scores[good] < scores[i]))
        caption(cells[0], f"above {rank:.0%} of the clean", bottom=True)
        log_odds = preds[i].signal_log_odds or {}
        for name, amap in zip(("one_class", "patch_head"), maps[i], strict=True):
            cell = heat_cell(rgb, amap, side=SIDE)
            said = f"{log_odds[name]:+.2f}" if name in log_odds else "not fused"
            caption(cell, f"{SIGNAL_NAMES[name]} log-odds {said}", bottom=True)
            cells.append(cell)
        rows.append(cells)
    titles = ("image (defect outlined)", "one-class map", "patch-head map")
    write_sheet(args.out, rows, titles)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
