"""The perceptual hash: copies of a picture are near-copies of it, different pictures are not."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from datasets_test_images import REAL_ORE

from datasets.perceptual_hash import (
    BANDS,
    COARSE_BITS,
    INVERSE_TURNS,
    TURNS,
    band_values,
    coarse_part,
    fine_distance,
    hamming,
    perceptual_hash,
    perceptual_hashes,
)
from datasets.synth import render_sample

NEAR_COPY_BITS = 32  # the service's default (serve.settings)


def _near(a: str, b: str) -> bool:
    return hamming(coarse_part(a), coarse_part(b)) <= COARSE_BITS and fine_distance(a, b) <= NEAR_COPY_BITS


PHOTOS = sorted(REAL_ORE.glob("*/*.png"))


def _synthetic(cargo: str, n: int, *, first: int = 900) -> list[np.ndarray]:
    """Good renders as 8-bit colour (grey and 16-bit X-ray variants converted), so that every copy applies."""
    out = []
    for i in range(n):
        image = render_sample(cargo, "good", seed=np.random.SeedSequence(first + i), size=128).image
        if image.dtype == np.uint16:
            image = (image // 257).astype(np.uint8)
        out.append(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image)
    return out


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def _one_pixel_changed(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[0, 0] = 255 - out[0, 0]
    return out


COPIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg-q90": lambda img: _jpeg(img, 90),
    "jpeg-q60": lambda img: _jpeg(img, 60),
    "half-size": lambda img: cv2.resize(
        img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA
    ),
    "1.5x-size": lambda img: cv2.resize(img, (img.shape[1] * 3 // 2, img.shape[0] * 3 // 2)),
    "contrast-0.9": lambda img: np.clip((img.astype(np.float32) - 128) * 0.9 + 128, 0, 255).astype(np.uint8),
    "noise-sd-4": lambda img: np.clip(img + np.random.default_rng(0).normal(0, 4, img.shape), 0, 255).astype(
        np.uint8
    ),
    "one-pixel": lambda img: _one_pixel_changed(img),
    "16-bit": lambda img: img.astype(np.uint16) * 257,
}


@pytest.fixture(scope="module")
def pictures() -> list[np.ndarray]:
    photos = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in PHOTOS]
    return photos + _synthetic("bulk_ore", 4) + _synthetic("vacuum_pack", 4)


def test_the_real_photographs_are_there() -> None:
    assert len(PHOTOS) >= 8, PHOTOS


@pytest.mark.parametrize("copy", list(COPIES), ids=list(COPIES))
def test_a_copy_is_a_near_copy(pictures: list[np.ndarray], copy: str) -> None:
    pairs = [(perceptual_hash(img), perceptual_hash(COPIES[copy](img))) for img in pictures]
    assert all(_near(a, b) for a, b in pairs), [
        (hamming(a[:16], b[:16]), fine_distance(a, b)) for a, b in pairs
    ]


SAME: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "channels-swapped": lambda img: np.ascontiguousarray(img[..., ::-1]),
    "alpha-added": lambda img: np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]),
}


@pytest.mark.parametrize("form", list(SAME), ids=list(SAME))
def test_one_picture_in_another_form_hashes_alike(pictures: list[np.ndarray], form: str) -> None:
    """What a decoder may hand over for one picture: channel order, an alpha channel (a 16-bit
    version rounds otherwise when shrunk: a near-copy, above)."""
    assert [perceptual_hash(SAME[form](img)) for img in pictures] == [
        perceptual_hash(img) for img in pictures
    ]


TURNED: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as sent": lambda img: img,
    "mirrored left to right": lambda img: img[:, ::-1],
    "mirrored top to bottom": lambda img: img[::-1],
    "turned half a turn": lambda img: np.rot90(img, 2),
    "mirrored along its diagonal": lambda img: np.swapaxes(img, 0, 1),
    "turned a quarter turn clockwise": lambda img: np.rot90(img, -1),
    "turned a quarter turn anticlockwise": lambda img: np.rot90(img, 1),
    "mirrored along its other diagonal": lambda img: np.swapaxes(img[::-1, ::-1], 0, 1),
}


def test_every_turn_is_named_once_and_undone_by_its_inverse() -> None:
    assert list(TURNS) == list(TURNED)
    grid = np.arange(12).reshape(3, 4)
    for turn, undo in zip(TURNED.values(), INVERSE_TURNS, strict=True):
        assert np.array_equal(TURNED[TURNS[undo]](turn(grid)), grid)


@pytest.mark.parametrize("turn", list(TURNED), ids=list(TURNED))
def test_a_picture_turned_hashes_as_its_turned_hash_says(pictures: list[np.ndarray], turn: str) -> None:
    """The hashes of a picture's mirror images and turns are those of the picture turned so: the
    service looks a picture up with them, and so finds a copy flipped before it was sent again."""
    hashes = [perceptual_hashes(img) for img in pictures]
    assert [h[0] for h in hashes] == [perceptual_hash(img) for img in pictures]  # its own first
    turned = [perceptual_hash(np.ascontiguousarray(TURNED[turn](img))) for img in pictures]
    assert [h[TURNS.index(turn)] for h in hashes] == turned


@pytest.mark.parametrize("turn", list(TURNED)[1:], ids=list(TURNED)[1:])
def test_a_turned_copy_is_found_by_its_turned_hash_only(pictures: list[np.ndarray], turn: str) -> None:
    """A mirrored or turned copy saved again as JPEG: near the original through the copy's turned
    hash (the copy's own is no near-copy of it: a lookup needs the turns)."""
    undo = INVERSE_TURNS[TURNS.index(turn)]
    for img in pictures:
        original = perceptual_hash(img)
        copy = perceptual_hashes(_jpeg(np.ascontiguousarray(TURNED[turn](img)), 70))
        assert _near(copy[undo], original), (fine_distance(copy[undo], original), turn)
        assert not _near(copy[0], original), turn


def test_different_pictures_are_no_near_copies_turned_either(pictures: list[np.ndarray]) -> None:
    more = pictures + _synthetic("bulk_ore", 12, first=950) + _synthetic("vacuum_pack", 12, first=950)
    hashes = [perceptual_hashes(img) for img in more]
    nearest = min(
        fine_distance(turned, b[0]) for a, b in itertools.permutations(hashes, 2) for turned in a[1:]
    )
    assert nearest > NEAR_COPY_BITS + 8, nearest


def _framed(seed: int) -> np.ndarray:
    """A scanner's view: walls and a beam that never move over a faint texture of its own."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.uniform(0, 1, (128, 128)), (0, 0), 3)
    image = (texture - texture.min()) / np.ptp(texture) * 40 + 60
    image[:, :10] = image[:, -10:] = 230
    image[50:64, :] = 20
    return image.astype(np.uint8)


def test_different_pictures_are_not_near_copies(pictures: list[np.ndarray]) -> None:
    more = pictures + _synthetic("bulk_ore", 12, first=950) + _synthetic("vacuum_pack", 12, first=950)
    hashes = [perceptual_hash(img) for img in more]
    nearest = min(fine_distance(a, b) for a, b in itertools.combinations(hashes, 2))
    # a margin: most pairs lie near 128; the nearest are X-rays of one product in about one place
    assert nearest > NEAR_COPY_BITS + 8, nearest


def test_pictures_framed_alike_are_told_apart_by_the_fine_part() -> None:
    hashes = [perceptual_hash(_framed(seed)) for seed in range(40)]
    pairs = list(itertools.combinations(hashes, 2))
    coarse = sum(hamming(a[:16], b[:16]) <= COARSE_BITS for a, b in pairs)
    assert coarse > 0  # the layout alone would call some of them copies
    assert not any(_near(a, b) for a, b in pairs), min(fine_distance(a, b) for a, b in pairs)


@pytest.mark.parametrize(
    "flat",
    [
        np.zeros((40, 60), np.uint8),
        np.full((40, 60, 3), 200, np.uint8),
        np.full((16, 16, 3), 60000, np.uint16),
        np.pad(np.full((63, 64), 90, np.uint8), ((0, 1), (0, 0)), constant_values=91),  # one row off by one
        np.random.default_rng(0).integers(0, 256, (1, 500, 3), dtype=np.uint8),  # a strip
        np.random.default_rng(0).integers(0, 256, (15, 500), dtype=np.uint8),  # under 16 px a side
        np.repeat(
            np.random.default_rng(0).integers(0, 256, (1, 500), dtype=np.uint8), 400, axis=0
        ),  # stripes
        np.tile(np.arange(300, dtype=np.uint8)[None, :], (200, 1)),  # a ramp
    ],
    ids=["black", "grey-colour", "16-bit-white", "nearly-flat", "strip", "small", "stripes", "ramp"],
)
def test_a_picture_with_no_layout_to_tell_has_no_hash(flat: np.ndarray) -> None:
    """Such pictures would all hash alike (56 of 64 bits zero): only their bytes can tell a copy."""
    assert perceptual_hash(flat) is None and perceptual_hashes(flat) is None


def test_a_12_bit_x_ray_kept_in_16_bits_is_judged_on_its_own_scale() -> None:
    rng = np.random.default_rng(0)
    xray = cv2.GaussianBlur(rng.normal(1100, 40, (300, 300)), (0, 0), 8).astype(np.uint16)  # sd ~2
    assert perceptual_hash(xray) is not None


@pytest.mark.parametrize("shape", [(5,), (2, 2, 2, 2)])
def test_a_shape_that_is_no_image_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"perceptual hash of an image of shape .*: expected \(H, W\)"):
        perceptual_hash(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("phash", ["0" * 80, "f" * 80, "94e46b5a2e6d3992" + "3c" * 32])
def test_the_bands_cover_every_coarse_bit_once(phash: str) -> None:
    widths = (13, 13, 13, 13, 12)
    value = 0
    for band, width in zip(band_values(phash), widths, strict=True):
        assert 0 <= band < 1 << width
        value = value << width | band
    assert len(band_values(phash)) == BANDS and f"{value:016x}" == coarse_part(phash)


def test_hamming_counts_differing_bits() -> None:
    assert hamming("0000000000000000", "000000000000000f") == 4
    assert hamming("94e46b5a2e6d3992", "94e46b5a2e6d3992") == 0


def test_a_photograph_hashes_as_it_did() -> None:
    """Hashes are kept in the audit trail and compared with later ones: a change to how they are
    made must be a deliberate one (and the stores' likeness indexes made again)."""
    photo = REAL_ORE / "empty_belt" / "image01.png"
    assert perceptual_hash(cv2.imread(str(photo), cv2.IMREAD_COLOR)) == (
        "bdac654364999267bd87acf0652a47f164e399e9928d67b324ca926265d82cd1b4bba2446ba9d966"
    )
