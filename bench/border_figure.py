"""The picture of the border fix in the README: anomaly maps of the first detector and the current one.

Trains both (``pad=0, position_norm=False`` and the defaults) on the same ``bulk_ore`` training
normals, then draws, for the good test images the first detector scores highest and one anomalous
image, the image and each model's patch-distance map. Each model's maps share one colour scale (its
1st to 99.9th percentile over the shown images); the caption ranks the image's score among all good
test images. Run::

    .venv/bin/python -m bench.border_figure --data DATA/bulk_ore --out docs/img/border_fix.png

where ``DATA`` is a ``clearsight data synth`` folder (the README's figure: seed 11, 150 normals).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_quality import FIRST_DETECTOR  # noqa: E402
from bench.figure_models import figure_args, fit_each, test_split  # noqa: E402
from bench.figure_sheet import caption, score_rank_caption, write_sheet  # noqa: E402
from models.predictor import ImageScorer  # noqa: E402
from models.tiling import TilingConfig, to_rgb_float  # noqa: E402

MODELS = {
    "zero padding, raw distances": FIRST_DETECTOR,
    "reflect padding + per-position norm": {},
}
SIDE = 256


def distance_maps(predictor, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """(N, h, w) patch distances as the model scores them, and (N,) image scores."""
    det = predictor.detector
    scorer = ImageScorer(det, tiling=TilingConfig())
    x = torch.cat([scorer.views(img)[0] for img in images])
    with torch.inference_mode():
        dist = det.normalise_positions(det.distances(det.embed(x)[0]))
    scores = np.array([p.score for p in predictor.predict(images)])
    return dist.numpy(), scores


def main(argv: list[str] | None = None) -> int:
    args = figure_args(__doc__, "a bulk_ore MVTec folder", argv)
    items, images, good = test_split(args.data)
    results = fit_each(
        args.data,
        MODELS,
        cargo_type="bulk_ore",
        threads=args.threads,
        use=lambda predictor: distance_maps(predictor, images),
    )

    first_scores = next(iter(results.values()))[1]
    goods, bads = np.flatnonzero(good), np.flatnonzero(~good)
    pick = list(goods[np.argsort(-first_scores[goods])[:3]]) + [
        bads[np.argsort(first_scores[bads])[len(bads) // 3]]
    ]
    rows = []
    for i in pick:
        rgb = (to_rgb_float(images[i]) * 255).astype(np.uint8)
        cells = [cv2.resize(rgb, (SIDE, SIDE), interpolation=cv2.INTER_AREA)]
        caption(cells[0], "good" if good[i] else str(items[i].anomaly_type), bold=True)
        for dist, scores in results.values():
            lo, hi = np.percentile(dist[pick], 1), np.percentile(dist[pick], 99.9)
            m = cv2.resize(((dist[i] - lo) / (hi - lo)).clip(0, 1).astype(np.float32), (SIDE, SIDE))
            cell = cv2.applyColorMap((m * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1].copy()
            score_rank_caption(cell, scores, good, i)
            cells.append(cell)
        rows.append(cells)
    write_sheet(args.out, rows, ("image", *MODELS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
