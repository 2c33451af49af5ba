"""The picture of the sharp deeper features in the README: vacuum packs whose rank changed most
when the backbone's deeper map is read cell by cell instead of averaged over 3x3 neighbours.

Trains the default vacuum-pack model on a ``vacuum_pack`` folder twice, with the deeper map pooled
(``deep_features="pooled"``, the default before session 20) and sharp (the default since), and draws
the anomalous test packs whose rank among the clean test packs rose most, then the one that fell
most. Each row: the image (defect outlined), the pooled model's anomaly map and the sharp model's;
the captions give the kind of defect (the generator's ``detail``, where the folder's ``dataset.json``
is there), each model's score and where it ranks among the clean test packs. Run::

    .venv/bin/python -m bench.sharp_figure --data DATA/vacuum_pack --out docs/img/sharp.png

where ``DATA`` is a ``clearsight data synth --train-anomalous 8`` folder (the README's figure:
development seed 13, 150 normals, puncture held out).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figure_models import figure_args, fit_each, test_split  # noqa: E402
from bench.figure_sheet import caption, heat_cell, outline_defect, write_sheet  # noqa: E402
from models.tiling import to_rgb_float  # noqa: E402

SIDE = 256
ROSE_ROWS, FELL_ROWS = 3, 1


def details(root: Path) -> dict[str, str]:
    """Test image path (relative to the cargo folder) -> the generator's ``detail`` ("fibre", "tear"),
    from the ``dataset.json`` beside a ``clearsight data synth`` cargo folder; empty without one."""
    meta = root.parent / "dataset.json"
    if not meta.is_file():
        return {}
    prefix = f"{root.name}/"
    return {
        str(item["path"]).removeprefix(prefix): str(item["detail"])
        for item in json.loads(meta.read_text())["images"]
        if item.get("detail")
    }


def main(argv: list[str] | None = None) -> int:
    args = figure_args(__doc__, "a vacuum_pack MVTec folder with masks", argv)
    items, images, good = test_split(args.data)
    runs = fit_each(
        args.data,
        {"pooled": {"deep_features": "pooled"}, "sharp": {"deep_features": "sharp"}},
        cargo_type="vacuum_pack",
        threads=args.threads,
        use=lambda predictor: predictor.predict(images),
    )
    scores = {name: np.array([p.score for p in preds]) for name, preds in runs.items()}
    detail = details(args.data)

    def rank(name: str, i: int) -> float:
        return float(np.mean(scores[name][good] < scores[name][i]))

    anomalous = [i for i in range(len(items)) if not good[i]]
    by_gain = sorted(anomalous, key=lambda i: rank("sharp", i) - rank("pooled", i))
    rows = []
    for i in by_gain[::-1][:ROSE_ROWS] + by_gain[:FELL_ROWS]:
        rgb = np.ascontiguousarray((to_rgb_float(images[i]) * 255).astype(np.uint8))
        maps = [heat_cell(rgb, runs[name][i].anomaly_map, side=SIDE) for name in runs]
        cells = [heat_cell(rgb, side=SIDE), *maps]
        outline_defect(cells[0], items[i].mask_path)
        kind = str(items[i].anomaly_type)
        relative = items[i].path.relative_to(args.data.resolve()).as_posix()
        caption(cells[0], f"{kind}: {detail[relative]}" if relative in detail else kind, bold=True)
        for cell, name in zip(cells[1:], runs, strict=True):
            caption(cell, f"{name}: {scores[name][i]:.3f}, above {rank(name, i):.0%} of clean", bottom=True)
        rows.append(cells)
    titles = ("image, defect outlined", "anomaly map, deeper map pooled", "anomaly map, deeper map sharp")
    write_sheet(args.out, rows, titles)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
