"""The MVTec AD folder layout, extended with labelled anomalous training images.

::

    ROOT/train/good/*.png                          normal training images (required for training)
    ROOT/train/<anomaly_type>/*.png                labelled anomalous training images (optional)
    ROOT/test/good/*.png                           normal test images
    ROOT/test/<anomaly_type>/*.png                 anomalous test images
    ROOT/ground_truth/<anomaly_type>/<stem>_mask.png   pixel masks (optional)

A mask in ``ground_truth/<anomaly_type>/`` belongs to the test image of that type with the same
stem, as in MVTec AD, or to the training image of that type with that stem; a stem held by both a
test and a training image of the type is refused where it has a mask, which could be either's (the
test image was silently given a mask drawn for the training image).
Evaluation reads only ``test/``, so it reads a folder without ``train/`` (a new held-out batch);
a ``train/`` that is there is checked alike. Any image extension ``decode_image`` reads is accepted.
Hidden files (``.DS_Store``) are skipped; any other stray file is an error, so that a typo'd
extension is not silently left out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from datasets.decode import decode_image, lossy_compression, read_image_size
from datasets.errors import DatasetFormatError, ImageDecodeError, UnsafePathError
from datasets.folder import extensions_text, is_hidden, is_image_file

__all__ = ["GOOD", "SPLITS", "DatasetItem", "MvtecDataset", "read_defect_mask", "read_mvtec"]

log = logging.getLogger("clearsight.datasets")

GOOD = "good"
SPLITS: tuple[str, ...] = ("train", "test")
_MASK_SUFFIX = "_mask"
_LAYOUT = (
    "expected the MVTec AD layout: ROOT/train/good/, optional ROOT/train/<anomaly_type>/, "
    "ROOT/test/good/, ROOT/test/<anomaly_type>/, optional ROOT/ground_truth/<anomaly_type>/<stem>_mask.png"
)


class DatasetItem(NamedTuple):
    """One image of a dataset.

    Attributes:
        path: absolute path of the image.
        label: ``"good"`` or ``"anomalous"``.
        anomaly_type: the folder name for anomalous images (``"crack"``), ``None`` for good ones.
        mask_path: absolute path of the pixel mask, ``None`` when there is none.
        split: ``"train"`` or ``"test"``.
    """

    path: Path
    label: str
    anomaly_type: str | None
    mask_path: Path | None
    split: str


@dataclass(frozen=True)
class MvtecDataset:
    """A validated MVTec-layout dataset.

    ``items`` are ordered train before test, then ``good`` before the anomaly types (sorted), then
    by file name.
    """

    root: Path
    items: tuple[DatasetItem, ...]

    def split(self, name: str) -> list[DatasetItem]:
        """The items of one split (``"train"`` or ``"test"``), in dataset order."""
        _check_split(name)
        return [item for item in self.items if item.split == name]

    def anomaly_types(self, split: str | None = None) -> list[str]:
        """Sorted anomaly types present (``good`` excluded), in one split or in both."""
        if split is not None:
            _check_split(split)
        return sorted(
            {
                item.anomaly_type
                for item in self.items
                if item.anomaly_type is not None and (split is None or item.split == split)
            }
        )

    def counts(self) -> dict[str, dict[str, int]]:
        """Image counts per split and class.

        E.g. ``{"train": {"good": 209}, "test": {"good": 40, "crack": 8}}``. Splits with no
        images are left out; classes are ordered as the items are.
        """
        out: dict[str, dict[str, int]] = {}
        for item in self.items:
            per_class = out.setdefault(item.split, {})
            key = item.anomaly_type or GOOD
            per_class[key] = per_class.get(key, 0) + 1
        return out


def read_mvtec(root: str | Path, *, check_masks: bool = True, train_required: bool = True) -> MvtecDataset:
    """Read and validate an MVTec-layout folder.

    Args:
        root: the category folder (the one holding ``train/`` and ``test/``).
        check_masks: also check that every mask can be read and has its image's width and height
            (headers only; an image whose header cannot be read is not checked).
        train_required: False reads a folder without ``train/`` (evaluation reads only ``test/``),
            which must then hold ``test/``; a ``train/`` that is there still needs ``train/good``.

    Raises:
        DatasetFormatError: naming the path and the rule broken: no ``train/good`` (no ``test/``
            where ``train/`` may be absent), a parent of several categories given as root, a layout
            folder named in other case (``Test``, ``train/Good``), an empty folder, a stray file, a
            name that is not UTF-8, a mask without an image, a mask whose stem both a test and a
            training image hold, a mask for a good image, a lossy mask (by its bytes), a mask of
            another size or an unreadable one (an unreadable image, a link that loops included, is
            left to what decodes it).
    """
    root_path = Path(root).expanduser().resolve()
    _refuse_not_utf8(str(root_path))
    if not root_path.is_dir():
        raise DatasetFormatError(f"dataset root {root} does not exist or is not a folder")
    # before the required folder is looked for: a Test/ or a train/Good/ would otherwise read as
    # test/ or train/good/ missing
    _refuse_case_variants(root_path, (*SPLITS, "ground_truth"))
    for split in SPLITS:
        if (root_path / split).is_dir():
            _refuse_case_variants(root_path / split, (GOOD,))
    required = Path("train", GOOD) if train_required or (root_path / "train").exists() else Path("test")
    if not (root_path / required).is_dir():
        raise DatasetFormatError(_missing(root_path, required))

    images: dict[tuple[str, str], list[Path]] = {}
    for split in SPLITS:
        split_dir = root_path / split
        if not split_dir.exists():
            continue
        classes = _class_folders(split_dir)
        if not classes:
            raise DatasetFormatError(f"{split_dir}: empty split, no class folders ({_LAYOUT})")
        for name in classes:
            images[(split, name)] = _images_in(split_dir / name)

    masks = _read_masks(root_path, images)
    for path in [*(p for paths in images.values() for p in paths), *masks.values()]:
        # a symlinked class folder or image may point anywhere: what is read must lie in the dataset.
        # realpath, not Path.resolve: that raises on a link that loops, which is an unreadable image
        # for its reader to leave out and count, as a dangling link is
        resolved = Path(os.path.realpath(path))
        if not resolved.is_relative_to(root_path):
            raise UnsafePathError(f"{path} resolves to {resolved}, outside the dataset folder {root_path}")
    if check_masks:
        for image, mask in masks.items():
            _check_mask_size(image, mask)

    items = [
        DatasetItem(
            path=path,
            label=GOOD if name == GOOD else "anomalous",
            anomaly_type=None if name == GOOD else name,
            mask_path=masks.get(path),
            split=split,
        )
        for split in SPLITS
        for name in sorted((n for s, n in images if s == split), key=lambda n: (n != GOOD, n))
        for path in images[(split, name)]
    ]
    return MvtecDataset(root=root_path, items=tuple(items))


def _refuse_case_variants(folder: Path, names: tuple[str, ...]) -> None:
    """A folder named like a layout name in other case (``Test``, ``Good``) would be read as something
    else (a test split dropped, normal images taken for an anomaly type): refuse it by name."""
    for entry in os.scandir(folder):
        for name in names:
            if _is_folder(entry) and entry.name != name and entry.name.lower() == name:
                raise DatasetFormatError(
                    f"{entry.path}: folder names are lower case in the MVTec layout; rename it to {name}"
                )


def _is_folder(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a folder (through a link); a link that loops, or one that cannot be
    followed, is not: taken as a file, its reader reports it unreadable and leaves it out, where
    ``DirEntry.is_dir`` raised and stopped the whole evaluation."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _check_split(name: str) -> None:
    if name not in SPLITS:
        raise DatasetFormatError(f"unknown split {name!r} (accepted: {', '.join(SPLITS)})")


def _missing(root: Path, required: Path) -> str:
    """Say that ``root / required`` is missing, and name the categories when ``root`` holds several."""
    categories = sorted(
        child.name for child in root.iterdir() if child.is_dir() and (child / required).is_dir()
    )
    if categories:
        shown = ", ".join(categories[:20]) + (", ..." if len(categories) > 20 else "")
        return (
            f"{root} looks like a folder of {len(categories)} categories ({shown}), not one category: "
            f"point at one of them, e.g. {root / categories[0]}"
        )
    return f"{root}: missing {root / required} ({_LAYOUT})"


def _class_folders(split_dir: Path) -> list[str]:
    """Sub-folder names of a split; a stray file in the split folder is an error."""
    names = []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if is_hidden(entry.name):
            continue
        _refuse_not_utf8(entry.path)
        if not _is_folder(entry):
            raise DatasetFormatError(
                f"{entry.path}: unexpected file in a split folder (images go in {split_dir}/<class>/)"
            )
        names.append(entry.name)
    return names


def _refuse_not_utf8(path: str) -> None:
    """Refuse a path whose name is not UTF-8 (its bytes read back as surrogates), named with them
    escaped: no model card, score table or report can hold it, and ``train`` ran its whole fit, and
    ``evaluate`` wrote half its report, before failing on one."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise DatasetFormatError(
            f"{ascii(path)}: the name is not UTF-8 (its bytes are shown escaped), and no model card, score "
            "table or report could name it; rename it in UTF-8"
        ) from None


def _images_in(folder: Path) -> list[Path]:
    """Sorted image paths of a class folder; stray files, sub-folders and shared stems are errors."""
    found: list[Path] = []
    stray: list[str] = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if is_hidden(entry.name):
            continue
        _refuse_not_utf8(entry.path)
        if _is_folder(entry):
            raise DatasetFormatError(f"{entry.path}: unexpected folder inside a class folder")
        if is_image_file(entry.name):
            found.append(folder / entry.name)
        else:
            stray.append(entry.name)
    if stray:
        raise DatasetFormatError(
            f"{folder}: {_some(stray)} not an image (accepted extensions: {extensions_text()})"
        )
    if not found:
        raise DatasetFormatError(
            f"{folder}: empty folder, no images (accepted extensions: {extensions_text()})"
        )
    stems: dict[str, Path] = {}
    for path in found:
        if path.stem in stems:
            raise DatasetFormatError(
                f"{folder}: {stems[path.stem].name} and {path.name} share the stem {path.stem!r}, "
                "so a mask could not tell them apart"
            )
        stems[path.stem] = path
    return found


def _some(names: Iterable[str], limit: int = 5) -> str:
    listed = list(names)
    text = ", ".join(listed[:limit]) + (f" and {len(listed) - limit} more" if len(listed) > limit else "")
    return f"{text} {'is' if len(listed) == 1 else 'are'}"


def _read_masks(root: Path, images: dict[tuple[str, str], list[Path]]) -> dict[Path, Path]:
    """Pair every mask with its image: ``{image path: mask path}``."""
    gt_dir = root / "ground_truth"
    if not gt_dir.exists():
        return {}
    by_stem = {key: {p.stem: p for p in paths} for key, paths in images.items()}
    pairs: dict[Path, Path] = {}
    for name in _class_folders(gt_dir):
        if name == GOOD:
            raise DatasetFormatError(f"{gt_dir / GOOD}: masks for good images (good images have no defects)")
        for mask in _images_in(gt_dir / name):
            # judged by its bytes, not its name: JPEG named .jfif, .jpe or .png, and lossy WebP, passed
            try:
                lossy = lossy_compression(mask)
            except ImageDecodeError:
                lossy = None  # unreadable: said where the mask is read (check_masks, training, evaluation)
            if lossy is not None:
                raise DatasetFormatError(
                    f"{mask}: a mask must be lossless (PNG, BMP, TIFF or lossless WebP), and this one is "
                    f"{lossy}, which blurs its edge into pixels that read as defect"
                )
            if not mask.stem.endswith(_MASK_SUFFIX):
                raise DatasetFormatError(
                    f"{mask}: a mask's name must be <image stem>{_MASK_SUFFIX}{mask.suffix}"
                )
            stem = mask.stem[: -len(_MASK_SUFFIX)]
            test_image = by_stem.get(("test", name), {}).get(stem)
            train_image = by_stem.get(("train", name), {}).get(stem)
            if test_image is not None and train_image is not None:
                raise DatasetFormatError(
                    f"{mask}: the stem {stem!r} names both {test_image} and {train_image}, so the mask "
                    f"could be either's; rename one of them (a stem with a mask is in test/{name} or "
                    f"train/{name}, not both)"
                )
            image = test_image or train_image
            if image is None:
                raise DatasetFormatError(
                    f"{mask}: mask without an image (no test/{name}/{stem}.* or train/{name}/{stem}.*)"
                )
            pairs[image] = mask
    return pairs


def _check_mask_size(image: Path, mask: Path) -> None:
    try:
        mask_size = read_image_size(mask)
    except ImageDecodeError as exc:  # ground truth that cannot be read is the dataset's fault
        raise DatasetFormatError(f"unreadable ground-truth mask: {exc}") from exc
    try:
        image_size = read_image_size(image)
    except ImageDecodeError:
        # An unreadable image is its reader's to report, as one without a mask is: evaluation leaves
        # it out as unreadable and evaluates the rest, training refuses it by name. Raised here, one
        # corrupt anomalous test image stopped the whole evaluation.
        return
    if image_size != mask_size:
        raise DatasetFormatError(
            f"{mask}: mask is {mask_size[0]}x{mask_size[1]} but its image {image} is "
            f"{image_size[0]}x{image_size[1]}"
        )


def read_defect_mask(path: str | Path) -> np.ndarray:
    """A ground-truth mask's defect pixels, (H, W) bool at the mask's own size: any nonzero sample in
    any colour channel, at either bit depth. Training and evaluation both read masks through this, so
    that they see the same defect: a 0/1 label map is as valid as a 0/255 mask, and a 16-bit one as an
    8-bit one (read as grayscale 8-bit, a 16-bit 0/1 or 0/255 mask lost every defect pixel).

    Where the mask has alpha and some pixel is transparent (alpha 0), the transparent pixels are
    background, whatever colour they hide: a labelling tool's export of white on a transparent
    background read as all defect. Where the drawn (alpha > 0) pixels are of one kind, all black or
    all coloured, the alpha draws the defect: every drawn pixel is defect (white or black ink, its
    antialiased edge included). Where they mix black and coloured pixels and every one is opaque, the
    mask is a colour mask with a transparent pad or crop, the defect its coloured pixels, if its black
    reads as the background: some black pixel is beside a transparent one (the pad), and every
    4-connected region of black is beside one or at the image's edge (a defect across the mask parts
    the background from a pad on one side). Otherwise it is refused: black that coloured pixels part
    from the transparent area is black ink whose antialiased edge was blended over a matte and made
    opaque (a PNG-8 or GIF export; read by colour, its rim alone was kept), or a hole in a padded
    mask's defect, and they look alike. Where they mix them and some are half transparent, it is read
    so too if those are all black, its black reads as the background, and no coloured pixel is beside
    a transparent one: an opaque mask rotated or scaled onto a transparent fill, interpolation blending
    its background's edge with the fill. Otherwise it is refused: black ink with a light antialiased
    edge and a black background under a half-transparent defect look alike, and each rule tried read
    one of them wrong; an opaque coloured pixel beside the fill is drawn beside black ink whose edge is
    half transparent (a speck), not a rotated mask's, whose edge interpolation blends. A mask read by
    its alpha whose opaque black pixels cover most of it is warned about, as is a mask whose every
    pixel is defect (``clearsight.datasets`` log records): a black background would read as defect,
    and a mask saved inverted or filled reads all defect; the pixel figures would then measure nothing.

    Raises:
        ImageDecodeError: the file cannot be decoded (named).
        DatasetFormatError: its transparency leaves its defect ambiguous, as above (named).
    """
    pixels = decode_image(path, keep_alpha=True).pixels  # (H, W, 1|2|3|4), alpha last where there
    has_alpha = pixels.shape[2] in (2, 4)
    colour = np.any((pixels[:, :, :-1] if has_alpha else pixels) != 0, axis=2)
    defect = colour
    if has_alpha:
        alpha = pixels[:, :, -1]
        drawn = alpha != 0
        if not drawn.all():
            by_colour, black = drawn & colour, drawn & ~colour
            opaque = alpha == np.iinfo(pixels.dtype).max
            if by_colour.any() and black.any():
                transparent = ~drawn
                background = _black_is_background(black, transparent)
                if not np.all(opaque[drawn]) and not (
                    background and np.all(opaque[by_colour]) and not np.any(by_colour & _beside(transparent))
                ):
                    # black and coloured drawn pixels, some half transparent, and not a rotated pad's
                    # (below): black ink whose light antialiased rim is coloured, or a black background
                    # under a half-transparent defect, and every rule tried read some such export wrong
                    # (a core lost, a background taken for defect), so neither is guessed; an opaque
                    # coloured pixel beside the fill is no pad's either, but drawn beside black ink
                    # with a half-transparent edge (a speck, a white layer half erased)
                    raise DatasetFormatError(
                        f"ground-truth mask {str(path)!r} has transparent pixels and draws both black "
                        "and coloured pixels, some of them half transparent, so which are the defect "
                        "cannot be told (black ink with a light or half-transparent antialiased edge, or "
                        "a black background under a half-transparent defect); save it as an opaque "
                        "mask, the defect nonzero and the rest 0, or the defect alone on a transparent "
                        "layer"
                    )
                if not background:
                    # black parted from the transparent area by coloured pixels: black ink whose
                    # antialiased edge was blended over a matte and made opaque (a PNG-8 or GIF
                    # export), its core the defect too (read by colour, its rim alone was kept), or a
                    # hole in a padded colour mask's defect, not defect; they look alike
                    raise DatasetFormatError(
                        f"ground-truth mask {str(path)!r} has transparent pixels and draws black pixels, "
                        "all opaque, that coloured ones part from the transparent area, so which are the "
                        "defect cannot be told (black ink whose antialiased edge was blended over a matte, "
                        "as a PNG-8 or GIF export saves it, or a hole in a padded colour mask's defect); "
                        "save it as an opaque mask, the defect nonzero and the rest 0, or the defect alone "
                        "on a transparent layer with its alpha kept (PNG-32, no matte)"
                    )
                # the black reaches the transparent area, as a background does: a colour mask with a
                # transparent pad or crop; with half-transparent pixels, all black, and no coloured
                # pixel beside the fill, one rotated or scaled onto a transparent fill: interpolation
                # blends its black background's edge with the fill, and would blend a coloured one too
                defect = by_colour
            else:
                defect = drawn  # the alpha draws the defect: one ink, in any colour
                black_ink = int(np.count_nonzero(black & opaque))
                if 2 * black_ink > defect.size:
                    log.warning(
                        "%s: %d of the mask's %d pixels are opaque black and read as defect: no drawn "
                        "pixel is coloured enough to tell the defect from them, so the alpha is the mask; "
                        "if black is its background, draw the defect white, or make the background "
                        "transparent",
                        path,
                        black_ink,
                        defect.size,
                    )
    if defect.all():
        log.warning(
            "%s: the mask marks every pixel of its %dx%d as defect; a mask is 0 (or transparent) where "
            "there is no defect: check that it is not inverted or filled",
            path,
            defect.shape[1],
            defect.shape[0],
        )
    return defect


def _beside(where: np.ndarray) -> np.ndarray:
    """The pixels with a 4-neighbour in ``where``; beyond the image's edge is not in it."""
    near = np.zeros_like(where)
    near[1:] |= where[:-1]
    near[:-1] |= where[1:]
    near[:, 1:] |= where[:, :-1]
    near[:, :-1] |= where[:, 1:]
    return near


def _black_is_background(black: np.ndarray, transparent: np.ndarray) -> bool:
    """Whether the ``black`` pixels read as a padded mask's background: some touch a ``transparent``
    pixel (side by side), the pad, and every 4-connected region of them touches one or the image's
    edge. The edge is no pad, for black ink drawn to it is not a background; but a region that reaches
    only the edge, as a defect across the mask parts the background from a pad on one side, is one."""
    near = _beside(transparent)
    if not np.any(black & near):
        return False
    near[[0, -1], :] = True
    near[:, [0, -1]] = True
    count, labels = cv2.connectedComponents(black.astype(np.uint8), connectivity=4)
    return len(np.unique(labels[black & near])) == count - 1  # label 0: the pixels not black
