"""Offsets that put grey pictures' signals on the colour pictures' scale.

One model scores both kinds of picture a cargo type comes in: colour photographs, and grey ones (an
X-ray, a mono camera). Each signal reads the two kinds differently. On the synthetic benchmark the
clean grey vacuum packs' summed log-odds lay 2.3-4.7 below the clean colour packs' (bulk ore: the
one-class score alone, 0.7-1.7), and so did their anomalies'. Under one threshold an X-ray anomaly
then competes with clean colour photographs it would have beaten among X-rays, and the pooled
ranking is worse than either kind's own (vacuum packs, development seed 13: 0.868 pooled against
0.864 grey and 0.893 colour).

:func:`measure_grey_offsets` measures, per signal, how far the grey training normals' median lies
below the colour ones' (out of fold, as the gates see them), and the detector adds that to every
grey view (:attr:`models.detector.DetectorConfig.grey_offsets`). Clean pictures of both kinds then
share one scale, so one calibration and one threshold fit both. Only normals are used, which every
training set has plenty of; the anomalies decide nothing here.

That assumes each kind's anomalies sit as far above its own clean pictures. Where one kind is much
the easier (a fresh seed's grey packs ranked at 0.978 on their own, its colour ones at 0.836),
raising its clean pictures onto the other's scale puts them among the hard kind's anomalies and
the pooled ranking loses (0.883 -> 0.871 there). Over nine vacuum-pack seeds it gained on seven
(mean +0.012 AUROC, +0.09 TNR at 1 % FNR; ``bench/README.md``, session 19).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["MIN_KIND_NORMALS", "GreyOffsets", "grey_offsets_words", "measure_grey_offsets"]

MIN_KIND_NORMALS = 8
"""Fewest training normals of each kind for an offset: below it the median is too unsteady to apply."""


class GreyOffsets(NamedTuple):
    """What :func:`measure_grey_offsets` found.

    Attributes:
        offsets: (one-class log-distance, type-head log-odds, patch-head logit), each added to a
            grey view's signal (:attr:`models.detector.DetectorConfig.grey_offsets`).
        colour, grey: training normals of each kind they were measured on.
    """

    offsets: tuple[float, float, float]
    colour: int
    grey: int

    def card(self) -> dict[str, Any]:
        """The model card's record of them."""
        one_class, head, patch = self.offsets
        return {
            "normals": {"colour": self.colour, "grey": self.grey},
            "least_normals_of_each_kind": MIN_KIND_NORMALS,
            "one_class_distance_factor": math.exp(one_class),
            "type_head_log_odds": head,
            "patch_head_logit": patch,
        }


def measure_grey_offsets(
    log_one_class: Sequence[float],
    type_head: Sequence[float],
    patch_head: Sequence[float],
    grey: Sequence[bool],
) -> GreyOffsets:
    """Per-signal offsets for grey views, from the training normals' out-of-fold signals.

    Args:
        log_one_class: (N,) log of each normal's one-class image score.
        type_head: (N,) its type-head anomaly log-odds (NaN where unknown).
        patch_head: (N,) its patch-head score in logit units (NaN where unknown).
        grey: (N,) whether the picture is grey (:func:`models.tiling.is_grey`).

    Returns:
        The offsets, each the colour normals' median minus the grey normals'. A signal gets 0 where
        either kind has fewer than :data:`MIN_KIND_NORMALS` finite values.
    """
    is_grey = np.asarray(grey, dtype=bool)
    out = []
    for values in (log_one_class, type_head, patch_head):
        v = np.asarray(values, dtype=np.float64)
        if v.shape != is_grey.shape:
            raise ValueError(f"{v.shape[0]} signal values for {is_grey.shape[0]} pictures")
        ok = np.isfinite(v)
        colour, grey_v = v[ok & ~is_grey], v[ok & is_grey]
        if min(colour.size, grey_v.size) < MIN_KIND_NORMALS:
            out.append(0.0)
        else:
            offset = float(np.median(colour) - np.median(grey_v))
            out.append(offset if math.isfinite(offset) else 0.0)
    return GreyOffsets((out[0], out[1], out[2]), int((~is_grey).sum()), int(is_grey.sum()))


def grey_offsets_words(record: dict[str, Any] | str | None) -> str:
    """One line on a card's ``training.grey_offsets`` record, for the training summary and report."""
    if record is None:
        return "none (trained before grey offsets existed)"
    if isinstance(record, str):
        return record
    normals = record["normals"]
    counts = f"{normals['grey']} grey and {normals['colour']} colour training normals"
    if (
        normals["grey"] < record["least_normals_of_each_kind"]
        or normals["colour"] < record["least_normals_of_each_kind"]
    ):
        return f"no offsets: {counts} (at least {record['least_normals_of_each_kind']} of each kind needed)"
    return (
        f"grey views' one-class distances x{record['one_class_distance_factor']:.3f}, "
        f"type head {record['type_head_log_odds']:+.3f} and patch head {record['patch_head_logit']:+.3f} "
        f"log-odds (medians of {counts})"
    )
