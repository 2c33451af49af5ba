"""Pseudo-anomalies and defect transplants: what they paste, where, and their refusals."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.pseudo_anomalies import (
    PSEUDO_KINDS,
    _region_mask,
    host_key,
    make_pseudo_anomaly,
    transplant_defect,
)

S = 48


def _flat(value: float) -> np.ndarray:
    return np.full((S, S, 3), value, np.float32)


def _source() -> tuple[np.ndarray, np.ndarray]:
    """A dark image with a white 6x6 defect at rows/cols 20-25, and its mask."""
    image, mask = _flat(0.1), np.zeros((S, S), np.float32)
    image[20:26, 20:26] = 1.0
    mask[20:26, 20:26] = 1.0
    return image, mask


@pytest.mark.parametrize("kind", PSEUDO_KINDS)
def test_pseudo_anomaly_changes_the_image_under_its_mask_only(kind: str) -> None:
    rng = np.random.default_rng(3)
    image = np.random.default_rng(0).random((S, S, 3)).astype(np.float32)
    out, mask, got = make_pseudo_anomaly(image, rng, kind=kind)
    assert got == kind and out.dtype == np.float32 and mask.any()
    near = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0  # its soft edge
    changed = np.abs(out - image).max(-1) > 1e-3
    assert changed.any() and not (changed & ~near).any()


@pytest.mark.parametrize("shape", [(64, 384), (384, 64), (10, 1000), (1000, 10)])
@pytest.mark.parametrize("kind", PSEUDO_KINDS)
def test_pseudo_anomaly_fits_in_a_wide_or_tall_image(kind: str, shape: tuple[int, int]) -> None:
    # a blob sized from the area outgrew a line scan's short side: "ValueError: high - low < 0"
    image = np.random.default_rng(0).random((*shape, 3)).astype(np.float32)
    for seed in range(20):
        out, mask, got = make_pseudo_anomaly(image, np.random.default_rng(seed), kind=kind)
        assert got == kind and out.shape == image.shape and mask.shape == shape and mask.any()


@pytest.mark.parametrize(("shape", "pixels"), [((48, 48), 39), ((64, 128), 132)])
def test_the_blob_of_an_ordinary_image_is_drawn_as_before(shape: tuple[int, int], pixels: int) -> None:
    # the cap on its radii binds from about 4:1 on: below it the same seed draws the same blob
    assert int((_region_mask(*shape, np.random.default_rng(3)) > 0.5).sum()) == pixels


def test_transplant_without_shift_copies_the_defect_into_the_same_place() -> None:
    source, mask = _source()
    out, moved = transplant_defect(source, mask, _flat(0.5), np.random.default_rng(0), shift=0.0)
    np.testing.assert_array_equal(moved, mask)
    assert out.dtype == np.float32 and out.shape == (S, S, 3)
    np.testing.assert_allclose(out[20:26, 20:26], 1.0)  # the defect, opaque
    np.testing.assert_allclose(out[:10], 0.5)  # the host, untouched away from it
    # the fringe blends the source's surroundings in softly: between the host and the source
    assert 0.1 <= float(out[18, 23, 0]) < 0.5


def test_transplant_moves_the_defect_and_its_mask_together() -> None:
    source, mask = _source()
    for seed in range(5):
        out, moved = transplant_defect(source, mask, _flat(0.5), np.random.default_rng(seed), shift=0.2)
        assert moved.sum() == mask.sum()  # moved, not cut: the shift keeps it inside the image
        np.testing.assert_allclose(out[moved > 0], 1.0)
        ys, xs = np.nonzero(moved)
        assert abs(int(ys.min()) - 20) <= 0.2 * S and abs(int(xs.min()) - 20) <= 0.2 * S


@pytest.mark.parametrize(
    ("target_shape", "mask_shape", "shift", "match"),
    [
        ((S, S + 1, 3), (S, S), 0.1, r"images of one size.*target \(48, 49, 3\)"),
        ((S, S, 3), (S, S - 1), 0.1, r"mask \(48, 47\)"),
        ((S, S, 3), (S, S), 1.0, r"transplant shift 1.0 must be in \[0, 1\)"),
        ((S, S, 3), (S, S), -0.1, r"transplant shift -0.1 must be in \[0, 1\)"),
    ],
)
def test_transplant_names_what_it_refuses(
    target_shape: tuple[int, ...], mask_shape: tuple[int, int], shift: float, match: str
) -> None:
    source, _ = _source()
    with pytest.raises(ValueError, match=match):
        transplant_defect(
            source,
            np.zeros(mask_shape, np.float32),
            np.zeros(target_shape, np.float32),
            np.random.default_rng(0),
            shift=shift,
        )


@pytest.mark.parametrize(
    ("target", "hosts"),
    [
        (np.full((S, S, 3), 0.4, np.float32), True),  # grey into grey
        (np.dstack([np.full((S, S), v, np.float32) for v in (0.2, 0.4, 0.6)]), False),  # grey into colour
        (np.full((S, S + 2, 3), 0.4, np.float32), False),  # another size
    ],
)
def test_a_defect_is_transplanted_only_into_an_image_of_its_size_and_kind(
    target: np.ndarray, hosts: bool
) -> None:
    source, _ = _source()  # grey: all channels equal
    assert (host_key(source) == host_key(target)) is hosts
