"""The training folder read (step 1): its training images, the stratified validation split, the
cargo type, the decoded pixels and their hashes, and the labelled anomalies' defect masks."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from datasets.cargo import folder_cargo_type
from datasets.decode import decode_image
from datasets.errors import CargoTypeError, DatasetFormatError
from datasets.mvtec import read_defect_mask, read_mvtec
from datasets.perceptual_hash import perceptual_hash
from datasets.type_names import TYPE_NAME_RULE, is_type_name
from models.inference import GOOD
from models.tiling import bright_level, colour_samples, samples_beyond, sixteen_bit_depth, to_rgb_float
from pipeline.resolution import SCALE_TOLERANCE, off_scale_images
from pipeline.train.config import KNOWN_CARGO_TYPES, ProgressFn, TrainConfig


class TrainItem(NamedTuple):
    path: Path
    anomaly_type: str  # "good" for normal images
    mask: Path | None = None


class SplitImages(NamedTuple):
    """One side of the split (training or validation), decoded; images are (H, W, 3) float32 RGB.

    Attributes:
        items: the side's items, in split order.
        goods: the normal images, in that order.
        anomalies: the labelled anomalous images, in that order.
        anomaly_items: the anomalies' items (their types and paths), in the same order.
    """

    items: list[TrainItem]
    goods: list[np.ndarray]
    anomalies: list[np.ndarray]
    anomaly_items: list[TrainItem]


class SixteenBitReading(NamedTuple):
    """How training read its 16-bit images (the card's ``training.sixteen_bit``).

    Attributes:
        images: how many of the training images (both sides of the split) are 16-bit.
        bright_level: the largest of their :func:`models.tiling.bright_level` (None without any).
        depth: the bits they, and every 16-bit input of the model, are read at.
        chosen_by: ``"measured"``, ``"--sixteen-bit-depth"``, or ``"no 16-bit image"`` (16, the
            full range, as before depths were measured).
        clipped_share: the share of their samples above ``depth`` bits, clipped.
        raised_by: where a few images alone make the measured ``depth`` (:func:`raised_by_few`):
            their paths, brightest first (relative to the dataset folder where they lie in it);
            else empty.
        rest_depth: the bits the other 16-bit images measure where ``raised_by`` names any, else None.
    """

    images: int
    bright_level: int | None
    depth: int
    chosen_by: str
    clipped_share: float
    raised_by: tuple[str, ...] = ()
    rest_depth: int | None = None


class TrainingData(NamedTuple):
    """The training folder, read and split.

    Attributes:
        train, val: the two sides of the split.
        images, hashes, phashes: every image seen (the training side's, then the validation
            side's): pixels, content sha256 and perceptual hash.
        defect_masks: ``{index into train.anomalies: (H, W) float32 0/1}`` of the labelled
            training anomalies whose mask marks a defect.
        empty_masks: the paths of both sides' blank masks (relative to the dataset folder where
            they lie in it), sorted.
        sixteen_bit: how the 16-bit images were read: the depth at which ``images`` read them and
            the model will read every 16-bit input (16 without any).
    """

    train: SplitImages
    val: SplitImages
    images: list[np.ndarray]
    hashes: list[str]
    phashes: list[str | None]
    defect_masks: dict[int, np.ndarray]
    empty_masks: list[str]
    sixteen_bit: SixteenBitReading


def read_training_data(
    root: Path, config: TrainConfig, rng: np.random.Generator, progress: ProgressFn
) -> TrainingData:
    """``root``'s training images split (drawing on ``rng``), decoded, and their masks read.

    Raises:
        DatasetFormatError: fewer than 4 images in ``train/good``, or too few normals on either side
            of the split (:func:`check_split`), before any image is decoded; or images far off the
            others' scale (:func:`check_scales`), once decoded.
    """
    items = read_train_items(root)
    train_items, val_items = split(items, config.val_fraction, rng, anomaly_fraction=config.val_anomaly_share)
    check_split(root, train_items, val_items, config)  # before any image is decoded
    images, hashes, phashes, depth = decode(train_items + val_items, progress, config.sixteen_bit_depth)
    check_scales(root, train_items + val_items, images, config)
    base = root.resolve()
    named = (Path(p).resolve() for p in depth.raised_by)
    depth = depth._replace(
        raised_by=tuple(str(p.relative_to(base) if p.is_relative_to(base) else p) for p in named)
    )
    train = _split_images(train_items, images[: len(train_items)])
    val = _split_images(val_items, images[len(train_items) :])
    masks, empty_masks = defect_masks(root, train.anomaly_items, train.anomalies)
    # validation trains nothing on its masks, but a blank one there is the same labelling slip
    empty_masks = sorted([*empty_masks, *defect_masks(root, val.anomaly_items, val.anomalies)[1]])
    return TrainingData(train, val, images, hashes, phashes, masks, empty_masks, depth)


def check_scales(
    root: Path, items: Sequence[TrainItem], images: Sequence[np.ndarray], config: TrainConfig
) -> None:
    """Refuse training images far off the others' scale (:func:`pipeline.resolution.off_scale_images`).

    Scoring flags an image more than :data:`~pipeline.resolution.SCALE_TOLERANCE` off the median
    training view (the card's ``downscale_short_long``) by this very rule, so such an image would be
    trained on at a scale the model does not vouch for.

    Raises:
        DatasetFormatError: naming the images (relative to ``root`` where they lie in it), their
            sizes, the training images' median size, and what to do.
    """
    shapes = [img.shape[:2] for img in images]
    off = off_scale_images(shapes, size=config.image_size, tiling=config.tiling)
    if not off:
        return
    base = root.resolve()

    def rel(n: int) -> str:
        path = Path(items[n].path).resolve()
        return str(path.relative_to(base) if path.is_relative_to(base) else path)

    def named(n: int, scale: float) -> str:
        (h, w), by = shapes[n], f"{1 / scale:.3g}x larger" if scale < 1 else f"{scale:.3g}x smaller"
        return f"{rel(n)!r} ({h} x {w} px, resized {by} than the others)"

    off.sort(key=lambda found: rel(found[0]))  # by path, not in the split's random order
    shorter, longer = (int(np.median(side)) for side in np.sort(np.array(shapes), axis=1).T)
    median = f"{shorter} x {longer} px" + (", shorter x longer side" if shorter != longer else "")
    listed = ", ".join(named(n, scale) for n, scale in off[:3]) + (
        f" and {len(off) - 3} more" if len(off) > 3 else ""
    )
    raise DatasetFormatError(
        f"{str(root)!r}: {len(off)} training image(s) would be resized for the model more than "
        f"{SCALE_TOLERANCE:g}x off the scale of the others (median size {median}): {listed}. Scoring "
        "takes images that far off the others' scale for off the training scale, warns of them and "
        "never releases a shipment on their score, so the model would not vouch for images like them; "
        "remove them, resize them to the others' view, or train a separate model on images of their "
        "resolution"
    )


def check_split(
    root: Path, train_items: list[TrainItem], val_items: list[TrainItem], config: TrainConfig
) -> None:
    """Refuse a split training cannot finish on, before anything is decoded or fitted.

    The training side needs ``config.folds`` normals (one per fold). The validation side needs one
    normal, and two where it holds no labelled anomaly: the release threshold is then placed on the
    normals' scores alone, which one score cannot place (it failed only after the whole fit).

    Raises:
        DatasetFormatError: naming both sides' counts, ``--val-fraction`` and what would do.
    """
    n_train = sum(i.anomaly_type == GOOD for i in train_items)
    n_val = sum(i.anomaly_type == GOOD for i in val_items)
    labelled_val = any(i.anomaly_type != GOOD for i in val_items)
    if n_train >= config.folds and n_val >= (1 if labelled_val else 2):
        return
    n_good = n_train + n_val
    counts = (
        f"{str(root)!r}: --val-fraction {config.val_fraction} of the {n_good} images in train/good leaves "
        f"{n_train} for training and {n_val} for validation"
    )
    if n_train < config.folds:
        raise DatasetFormatError(
            f"{counts}; training needs at least {config.folds} (one per fold): give a smaller --val-fraction "
            "or more normal images"
        )
    # a local import: calibration imports this module (through image_sets)
    from pipeline.train.calibration import FEW_NORMALS

    # as many as leave FEW_NORMALS to train on: 8 at 0.2 left 6, and the refusal of a release cut
    # that releases every pseudo-anomaly asks for 10 left (pipeline.train.thresholds)
    needed = _normals_needed(config.val_fraction, max(config.folds, FEW_NORMALS))
    remedies = [f"add normal images ({needed} in train/good at --val-fraction {config.val_fraction})"]
    share = math.ceil(200 / n_good) / 100  # 2 of n_good, rounded up to a percent
    # Holding out more is advised only where it leaves enough normals to measure their spread: 4 at
    # --val-fraction 0.5 left 2, whose release cut went to the top of the scale (refused since).
    if share < 1 and n_good - _n_held_out(share, n_good) >= max(config.folds, FEW_NORMALS):
        remedies.append(f"hold out more of them (--val-fraction {share:g})")
    remedies.append("add labelled anomalies (train/<type>, 2 or more of a type so that one is held out)")
    raise DatasetFormatError(
        f"{counts}, and no labelled anomaly is held out for validation: the release threshold is then "
        f"placed on the validation normals' scores alone, which takes at least 2 of them; "
        f"{', or '.join(remedies)}"
    )


def _n_held_out(fraction: float, n: int) -> int:
    """How many of ``n`` images of one kind :func:`split` holds out at ``fraction``."""
    return max(1, round(fraction * n)) if n >= 2 else 0


def _normals_needed(fraction: float, folds: int) -> int:
    """The fewest normals from which :func:`split` at ``fraction`` holds out 2 and keeps ``folds``
    to train on."""
    n = max(4, math.ceil(1.5 / fraction) - 1)  # below 1.5 / fraction, round() holds out 1
    while _n_held_out(fraction, n) < 2 or n - _n_held_out(fraction, n) < folds:
        n += 1
    return n


def _split_images(items: list[TrainItem], images: list[np.ndarray]) -> SplitImages:
    return SplitImages(
        items,
        [img for img, i in zip(images, items, strict=True) if i.anomaly_type == GOOD],
        [img for img, i in zip(images, items, strict=True) if i.anomaly_type != GOOD],
        [i for i in items if i.anomaly_type != GOOD],
    )


def read_train_items(root: Path) -> list[TrainItem]:
    """Training images of an MVTec-layout folder (``train/good``, ``train/<type>``)."""
    items = [
        TrainItem(Path(i.path), GOOD if i.label == GOOD else str(i.anomaly_type), i.mask_path)
        for i in read_mvtec(root).split("train")
    ]
    n_good = sum(i.anomaly_type == GOOD for i in items)
    if n_good < 4:
        raise DatasetFormatError(f"{str(root)!r} has {n_good} images in train/good; at least 4 are needed")
    named = next((i.anomaly_type for i in items if not is_type_name(i.anomaly_type)), None)
    if named is not None:  # the model's types are what officers record as found: the form takes these only
        raise DatasetFormatError(
            f"{str(root / 'train' / named)!r}: {named!r} is not an anomaly type name: {TYPE_NAME_RULE}; "
            "rename the folder"
        )
    return items


def split(
    items: list[TrainItem], fraction: float, rng: np.random.Generator, *, anomaly_fraction: float
) -> tuple[list[TrainItem], list[TrainItem]]:
    """Stratified train/validation split: ``fraction`` of the good images and ``anomaly_fraction``
    of each anomaly type, at least one of each type that has two."""
    train, val = [], []
    for kind in sorted({i.anomaly_type for i in items}):
        group = [i for i in items if i.anomaly_type == kind]
        order = rng.permutation(len(group))
        n_val = _n_held_out(fraction if kind == GOOD else anomaly_fraction, len(group))
        val += [group[j] for j in order[:n_val]]
        train += [group[j] for j in order[n_val:]]
    return train, val


def cargo_type(root: Path, configured: str | None) -> str:
    named = folder_cargo_type(root)
    if configured:
        if named is not None and named != configured:
            # evaluate would refuse the model on its own data, and the data's owner named it so
            raise CargoTypeError(
                f"--cargo-type {configured!r} but --data {str(root)!r} is a {named} folder; train each "
                "cargo type's model on its own folder"
            )
        return configured
    if named is not None:
        return named
    raise CargoTypeError(
        f"cannot tell the cargo type of {str(root)!r}: its folder name {root.resolve().name!r} is not one of "
        f"{list(KNOWN_CARGO_TYPES)}; pass --cargo-type"
    )


def decode(
    items: Sequence[TrainItem], progress: ProgressFn, depth: int | None = None
) -> tuple[list[np.ndarray], list[str], list[str | None], SixteenBitReading]:
    """Pixels, content hash and perceptual hash (for the card's near-copies) of each image, and how
    its 16-bit images are read: at ``depth`` bits, or (None) at the bits they hold
    (:func:`models.tiling.sixteen_bit_depth` of their :func:`models.tiling.bright_level`)."""
    images, hashes, phashes = [], [], []
    sixteen: dict[int, np.ndarray] = {}  # read once the depth of all of them is known
    for n, item in enumerate(items):
        decoded = decode_image(item.path)
        if decoded.pixels.dtype == np.uint16:
            sixteen[n] = decoded.pixels
            images.append(decoded.pixels)
        else:
            images.append(to_rgb_float(decoded.pixels))
        hashes.append(decoded.sha256)
        phashes.append(perceptual_hash(decoded.pixels))
        progress("decode", n + 1, len(items))
    levels = [bright_level(pixels) for pixels in sixteen.values()]
    chosen = depth if depth is not None else sixteen_bit_depth(levels)
    by = "--sixteen-bit-depth" if depth is not None else "measured" if sixteen else "no 16-bit image"
    clipped = sum(samples_beyond(pixels, chosen) for pixels in sixteen.values())
    total = sum(colour_samples(pixels).size for pixels in sixteen.values())
    for n, pixels in sixteen.items():
        images[n] = to_rgb_float(pixels, sixteen_bit_depth=chosen)
    few, rest_depth = raised_by_few(levels) if depth is None else ([], None)
    positions = list(sixteen)  # built once: built again for each image named, it cost O(n) apiece
    reading = SixteenBitReading(
        len(sixteen),
        max(levels, default=None),
        chosen,
        by,
        clipped / total if total else 0.0,
        tuple(str(items[positions[k]].path) for k in few),
        rest_depth,
    )
    return images, hashes, phashes, reading


def raised_by_few(levels: Sequence[int]) -> tuple[list[int], int | None]:
    """Whether a few of the 16-bit images alone make the depth measured on ``levels`` (each image's
    :func:`models.tiling.bright_level`): the indices of the fewest brightest images without which
    the rest measure fewer bits, brightest first, and the bits the rest measure; ``([], None)``
    where no :data:`FEW_BRIGHT_SHARE` of them does.

    Eight stuck pixels at full scale in one image of a 12-bit set (a hot column, a detector's
    saturated edge) made the whole set read at 16 bits, with a sixteenth of its contrast, and
    nothing said so. The depth itself is left as measured: the images may be real bright exposures."""
    order = sorted(range(len(levels)), key=lambda k: levels[k], reverse=True)
    depth = sixteen_bit_depth(levels)
    for few in range(1, max(1, math.floor(FEW_BRIGHT_SHARE * len(levels))) + 1):
        if few >= len(levels):
            break
        # the depth depends on the brightest level alone, and the rest's is the next in order: measuring
        # the whole rest at each step took 10 s on 30,000 images
        rest = sixteen_bit_depth([levels[order[few]]])
        if rest < depth:
            return order[:few], rest
    return [], None


FEW_BRIGHT_SHARE = 0.1
"""The most images, as a share of the 16-bit ones (one at least), that :func:`raised_by_few` names."""


def files_hash(root: Path, items: Sequence[TrainItem], hashes: Sequence[str]) -> str:
    """sha256 over the sorted (relative path, content sha256) pairs of the training files."""
    base = root.resolve()
    pairs = sorted(
        (str(p.relative_to(base)) if p.is_relative_to(base) else str(p), h)
        for p, h in ((i.path.resolve(), h) for i, h in zip(items, hashes, strict=True))
    )
    digest = hashlib.sha256()
    for rel, h in pairs:
        digest.update(f"{rel}\0{h}\n".encode())
    return digest.hexdigest()


def defect_masks(
    root: Path, items: Sequence[Any], images: Sequence[np.ndarray]
) -> tuple[dict[int, np.ndarray], list[str]]:
    """The labelled anomalies' masks, ``{index: (H, W) float32 0/1}``, and the empty ones' paths
    (relative to ``root``, the dataset folder, where they lie in it).

    A mask with no defect pixel is left out: the patch heads would learn every patch of a real
    defect as normal. The image still trains the image-level heads, as one without a mask does.
    """
    masks: dict[int, np.ndarray] = {}
    empty: list[str] = []
    for n, item in enumerate(items):
        if item.mask is None:
            continue
        mask = read_mask(item.mask, images[n].shape[:2])
        if mask.any():
            masks[n] = mask
        else:
            path, base = Path(item.mask).resolve(), root.resolve()
            empty.append(str(path.relative_to(base) if path.is_relative_to(base) else path))
    return masks, sorted(empty)


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A ``ground_truth`` mask as (H, W) float32 0/1 at the image's own size: its defect pixels as
    ``clearsight evaluate`` reads them (:func:`datasets.mvtec.read_defect_mask`: any non-zero pixel)."""
    mask = read_defect_mask(path).astype(np.uint8)
    if mask.shape != shape:
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return (mask > 0).astype(np.float32)
