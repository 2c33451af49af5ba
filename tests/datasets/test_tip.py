"""Threat-image projection: placement stays inside the image, masks match pixels, inputs validate."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.errors import InputError
from datasets.tip import ObjectPatch, TipConfig, project


def _solid_patch(value: tuple[int, int, int], size: int = 10) -> ObjectPatch:
    rgb = np.empty((size, size, 3), dtype=np.uint8)
    rgb[:] = value
    return ObjectPatch(name="block", rgb=rgb, alpha=np.ones((size, size), dtype=np.float32))


def _raw(alpha_shape: tuple[int, int], alpha_value: float) -> ObjectPatch:
    return ObjectPatch("p", np.zeros((4, 4, 3), np.uint8), np.full(alpha_shape, alpha_value, np.float32))


def _background(value: int = 40, shape: tuple[int, int] = (64, 80)) -> np.ndarray:
    return np.full((*shape, 3), value, dtype=np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_unrotated_opaque_block_lands_inside_with_exact_pixels(seed: int) -> None:
    cfg = TipConfig(scale_range=(0.25, 0.25), max_rotation_deg=0.0, brightness_match=0.0)
    background = _background()
    out = project(background, _solid_patch((200, 10, 90)), rng=np.random.default_rng(seed), config=cfg)
    x0, y0, x1, y1 = out.box
    # 0.25 * min(64, 80) = 16 px square.
    assert (x1 - x0, y1 - y0) == (16, 16)
    assert x0 >= 0 and x1 <= 80 and y0 >= 0 and y1 <= 64
    assert out.mask.sum() == 16 * 16
    assert out.mask[y0:y1, x0:x1].all()
    # Interior pixels are the object's, everything outside the box is untouched background.
    assert out.image[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].reshape(-1, 3).tolist() == [[200, 10, 90]] * 144
    outside = np.ones((64, 80), dtype=bool)
    outside[y0:y1, x0:x1] = False
    assert (out.image[outside] == 40).all()
    assert background.max() == 40  # the input is not modified


def test_full_brightness_match_moves_object_luma_to_background() -> None:
    cfg = TipConfig(scale_range=(0.25, 0.25), max_rotation_deg=0.0, brightness_match=1.0, max_gain=4.0)
    out = project(_background(50), _solid_patch((100, 100, 100)), rng=np.random.default_rng(0), config=cfg)
    x0, y0, x1, y1 = out.box
    assert out.image[y0 + 2, x0 + 2].tolist() == [50, 50, 50]


def test_gain_is_clipped() -> None:
    cfg = TipConfig(scale_range=(0.25, 0.25), max_rotation_deg=0.0, brightness_match=1.0, max_gain=2.0)
    out = project(_background(10), _solid_patch((100, 100, 100)), rng=np.random.default_rng(0), config=cfg)
    x0, y0, _, _ = out.box
    assert out.image[y0 + 2, x0 + 2].tolist() == [50, 50, 50]


def test_same_seed_same_projection_and_rotation_keeps_object_inside() -> None:
    patch = _solid_patch((250, 250, 250), size=30)
    cfg = TipConfig(scale_range=(0.9, 1.0), max_rotation_deg=180.0)
    a = project(_background(), patch, rng=np.random.default_rng(7), config=cfg)
    b = project(_background(), patch, rng=np.random.default_rng(7), config=cfg)
    assert np.array_equal(a.image, b.image) and a.box == b.box
    x0, y0, x1, y1 = a.box
    assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 64
    assert a.scale <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"scale_range": (0.0, 0.2)}, "scale_range"),
        ({"scale_range": (0.4, 0.2)}, "scale_range"),
        ({"max_rotation_deg": 200.0}, "max_rotation_deg"),
        ({"brightness_match": 1.5}, "brightness_match"),
        ({"max_gain": 0.5}, "max_gain"),
    ],
)
def test_config_validates(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        TipConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("background", "patch", "fragment"),
    [
        (np.zeros((8, 8), dtype=np.uint8), _solid_patch((1, 2, 3)), "background must be"),
        (np.zeros((8, 8, 3), dtype=np.float32), _solid_patch((1, 2, 3)), "background must be"),
        (_background(), _raw((5, 4), 1.0), "alpha shape"),
        (_background(), _raw((4, 4), 0.0), "nothing to"),
    ],
)
def test_bad_inputs_raise(background: np.ndarray, patch: ObjectPatch, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        project(background, patch, rng=np.random.default_rng(0))
