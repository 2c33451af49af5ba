"""Detection quality on the held-out-seed synthetic benchmark, against the session-1 detector.

The benchmark the models issue sets: a synthetic data set rendered with a seed not used during
development, two anomaly types held out of training (no labelled examples of them anywhere in
``train/``), and per cargo type the image AUROC and the share of good images released while at most
1 % of anomalous ones are (``tnr_at_fnr_1pct``), plus the release and miss rates at the model's own
threshold. Targets: AUROC >= 0.99 and TNR >= 0.95 per cargo type. Run::

    .venv/bin/python -m bench.bench_quality --seed 2027 --threads 2

Five models are trained per cargo type on the same files with ``pipeline.train.train_model`` and
scored with ``pipeline.evaluate.evaluate``:

* ``current``: the defaults (reflect padding 16 px, per-position distance normalisation, the patch
  head trained on the labelled anomalies' masks);
* ``fine-scale``: the defaults plus the opt-in fine-scale bank on stride-4 features, where its
  out-of-fold gate keeps it (``fine_scale="auto"``);
* ``fusion-max``: the defaults with the max of the calibrated probabilities instead of the sum of
  their log-odds (``fusion="max"``): the frozen default before session 14;
* ``no-patch-head``: the defaults without the patch head (``patch_head=False``) — the detector
  before it, to show the patch head's own share;
* ``baseline``: ``pad=0, position_norm=False, zero_padded_pooling=False, patch_head=False,
  fine_scale="off", fusion="max", deep_features="pooled"`` (:data:`FIRST_DETECTOR`) — the detector
  as first shipped;
* only when asked for with ``--variant``: ``fine-scale-on`` (the fine-scale bank kept whatever its
  gate says), ``in-map-pooling`` (the 3x3 patch average ignoring the zero padding, as before artifact
  format 5), ``fine-tune`` (600 steps of the opt-in backbone fine-tuning), ``fine-tune-max`` (the
  same with the max-fusion instead of the sum of log-odds),
  ``deep-pooled`` / ``deep-sharp`` (every backbone map averaged over 3x3 neighbours, or the deeper
  ones read cell by cell, whatever the cargo type: ``TrainConfig.deep_features``),
  ``current-512`` (the defaults at a 512 px model input), ``current-max`` (image score = max of the
  smoothed map), ``head-gate-validation`` (the type head's fusion gate judged on the validation
  split alone, as before session 16), ``head-floor-0`` (the type head kept whenever its fusion ranks
  the gate's evidence no worse, whatever its own AUROC), and for images rendered larger than the
  model input (``--size 512``) ``current-256`` (downscaled to a 256 px input) and ``tiled-256``
  (256 px tiles, not downscaled).
  At ``--size 512``, ``current`` itself runs at a 512 px input: the images' own resolution.

Besides the main table it prints, per model, the misses at its own threshold by severity third,
the weakest kinds of anomaly (the generator's ``detail``: an open seal, a fibre, a tear, ...), and
each fused signal's test AUROC alone beside the fusion gates.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datasets.mvtec import read_mvtec  # noqa: E402
from models.artifact import load_model  # noqa: E402
from pipeline.evaluate import evaluate  # noqa: E402
from pipeline.metrics import image_auroc, tnr_at_fnr  # noqa: E402
from pipeline.report import number_span  # noqa: E402
from pipeline.train import TrainConfig, train_model  # noqa: E402

CARGOS = ("bulk_ore", "vacuum_pack")
FIRST_DETECTOR: dict[str, Any] = {
    "pad": 0,
    "position_norm": False,
    "zero_padded_pooling": False,
    "patch_head": False,
    "fine_scale": "off",
    "fusion": "max",
    "deep_features": "pooled",
}
"""TrainConfig overrides that give the detector as first shipped (the benchmarks' baseline)."""

VARIANTS: dict[str, dict[str, Any]] = {
    "current": {},
    "baseline": FIRST_DETECTOR,
    # the defaults plus the fine-scale bank where its out-of-fold gate keeps it (opt-in)
    "fine-scale": {"fine_scale": "auto"},
    # the fine-scale bank whatever its gate says (only with --variant)
    "fine-scale-on": {"fine_scale": "on"},
    # the defaults with the patch features' 3x3 average over in-map neighbours only (before format 5)
    "in-map-pooling": {"zero_padded_pooling": False},
    # the backbone fine-tuned on the training split's masks and pseudo-anomalies (opt-in)
    "fine-tune": {"fine_tune_steps": 600},
    # the same fine-tuned model with the max-fusion (fine-tuned models' rule before session 10)
    "fine-tune-max": {"fine_tune_steps": 600, "fusion": "max"},
    # the defaults with the max-fusion (the frozen default's rule before session 14)
    "fusion-max": {"fusion": "max"},
    # the detector before the patch head (session 2's): the patch head's own contribution
    "no-patch-head": {"patch_head": False},
    # the 256 px images upsampled to a 512 px model input: 4x the compute, finer patch grid
    "current-512": {"image_size": 512},
    # with --size 512: the images downscaled 2x to a 256 px model input, the default's resolution
    "current-256": {"image_size": 256},
    # with --size 512: 256 px tiles at the images' own resolution, each a 256 px model input
    "tiled-256": {"image_size": 256, "tile_size": 256},
    # the type head's fusion gate judged on the validation split alone (before session 16)
    "head-gate-validation": {"head_gate_evidence": "validation"},
    # the type head kept whenever its fusion ranks the gate's evidence no worse, whatever its own AUROC
    "head-floor-0": {"min_head_auroc": 0.0},
    # the image score as the max of the smoothed map (the default is the mean of the top 10 patches)
    "current-max": {"score_reduction": "max"},
    # the type head's gate without the default's 0.003 of tolerance (before session 17)
    "head-gate-exact": {"head_gate_tolerance": 0.0},
    # each fused signal read at its own hottest patches (before session 18)
    "own-spots": {"co_located": False},
    "fine-tune-own-spots": {"fine_tune_steps": 600, "co_located": False},
    # the patch head without the labelled defects' mirror images (before session 18)
    "no-mirrors": {"patch_mirrors": False},
    # the defaults before session 18: each signal at its own spot, no mirror images
    "before-session-18": {"co_located": False, "patch_mirrors": False},
    # session 19: no offsets for grey pictures
    "no-grey-offsets": {"grey_offsets": False},
    "fine-tune-no-grey-offsets": {"fine_tune_steps": 600, "grey_offsets": False},
    # session 20: every backbone map averaged over 3x3 neighbours (vacuum packs before), or the
    # deeper maps read sharp (bulk ore, where the default keeps them pooled)
    "deep-pooled": {"deep_features": "pooled"},
    "deep-sharp": {"deep_features": "sharp"},
    "fine-tune-deep-pooled": {"fine_tune_steps": 600, "deep_features": "pooled"},
    "negatives-64": {"patch_negatives": 64, "patch_negative_share": 1.0},
    "patch-hidden-64": {"patch_hidden": 64},
    "lite1": {"backbone": "lite1"},
    "lite2": {"backbone": "lite2"},
}
DEFAULT_VARIANTS = ("current", "fine-scale", "fusion-max", "no-patch-head", "baseline")


def synthesise(out: Path, args: argparse.Namespace) -> None:
    from pipeline.cli import app, run

    code = run(
        app,
        [
            "data", "synth", "--out", str(out), "--cargo", "all", "--seed", str(args.seed),
            "--size", str(args.size), "--train-good", str(args.train_good),
            "--train-anomalous", str(args.train_anomalous), "--test-good", str(args.test_good),
            "--test-anomalous", str(args.test_anomalous), "--holdout-types", args.holdout,
        ],
    )  # fmt: skip
    if code != 0:
        raise SystemExit(f"clearsight data synth failed with exit code {code}")


def data_words(args: argparse.Namespace) -> str:
    """What the tables were measured on: the seed and held-out types rendered here, or those a
    ``--data`` folder's ``dataset.json`` records (the command line's defaults say nothing about it)."""
    data: Path | None = args.data
    if data is None:
        return f"seed {args.seed}, held out of training: {args.holdout}"
    try:
        rendered = json.loads((data / "dataset.json").read_text())["arguments"]
        return f"{data}: seed {rendered['seed']}, held out of training: {','.join(rendered['holdout_types'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{data} (no dataset.json arguments: seed and held-out types unknown)"


def fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


SEVERITY_BINS = ((0.0, 1 / 3, "low"), (1 / 3, 2 / 3, "mid"), (2 / 3, 1.01, "high"))
"""The generator draws each anomaly's severity uniformly in [0, 1]; the lowest are near invisible."""


def scored_test_images(
    cargo: str, data: Path, result: Any
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """The scored test images of ``result``: scores (N,), anomalous-or-not (N,), and each image's
    entry in the generator's ``dataset.json`` (severity, detail; ``{}`` where it has none)."""
    meta = json.loads((data / "dataset.json").read_text())
    by_path = {item["path"]: item for item in meta["images"]}
    records = [r for r in result.records if r.score is not None]
    scores = np.array([r.score for r in records])
    labels = np.array([r.label != "good" for r in records])
    return scores, labels, [by_path.get(f"{cargo}/{r.path}", {}) for r in records]


def severity_row(
    cargo: str, name: str, scored: tuple[np.ndarray, np.ndarray, list[dict[str, Any]]], release: float
) -> str:
    """Misses at the model's own threshold per severity third, and the TNR at 1 % FNR counting
    only anomalies of severity >= 1/3 (what the generator's metadata says about each test image)."""
    scores, labels, items = scored
    sev = np.array([item.get("severity") or 0.0 for item in items])
    cells = []
    for lo, hi, tag in SEVERITY_BINS:
        pick = labels & (sev >= lo) & (sev < hi)
        cells.append(
            f"{tag} {fmt(float(np.mean(scores[pick] < release)) if pick.any() else None)} ({pick.sum()})"
        )
    visible = ~labels | (sev >= 1 / 3)
    tnr = tnr_at_fnr(scores[visible], labels[visible], 0.01).value
    return f"| {cargo} | {name} | {' / '.join(cells)} | {fmt(tnr)} |"


def kind_row(
    cargo: str, name: str, scored: tuple[np.ndarray, np.ndarray, list[dict[str, Any]]], *, weakest: int = 4
) -> str:
    """Image AUROC of each drawn kind of anomaly (the generator's ``detail``: a tear or a hole, a
    fibre or a screw) against all normal test images, the ``weakest`` lowest first, with counts."""
    scores, labels, items = scored
    kinds = np.array([f"{item['anomaly_type']}/{item['detail']}" if item else "" for item in items])
    cells = []
    for kind in sorted(set(kinds[labels])):
        pick = ~labels | (kinds == kind)
        auroc = image_auroc(scores[pick], labels[pick]).value
        count = int((kinds == kind).sum())
        cells.append((1.0 if auroc is None else auroc, f"{kind} {fmt(auroc)} ({count})"))
    return f"| {cargo} | {name} | {', '.join(cell for _, cell in sorted(cells)[:weakest])} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="an existing `clearsight data synth` folder")
    parser.add_argument("--seed", type=int, default=2027, help="data seed (not used in development)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--train-good", type=int, default=150)
    parser.add_argument("--train-anomalous", type=int, default=8, help="per non-held-out type")
    parser.add_argument("--test-good", type=int, default=60)
    parser.add_argument("--test-anomalous", type=int, default=15, help="per type")
    parser.add_argument("--holdout", default="wet_patch,puncture")
    parser.add_argument("--cargo", choices=CARGOS, action="append", help="default: both")
    parser.add_argument(
        "--variant",
        choices=tuple(VARIANTS),
        action="append",
        help=f"the models to run, replacing the default set ({', '.join(DEFAULT_VARIANTS)}): name current "
        "and baseline too to keep them beside another",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows: list[str] = []
    severity_rows: list[str] = []
    interval_rows: list[str] = []
    kind_rows: list[str] = []
    gates: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            started = time.perf_counter()
            synthesise(data, args)
            print(f"synthesised seed {args.seed} in {time.perf_counter() - started:.0f} s", flush=True)
        for cargo in args.cargo or CARGOS:
            dataset = read_mvtec(data / cargo)
            for name in args.variant or DEFAULT_VARIANTS:
                kwargs = {"image_size": args.size, "threads": args.threads, **VARIANTS[name]}
                config = TrainConfig(**kwargs)
                started = time.perf_counter()
                trained = train_model(data / cargo, Path(tmp) / f"{cargo}-{name}", config=config)
                fit_s = time.perf_counter() - started
                started = time.perf_counter()
                result = evaluate(load_model(trained.out_dir), dataset)
                eval_s = time.perf_counter() - started
                mt = result.metrics
                per_type = " ".join(
                    f"{kind} {fmt(block['image_auroc'])}" for kind, block in sorted(mt["per_type"].items())
                )
                per_kind = " ".join(
                    f"{kind} {fmt(block['image_auroc'])}" for kind, block in mt["per_image_kind"].items()
                )
                n_test = mt["counts"]["images"]
                rows.append(
                    f"| {cargo} | {name} | {fmt(mt['image_auroc'])} | {fmt(mt['tnr_at_fnr_1pct'])} | "
                    f"{fmt(mt['release_rate'])} / {fmt(mt['miss_rate'])} | "
                    f"{fmt(mt['pixel_auroc'])} / {fmt(mt['pro'])} | {per_type} | {per_kind} | "
                    f"{fit_s:.0f} s / {n_test / eval_s:.1f} img/s |"
                )
                print(rows[-1], flush=True)
                ci, promise = mt["intervals"], result.promise or {}
                interval_rows.append(
                    f"| {cargo} | {name} | {fmt(mt['image_auroc'])} ({number_span(ci['image_auroc'])}) | "
                    f"{fmt(mt['tnr_at_fnr_1pct'])} ({number_span(ci['tnr_at_fnr_1pct'])}) | "
                    f"{fmt(mt['miss_rate'])} ({number_span(ci['miss_rate'])}) | "
                    f"{fmt(promise.get('miss_rate_bound'))} "
                    f"({promise.get('validation_anomalies')} anomalies) |"
                )
                scored = scored_test_images(cargo, data, result)
                severity_rows.append(severity_row(cargo, name, scored, result.thresholds.release))
                kind_rows.append(kind_row(cargo, name, scored))
                alone = ", ".join(
                    f"{signal} {fmt(block['image_auroc'])}" for signal, block in mt["per_signal"].items()
                )
                gates.append(
                    f"{cargo} {name}: each signal alone on the test set: {alone}; "
                    f"type-head gate: {trained.card['validation']['head_gate']}; "
                    f"patch-head gate: {trained.card['validation']['patch_head_gate']}; "
                    f"fine-scale gate: {trained.card['training']['fine_scale']['gate']}; "
                    f"fine-tuning: {trained.card['training']['fine_tune']}"
                )
    print(
        f"\n{data_words(args)}\n"
        "| cargo | model | image AUROC | TNR at 1 % FNR | release / miss at own threshold | "
        "pixel AUROC / PRO | AUROC per type | AUROC per picture kind | fit / evaluate |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(rows))
    print(
        "\n95 % confidence intervals (bootstrap over the test images, none for TNR under 200 anomalous "
        "images; the miss rate's exact binomial), "
        "and what the release threshold promises new anomalies like its validation ones\n"
        "| cargo | model | image AUROC | TNR at 1 % FNR | miss at own threshold | threshold's miss bound "
        "(validation anomalies) |\n|---|---|---|---|---|---|"
    )
    print("\n".join(interval_rows))
    print(
        "\nmisses at the model's own threshold by the anomaly's severity third (count), and the TNR at "
        "1 % FNR over anomalies of severity >= 1/3\n| cargo | model | miss rate: low / mid / high | "
        "TNR at 1 % FNR, severity >= 1/3 |\n|---|---|---|---|"
    )
    print("\n".join(severity_rows))
    print(
        "\nthe weakest kinds of anomaly (the generator's detail): image AUROC against all normal test "
        "images (count)\n| cargo | model | weakest kinds |\n|---|---|---|"
    )
    print("\n".join(kind_rows))
    print("\neach signal's test AUROC alone, and the fusion gates (model cards):\n" + "\n".join(gates))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
