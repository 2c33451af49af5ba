"""What each fused signal ranks on its own, and what each fusion rule makes of them, on one model.

Scores a trained model's test split once (``ImageScorer.raw_outputs``, no maps) and prints, for the
image AUROC and the TNR at 1 % FNR, the model's own score, the score under each rule of
``models.fusion.FUSION_RULES`` with the model's calibrations and gates (and, when the patch head is
in use, each rule with it switched off, as a strict gate would leave it), and each signal alone
(one-class, type head, patch head; an image's value is the max over its views). For a model that
reads the one-class score and the patch head at one spot (``DetectorConfig.co_located``), every row
uses their values at that spot, as the model does. The figures of ``bench/README.md`` session 10
come from it. Run::

    .venv/bin/python -m bench.fusion_signals --model MODEL_DIR --data DATA/vacuum_pack
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datasets.decode import decode_image  # noqa: E402
from datasets.mvtec import read_mvtec  # noqa: E402
from models.artifact import load_model  # noqa: E402
from models.fusion import FUSION_RULES, OFF, SIGNALS, Fusion  # noqa: E402
from models.predictor import ArtifactPredictor  # noqa: E402
from pipeline.metrics import image_auroc, tnr_at_fnr  # noqa: E402


def signal_table(predictor: ArtifactPredictor, data: Path) -> list[tuple[str, float | None, float | None]]:
    """(name, image AUROC, TNR at 1 % FNR) for the model's score, each fusion rule, each signal."""
    det, scorer = predictor.detector, predictor.scorer
    items = read_mvtec(data).split("test")
    labels = np.array([item.anomaly_type is not None for item in items])
    images = [decode_image(str(item.path)).pixels for item in items]
    # the model's own score precision: a model trained before float64 scores keeps float32
    dtype = det.fusion.score_dtype
    rules = {f"fusion {rule}": Fusion(rule, score_dtype=dtype) for rule in FUSION_RULES}
    for fusion in rules.values():
        fusion.load_state_dict(det.fusion.state_dict())
    if float(det.fusion.slope[2]) > 0:
        # the same model as its gate would have left it without the patch head (a strict tie-break)
        for rule in FUSION_RULES:
            off = Fusion(rule, score_dtype=dtype)
            off.load_state_dict(det.fusion.state_dict())
            off.slope[2], off.bias[2] = OFF
            rules[f"fusion {rule}, patch head off"] = off
    columns: dict[str, list[float]] = {"the model's score": []}
    columns.update({name: [] for name in rules})
    columns.update({f"{name} alone": [] for name in SIGNALS})
    with torch.inference_mode():
        for raw, _, _ in scorer.raw_outputs(images, maps=False):
            args = (raw.score_raw, raw.type_logits, raw.patch_score)
            columns["the model's score"].append(float(det.fusion(*args).max()))
            for name, fusion in rules.items():
                columns[name].append(float(fusion(*args).max()))
            signals = det.fusion.signals(*args)
            for k, name in enumerate(SIGNALS):
                columns[f"{name} alone"].append(float(signals[:, k].max()))
    rows = []
    for name, values in columns.items():
        scores = np.array(values)
        rows.append((name, image_auroc(scores, labels).value, tnr_at_fnr(scores, labels, 0.01).value))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained MODEL_DIR")
    parser.add_argument("--data", type=Path, required=True, help="its MVTec-layout dataset (test/ is scored)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    predictor = load_model(args.model, runtime="torch")
    fusion = predictor.detector.fusion
    used = ", ".join(name for name, a in zip(SIGNALS, fusion.slope.tolist(), strict=True) if a > 0)
    spot = "; one-class and patch head read at one spot" if predictor.detector.config.co_located else ""
    print(f"{predictor.model_id}: fusion {fusion.rule}, signals in use: {used}{spot}")
    print("| score | image AUROC | TNR at 1 % FNR |\n|---|---|---|")
    for name, auroc, tnr in signal_table(predictor, args.data):
        # None where the test split lacks a class: no ranking to measure
        shown = ["n/a" if v is None else f"{v:.{d}f}" for v, d in ((auroc, 4), (tnr, 3))]
        print(f"| {name} | {shown[0]} | {shown[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
