"""read_mvtec: the layout, its validation messages, masks, ordering and counts."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from datasets_test_images import REAL_ORE, encode, encode_cv2
from PIL import Image

from datasets.errors import DatasetFormatError, UnsafePathError
from datasets.mvtec import DatasetItem, read_defect_mask, read_mvtec

PNG_8x6 = encode(np.zeros((6, 8), np.uint8), "PNG")
PNG_4x4 = encode(np.zeros((4, 4), np.uint8), "PNG")

BASE = {
    "train/good/000.png": PNG_8x6,
    "train/good/001.png": PNG_8x6,
    "train/crack/007.png": PNG_8x6,
    "test/good/000.png": PNG_8x6,
    "test/crack/000.png": PNG_8x6,
    "test/crack/001.jpg": encode(np.zeros((6, 8, 3), np.uint8), "JPEG"),
    "test/hole/000.png": PNG_8x6,
    "ground_truth/crack/000_mask.png": PNG_8x6,
    "ground_truth/crack/007_mask.png": PNG_8x6,
    "license.txt": b"root-level files are not the layout's business",
    "test/.DS_Store": b"ignored",
    "test/crack/._000.png": b"macOS resource fork, ignored",
    "train/good/Thumbs.db": b"ignored",
}


def _build(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    return _build(tmp_path / "bottle", BASE)


def test_reads_items_in_order_with_masks(dataset_root: Path) -> None:
    ds = read_mvtec(dataset_root)
    root = dataset_root.resolve()
    assert ds.root == root
    assert ds.items == (
        DatasetItem(root / "train/good/000.png", "good", None, None, "train"),
        DatasetItem(root / "train/good/001.png", "good", None, None, "train"),
        DatasetItem(
            root / "train/crack/007.png",
            "anomalous",
            "crack",
            root / "ground_truth/crack/007_mask.png",
            "train",
        ),
        DatasetItem(root / "test/good/000.png", "good", None, None, "test"),
        DatasetItem(
            root / "test/crack/000.png",
            "anomalous",
            "crack",
            root / "ground_truth/crack/000_mask.png",
            "test",
        ),
        DatasetItem(root / "test/crack/001.jpg", "anomalous", "crack", None, "test"),
        DatasetItem(root / "test/hole/000.png", "anomalous", "hole", None, "test"),
    )


def test_queries(dataset_root: Path) -> None:
    ds = read_mvtec(dataset_root)
    assert [i.path.name for i in ds.split("train")] == ["000.png", "001.png", "007.png"]
    assert ds.anomaly_types() == ["crack", "hole"]
    assert ds.anomaly_types("train") == ["crack"]
    assert ds.counts() == {"train": {"good": 2, "crack": 1}, "test": {"good": 1, "crack": 2, "hole": 1}}
    with pytest.raises(DatasetFormatError, match=r"^unknown split 'val' \(accepted: train, test\)$"):
        ds.split("val")


def test_train_only_dataset(tmp_path: Path) -> None:
    ds = read_mvtec(_build(tmp_path / "c", {"train/good/a.png": PNG_8x6}))
    assert ds.counts() == {"train": {"good": 1}}
    assert ds.split("test") == []


CASES = [
    (
        "no-train-good",
        {k: v for k, v in BASE.items() if not k.startswith("train/good")},
        "{root}: missing {root}/train/good (expected the MVTec AD layout: ROOT/train/good/, ",
    ),
    (
        "empty-class",
        BASE | {"test/scratch/.keep": b""},
        "{root}/test/scratch: empty folder, no images "
        "(accepted extensions: .bmp, .jfif, .jpe, .jpeg, .jpg, .png, .tif, .tiff, .webp)",
    ),
    (
        "empty-split",
        {"train/good/a.png": PNG_8x6, "test/.DS_Store": b""},
        "{root}/test: empty split, no class folders",
    ),
    (
        "stray-file",
        BASE | {"test/crack/notes.txt": b"x", "test/crack/x.gif": b"x"},
        "{root}/test/crack: notes.txt, x.gif are not an image (accepted extensions: ",
    ),
    (
        "file-in-split",
        BASE | {"train/000.png": PNG_8x6},
        "{root}/train/000.png: unexpected file in a split folder (images go in {root}/train/<class>/)",
    ),
    (
        "nested-folder",
        BASE | {"test/hole/more/1.png": PNG_8x6},
        "{root}/test/hole/more: unexpected folder inside a class folder",
    ),
    (
        "shared-stem",
        BASE | {"test/hole/000.jpg": PNG_8x6},
        "{root}/test/hole: 000.jpg and 000.png share the stem '000', so a mask could not tell them apart",
    ),
    (
        "mask-without-image",
        BASE | {"ground_truth/hole/005_mask.png": PNG_8x6},
        "{root}/ground_truth/hole/005_mask.png: mask without an image "
        "(no test/hole/005.* or train/hole/005.*)",
    ),
    (
        # a mask drawn for the training image was silently given to the test image of that stem
        "mask-stem-in-train-and-test",
        BASE | {"train/crack/000.png": PNG_8x6},
        "{root}/ground_truth/crack/000_mask.png: the stem '000' names both {root}/test/crack/000.png and "
        "{root}/train/crack/000.png, so the mask could be either's; rename one of them (a stem with a mask "
        "is in test/crack or train/crack, not both)",
    ),
    (
        "mask-for-good",
        BASE | {"ground_truth/good/000_mask.png": PNG_8x6},
        "{root}/ground_truth/good: masks for good images (good images have no defects)",
    ),
    (
        "mask-name",
        BASE | {"ground_truth/hole/000.png": PNG_8x6},
        "{root}/ground_truth/hole/000.png: a mask's name must be <image stem>_mask.png",
    ),
    (
        "mask-size",
        BASE | {"ground_truth/hole/000_mask.png": PNG_4x4},
        "{root}/ground_truth/hole/000_mask.png: mask is 4x4 but its image {root}/test/hole/000.png is 8x6",
    ),
    (
        "unreadable-mask",
        BASE | {"ground_truth/hole/000_mask.png": b"not a png"},
        "unreadable ground-truth mask: {root}/ground_truth/hole/000_mask.png: not a recognised image",
    ),
    (
        # the mask is what is wrong even where its image cannot be read either
        "unreadable-mask-of-unreadable-image",
        BASE | {"test/hole/000.png": b"", "ground_truth/hole/000_mask.png": b"not a png"},
        "unreadable ground-truth mask: {root}/ground_truth/hole/000_mask.png: not a recognised image",
    ),
]


@pytest.mark.parametrize(("files", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layout_errors(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    root = _build(tmp_path / "bottle", files)
    with pytest.raises(DatasetFormatError) as info:
        read_mvtec(root)
    assert str(info.value).startswith(message.format(root=root.resolve()))


@pytest.mark.parametrize(
    "image",
    [b"garbage\n", b"", PNG_8x6[:40]],  # not an image, empty, truncated (its header intact)
    ids=["garbage", "empty", "truncated"],
)
@pytest.mark.parametrize("split", ["test", "train"])
def test_an_unreadable_image_with_a_mask_is_left_to_its_reader(
    tmp_path: Path, image: bytes, split: str
) -> None:
    """A corrupt anomalous test image with a mask stopped the whole evaluation here ("unreadable image
    or mask"); one without a mask was left out as unreadable and the rest evaluated. The image is
    listed with its mask; decoding it (evaluation's failed row, training's refusal) names it."""
    stem = "000" if split == "test" else "007"
    root = _build(tmp_path / "bottle", BASE | {f"{split}/crack/{stem}.png": image})
    ds = read_mvtec(root)
    item = next(i for i in ds.items if i.path == root.resolve() / split / "crack" / f"{stem}.png")
    assert item.mask_path == root.resolve() / "ground_truth" / "crack" / f"{stem}_mask.png"


def test_mask_size_is_not_checked_when_asked_not_to(tmp_path: Path) -> None:
    root = _build(tmp_path / "bottle", BASE | {"ground_truth/hole/000_mask.png": PNG_4x4})
    ds = read_mvtec(root, check_masks=False)
    assert ds.items[-1].mask_path == root.resolve() / "ground_truth/hole/000_mask.png"


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"does not exist or is not a folder$"):
        read_mvtec(tmp_path / "nope")


def test_parent_of_categories_is_named(tmp_path: Path) -> None:
    for category in ("screw", "bottle"):
        _build(tmp_path / "mvtec" / category, {"train/good/a.png": PNG_8x6})
    (tmp_path / "mvtec" / "readme.txt").write_text("x")
    parent = (tmp_path / "mvtec").resolve()
    with pytest.raises(DatasetFormatError) as info:
        read_mvtec(tmp_path / "mvtec")
    assert str(info.value) == (
        f"{parent} looks like a folder of 2 categories (bottle, screw), not one category: "
        f"point at one of them, e.g. {parent / 'bottle'}"
    )


def test_real_tiles_as_a_dataset(tmp_path: Path) -> None:
    root = tmp_path / "ore"
    for folder, split in (("full_ore", "train"), ("partial_edge", "test"), ("empty_belt", "test")):
        dest = root / split / "good"
        dest.mkdir(parents=True, exist_ok=True)
        for tile in sorted((REAL_ORE / folder).glob("*.png")):
            shutil.copy(tile, dest / f"{folder}_{tile.name}")
    assert read_mvtec(root).counts() == {"train": {"good": 3}, "test": {"good": 5}}


@pytest.mark.parametrize(
    ("rename", "message"),
    [
        (("test", "Test"), r"Test: folder names are lower case in the MVTec layout; rename it to test"),
        (
            ("test/good", "test/Good"),
            r"Good: folder names are lower case in the MVTec layout; rename it to good",
        ),
        # named, not the generic "missing train/good" that the required-folder check gave first
        (
            ("train/good", "train/Good"),
            r"train/Good: folder names are lower case in the MVTec layout; rename it to good",
        ),
    ],
    ids=["split", "class", "train-class"],
)
def test_layout_names_in_other_case_are_refused(
    dataset_root: Path, rename: tuple[str, str], message: str
) -> None:
    (dataset_root / rename[0]).rename(dataset_root / rename[1])
    with pytest.raises(DatasetFormatError, match=message):
        read_mvtec(dataset_root)


_MASK_8x6 = np.zeros((6, 8), np.uint8)


@pytest.mark.parametrize(
    ("name", "data", "what"),
    [
        ("001_mask.jpg", encode(_MASK_8x6, "JPEG"), "JPEG"),
        # a check of the extension passed these: JPEG under its other names, or under a lossless one
        ("001_mask.jfif", encode(_MASK_8x6, "JPEG"), "JPEG"),
        ("001_mask.jpe", encode(_MASK_8x6, "JPEG"), "JPEG"),
        ("001_mask.png", encode(_MASK_8x6, "JPEG"), "JPEG"),
        ("001_mask.webp", encode(np.dstack([_MASK_8x6] * 3), "WEBP", quality=90), "lossy WebP (VP8)"),
        # with alpha, the extended layout: VP8X and ALPH chunks come before the VP8 frame
        ("001_mask.webp", encode(np.dstack([_MASK_8x6] * 4), "WEBP", quality=90), "lossy WebP (VP8)"),
        (
            "001_mask.tif",
            encode(np.dstack([_MASK_8x6] * 3), "TIFF", compression="jpeg"),
            "JPEG-compressed TIFF",
        ),
    ],
    ids=["jpg", "jfif", "jpe", "jpeg-named-png", "webp-lossy", "webp-lossy-alpha", "tiff-jpeg"],
)
def test_a_lossy_mask_is_refused_whatever_its_name(tmp_path: Path, name: str, data: bytes, what: str) -> None:
    files = {**BASE, f"ground_truth/crack/{name}": data}
    root = _build(tmp_path / "bottle", files).resolve()
    with pytest.raises(DatasetFormatError) as info:
        read_mvtec(root)
    assert str(info.value) == (
        f"{root}/ground_truth/crack/{name}: a mask must be lossless (PNG, BMP, TIFF or lossless WebP), and "
        f"this one is {what}, which blurs its edge into pixels that read as defect"
    )


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("001_mask.webp", encode(np.dstack([_MASK_8x6] * 3), "WEBP", lossless=True)),
        ("001_mask.webp", encode(np.dstack([_MASK_8x6] * 4), "WEBP", lossless=True)),
        ("001_mask.tif", encode(_MASK_8x6, "TIFF", compression="tiff_lzw")),
        ("001_mask.bmp", encode(_MASK_8x6, "BMP")),
    ],
    ids=["webp-lossless", "webp-lossless-alpha", "tiff-lzw", "bmp"],
)
def test_a_lossless_mask_is_read_whatever_its_format(tmp_path: Path, name: str, data: bytes) -> None:
    root = _build(tmp_path / "bottle", {**BASE, f"ground_truth/crack/{name}": data}).resolve()
    item = next(i for i in read_mvtec(root).items if i.path.name == "001.jpg")
    assert item.mask_path == root / "ground_truth/crack" / name


def test_a_symlink_out_of_the_dataset_is_refused(dataset_root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "000.png").write_bytes(PNG_8x6)
    (dataset_root / "test" / "other").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(
        UnsafePathError, match=r"other/000\.png resolves to .*elsewhere/000\.png, outside the dataset"
    ):
        read_mvtec(dataset_root)


# a new held-out batch: no training images (so no mask of one either)
TEST_ONLY = {
    k: v for k, v in BASE.items() if not k.startswith("train/") and k != "ground_truth/crack/007_mask.png"
}


def test_a_test_only_folder_is_read_when_training_images_are_not_needed(tmp_path: Path) -> None:
    # evaluation reads test/ alone; training still refuses the folder
    root = _build(tmp_path / "bottle", TEST_ONLY)
    ds = read_mvtec(root, train_required=False)
    assert ds.counts() == {"test": {"good": 1, "crack": 2, "hole": 1}}
    assert ds.split("train") == []
    assert ds.items[1].mask_path == root.resolve() / "ground_truth/crack/000_mask.png"
    with pytest.raises(DatasetFormatError, match=r"missing .*bottle/train/good \(expected the MVTec AD"):
        read_mvtec(root)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        # a train/ that is there is read as the layout says, needed or not
        (
            {k: v for k, v in BASE.items() if not k.startswith("train/good")},
            "{root}: missing {root}/train/good (expected the MVTec AD layout",
        ),
        ({"ground_truth/crack/000_mask.png": PNG_8x6}, "{root}: missing {root}/test (expected the MVTec AD"),
    ],
    ids=["train-without-good", "no-test"],
)
def test_what_a_folder_read_without_training_images_still_needs(
    tmp_path: Path, files: dict[str, bytes], message: str
) -> None:
    root = _build(tmp_path / "bottle", files)
    with pytest.raises(DatasetFormatError) as info:
        read_mvtec(root, train_required=False)
    assert str(info.value).startswith(message.format(root=root.resolve()))


def test_a_parent_of_test_only_categories_is_named(tmp_path: Path) -> None:
    for category in ("screw", "bottle"):
        _build(tmp_path / "batch" / category, {"test/good/a.png": PNG_8x6})
    parent = (tmp_path / "batch").resolve()
    with pytest.raises(DatasetFormatError) as info:
        read_mvtec(tmp_path / "batch", train_required=False)
    assert str(info.value) == (
        f"{parent} looks like a folder of 2 categories (bottle, screw), not one category: "
        f"point at one of them, e.g. {parent / 'bottle'}"
    )


def test_a_test_split_in_other_case_is_named_when_training_images_are_not_needed(tmp_path: Path) -> None:
    root = _build(tmp_path / "bottle", {"Test/good/a.png": PNG_8x6})
    with pytest.raises(DatasetFormatError, match=r"Test: folder names are lower case .* rename it to test"):
        read_mvtec(root, train_required=False)


DEFECT = np.zeros((6, 8), bool)
DEFECT[1:4, 2:5] = True
_ALPHA = np.where(DEFECT, 255, 0).astype(np.uint8)
_WHITE = np.full((6, 8), 255, np.uint8)
_BLACK = np.zeros((6, 8), np.uint8)
_OPAQUE = np.full((6, 8), 255, np.uint8)


def _palette_with_transparency() -> bytes:
    """Palette PNG: index 1 opaque white where the defect is, index 0 transparent white elsewhere."""
    im = Image.fromarray(DEFECT.astype(np.uint8), "P")
    im.putpalette([255, 255, 255, 255, 255, 255])
    return encode(im, "PNG", transparency=0)


@pytest.mark.parametrize(
    "data",
    [
        encode(DEFECT.astype(np.uint8) * 255, "PNG"),  # the plain grey mask
        encode(np.dstack([DEFECT.astype(np.uint8) * 255] * 3 + [_OPAQUE]), "PNG"),  # opaque RGBA
        # a labelling tool's transparent export: white (or black) ink, the alpha is the mask
        encode(np.dstack([_WHITE] * 3 + [_ALPHA]), "PNG"),
        encode(np.dstack([_BLACK] * 3 + [_ALPHA]), "PNG"),
        encode(Image.fromarray(np.dstack([_WHITE, _ALPHA]), "LA"), "PNG"),
        encode(np.dstack([_WHITE] * 3 + [_ALPHA]), "TIFF"),
        _palette_with_transparency(),
        encode_cv2(
            np.dstack([_WHITE.astype(np.uint16) * 257] * 3 + [_ALPHA.astype(np.uint16) * 257]), ".png"
        ),
    ],
    ids=[
        "grey",
        "rgba-opaque",
        "rgba-white-on-transparent",
        "rgba-black-on-transparent",
        "la-white-on-transparent",
        "tiff-rgba-white-on-transparent",
        "palette-transparent",
        "rgba16-white-on-transparent",
    ],
)
def test_a_masks_transparent_pixels_are_background(tmp_path: Path, data: bytes) -> None:
    """A mask saved white (RGB 255) with the mask in its alpha, as labelling tools export a
    transparent background, read as defect in every pixel: its alpha was dropped."""
    path = tmp_path / "000_mask.png"
    path.write_bytes(data)
    assert np.array_equal(read_defect_mask(path), DEFECT)


_INK_ON_WHITE = np.where(DEFECT, 0, 255).astype(np.uint8)  # black ink, white where transparent


@pytest.mark.parametrize(
    "data",
    [
        encode(np.dstack([_INK_ON_WHITE] * 3 + [_ALPHA]), "PNG"),
        encode(Image.fromarray(_INK_ON_WHITE, "L"), "PNG", transparency=255),
        encode(np.dstack([_INK_ON_WHITE] * 3), "PNG", transparency=(255, 255, 255)),
    ],
    ids=["rgba", "grey-colour-key", "rgb-colour-key"],
)
def test_a_mask_reads_the_same_whether_its_transparency_is_alpha_or_a_colour_key(
    tmp_path: Path, data: bytes
) -> None:
    """Black ink on a transparent white background read right as RGBA, but inverted as a grey PNG
    whose white is keyed transparent (tRNS, as PNG optimisers store it), and all defect as RGB so
    keyed: decoding dropped the key."""
    path = tmp_path / "000_mask.png"
    path.write_bytes(data)
    assert np.array_equal(read_defect_mask(path), DEFECT)


@pytest.mark.parametrize("ink", [255, 128], ids=["white", "grey"])
def test_a_transparent_masks_alpha_is_the_mask_antialiased_edges_included(tmp_path: Path, ink: int) -> None:
    """Ink on a transparent background whose edges were antialiased (a grey rim, half transparent)
    is read whole: every drawn pixel is coloured, so the alpha draws the defect (black ink under a
    coloured rim is ambiguous, below)."""
    pixels = np.zeros((32, 32, 4), np.uint8)
    pixels[10:22, 10:22] = (128, 128, 128, 128)  # the antialiased rim
    pixels[11:21, 11:21] = (ink, ink, ink, 255)  # the ink's core
    path = tmp_path / "000_mask.png"
    path.write_bytes(encode(pixels, "PNG"))
    expected = np.zeros((32, 32), bool)
    expected[10:22, 10:22] = True
    assert np.array_equal(read_defect_mask(path), expected)


def test_a_colour_masks_transparent_border_keeps_its_colour_as_the_mask(tmp_path: Path) -> None:
    """A 0/255 colour mask whose 1-pixel border is transparent: most of it is drawn, so the colour
    says which drawn pixels are defect (taken by alpha, the black ones read as defect too)."""
    defect = np.kron(DEFECT, np.ones((4, 4), bool))  # 24 x 32: the border a small share, as in a real mask
    border = np.pad(np.full((22, 30), 255, np.uint8), 1)
    path = tmp_path / "000_mask.png"
    path.write_bytes(encode(np.dstack([defect.astype(np.uint8) * 255] * 3 + [border]), "PNG"))
    assert np.array_equal(read_defect_mask(path), defect)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("label", ["white", "one"])
def test_a_colour_mask_with_one_transparent_pixel_is_not_all_defect(
    tmp_path: Path, bits: int, label: str
) -> None:
    """An opaque black background with a white (or 0/1 label map's 1) 8x8 defect and one pixel at
    alpha 0 (a cropped or padded export) read as 4095 defect pixels of 4096, without a warning: the
    alpha alone was the mask once any pixel was transparent."""
    top = 255 if bits == 8 else 65535
    pixels = np.zeros((64, 64, 4), np.uint8 if bits == 8 else np.uint16)
    pixels[:, :, 3] = top
    pixels[20:28, 30:38, :3] = top if label == "white" else 1
    pixels[0, 0, 3] = 0
    path = tmp_path / "000_mask.png"
    path.write_bytes(encode(pixels, "PNG") if bits == 8 else encode_cv2(pixels, ".png"))
    expected = np.zeros((64, 64), bool)
    expected[20:28, 30:38] = True
    assert np.array_equal(read_defect_mask(path), expected)


def test_an_opaque_black_mask_read_by_its_alpha_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Mostly drawn and all black: the colour marks nothing, so the alpha is the mask and the black
    reads as defect: said, not silent (black may be its background, its defect left undrawn)."""
    pixels = np.zeros((1, 5, 4), np.uint8)
    pixels[0, 1:, 3] = 255
    path = tmp_path / "000_mask.png"
    path.write_bytes(encode(pixels, "PNG"))
    with caplog.at_level(logging.WARNING, logger="clearsight.datasets"):
        assert read_defect_mask(path).tolist() == [[False, True, True, True, True]]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: 4 of the mask's 5 pixels are opaque black and read as defect: no drawn pixel is coloured "
        "enough to tell the defect from them, so the alpha is the mask; if black is its background, draw "
        "the defect white, or make the background transparent"
    ]


def _ambiguous(case: str, top: int) -> np.ndarray:
    """Masks whose transparency leaves their defect ambiguous: black and coloured drawn pixels, some
    half transparent."""
    dtype = np.uint8 if top == 255 else np.uint16
    if case in ("half-transparent-defect", "half-transparent-layer"):  # the defect is the white pixel
        pixels = np.zeros((1, 4, 4), dtype)
        pixels[0, 1] = (top, top, top, top // 2)
        pixels[0, 2:, 3] = top if case == "half-transparent-defect" else top // 2
        return pixels
    pixels = np.zeros((40, 40, 4), dtype)  # black ink: the whole drawing is the defect
    yy, xx = np.mgrid[:40, :40]
    distance = np.hypot(yy - 20, xx - 20)
    pixels[distance < 15] = (0, 0, 0, top)
    if case == "rim-over-white":  # antialiased over a white matte, then the white made transparent
        pixels[(distance >= 15) & (distance < 16.5)] = (top // 2, top // 2, top // 2, top * 2 // 5)
    else:  # one faint speck beside it
        pixels[2, 2] = (top, top, top, top // 25)
    return pixels


@pytest.mark.parametrize("top", [255, 65535], ids=["8-bit", "16-bit"])
@pytest.mark.parametrize(
    "case", ["half-transparent-defect", "half-transparent-layer", "rim-over-white", "speck"]
)
def test_a_mask_whose_transparency_leaves_its_defect_ambiguous_is_refused(
    tmp_path: Path, case: str, top: int
) -> None:
    """Each rule tried read one of these wrong, silently: the black background of a half-transparent
    white defect taken for defect (3 pixels of 1), or black ink's core dropped for its light rim (164
    of 861) or for a faint speck (1 of 401). They look alike to a rule, so none is guessed."""
    path = tmp_path / "000_mask.png"
    pixels = _ambiguous(case, top)
    path.write_bytes(encode(pixels, "PNG") if top == 255 else encode_cv2(pixels, ".png"))
    with pytest.raises(DatasetFormatError, match=r"draws both black and coloured pixels, some of them half"):
        read_defect_mask(path)


def test_a_label_map_pasted_on_a_larger_transparent_canvas_reads_its_labels(tmp_path: Path) -> None:
    """Every drawn pixel opaque: a colour mask with a transparent pad, however large the pad (an edge
    tile's mask on a canvas): its black background read as defect while most of it was transparent."""
    pixels = np.zeros((40, 40, 4), np.uint8)
    pixels[:, :16] = (0, 0, 0, 255)
    pixels[10:20, 10:16] = (255, 255, 255, 255)
    path = tmp_path / "000_mask.png"
    path.write_bytes(encode(pixels, "PNG"))
    assert int(read_defect_mask(path).sum()) == 60


def _matte_ink(centre: tuple[int, int], top: int) -> np.ndarray:
    """Black ink, a disk with a 3-pixel antialiased edge, saved with binary transparency over a white
    matte (Photoshop's PNG-8 "Save for Web", a GIF): its edge blended over white and made opaque."""
    dtype = np.uint8 if top == 255 else np.uint16
    yy, xx = np.mgrid[:40, :40]
    cover = np.clip((12.5 - np.hypot(yy - centre[0], xx - centre[1])) / 3, 0, 1)
    grey = np.round(top * (1 - cover))
    return np.dstack([grey] * 3 + [np.where(cover > 0, top, 0)]).astype(dtype)


def _opaque_mixed(case: str, top: int) -> np.ndarray:
    """Masks whose drawn pixels, all opaque, are black and coloured."""
    if case in ("matte-ink", "matte-ink-to-the-edge"):
        return _matte_ink((20, 20) if case == "matte-ink" else (20, 5), top)
    dtype = np.uint8 if top == 255 else np.uint16
    pixels = np.zeros((40, 40, 4), dtype)
    if case == "hole-in-a-padded-defect":  # a ring defect whose hole is background too
        pixels[4:36, 4:36, 3] = top
        pixels[10:20, 10:20] = top
        pixels[13:17, 13:17, :3] = 0
    elif case == "pad-all-round":
        pixels[4:36, 4:36, 3] = top
        pixels[10:20, 10:16] = top
    else:  # a pad along the bottom only, the defect a crack across the whole width
        pixels[:30, :, 3] = top
        pixels[12:15, :] = top
    return pixels


@pytest.mark.parametrize("top", [255, 65535], ids=["8-bit", "16-bit"])
@pytest.mark.parametrize(
    ("case", "defect"),
    [
        ("pad-all-round", 60),
        ("crack-across-a-pad-on-one-side", 120),
        ("matte-ink", None),
        ("matte-ink-to-the-edge", None),
        ("hole-in-a-padded-defect", None),
    ],
)
def test_opaque_black_and_colour_read_as_a_padded_colour_mask_only_where_the_black_reaches_the_pad(
    tmp_path: Path, case: str, defect: int | None, top: int
) -> None:
    """Black ink saved over a white matte with binary transparency read as its grey rim alone (the
    all-opaque rule took the colour as the defect), none of its black core: its black is parted from
    the transparent area by the rim, where a padded mask's black background reaches the pad. Black
    parted so (the image's edge no pad) is refused: a padded mask's hole in its defect looks alike."""
    path = tmp_path / "000_mask.png"
    pixels = _opaque_mixed(case, top)
    path.write_bytes(encode(pixels, "PNG") if top == 255 else encode_cv2(pixels, ".png"))
    if defect is None:
        with pytest.raises(DatasetFormatError, match=r"draws black pixels, all opaque, that coloured ones"):
            read_defect_mask(path)
    else:
        assert int(read_defect_mask(path).sum()) == defect


def test_black_ink_saved_as_png8_over_a_white_matte_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "000_mask.png"
    image = Image.fromarray(_matte_ink((20, 20), 255), "RGBA").quantize(16, method=Image.Quantize.FASTOCTREE)
    path.write_bytes(encode(image, "PNG"))
    with pytest.raises(DatasetFormatError, match=r"000_mask\.png.*alpha kept \(PNG-32, no matte\)"):
        read_defect_mask(path)


def _on_a_transparent_fill(case: str, top: int) -> np.ndarray:
    """An opaque mask (black background, a white defect) rotated or scaled onto a transparent fill
    with linear interpolation (OpenCV's warpAffine, an editor's rotate-layer): the edge of its black
    background is half transparent along the fill, black; every coloured pixel is opaque."""
    dtype = np.uint8 if top == 255 else np.uint16
    opaque = np.zeros((48, 48, 4), dtype)
    opaque[:, :, 3] = top
    edge = (0, 20) if case == "defect-at-the-edge" else (20, 28)
    opaque[20:28, edge[0] : edge[1], :3] = top
    angle, scale = (0, 0.73) if case == "scaled" else (20, 0.8)
    matrix = cv2.getRotationMatrix2D((24, 24), angle, scale)
    return cv2.warpAffine(
        opaque, matrix, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


@pytest.mark.parametrize("top", [255, 65535], ids=["8-bit", "16-bit"])
@pytest.mark.parametrize(
    ("case", "read"),
    [("rotated", True), ("scaled", True), ("defect-at-the-edge", False), ("ink-and-a-speck", False)],
)
def test_a_mask_rotated_onto_a_transparent_fill_reads_its_colour(
    tmp_path: Path, case: str, read: bool, top: int
) -> None:
    """Rotated onto a transparent fill, an opaque mask was refused: its black background's edge is half
    transparent, and black and coloured with some half transparent was refused whatever was so. Where
    only black pixels are, along the fill, and no coloured one is beside it, it reads as a padded mask.
    Still refused: a defect reaching the fill (half transparent there), and black ink with a
    half-transparent edge beside an opaque white speck."""
    if case == "ink-and-a-speck":  # black ink, its antialiased edge black and half transparent
        pixels = np.zeros((40, 40, 4), np.uint8 if top == 255 else np.uint16)
        distance = np.hypot(*(np.mgrid[:40, :40] - 20))
        pixels[distance < 16.5, 3] = top * 2 // 5
        pixels[distance < 15, 3] = top
        pixels[2, 2] = top  # an opaque white speck: read as the defect, the ink was lost
    else:
        pixels = _on_a_transparent_fill(case, top)
    half = (pixels[:, :, 3] > 0) & (pixels[:, :, 3] < top)
    assert half.any()
    path = tmp_path / "000_mask.png"
    path.write_bytes(encode(pixels, "PNG") if top == 255 else encode_cv2(pixels, ".png"))
    if read:
        coloured = pixels[:, :, :3].any(axis=2) & (pixels[:, :, 3] > 0)
        assert not (half & coloured).any() and coloured.sum() > 20
        assert np.array_equal(read_defect_mask(path), coloured)
    else:
        with pytest.raises(DatasetFormatError, match=r"draws both black and coloured pixels, some of them"):
            read_defect_mask(path)


def test_a_mask_that_covers_the_whole_image_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    full, partial = tmp_path / "000_mask.png", tmp_path / "001_mask.png"
    full.write_bytes(encode(_WHITE, "PNG"))
    partial.write_bytes(encode(DEFECT.astype(np.uint8) * 255, "PNG"))
    with caplog.at_level(logging.WARNING, logger="clearsight.datasets"):
        assert read_defect_mask(full).all()
        read_defect_mask(partial)
    assert [r.getMessage() for r in caplog.records] == [
        f"{full}: the mask marks every pixel of its 8x6 as defect; a mask is 0 (or transparent) where there "
        "is no defect: check that it is not inverted or filled"
    ]


@pytest.mark.parametrize(
    ("made", "named"),
    [
        (b"train/good/bad\xff.png", "train/good/bad\\udcff.png"),
        (b"test/cr\xffack/000.png", "test/cr\\udcffack"),
        (b"test/crack/b\xe9.png", "test/crack/b\\udce9.png"),  # Latin-1, not UTF-8
        (b"ground_truth/crack/\xff_mask.png", "ground_truth/crack/\\udcff_mask.png"),
    ],
)
def test_a_name_that_is_not_utf8_is_refused_and_named_escaped(
    tmp_path: Path, made: bytes, named: str
) -> None:
    """Such a name read back with surrogates: train ran its whole fit before failing on it, with no
    model, and evaluate wrote metrics.json and half of scores.csv."""
    root = _build(tmp_path / "bottle", BASE).resolve()
    path = bytes(root) + b"/" + made
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(PNG_8x6)
    with pytest.raises(DatasetFormatError) as info:
        read_mvtec(root)
    # compared escaped: a message holding surrogates cannot be sent back from a pytest-xdist worker
    assert ascii(str(info.value)) == ascii(
        f"'{root}/{named}': the name is not UTF-8 (its bytes are shown escaped), and no model card, score "
        "table or report could name it; rename it in UTF-8"
    )


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_link_that_loops_is_an_image_for_its_reader_to_refuse(tmp_path: Path, split: str) -> None:
    """``DirEntry.is_dir`` raised on it (Errno 40) and stopped the whole evaluation; its reader
    leaves it out as unreadable (evaluation) or refuses it by name (training), as a dangling link."""
    root = _build(tmp_path / "bottle", BASE).resolve()
    os.symlink("loop.png", root / split / "good" / "loop.png")
    assert root / split / "good" / "loop.png" in [i.path for i in read_mvtec(root).items]


def test_a_link_that_loops_in_a_split_folder_is_a_stray_file(tmp_path: Path) -> None:
    root = _build(tmp_path / "bottle", BASE).resolve()
    os.symlink("loop", root / "test" / "loop")
    with pytest.raises(DatasetFormatError, match="loop: unexpected file in a split folder"):
        read_mvtec(root)
