"""The README figures' common run: their arguments, the test split, and one trained model per variant."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from datasets.decode import decode_image
from datasets.mvtec import read_mvtec
from models.artifact import load_model
from pipeline.train import TrainConfig, train_model

__all__ = ["figure_args", "fit_each", "test_split"]

T = TypeVar("T")


def figure_args(doc: str | None, data_help: str, argv: list[str] | None) -> argparse.Namespace:
    """``--data``, ``--out`` and ``--threads``; sets torch's thread count."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help=data_help)
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def test_split(root: Path) -> tuple[list[Any], list[np.ndarray], np.ndarray]:
    """The test items of an MVTec folder, their decoded pixels, and which are good."""
    items = read_mvtec(root).split("test")
    images = [decode_image(i.path).pixels for i in items]
    return items, images, np.array([i.label == "good" for i in items])


def fit_each(
    root: Path,
    models: Mapping[str, Mapping[str, Any]],
    *,
    cargo_type: str,
    threads: int,
    use: Callable[[Any], T],
) -> dict[str, T]:
    """Train one model per ``TrainConfig`` override set on ``root`` and return ``use(predictor)`` for each."""
    results: dict[str, T] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, overrides) in enumerate(models.items()):
            config = TrainConfig(threads=threads, cargo_type=cargo_type, **overrides)
            trained = train_model(root, Path(tmp) / str(n), config=config)
            results[name] = use(load_model(trained.out_dir))
    return results
