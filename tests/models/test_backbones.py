"""Registry behaviour, weight specs, and the Lite0 weight mapping checked on real photographs."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import models.backbones  # noqa: F401  (registers the builders)
from datasets.errors import ModelError, WeightsError
from models.backbones import LITE_WEIGHTS
from models.registry import create_model, list_models, register_model
from models.weights import WeightsSpec, file_sha256, load_state_dict, resolve_weights_path


def test_list_models_names_every_family() -> None:
    assert list_models() == ["lite0", "lite1", "lite2", "resnet18", "wide_resnet50"]


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ModelError, match="'lite0' is already registered"):
        register_model("lite0")(lambda *, weights: None)


def test_unknown_model_is_refused_with_the_names() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'lite9'; registered models are \['lite0'"):
        create_model("lite9")


@pytest.mark.parametrize(
    ("source", "match"),
    [("http://example.com/w.pth", "is not accepted"), ("hub:resnet", "is not accepted")],
)
def test_weights_spec_refuses_remote_sources(source: str, match: str) -> None:
    with pytest.raises(WeightsError, match=match):
        dataclasses.replace(LITE_WEIGHTS["lite0"], source=source)


def test_hash_mismatch_is_refused() -> None:
    spec = dataclasses.replace(LITE_WEIGHTS["lite0"], sha256="0" * 64)
    with pytest.raises(WeightsError, match="expected 0000"):
        load_state_dict(spec)


def test_packaged_lite_weights_match_their_pinned_hash() -> None:
    for spec in LITE_WEIGHTS.values():
        assert file_sha256(resolve_weights_path(spec)) == spec.sha256


def test_resnet_needs_a_local_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no bundled weights"):
        create_model("resnet18")
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("resnet18", weights=tmp_path / "missing.pth")


def test_resnet_loads_a_local_safetensors_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    with pytest.warns(UserWarning, match="random initialisation"):
        source = create_model("resnet18", weights="random")
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in source.net.state_dict().items()}, str(path))
    loaded = create_model("resnet18", weights=path)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        a, b = source(x), loaded(x)
    assert [t.shape[1] for t in b] == [128, 256]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def _imagenet_probs(model: torch.nn.Module, image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.inference_mode():
        return model.classify((x - 0.5) / 0.5).softmax(-1)[0]


def test_lite0_weights_map_in_order_and_classify_photos() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    lite0 = create_model("lite0")
    coffee = _imagenet_probs(lite0, skimage_data.coffee())
    cat = _imagenet_probs(lite0, skimage_data.chelsea())
    assert int(coffee.argmax()) == 967  # espresso
    assert float(coffee[967]) > 0.8
    assert 281 <= int(cat.argmax()) <= 285  # tabby .. Egyptian cat
    assert lite0.out_channels == (40, 112)
    assert lite0.strides == (8, 16)


def test_weights_spec_is_frozen() -> None:
    spec: WeightsSpec = LITE_WEIGHTS["lite0"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.sha256 = "x"  # type: ignore[misc]


def _write(path: Path, value: float) -> None:
    tensors = {"w": torch.full((1000,), value)}
    if path.suffix == ".pth":
        torch.save(tensors, path)
    else:
        from safetensors.torch import save_file

        save_file(tensors, str(path))


def _rewrite_keeping_size_and_mtime(path: Path, value: float) -> None:
    """Rewrite ``path`` with other values at the same size, then put its mtime back: all that a
    size-and-mtime cache keys on stays the same."""
    before = path.stat()
    time.sleep(0.05)  # past the file system's timestamp tick (a few ms): the ctime moves
    _write(path, value)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize("name", ["w.safetensors", "w.pth"])
def test_a_pinned_file_rewritten_in_place_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    _write(path, 0.0)
    pinned = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = dataclasses.replace(LITE_WEIGHTS["lite0"], source=f"file:{path}", sha256=pinned)
    assert float(load_state_dict(spec)["w"].sum()) == 0.0
    _rewrite_keeping_size_and_mtime(path, 7.0)
    with pytest.raises(
        WeightsError, match=rf"has sha256 [0-9a-f]{{64}}, expected {pinned} for 'lite0-imagenet'"
    ):
        load_state_dict(spec)


def test_the_provenance_hash_follows_a_file_rewritten_in_place(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    _write(path, 0.0)
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    _rewrite_keeping_size_and_mtime(path, 7.0)
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("extra", [1, 1 << 30], ids=["one-byte-over", "a-GiB-over"])
def test_a_weights_file_past_the_size_limit_is_refused_unread(tmp_path: Path, extra: int) -> None:
    from models import weights

    path = tmp_path / "w.safetensors"
    with path.open("wb") as fh:
        fh.truncate(weights.MAX_WEIGHTS_BYTES + extra)  # sparse: nothing written to disk
    spec = dataclasses.replace(LITE_WEIGHTS["lite0"], source=f"file:{path}", sha256="0" * 64)
    with pytest.raises(
        WeightsError, match=rf"holds {weights.MAX_WEIGHTS_BYTES + extra} bytes, more than the"
    ):
        load_state_dict(spec)
