"""Tiny procedural inspection images and one small trained model, shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

SIZE = 64


def texture(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """(size, size, 3) uint8 ore-like texture: smooth brown noise with dark grains."""
    base = np.zeros((size, size, 3), np.float32)
    for octave in (4, 8, 16):
        small = rng.random((octave, octave, 3)).astype(np.float32)
        base += cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC) / octave**0.3
    base /= base.max()
    colour = np.array([0.45, 0.3, 0.22], np.float32)
    img = colour * (0.6 + 0.6 * base)
    for _ in range(size // 3):
        y, x = (int(v) for v in rng.integers(0, size, 2))
        cv2.circle(img, (x, y), 1, (colour * 0.5).tolist(), -1)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def with_defect(
    img: np.ndarray, rng: np.random.Generator, kind: str, *, side: int | None = None
) -> np.ndarray:
    """A copy of ``img`` with one obvious defect: ``plastic`` (blue bar) or ``stain`` (dark disc)."""
    out = img.copy()
    h, w = out.shape[:2]
    side = side or max(4, h // 6)
    y, x = (int(v) for v in rng.integers(side, min(h, w) - side, 2))
    if kind == "plastic":
        cv2.rectangle(out, (x - side, y - side // 3), (x + side, y + side // 3), (30, 80, 230), -1)
    else:
        cv2.circle(out, (x, y), side, (20, 15, 10), -1)
    return out


def write_dataset(root: Path, *, seed: int, n_good: int, n_anomalous: int, n_test: int) -> Path:
    """An MVTec-layout folder: train/good, train/{plastic,stain} (if n_anomalous), test/{good,...}."""
    rng = np.random.default_rng(seed)

    def save(path: Path, img: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img[:, :, ::-1])

    for i in range(n_good):
        save(root / "train" / "good" / f"{i:03d}.png", texture(rng))
    for kind in ("plastic", "stain"):
        for i in range(n_anomalous):
            save(root / "train" / kind / f"{i:03d}.png", with_defect(texture(rng), rng, kind))
        for i in range(n_test):
            save(root / "test" / kind / f"{i:03d}.png", with_defect(texture(rng), rng, kind))
    for i in range(n_test):
        save(root / "test" / "good" / f"{i:03d}.png", texture(rng))
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on 14 normals and 4 + 4 labelled anomalies at 64 px (a few seconds)."""
    from pipeline.train import TrainConfig, train_model

    torch.set_num_threads(1)
    root = write_dataset(
        tmp_path_factory.mktemp("data") / "bulk_ore", seed=1, n_good=14, n_anomalous=4, n_test=6
    )
    out = tmp_path_factory.mktemp("model") / "m"
    train_model(root, out, config=TrainConfig(image_size=SIZE, coreset_ratio=0.5, seed=0, fine_scale="on"))
    return out


@pytest.fixture(scope="session")
def tiny_data_root(tiny_model_dir: Path) -> Path:
    """The dataset ``tiny_model_dir`` was trained on."""
    import json

    return Path(json.loads((tiny_model_dir / "model.json").read_text())["training"]["data_root"])


class Imaging:
    """The image helpers above, handed to tests as a fixture (tests cannot import conftest)."""

    size = SIZE
    texture = staticmethod(texture)
    with_defect = staticmethod(with_defect)
    write_dataset = staticmethod(write_dataset)


@pytest.fixture(scope="session")
def imaging() -> type[Imaging]:
    return Imaging
