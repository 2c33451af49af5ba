"""The picture of the one-spot fusion in the README: where each signal peaked, and where the fused
score is now read.

Trains the default model on a ``vacuum_pack`` folder twice, with each signal read at its own hottest
patches (``co_located=False``, the fusion before session 18) and at one spot (the default), and
draws the three clean test packs the old fusion ranked highest, then the two anomalous ones whose
rank among the clean packs rose most. Each row: the image (defect outlined) with the spot marked
(white cross), the one-class map with its own peak (cyan ring), the patch head's map with its own
peak (cyan ring); the captions give both models' scores and where they rank among the clean test
packs. Run::

    .venv/bin/python -m bench.spot_figure --data DATA/vacuum_pack --out docs/img/spot.png

where ``DATA`` is a ``clearsight data synth --train-anomalous 8`` folder (the README's figure:
development seed 11, 150 normals, puncture held out).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figure_models import figure_args, fit_each, test_split  # noqa: E402
from bench.figure_sheet import caption, heat_cell, outline_defect, write_sheet  # noqa: E402
from models.tiling import to_rgb_float  # noqa: E402

SIDE = 256
CLEAN_ROWS, ANOMALOUS_ROWS = 3, 2


def _maps_and_spots(predictor, images):  # type: ignore[no-untyped-def]
    """Per image (one view each): its score, its two signal maps, and the (row, col) in the
    model-input grid of each map's own peak and of the spot the one-spot fusion reads."""
    det, scorer = predictor.detector, predictor.scorer
    scores = [p.score for p in predictor.predict(images)]
    out = []
    with torch.inference_mode():
        for raw, _, _ in scorer.raw_outputs(images):
            one_class, patch = (m[0] for m in det.signal_maps(raw.map_raw, raw.patch_map))
            peaks = [np.unravel_index(int(m.argmax()), m.shape) for m in (one_class, patch)]
            spot = int(det.fusion.spot(raw.map_raw, raw.patch_map)[0, 0])
            peaks.append(np.unravel_index(spot, one_class.shape))
            out.append((one_class.numpy(), patch.numpy(), peaks))
    return np.array(scores), out


def _at(peak: tuple[int, int], size: int) -> tuple[int, int]:
    """A (row, col) on the model input of ``size`` px -> (x, y) on the figure cell."""
    return int((peak[1] + 0.5) * SIDE / size), int((peak[0] + 0.5) * SIDE / size)


def main(argv: list[str] | None = None) -> int:
    args = figure_args(__doc__, "a vacuum_pack MVTec folder with masks", argv)
    items, images, good = test_split(args.data)
    if any(max(img.shape[:2]) > 512 for img in images):
        raise SystemExit("this figure draws one view per image: use images of at most 512 px")
    runs = fit_each(
        args.data,
        {"own spots": {"co_located": False}, "one spot": {}},
        cargo_type="vacuum_pack",
        threads=args.threads,
        use=lambda predictor: (_maps_and_spots(predictor, images), predictor.detector.config.input_size),
    )
    (old, _), _ = runs["own spots"]
    (new, maps), size = runs["one spot"]

    def rank(scores: np.ndarray, i: int) -> float:
        return float(np.mean(scores[good] < scores[i]))

    clean = [int(i) for i in np.argsort(old)[::-1] if good[i]][:CLEAN_ROWS]
    rose = sorted((i for i in range(len(items)) if not good[i]), key=lambda i: rank(old, i) - rank(new, i))
    rows = []
    for i in clean + rose[:ANOMALOUS_ROWS]:
        rgb = np.ascontiguousarray((to_rgb_float(images[i]) * 255).astype(np.uint8))
        one_class, patch, (oc_peak, patch_peak, spot) = maps[i]
        cells = [
            heat_cell(rgb, side=SIDE),
            heat_cell(rgb, one_class, side=SIDE),
            heat_cell(rgb, patch, side=SIDE),
        ]
        outline_defect(cells[0], items[i].mask_path)
        cv2.drawMarker(cells[0], _at(spot, size), (255, 255, 255), cv2.MARKER_CROSS, 22, 2)
        for cell, peak in ((cells[1], oc_peak), (cells[2], patch_peak)):
            cv2.circle(cell, _at(peak, size), 14, (0, 255, 255), 2)
        kind = "clean" if good[i] else str(items[i].anomaly_type)
        caption(cells[0], kind, bold=True)
        caption(cells[0], f"one spot: {new[i]:.3f}, above {rank(new, i):.0%} of clean", bottom=True)
        caption(cells[1], f"own spots: {old[i]:.3f}, above {rank(old, i):.0%}", bottom=True)
        rows.append(cells)
    titles = ("image, the spot read (cross)", "one-class map, its peak", "patch-head map, its peak")
    write_sheet(args.out, rows, titles)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
