"""Evaluate a trained model on the test split of an MVTec-layout dataset.

:func:`evaluate` runs a :class:`~models.inference.Predictor` over every test image, streams the anomaly
maps into the pixel metrics, and returns an :class:`EvaluationResult`: one :class:`ImageRecord` per
image, the metrics overall, per anomaly type (each type against all good images) and per image
kind (colour or grayscale pictures, each kind's anomalies against its own good images: an X-ray
view may be ranked worse than a photograph), the test images that are exact copies of the dataset's
training images (their figures are optimistic: ``duplicates`` gives the main ones without them), and
the few images worst handled by the model (for the report's gallery). :func:`write_outputs` writes
``metrics.json`` and ``scores.csv``; :mod:`pipeline.report` renders ``report.html``.

The figure that matters is the operating point at the model's own thresholds: the share of good
(clean) images released and the share of anomalous images released (missed). AUROC and friends are
reported alongside because the field compares models by them. Every one of these figures comes with a
95 % confidence interval (:mod:`pipeline.intervals`), because test sets are small: 0 misses among 60
anomalous images does not show a 1 % miss rate. ``threshold_promise`` says what the release threshold
itself promises from the number of anomalous validation images it was set on
(:func:`models.threshold.miss_rate_bound`).
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np

from datasets.errors import ClearsightError, DatasetFormatError, ModelError
from datasets.whole_files import files_written_whole
from models.fusion import SIGNALS
from models.inference import GOOD, Predictor, Thresholds
from models.threshold import allowed_errors, anomalies_for_bound, miss_rate_bound
from models.tiling import is_grey
from pipeline import metrics as m
from pipeline.intervals import CONFIDENCE, RESAMPLES, Interval, binomial_interval, bootstrap_intervals
from pipeline.leakage import MAX_EXAMPLES, file_sha256
from pipeline.picture_kinds import grey_offsets_words
from pipeline.resolution import card_resolution
from pipeline.signal_evidence import fused_signals, signal_aurocs

__all__ = [
    "GALLERY_SIZE",
    "IMAGE_KINDS",
    "SCORES_COLUMNS",
    "EvaluationResult",
    "GalleryItem",
    "INTERVAL_METHODS",
    "ImageRecord",
    "evaluate",
    "threshold_promise",
    "write_outputs",
]

GALLERY_SIZE = 6
"""How many worst misses and worst false alarms the result keeps for the report."""

INTERVAL_METHODS: dict[str, str] = {
    "release_rate": "exact binomial (Clopper-Pearson)",
    "miss_rate": "exact binomial (Clopper-Pearson)",
    "image_auroc": f"stratified percentile bootstrap, {RESAMPLES} resamples",
    "tnr_at_fnr_1pct": f"stratified percentile bootstrap, {RESAMPLES} resamples; none under 200 anomalous "
    "images (the 1 % cut is then at or next to the lowest anomaly score, which a bootstrap does not bound)",
    "detection_rate_at_fpr_1pct": f"stratified percentile bootstrap, {RESAMPLES} resamples; none under "
    "200 clean images (the cut is then at or next to the highest clean score)",
}
"""How each interval in ``metrics.json`` is computed (written there as ``intervals_method``)."""

IMAGE_KINDS = ("colour", "grayscale")
"""What ``per_image_kind`` breaks the metrics down by: a picture with colour, or one whose channels are
all equal (an X-ray, a mono camera), whatever its file stored (:func:`models.tiling.is_grey`)."""

_GALLERY_SIDE = 320  # gallery thumbnails are scaled down to this longest side to keep report.html small
_FNR = 0.01
_FPR = 0.01


class _Item(Protocol):
    """What :func:`evaluate` needs of a dataset item (``datasets.mvtec.DatasetItem`` has it)."""

    @property
    def path(self) -> Path: ...
    @property
    def label(self) -> str: ...
    @property
    def anomaly_type(self) -> str | None: ...
    @property
    def mask_path(self) -> Path | None: ...
    @property
    def split(self) -> str: ...


class ImageRecord(NamedTuple):
    """One test image's outcome; a row of ``scores.csv``.

    ``type`` is the true anomaly type (``"good"`` for good images); ``score``/``predicted_*`` are
    ``None`` and ``error`` is set when the image could not be read. ``image_kind`` is one of
    :data:`IMAGE_KINDS`, ``None`` for an image that could not be read. ``signal_log_odds``: the
    prediction's calibrated log-odds per fused signal (``Prediction.signal_log_odds``).
    """

    path: str
    label: str
    type: str
    score: float | None
    predicted_label: str | None
    predicted_type: str | None
    has_mask: bool
    error: str | None = None
    image_kind: str | None = None
    signal_log_odds: Mapping[str, float] | None = None


class GalleryItem(NamedTuple):
    """A badly handled image kept for the report.

    ``image``: (h, w, C) uint8/uint16 thumbnail (longest side <= 320); ``anomaly_map``: (h, w) float32
    in [0, 1]; ``mask``: (h, w) bool ground truth or ``None``.
    """

    record: ImageRecord
    image: np.ndarray
    anomaly_map: np.ndarray
    mask: np.ndarray | None


@dataclass
class EvaluationResult:
    """Everything an evaluation produced.

    ``metrics`` is exactly what goes into ``metrics.json`` (JSON-ready: floats, ints, strings, None,
    nested dicts). ``worst_misses``: anomalous images with the lowest scores, lowest first;
    ``worst_false_alarms``: good images with the highest scores, highest first.
    """

    model_id: str
    cargo_type: str
    thresholds: Thresholds
    data_root: str
    records: list[ImageRecord]
    metrics: dict[str, Any]
    worst_misses: list[GalleryItem] = field(default_factory=list)
    worst_false_alarms: list[GalleryItem] = field(default_factory=list)
    evaluated_at: str = ""
    signals: list[dict[str, Any]] = field(default_factory=list)
    """What the model's score is made of (:func:`fused_signals`), for the report."""
    fusion_rule: str = "max"
    """How the model's signals combine (``models.fusion.FUSION_RULES``), for the report."""
    co_located: bool = False
    """The one-class and patch-head signals are read at one spot (``DetectorConfig.co_located``)."""
    grey_offsets: str = ""
    """What the model adds to grey pictures' signals (:func:`pipeline.picture_kinds.grey_offsets_words`)."""
    deep_features: str = ""
    """How the patch features read the backbone's deeper maps, as the card's ``training.deep_features``
    says it ("sharp (auto for vacuum_pack)"); empty for a card written before the choice existed."""
    promise: dict[str, Any] | None = None
    """What the release threshold promises about misses (:func:`threshold_promise`); None: not known."""
    resolution: dict[str, Any] | None = None
    """The model card's ``preprocessing`` input size and ``source_resolution`` (the training images'
    sizes against the model input, and the warning training gave), for the report; None for a card
    written before training recorded it."""
    non_finite: int = 0
    """Readable images the model gave a NaN or infinite score or map: failed rows, a model fault."""
    empty_masks: list[str] = field(default_factory=list)
    """Anomalous images' masks that mark no defect pixel, left out of the pixel metrics (paths
    relative to the dataset folder)."""
    training_images: int | None = None
    """How many training images (the dataset's ``train/``) the test images were compared with; None:
    the dataset has none, so exact copies of the model's training images could not be looked for."""
    known_types: list[str] | None = None
    """The anomaly types the model can name: its card's ``detector.class_names`` less ``good`` and its
    pseudo-anomaly types (``training.pseudo_types``), which it reports as ``unknown``. Empty: a model
    trained without labelled anomalies, whose type accuracy is not measurable. None: the card does not
    say (a fake in tests), and type accuracy is measured as ever."""
    training_copies: dict[str, str] = field(default_factory=dict)
    """Test images whose bytes are a training image's, ``{test path: training path}`` (as
    ``ImageRecord.path``), in test order: a model trained on them has seen them, and its figures on
    them flatter it."""

    def scores_and_labels(
        self, anomaly_type: str | None = None, image_kind: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N,) float64, labels (N,) bool) of the scored images; one type + all good if given,
        and only the images of one kind (:data:`IMAGE_KINDS`) if given."""
        rows = [
            r
            for r in self.records
            if r.score is not None
            and (anomaly_type is None or r.type in (GOOD, anomaly_type))
            and (image_kind is None or r.image_kind == image_kind)
        ]
        return (
            np.array([r.score for r in rows], dtype=np.float64),
            np.array([r.label != GOOD for r in rows], dtype=bool),
        )


# ------------------------------------------------------------------------------------- reading


def _read_image(path: Path) -> tuple[np.ndarray, str]:
    """(H, W, C) uint8/uint16 RGB pixels through the project's one decoder, and the sha256 of the
    file's bytes."""
    from datasets.decode import decode_image  # the data layer's decoder; imported where used

    decoded = decode_image(path)
    return decoded.pixels, decoded.sha256


def _read_mask(path: Path) -> np.ndarray:
    """(H, W) bool ground truth, any nonzero pixel defect, read as training reads it (an 8-bit
    grayscale read of its own scaled a 16-bit 0/1 or 0/255 mask to nothing)."""
    from datasets.errors import ImageDecodeError
    from datasets.mvtec import read_defect_mask  # the data layer's reader; imported where used

    try:
        return read_defect_mask(path)
    except ImageDecodeError as exc:  # a mask is ground truth: the figures cannot do without it
        raise DatasetFormatError(f"cannot read ground-truth mask: {exc}") from exc


def _true_type(item: _Item) -> str:
    if item.label == GOOD:
        return GOOD
    return item.anomaly_type or "unknown"


def _split_items(dataset: Any) -> tuple[list[_Item], list[_Item]]:
    """The test items and the training items."""
    items = list(dataset.items if hasattr(dataset, "items") else dataset)
    test = [item for item in items if item.split == "test"]
    if not test:
        raise DatasetFormatError(
            f"dataset {getattr(dataset, 'root', '<items>')} has no test images; evaluation needs "
            "test/good/ and test/<anomaly_type>/ folders"
        )
    return test, [item for item in items if item.split == "train"]


def _training_copies(
    test_files: Mapping[str, tuple[Path, str]], training: Sequence[_Item], root: Path | None
) -> dict[str, str]:
    """``{test path: training path}`` for the test images (record path: (file, content sha256))
    whose bytes are a training image's, the first such training image named; only the training
    files are read here, and of them only those of a test image's size: a copy has its size, and a
    large train/ is not read through again for nothing (one stat each, against every byte)."""
    test_sizes: set[int] = set()
    for file, _ in test_files.values():
        with contextlib.suppress(OSError):  # decoded a moment ago; gone since: not compared
            test_sizes.add(os.stat(file).st_size)
    first: dict[str, str] = {}
    for item in training:
        try:
            if os.stat(item.path).st_size not in test_sizes:
                continue
        except OSError:
            continue  # gone since the dataset was listed: no copy to find
        digest = file_sha256(Path(item.path))
        if digest is not None:
            first.setdefault(digest, _relative(item.path, root))
    return {path: first[digest] for path, (_, digest) in test_files.items() if digest in first}


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            # realpath, not Path.resolve, which raises on a link that loops: an unreadable image that
            # is left out and counted, as a dangling link is
            return Path(os.path.realpath(path)).relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def _thumbnail(
    image: np.ndarray, amap: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Scale image (H, W, C), map (H', W') and mask (H, W) down to one size, longest side <= 320."""
    h, w = image.shape[:2]
    scale = min(1.0, _GALLERY_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA)) if scale < 1.0 else image
    if small.ndim == 2:
        small = small[:, :, None]
    small_map = np.asarray(
        cv2.resize(np.asarray(amap, dtype=np.float32), size, interpolation=cv2.INTER_LINEAR), dtype=np.float32
    )
    small_mask = None
    if mask is not None:
        small_mask = np.asarray(cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)) != 0
    return small, small_map, small_mask


class _Gallery:
    """Keeps the ``size`` items with the largest key (a bounded min-heap)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._heap: list[tuple[float, int, GalleryItem]] = []
        self._count = 0

    def wants(self, key: float) -> bool:
        return self.size > 0 and (len(self._heap) < self.size or key > self._heap[0][0])

    def push(self, key: float, item: GalleryItem) -> None:
        self._count += 1  # tie-breaker: earlier images win ties, and GalleryItems are never compared
        entry = (key, -self._count, item)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heappushpop(self._heap, entry)

    def items(self) -> list[GalleryItem]:
        return [entry[2] for entry in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]


# ------------------------------------------------------------------------------------- metrics


def _value(result: m.MetricValue, name: str, undefined: dict[str, str]) -> float | None:
    if result.value is None:
        undefined[name] = result.reason or "undefined"
        return None
    return result.value


def _pair(interval: Interval | None) -> list[float] | None:
    return None if interval is None else [interval.low, interval.high]


def _intervals(scores: np.ndarray, labels: np.ndarray, conf: m.Confusion) -> dict[str, list[float] | None]:
    """95 % intervals of one block's figures: exact binomial at the threshold, bootstrap for the rest."""
    ranking = bootstrap_intervals(scores, labels, fnr=_FNR, fpr=_FPR) or {}
    n_good, n_anomalous = conf.true_negative + conf.false_positive, conf.false_negative + conf.true_positive
    return {
        "release_rate": _pair(binomial_interval(conf.true_negative, n_good)),
        "miss_rate": _pair(binomial_interval(conf.false_negative, n_anomalous)),
        "image_auroc": _pair(ranking.get("image_auroc")),
        "tnr_at_fnr_1pct": _pair(ranking.get("tnr_at_fnr")),
        "detection_rate_at_fpr_1pct": _pair(ranking.get("detection_rate_at_fpr")),
    }


def threshold_promise(card: Mapping[str, Any], thresholds: Thresholds) -> dict[str, Any]:
    """What the release threshold promises about misses, from the validation it was set on.

    ``miss_rate_bound``: the probability, at most, that a new anomaly like the validation ones is
    released (:func:`models.threshold.miss_rate_bound`); ``None`` for a threshold from clean images
    only, or a card that does not count its validation anomalies. ``anomalies_for_target``: how many
    anomalous validation images would make that bound reach the target miss rate.
    """
    val = card.get("validation", {})
    val = val if isinstance(val, Mapping) else {}
    n = val.get("n_anomalous")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else 0
    # A card written before `misses_allowed` was recorded placed its cut allowing floor(target * n)
    # misses, which for most n >= 100 promises more than the target.
    k = val.get("misses_allowed")
    if not (isinstance(k, int) and not isinstance(k, bool) and 0 <= k < max(n, 1)):
        k = allowed_errors(thresholds.target_miss_rate, n) if n else None
    bound = miss_rate_bound(n, thresholds.target_miss_rate, method=thresholds.method, misses_allowed=k)
    return {
        # only anomalies the cut was set on count (a fallback card still counts its pseudo-anomalies)
        "validation_anomalies": n if bound is not None else 0,
        "miss_rate_bound": bound,
        "anomalies_for_target": anomalies_for_bound(thresholds.target_miss_rate),
    }


def _summary(
    scores: np.ndarray, labels: np.ndarray, pixels: m.PixelAccumulator | None, thresholds: Thresholds
) -> dict[str, Any]:
    """The metrics block for one subset: the whole test set, or one anomaly type + all good images."""
    undefined: dict[str, str] = {}
    release, hold = thresholds.release, thresholds.hold
    good, anomalous = scores[~labels], scores[labels]
    conf = m.confusion(scores, labels, release)
    out: dict[str, Any] = {
        "counts": {"images": int(scores.size), "good": int(good.size), "anomalous": int(anomalous.size)},
        "release_rate": _value(m.release_rate(scores, labels, release), "release_rate", undefined),
        "miss_rate": _value(m.miss_rate(scores, labels, release), "miss_rate", undefined),
        "image_auroc": _value(m.image_auroc(scores, labels), "image_auroc", undefined),
        "image_aupr": _value(m.image_aupr(scores, labels), "image_aupr", undefined),
        "tnr_at_fnr_1pct": _value(m.tnr_at_fnr(scores, labels, _FNR), "tnr_at_fnr_1pct", undefined),
        "detection_rate_at_fpr_1pct": _value(
            m.detection_rate_at_fpr(scores, labels, _FPR), "detection_rate_at_fpr_1pct", undefined
        ),
        "confusion": conf._asdict(),
        "intervals": _intervals(scores, labels, conf),
        # where each class lands among the three decision bands of the model's own thresholds
        "bands": {
            name: {
                "release": float(np.mean(group < release)) if group.size else None,
                "remote_review": float(np.mean((group >= release) & (group < hold))) if group.size else None,
                "hold": float(np.mean(group >= hold)) if group.size else None,
            }
            for name, group in (("good", good), ("anomalous", anomalous))
        },
    }
    if pixels is None:
        reason = "no ground-truth masks for these anomalous images"
        out["pixel_auroc"], out["pro"] = None, None
        undefined["pixel_auroc"], undefined["pro"] = reason, reason
    else:
        out["pixel_auroc"] = _value(pixels.pixel_auroc(), "pixel_auroc", undefined)
        out["pro"] = _value(pixels.pro(), "pro", undefined)
    out["undefined"] = undefined
    return out


NO_KNOWN_TYPES = (
    "the model knows no anomaly type (trained without labelled anomalies): it types every anomaly it "
    "flags 'unknown'"
)
"""Why ``type_accuracy`` is not measurable for a model that names no anomaly type (``undefined``)."""

NOT_A_KNOWN_TYPE = "not a type the model was trained on (held out of its training): it cannot name it"
"""Why one type's ``type_accuracy`` is not measurable: the model's classes do not include it."""


def _type_accuracy(
    records: Iterable[ImageRecord],
    known_types: Sequence[str] | None,
    undefined: dict[str, str],
    kind: str | None = None,
) -> float | None:
    """Among anomalous images of the types the model knows that it flagged, the share given their true
    anomaly type; None, with the reason in ``undefined``, for a model that knows no type or, for one
    ``kind``, a type it does not know (0 % said it typed them wrong; a held-out type counted in the
    overall figure lowered it by images it could never name), and None where it flagged none."""
    if known_types is not None and not known_types:
        undefined["type_accuracy"] = NO_KNOWN_TYPES
        return None
    if kind is not None and known_types is not None and kind not in known_types:
        undefined["type_accuracy"] = NOT_A_KNOWN_TYPE
        return None
    flagged = [
        r
        for r in records
        if r.label != GOOD
        and r.predicted_label not in (None, GOOD)
        and (known_types is None or r.type in known_types)
    ]
    if not flagged:
        return None
    return sum(r.predicted_type == r.type for r in flagged) / len(flagged)


def _known_types(card: Mapping[str, Any]) -> list[str] | None:
    """:attr:`EvaluationResult.known_types` from a model card; None where it gives no class names."""
    detector, training = card.get("detector", {}), card.get("training", {})
    names = detector.get("class_names") if isinstance(detector, Mapping) else None
    if not isinstance(names, list | tuple):
        return None
    pseudo = training.get("pseudo_types", []) if isinstance(training, Mapping) else []
    return [name for name in names if name != GOOD and name not in pseudo]


# ------------------------------------------------------------------------------------ evaluate


def evaluate(
    predictor: Predictor,
    dataset: Any,
    *,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
    gallery_size: int = GALLERY_SIZE,
) -> EvaluationResult:
    """Score the test split of ``dataset`` with ``predictor`` and compute every metric.

    Args:
        predictor: any :class:`~models.inference.Predictor` (a loaded artifact, or a fake in tests).
        dataset: a ``datasets.mvtec.MvtecDataset`` (its ``items`` are used) or an iterable of items
            with ``path``, ``label``, ``anomaly_type``, ``mask_path`` and ``split``; only
            ``split == "test"`` items are evaluated.
        batch_size: images per ``predictor.predict`` call.
        progress: called as ``progress(done, total)`` after each batch.
        gallery_size: how many worst misses and worst false alarms to keep for the report.

    Returns:
        The :class:`EvaluationResult`. Images that cannot be decoded are recorded with their error and
        left out of the metrics (``metrics["counts"]["failed"]`` says how many).

    Raises:
        DatasetFormatError: no test images, none that could be read, or an unreadable mask.
        ModelError: the predictor failed or returned the wrong number of predictions.
    """
    from datasets.errors import ImageDecodeError

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    items, training = _split_items(dataset)
    root = Path(dataset.root) if getattr(dataset, "root", None) is not None else None
    thresholds = predictor.thresholds
    types = sorted({_true_type(item) for item in items} - {GOOD})
    overall_pixels = m.PixelAccumulator()
    type_pixels = {t: m.PixelAccumulator() for t in types}
    has_masks = dict.fromkeys(types, False)
    kind_pixels = {k: m.PixelAccumulator() for k in IMAGE_KINDS}
    kind_masks = dict.fromkeys(IMAGE_KINDS, False)
    records: list[ImageRecord] = []
    test_files: dict[str, tuple[Path, str]] = {}  # record path: (the file, sha256 of its bytes)
    empty_masks: list[str] = []
    non_finite = 0
    unreadable: ImageDecodeError | None = None  # the first, to name
    misses, false_alarms = _Gallery(gallery_size), _Gallery(gallery_size)

    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        images: list[np.ndarray] = []
        readable: list[_Item] = []
        for item in batch:
            try:
                pixels, digest = _read_image(Path(item.path))
                images.append(pixels)
                readable.append(item)
                test_files[_relative(item.path, root)] = (Path(item.path), digest)
            except ImageDecodeError as exc:
                unreadable = unreadable or exc
                records.append(
                    ImageRecord(
                        _relative(item.path, root), item.label, _true_type(item), None, None, None,
                        item.mask_path is not None, str(exc),
                    )
                )  # fmt: skip
        if images:
            try:
                predictions = predictor.predict(images)
            except ClearsightError:
                raise
            except Exception as exc:  # a model bug or a runtime failure: fail closed, name the batch
                raise ModelError(
                    f"model {predictor.model_id} failed on the batch starting at {readable[0].path}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if len(predictions) != len(images):
                raise ModelError(
                    f"model {predictor.model_id} returned {len(predictions)} predictions for "
                    f"{len(images)} images"
                )
            for item, image, pred in zip(readable, images, predictions, strict=True):
                kind = _true_type(item)
                score = float(pred.score)
                amap = np.asarray(pred.anomaly_map, dtype=np.float32)
                broken = (
                    f"a non-finite score ({score})"
                    if not math.isfinite(score)
                    else f"an anomaly map with {np.count_nonzero(~np.isfinite(amap))} non-finite value(s)"
                    if not np.isfinite(amap).all()
                    else None
                )
                if broken is not None:
                    # a broken model's output for this image: named, not ranked (the scorer and the
                    # service hold such an image); the other images' figures still come out
                    non_finite += 1
                    records.append(
                        ImageRecord(
                            _relative(item.path, root), item.label, kind, None, None, None,
                            item.mask_path is not None,
                            f"model {predictor.model_id} gave {broken} for this image",
                        )
                    )  # fmt: skip
                    continue
                mask = _read_mask(Path(item.mask_path)) if item.mask_path is not None else None
                if mask is not None and kind != GOOD and not mask.any():
                    # a blank mask would count the whole defect image as normal pixels
                    empty_masks.append(_relative(Path(item.mask_path), root))
                    mask = None
                image_kind = IMAGE_KINDS[1] if is_grey(image) else IMAGE_KINDS[0]
                record = ImageRecord(
                    path=_relative(item.path, root),
                    label=item.label,
                    type=kind,
                    score=score,
                    predicted_label=pred.label,
                    predicted_type=pred.anomaly_type,
                    has_mask=mask is not None,
                    image_kind=image_kind,
                    signal_log_odds=None if pred.signal_log_odds is None else dict(pred.signal_log_odds),
                )
                records.append(record)
                if kind == GOOD:
                    # a good image is anomaly-free by definition: all its pixels are normal
                    overall_pixels.add(amap, None)
                    for acc in type_pixels.values():
                        acc.add(amap, None)
                    kind_pixels[image_kind].add(amap, None)
                    gallery, key = false_alarms, score
                elif mask is not None:
                    overall_pixels.add(amap, mask)
                    type_pixels[kind].add(amap, mask)
                    has_masks[kind] = True
                    kind_pixels[image_kind].add(amap, mask)
                    kind_masks[image_kind] = True
                    gallery, key = misses, -score
                else:
                    gallery, key = misses, -score
                if gallery.wants(key):
                    gallery.push(key, GalleryItem(record, *_thumbnail(image, amap, mask)))
        if progress is not None:
            progress(min(start + batch_size, len(items)), len(items))
    if unreadable is not None and all(r.score is None for r in records) and not non_finite:
        # every figure would be n/a: a report of nothing that read as a result, and the run as a pass
        raise DatasetFormatError(
            f"no test image could be read ({len(records)} unreadable, e.g. {unreadable})"
        )

    card_detector, card_training = predictor.card.get("detector", {}), predictor.card.get("training", {})
    result = EvaluationResult(
        model_id=predictor.model_id,
        cargo_type=predictor.cargo_type,
        thresholds=thresholds,
        data_root=str(root) if root is not None else "",
        records=records,
        metrics={},
        worst_misses=misses.items(),
        worst_false_alarms=false_alarms.items(),
        evaluated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        signals=fused_signals(predictor.card),
        # cards written before the rule was recorded fused by the max
        fusion_rule=str(card_detector.get("fusion", "max")),
        co_located=bool(card_detector.get("co_located", False)),
        grey_offsets=grey_offsets_words(card_training.get("grey_offsets")),
        deep_features=str(card_training.get("deep_features", "")),
        resolution=card_resolution(predictor.card),
        promise=threshold_promise(predictor.card, thresholds),
        empty_masks=sorted(empty_masks),
        non_finite=non_finite,
        known_types=_known_types(predictor.card),
        # train/ is only there when the dataset holds it: a held-out batch comes without
        training_images=len(training) if training else None,
        training_copies=_training_copies(test_files, training, root) if training else {},
    )
    result.metrics = _metrics(
        result,
        overall_pixels if any(has_masks.values()) else None,
        {t: acc for t, acc in type_pixels.items() if has_masks[t]},
        {k: acc for k, acc in kind_pixels.items() if kind_masks[k]},
    )
    return result


def _metrics(
    result: EvaluationResult,
    overall_pixels: m.PixelAccumulator | None,
    type_pixels: Mapping[str, m.PixelAccumulator],
    kind_pixels: Mapping[str, m.PixelAccumulator],
) -> dict[str, Any]:
    """``metrics.json``; ``type_pixels``/``kind_pixels`` hold the pixel histograms of the anomaly types
    and image kinds that have ground-truth masks (the others get no pixel metrics)."""
    th = result.thresholds
    scores, labels = result.scores_and_labels()
    summary = _summary(scores, labels, overall_pixels, th)
    summary["counts"]["failed"] = sum(r.error is not None for r in result.records)
    summary["counts"]["non_finite"] = result.non_finite
    # only the masks that reached the pixel metrics: not those of unread or non-finite images
    summary["counts"]["with_mask"] = sum(
        r.has_mask and r.label != GOOD and r.score is not None for r in result.records
    )
    summary["counts"]["empty_masks"] = len(result.empty_masks)
    per_type: dict[str, Any] = {}
    for kind in sorted({r.type for r in result.records} - {GOOD}):
        s, lab = result.scores_and_labels(kind)
        per_type[kind] = _summary(s, lab, type_pixels.get(kind), th)
        per_type[kind]["type_accuracy"] = _type_accuracy(
            (r for r in result.records if r.type == kind),
            result.known_types,
            per_type[kind]["undefined"],
            kind,
        )
        # pixel AUROC and PRO cover only the images with a mask: say how many that is
        per_type[kind]["counts"]["with_mask"] = sum(
            r.has_mask and r.score is not None for r in result.records if r.type == kind and r.label != GOOD
        )
    per_image_kind: dict[str, Any] = {}
    for image_kind in IMAGE_KINDS:
        s, lab = result.scores_and_labels(image_kind=image_kind)
        if s.size:
            per_image_kind[image_kind] = _summary(s, lab, kind_pixels.get(image_kind), th)
    return {
        "model_id": result.model_id,
        "cargo_type": result.cargo_type,
        "data_root": result.data_root,
        "evaluated_at": result.evaluated_at,
        "threshold": th.release,
        "hold_threshold": th.hold,
        "threshold_method": th.method,
        "target_miss_rate": th.target_miss_rate,
        "threshold_promise": result.promise,
        "interval_confidence": CONFIDENCE,
        "intervals_method": INTERVAL_METHODS,
        **summary,
        "type_accuracy": _type_accuracy(result.records, result.known_types, summary["undefined"]),
        "per_type": per_type,
        "per_image_kind": per_image_kind,
        "empty_masks": result.empty_masks,
        # each fused signal alone, ranked like the score: what the fusion adds over its best signal
        "per_signal": signal_aurocs(
            (r.signal_log_odds, r.label) for r in result.records if r.score is not None
        ),
        "duplicates": _duplicates(result),
    }


def _duplicates(result: EvaluationResult) -> dict[str, Any]:
    """``metrics.json``'s ``duplicates``: the test images that are exact copies of training images
    (the bytes alike), and the main figures without them; ``checked`` false where the dataset has no
    training images to compare with."""
    if result.training_images is None:
        return {
            "checked": False,
            "reason": "the dataset has no train/ folder: the test images were not compared with "
            "training images",
            "training_and_test": None,
        }
    copies = result.training_copies
    block: dict[str, Any] = {
        "checked": True,
        "training_images": result.training_images,
        "training_and_test": len(copies),
        "examples": [[train, test] for test, train in list(copies.items())[:MAX_EXAMPLES]],
        "without_copies": None,
    }
    if copies:
        rows = [r for r in result.records if r.score is not None and r.path not in copies]
        scores = np.array([r.score for r in rows], dtype=np.float64)
        labels = np.array([r.label != GOOD for r in rows], dtype=bool)
        release, undefined = result.thresholds.release, {}
        block["without_copies"] = {
            "counts": {"images": len(rows), "good": int((~labels).sum()), "anomalous": int(labels.sum())},
            "release_rate": _value(m.release_rate(scores, labels, release), "release_rate", undefined),
            "miss_rate": _value(m.miss_rate(scores, labels, release), "miss_rate", undefined),
            "image_auroc": _value(m.image_auroc(scores, labels), "image_auroc", undefined),
            "tnr_at_fnr_1pct": _value(m.tnr_at_fnr(scores, labels, _FNR), "tnr_at_fnr_1pct", undefined),
            "undefined": undefined,
        }
    return block


# -------------------------------------------------------------------------------------- output


def _json_ready(value: Any) -> Any:
    """NaN/inf would make invalid JSON; none should occur, but a null is safer than a broken file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


SCORES_COLUMNS: Sequence[str] = (
    "path", "label", "type", "score", "predicted_label", "predicted_type", "error", "image_kind",
    *(f"{name}_log_odds" for name in SIGNALS),
)  # fmt: skip
"""``scores.csv``'s header; a signal's log-odds column is empty where the model does not use it."""


def write_outputs(
    result: EvaluationResult, out_dir: Path, *, also: Mapping[str, bytes] | None = None
) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``scores.csv`` into ``out_dir`` (created), with the files
    ``also`` names (``report.html``'s bytes, say); returns the first two paths.

    All are encoded before any is written, and written together
    (:func:`~datasets.whole_files.files_written_whole`): a row that could not be encoded left a
    ``metrics.json`` beside a ``scores.csv`` cut off at that row, and a page that failed to be
    written left new figures beside an earlier run's page, of another model perhaps."""
    metrics = json.dumps(_json_ready(result.metrics), indent=2, allow_nan=False) + "\n"
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(SCORES_COLUMNS)
    for r in result.records:
        writer.writerow(
            [
                r.path, r.label, r.type, "" if r.score is None else repr(r.score),
                r.predicted_label or "", r.predicted_type or "", r.error or "", r.image_kind or "",
                *(_log_odds_cell(r.signal_log_odds, name) for name in SIGNALS),
            ]
        )  # fmt: skip
    # scores at full precision: a test score can lie within 1e-6 of the release cut, and a rounded
    # one read back against the threshold would land on the other side of it
    encoded = {"metrics.json": metrics.encode("utf-8"), "scores.csv": table.getvalue().encode("utf-8")}
    encoded.update(also or {})
    out_dir.mkdir(parents=True, exist_ok=True)
    files_written_whole({out_dir / name: data for name, data in encoded.items()})
    return out_dir / "metrics.json", out_dir / "scores.csv"


def _log_odds_cell(log_odds: Mapping[str, float] | None, name: str) -> str:
    value = None if log_odds is None else log_odds.get(name)
    return "" if value is None else f"{value:.4f}"
