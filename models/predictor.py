"""Scoring decoded images with a :class:`~models.detector.Detector`: preprocessing, batching, tiling.

:class:`ImageScorer` turns arbitrary decoded images into per-image scores and full-size maps (used by
training for validation and by the predictor). :class:`ArtifactPredictor` adds the model card,
thresholds and labels: it implements :class:`models.inference.Predictor` and is what
``models.artifact.load_model`` returns — the only inference entry point of the scorer and the server.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from datasets.errors import ModelError
from models.detector import Detector, RawOutput
from models.fusion import SIGNALS
from models.inference import GOOD, Prediction, Thresholds
from models.runtime import DEFAULT_RUNTIME, raw_runner
from models.tiling import (
    SIXTEEN_BITS,
    TilingConfig,
    View,
    beyond_bit_depth,
    make_views,
    stitch_maps,
    to_rgb_float,
    view_downscale_hw,
)

__all__ = ["ArtifactPredictor", "ImageResult", "ImageScorer", "UNKNOWN"]

log = logging.getLogger("clearsight.models")

UNKNOWN = "unknown"
"""Type reported when the one-class detector fires but the head finds no known type."""


class ImageResult(NamedTuple):
    """One image's model outputs.

    Attributes:
        score: fused score in [0, 1] (max over views).
        score_raw: one-class score of the same view, distance units.
        anomaly_map: (H, W) float32 in [0, 1] at the image's own size (``None`` if not asked for).
        type_logits: (K,) float32 head logits of the highest-scoring view.
        log_odds: (3,) float64 calibrated log-odds of each fused signal for that view, in
            :data:`models.fusion.SIGNALS` order, NaN where a signal is switched off
            (:meth:`models.fusion.Fusion.log_odds`).
    """

    score: float
    score_raw: float
    anomaly_map: np.ndarray | None
    type_logits: np.ndarray
    log_odds: np.ndarray


def _joined(tensors: list[torch.Tensor]) -> torch.Tensor:
    # a batch run in one part (the usual case) is used as is: copying its maps cost ~5 % of a view
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


class ImageScorer:
    """Preprocess, batch and run a detector over images of any size, dtype and channel count.

    Args:
        detector: the scoring module (its config gives input size and normalisation).
        tiling: when and how to tile large images.
        sixteen_bit_depth: the bits a 16-bit image is read as holding (the card's
            ``preprocessing.sixteen_bit_depth``: what the training images held; see
            :func:`models.tiling.sixteen_bit_depth`).
        batch_size: views per forward pass.
        raw: what computes ``detector.raw`` on a batch of views; default the detector itself in
            PyTorch (see :func:`models.runtime.raw_runner` for ONNX Runtime).
        saw_sixteen_bit: False where training saw no 16-bit image (the card's
            ``training.sixteen_bit``), so that ``sixteen_bit_depth`` was assumed, never measured.
        model: the model scored with, as ``{"model_id": ..., "cargo_type": ...}``: named at the start
            of its warnings and given as fields of their log records.

    Attributes:
        beyond_bit_depth: how many 16-bit images it was given held samples above
            ``sixteen_bit_depth`` bits (clipped; the first is warned about).
        unmeasured_sixteen_bit: how many 16-bit images it was given without ``saw_sixteen_bit``
            (the first is warned about).

    The warnings are records of the ``clearsight.models`` logger, not :func:`warnings.warn`: each is
    given once per scorer, and a warnings filter (``simplefilter("ignore")`` in another thread, a
    caller's) dropped it for good; the service writes them as its other JSON log lines.
    """

    def __init__(
        self,
        detector: Detector,
        *,
        tiling: TilingConfig,
        sixteen_bit_depth: int = SIXTEEN_BITS,
        batch_size: int = 16,
        raw: Callable[[torch.Tensor], RawOutput] | None = None,
        saw_sixteen_bit: bool = True,
        model: Mapping[str, str] | None = None,
    ) -> None:
        self.detector = detector.eval()
        self.model = dict(model or {})
        self.tiling = tiling
        self.sixteen_bit_depth = sixteen_bit_depth
        self.saw_sixteen_bit = saw_sixteen_bit
        self.beyond_bit_depth = 0
        self.unmeasured_sixteen_bit = 0
        self.batch_size = max(1, int(batch_size))
        self._raw = raw or self.detector.raw

    def views(self, image: np.ndarray) -> tuple[torch.Tensor, list[View], tuple[int, int]]:
        """Image -> ((T, 3, S, S) normalised views, their rectangles, (H, W))."""
        bits = self.sixteen_bit_depth
        if not self.saw_sixteen_bit and np.asarray(image).dtype == np.uint16:
            self.unmeasured_sixteen_bit += 1
            if self.unmeasured_sixteen_bit == 1:
                # read at the full range, a 12-bit camera's file fills a sixteenth of [0, 1]: the
                # model released 12-bit anomalies it held at 8 bits, and nothing said why
                self._warn(
                    f"a 16-bit image is read at {bits} bits ({2**bits - 1} is white), a depth assumed: this "
                    "model saw no 16-bit image at training, so the bits its camera stores were never "
                    "measured, and a 10-, 12- or 14-bit camera's pictures reach it darker and with less "
                    "contrast than its 8-bit training images. Train it on 16-bit pictures from this "
                    "camera, or with --sixteen-bit-depth set to the bits the camera stores"
                )
        if beyond_bit_depth(image, bits):
            self.beyond_bit_depth += 1
            if self.beyond_bit_depth == 1:
                self._warn(
                    f"a 16-bit image holds samples above {2**bits - 1}, the most this model reads: "
                    f"its card records 16-bit images as holding {bits} bits (preprocessing."
                    "sixteen_bit_depth, set at training), and the samples above are clipped to white. "
                    "If the training images under-represented bright exposures, "
                    "retrain with --sixteen-bit-depth (the camera's depth); if the image comes from "
                    "another camera, or one set to more bits, score it with a model trained on such files"
                )
        rgb = to_rgb_float(image, sixteen_bit_depth=bits)
        cfg = self.detector.config
        batch, views = make_views(rgb, size=cfg.input_size, mean=cfg.mean, std=cfg.std, tiling=self.tiling)
        return batch, views, (rgb.shape[0], rgb.shape[1])

    def _warn(self, message: str) -> None:
        named = self.model
        if named:
            message = f"model {named.get('model_id')} ({named.get('cargo_type')}): {message}"
        log.warning("%s", message, extra=named)

    def raw_outputs(
        self, images: Sequence[np.ndarray], *, maps: bool = True, map_stride: int = 1
    ) -> list[tuple[RawOutput, list[View], tuple[int, int]]]:
        """Every view of every image through ``detector.raw`` (or the runtime given at construction),
        ``batch_size`` views at a time.

        Returns, per image: its :class:`~models.detector.RawOutput` over its T views (score_raw
        (T,), map_raw (T, S/map_stride, S/map_stride) or (T, 0, 0) without ``maps``, type_logits
        (T, K), patch_score (T,), patch_map like map_raw), the view rectangles and the image's (H, W).
        """
        out: list[tuple[RawOutput, list[View], tuple[int, int]]] = []
        bs = self.batch_size
        with torch.inference_mode():
            for prepared in self._prepared_groups(images):
                views = _joined([p[0] for p in prepared])
                parts = [self._raw(views[lo : lo + bs]) for lo in range(0, views.shape[0], bs)]
                score_raw = _joined([p.score_raw for p in parts])
                logits = _joined([p.type_logits for p in parts])
                patch = _joined([p.patch_score for p in parts])
                map_raw, patch_map = (
                    (
                        _joined([getattr(p, name)[:, ::map_stride, ::map_stride] for p in parts])
                        if maps
                        else torch.empty(views.shape[0], 0, 0)
                    )
                    for name in ("map_raw", "patch_map")
                )
                counts = [p[0].shape[0] for p in prepared]
                tensors = (score_raw, map_raw, logits, patch, patch_map)
                splits = zip(*(torch.split(t, counts) for t in tensors), strict=True)
                for (_, rects, size), parts_of_image in zip(prepared, splits, strict=True):
                    out.append((RawOutput(*parts_of_image), rects, size))
        return out

    def _prepared_groups(
        self, images: Sequence[np.ndarray]
    ) -> Iterator[list[tuple[torch.Tensor, list[View], tuple[int, int]]]]:
        """The images' views, a group of consecutive images at a time: as many as fill a batch
        (``batch_size`` images of one view each). Views are made group by group, so that memory
        holds about one batch of them plus one image's (at most :func:`models.tiling.max_views`),
        not ``batch_size`` tiled images' worth at once."""
        group: list[tuple[torch.Tensor, list[View], tuple[int, int]]] = []
        count = 0
        for image in images:
            group.append(self.views(image))
            count += group[-1][0].shape[0]
            if count >= self.batch_size:
                yield group
                group, count = [], 0
        if group:
            yield group

    def score(self, images: Sequence[np.ndarray], *, maps: bool = True) -> list[ImageResult]:
        """Score images; the image score is the max over its views (tiles)."""
        out: list[ImageResult] = []
        det = self.detector
        with torch.inference_mode():
            for raw, rects, (h, w) in self.raw_outputs(images, maps=maps):
                fused = det.fusion(raw.score_raw, raw.type_logits, raw.patch_score)
                log_odds = det.fusion.log_odds(raw.score_raw, raw.type_logits, raw.patch_score)
                best = int(fused.argmax())
                amap = None
                if maps:
                    norm = det.normalise_map(raw.map_raw, raw.patch_map).numpy()
                    amap = np.clip(stitch_maps(norm, rects, h, w, self.tiling.overlap), 0.0, 1.0)
                    amap = amap.astype(np.float32)
                out.append(
                    ImageResult(
                        float(fused[best]),
                        float(raw.score_raw[best]),
                        amap,
                        raw.type_logits[best].numpy(),
                        log_odds[best].numpy().astype(np.float64),
                    )
                )
        return out


class ArtifactPredictor:
    """A loaded model artifact: scores images and labels them at the card's thresholds.

    Implements :class:`models.inference.Predictor`.

    Args:
        detector: the loaded detector.
        card: its model card.
        batch_size: views per forward pass.
        runtime: ``"onnxruntime"`` (default) or ``"torch"``; see :mod:`models.runtime`.
    """

    def __init__(
        self,
        detector: Detector,
        card: Mapping[str, Any],
        *,
        batch_size: int = 16,
        runtime: str = DEFAULT_RUNTIME,
    ) -> None:
        self._card = dict(card)
        pre = card["preprocessing"]
        tiling = TilingConfig(**pre["tiling"])
        detector = detector.eval()
        self._runtime = runtime
        self._scorer = ImageScorer(
            detector,
            tiling=tiling,
            # a card without it was written before training measured it: the full range, as then
            sixteen_bit_depth=int(pre.get("sixteen_bit_depth", SIXTEEN_BITS)),
            batch_size=batch_size,
            raw=raw_runner(detector, runtime),
            # 16 assumed, not measured; a card older than the record says nothing either way
            saw_sixteen_bit=(card.get("training", {}).get("sixteen_bit") or {}).get("chosen_by")
            != "no 16-bit image",
            model={"model_id": str(card["model_id"]), "cargo_type": str(card["cargo_type"])},
        )
        t = card["thresholds"]
        self._thresholds = Thresholds(
            float(t["release"]), float(t["hold"]), float(t["target_miss_rate"]), str(t["method"])
        )
        self._class_names = tuple(detector.config.class_names)
        self._pseudo = set(card.get("training", {}).get("pseudo_types", []))
        self._training_downscale = _training_downscale_hw(pre.get("source_resolution", {}))
        self._training_span = _training_span(pre.get("source_resolution", {}), self._training_downscale)
        self._training_sides = _training_sides(pre.get("source_resolution", {}))
        span = self._training_span
        if self._training_sides is None and span is not None and any(lo < hi for lo, hi in span):
            # said at load, not per image: the card, not any image, is what is out of date, and a
            # model trained on mixed sizes before the median was recorded otherwise kept the span
            # rule silently, releasing a thumbnail 4x off the others on a scale of 2.0
            named = {"model_id": self.model_id, "cargo_type": self.cargo_type}
            log.warning(
                "model %s (%s): its card records the span of its training images' scales "
                "(preprocessing.source_resolution.downscale_hw_range) but not their median "
                "(downscale_short_long, recorded by training since), so images are checked against "
                "the span alone, the older and looser scale check: one training image 2x off the "
                "others widened it 2x, and an image 4x off most of them can be released on its score. "
                "Retrain the model to check images against the median, as training does",
                self.model_id,
                self.cargo_type,
                extra=named,
            )

    @property
    def model_id(self) -> str:
        return str(self._card["model_id"])

    @property
    def cargo_type(self) -> str:
        return str(self._card["cargo_type"])

    @property
    def thresholds(self) -> Thresholds:
        return self._thresholds

    @property
    def card(self) -> Mapping[str, Any]:
        return self._card

    @property
    def runtime(self) -> str:
        """What executes the scoring graph: ``"onnxruntime"`` or ``"torch"``."""
        return self._runtime

    @property
    def scorer(self) -> ImageScorer:
        """The preprocessing, tiling and batching around the detector (for benchmarks)."""
        return self._scorer

    @property
    def detector(self) -> Detector:
        """The scoring module (for export and benchmarks)."""
        return self._scorer.detector

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Score a batch of decoded images; see :meth:`models.inference.Predictor.predict`."""
        results = self._scorer.score(images, maps=True)
        return [self._to_prediction(r) for r in results]

    def _to_prediction(self, r: ImageResult) -> Prediction:
        logits = r.type_logits.astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        # a NaN in the image (a float TIFF) makes every probability NaN: none is given then, as a
        # non-finite signal is left out below, so that the row still records the image's score
        finite = bool(np.all(np.isfinite(probs)))
        named = zip(self._class_names, probs, strict=True)
        type_probs = {name: float(p) for name, p in named} if finite else {}
        # "not below the release cut": a NaN score (a float image with NaNs in it) is not released
        anomalous = not r.score < self._thresholds.release
        anomaly_type: str | None = None
        if anomalous:
            best = int(np.argmax(probs)) if finite else 0
            name = self._class_names[best]
            # A "good" head verdict, or a synthetic training type, names no real type.
            anomaly_type = UNKNOWN if best == 0 or name in self._pseudo else name
        assert r.anomaly_map is not None
        return Prediction(
            score=r.score,
            label="anomalous" if anomalous else GOOD,
            anomaly_type=anomaly_type,
            type_probabilities=type_probs,
            anomaly_map=r.anomaly_map,
            thresholds=self._thresholds,
            model_id=self.model_id,
            scale_vs_training=self.scale_vs_training(*r.anomaly_map.shape[:2]),
            signal_log_odds={
                name: float(v) for name, v in zip(SIGNALS, r.log_odds, strict=True) if np.isfinite(v)
            },
        )

    def scale_vs_training(self, height: int, width: int) -> float | None:
        """An image's :attr:`~models.inference.Prediction.scale_vs_training`, from its size alone.

        Measured along the view's height and its width apart, against the span of the training
        views' own along that side (1.0 inside it, else the ratio to its nearer end), and along its
        shorter and its longer side against the training views' median shorter and longer side
        (``downscale_short_long``, the median training refuses images more than 2x off by); the
        figure farther off (by ratio, either way) is the scale. Every view is resized to a square, so
        an image stretched along one side only (a 64 x 3 strip for a model of 64 px squares)
        reaches the model as far from the training scale as one resized along both, while a model
        trained on landscape and portrait images takes both. The span alone let one training image
        2x off the others move its end 2x, and a thumbnail 4x off the others then scored 2.0; a card
        without the median (written before it was recorded) is read by the span alone.
        """
        if self._training_span is None:
            return None
        size = self._scorer.detector.config.input_size
        own = view_downscale_hw(height, width, size=size, tiling=self._scorer.tiling)
        ratios = [
            lo / o if o < lo else hi / o if o > hi else 1.0
            for (lo, hi), o in zip(self._training_span, own, strict=True)
        ]
        if self._training_sides is not None:
            ratios += [t / o for t, o in zip(self._training_sides, sorted(own), strict=True)]
        farther = max(ratios, key=lambda r: abs(math.log(r)))
        return _round_away_from_one(farther)


def _round_away_from_one(scale: float) -> float:
    """``scale`` to 4 places, rounded away from 1: a scale just beyond the tolerance (0.49996 for an
    image training refuses 2.000167x off) rounded to nearest read as on its edge (0.5) and the image
    was released on its score. Away from 1 no figure crosses a 4-place tolerance either way, so the
    rounded scale is flagged exactly when the unrounded one is."""
    rounded = round(scale, 4)
    if scale > 1 and rounded < scale:
        return round(rounded + 1e-4, 4)
    if scale < 1 and rounded > scale:
        return round(rounded - 1e-4, 4)
    return rounded


def _training_downscale_hw(source: Mapping[str, Any]) -> tuple[float, float] | None:
    """The training views' median downscale along height and width, from the card's
    ``preprocessing.source_resolution``; None for a card written before training recorded it.

    ``downscale_hw`` is recorded only for views that were not square; without it both sides are
    the longer side's ``downscale`` (cards written before it was recorded are read so too).

    Raises:
        ModelError: the card holds figures that are not positive numbers.
    """
    trained = source.get("downscale")
    if not trained:
        return None
    figures = source.get("downscale_hw", [trained, trained])
    try:
        h, w = (float(v) for v in figures)
    except (TypeError, ValueError):
        h = w = math.nan
    if not (math.isfinite(h) and math.isfinite(w) and h > 0 and w > 0):
        raise ModelError(
            "the model card's preprocessing.source_resolution holds downscale "
            f"{trained!r} and downscale_hw {source.get('downscale_hw')!r}; accepted: positive numbers, "
            "and downscale_hw a list of two"
        )
    return h, w


def _training_span(
    source: Mapping[str, Any], medians: tuple[float, float] | None
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The least and most downscale of the training views along height and along width, from the
    card's ``source_resolution.downscale_hw_range``; without it (one shape of view, or a card written
    before it was recorded) the medians ``medians`` at both ends; None without those.

    Raises:
        ModelError: the span is not two [least, most] pairs of positive numbers.
    """
    if medians is None:
        return None
    span = source.get("downscale_hw_range")
    if span is None:
        return (medians[0], medians[0]), (medians[1], medians[1])
    try:
        (h_lo, h_hi), (w_lo, w_hi) = ((float(lo), float(hi)) for lo, hi in span)
    except (TypeError, ValueError):
        h_lo = h_hi = w_lo = w_hi = math.nan
    if not all(math.isfinite(v) and v > 0 for v in (h_lo, h_hi, w_lo, w_hi)) or h_lo > h_hi or w_lo > w_hi:
        raise ModelError(
            f"the model card's preprocessing.source_resolution holds downscale_hw_range {span!r}; "
            "accepted: [[least, most] along the height, [least, most] along the width], positive "
            "numbers, least no more than most"
        )
    return (h_lo, h_hi), (w_lo, w_hi)


def _training_sides(source: Mapping[str, Any]) -> tuple[float, float] | None:
    """The training views' median downscale along their shorter and their longer side, from the
    card's ``source_resolution.downscale_short_long``; None where it is not recorded (one shape of
    view, whose span says as much, or a card written before it was recorded).

    Raises:
        ModelError: it is not a [shorter, longer] pair of positive numbers, shorter no more than longer.
    """
    sides = source.get("downscale_short_long")
    if sides is None:
        return None
    try:
        shorter, longer = (float(v) for v in sides)
    except (TypeError, ValueError):
        shorter = longer = math.nan
    if not (math.isfinite(shorter) and math.isfinite(longer) and 0 < shorter <= longer):
        raise ModelError(
            f"the model card's preprocessing.source_resolution holds downscale_short_long {sides!r}; "
            "accepted: [median along the shorter side, median along the longer side], positive "
            "numbers, the shorter no more than the longer"
        )
    return shorter, longer
