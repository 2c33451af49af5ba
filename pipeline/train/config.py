"""What a training run is told: :class:`TrainConfig`, the choices of its fields, and the progress
callback."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from datasets.cargo import CARGO_TYPES
from datasets.errors import InputError
from models.artifact import cargo_type_problem
from models.fusion import FUSION_RULES
from models.tiling import SENSOR_BIT_DEPTHS, TilingConfig, default_overlap, min_tile_size
from pipeline.patch_training import NEGATIVES_PER_VIEW
from pipeline.resolution import MAX_IMAGE_SIZE

KNOWN_CARGO_TYPES = CARGO_TYPES
DEEP_FEATURES = ("auto", "pooled", "sharp")
"""Choices of ``TrainConfig.deep_features``."""
SHARP_CARGO_TYPES = ("vacuum_pack",)
"""Cargo types whose patch embeddings read the deeper feature maps sharp under ``deep_features="auto"``:
their anomalies are mostly small or thin (a puncture, an open seal, a screw) on a product that varies
from pack to pack. Bulk ore's include large, diffuse ones (a wet patch, the wrong material) that the
3x3 average of the deeper maps ranks better."""

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as each stage advances."""


FINE_SCALE_MODES = ("auto", "on", "off")
"""``TrainConfig.fine_scale``: kept when it measurably helps, always, never."""

HEAD_GATE_EVIDENCE = ("out-of-fold", "validation")
"""``TrainConfig.head_gate_evidence``: what the type head's fusion gate is judged on."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train. Validated eagerly; every bad value is named.

    Attributes:
        backbone: registered backbone (``lite0`` default; ``lite1``, ``lite2``, ``resnet18``,
            ``wide_resnet50``).
        backbone_weights: local weights file (required for the ResNets); ``None`` = bundled weights.
        image_size: model input side S in pixels.
        target_miss_rate: share of anomalous validation images the release threshold may let through.
        hold_false_alarm_rate: share of normal validation images the hold threshold may hold.
        cargo_type: recorded in the card and the model id; ``None`` = dataset folder name when it is a
            known cargo type.
        coreset_ratio: share of training patches kept in the memory bank.
        max_bank: cap on memory-bank rows.
        proj_dim: random projection of patch embeddings (0 = none).
        score_reduction: ``"topk"`` (default: mean of the 10 largest patch distances) or ``"max"``
            of the smoothed map. With the border fix the two are within noise of each other: the
            max was ahead on the development seed (clean ore released at 1 % missed 0.917 vs 0.883)
            and behind on the benchmark seed 2027 (0.633 vs 0.717), so the default stays.
        pad: reflect padding (input pixels) around each view before the backbone; see
            ``DetectorConfig.pad``. 16 costs ~27 % more backbone time at S = 256 and removes the
            border artefacts that otherwise dominate normal images' scores. With the zero-padded
            3x3 average (below) it still helps: bulk ore, development seed 11, AUROC 0.999 with it and
            0.996 without (TNR at 1 % FNR 0.917 and 0.800).
        position_norm: put every patch-grid position's distances on one scale, fitted on the
            out-of-fold normal distances (``models.detector.fit_position_norm``).
        zero_padded_pooling: the patch embeddings' 3x3 average counts the zeros beyond the feature
            map's edge, as PatchCore's reference code and anomalib do (``models.features``); False
            is the first detector's in-map average.
        patch_head: train the patch head (``models.patch_head``) on the labelled anomalies' masks
            when they have any; it joins the fusion only if validation supports it.
        fine_scale: a second memory bank on the backbone's stride-4 features
            (:class:`models.patchcore.FineBank`) for thin and small anomalies: ``"auto"`` keeps it
            when the out-of-fold one-class scores rank better with it
            (:func:`pipeline.fusion_gate.fine_scale_gate`), ``"on"`` always, ``"off"`` (the
            default) never. Off by default because the full model's gain is within noise: on four
            synthetic seeds ``"auto"`` moved bulk-ore AUROC by -0.009 to +0.022 and TNR at 1 % FNR by
            -0.15 to +0.12, although it lifts the one-class score alone (out of fold 0.924 -> 0.954
            and 0.962 -> 0.975 on the two fresh seeds); it adds about half to the fit time.
        fine_tune_steps: fine-tune the backbone on the training split's defect masks and
            pseudo-anomalies for this many steps before fitting (:mod:`pipeline.fine_tuning`); 0 (the
            default) keeps the pretrained weights. About 0.5-1 s per step on two CPU cores.
            On vacuum packs it raised test image AUROC on all five seeds measured (+0.003 to
            +0.090); on bulk ore it moved AUROC +0.005 and -0.006 on two (``pipeline.fine_tuning``).
        fine_tune_lr: the backbone's learning rate when fine-tuning.
        fusion: how the calibrated signals combine (:mod:`models.fusion`): ``"sum"`` (the default)
            adds their log-odds, ``"max"`` takes the largest of their probabilities. Frozen models,
            both rules on the same files (``bench/README.md``, session 14): bulk ore of six seeds
            ranked about as well under the sum (AUROC -0.001 to +0.004) and released more clean
            cargo at 1 % FNR (TNR +0.06 on average); vacuum packs with 8 labelled anomalies per type
            went both ways (-0.032 to +0.052, +0.006 on average over seven seeds), and with 24 or 64
            per type the sum ranked better on all eight models measured (+0.001 to +0.052): the
            more the heads have learned, the more their "good" is worth.
            Fine-tuned models gained too (+0.0005 to +0.030 on seven, session 10). The max keeps
            one guarantee: a head's confident "good" never lowers a one-class alarm.
        val_fraction: share of good and of each labelled anomaly type held out for validation.
        val_anomaly_fraction: share of each labelled anomaly type held out for validation, when it
            should differ from ``val_fraction`` (``None``, the default, uses ``val_fraction``). The
            release threshold's miss-rate promise rests on the validation anomalies alone, so a
            larger share strengthens it without taking normals from the memory bank.
        folds: out-of-fold splits of the training normals for the head's inputs.
        tile_size: tile images larger than this many pixels (0 = always resize).
        tile_overlap: pixels neighbouring tiles share. ``None`` (the default) is a quarter of the
            tile (:func:`models.tiling.default_overlap`), resolved when the config is made, so that
            the field always holds pixels after: tiles that only abut (0) leave a straight seam in
            the stitched anomaly map at every tile border.
        sixteen_bit_depth: the bits 16-bit images are read as holding, one of
            :data:`models.tiling.SENSOR_BIT_DEPTHS`; ``None`` (the default) measures it on the
            training images (:func:`models.tiling.sixteen_bit_depth`). Given where the training
            images under-represent bright exposures that the camera will take.
        batch_size: views per forward pass.
        seed: seeds the split, the coreset, pseudo-anomalies and the head.
        threads: images embedded, and patch heads fitted, at a time (``None``:
            ``torch.get_num_threads()``). Every torch op of the run is on one thread, so the model
            is the same for any count; fine-tuning's ops run on ``threads`` each
            (``pipeline.train.run``).
        min_head_auroc: least AUROC of the supervised head on its gate's evidence for it to join the
            fusion (see ``gate_signal``); 0 keeps it whenever the fusion does not rank worse than
            one-class.
        head_gate_evidence: what the type head's gate is judged on: ``"out-of-fold"`` (the
            validation split plus every labelled training image, each scored by a head fitted on the
            other folds; validation alone for a fine-tuned backbone, which saw them) or
            ``"validation"`` (the validation split alone, as before session 16).
        head_gate_tolerance: how much worse (image AUROC on the evidence) the fusion with the type
            head may rank than the one-class score alone and still count as no worse. Near 1 the
            evidence cannot tell the two apart (one standard error of an AUROC of 0.999 on 24
            anomalies and 150 normals is 0.005), and a one-class score at 0.999 on the evidence
            dropped a type head that ranked at 0.998 there and lifted the test AUROC 0.975 -> 0.989
            (fresh seed 8484, bulk ore). The patch head, which has no floor of its own, gets none:
            0.003 let one in that cost 0.004 on development seed 12. 0 gives the rule before.
        co_located: when the one-class score and the patch head are both fused under ``"sum"``,
            read them at the one pixel where their calibrated log-odds add up to the most
            (:meth:`models.fusion.Fusion.co_located`), not each at its own hottest patches. On
            vacuum packs the one-class score's peak of a clean pack often lies in the background
            and the patch head's on a barcode, and the image-level sum added the two; read at one
            spot, they must agree. Test image AUROC, vacuum packs: +0.016 to +0.050 on all seven
            seeds measured (four development, three fresh); bulk ore, where the patch head was
            fused: -0.001 to +0.002 (``bench/README.md``, session 18). False sums the signals'
            own image scores.
        patch_mirrors: the patch head (on frozen features) also learns from the three mirror
            images of each labelled defect image (:func:`pipeline.patch_training.mirrored`), in
            its source's fold. A defect is no less one mirrored, while the backbone's features
            of it change, so the head sees three times the defect patches. Vacuum packs, with
            the one-spot fusion: test image AUROC up on five of seven seeds, -0.010 to +0.039,
            mean +0.014; bulk ore -0.002 to +0.011 (``bench/README.md``, session 18). About 2-4 s
            more fit.
        grey_offsets: put the grey pictures' signals (X-rays, mono cameras) on the colour ones'
            scale by per-signal offsets measured on the training normals out of fold
            (:mod:`pipeline.picture_kinds`), when each kind has at least
            :data:`~pipeline.picture_kinds.MIN_KIND_NORMALS` of them. Vacuum packs: test image
            AUROC -0.012 to +0.053 on nine seeds (up on seven, mean +0.012), TNR at 1 % FNR up on
            six (mean +0.09); bulk ore within 0.002 (``bench/README.md``, session 19).
        deep_features: how the patch embeddings read the backbone's deeper feature maps:
            ``"pooled"`` averages every map over 3x3 neighbours (PatchCore's), ``"sharp"`` reads the
            deeper maps cell by cell (:class:`models.features.PatchEmbedder`), ``"auto"`` (the
            default) picks by cargo type (:data:`SHARP_CARGO_TYPES`: sharp for vacuum packs,
            pooled for anything else). Sharp ranks small and thin defects better and large, diffuse
            ones worse: vacuum packs (a puncture held out) +0.001 to +0.043 test image AUROC on all
            nine seeds measured, mean +0.024; bulk ore -0.021 to +0.002 on four, the held-out wet
            patch losing up to 0.06 (``bench/README.md``, session 20).
        patch_negatives: normal patches the patch head draws from each view of a training image
            (:func:`pipeline.patch_training.patch_examples`; 64 before session 21).
        patch_negative_share: the share of those normal patches each of the patch head's fitting
            steps sees, a fresh draw per step (:func:`models.patch_head.fit_patch_head`; 1.0 =
            full-batch, as before session 21). 256 per view, a quarter per step, costs each step
            what 64 did and shows the head four times the normal variety: vacuum packs' test
            image AUROC up or equal on all nine seeds measured (+0.000 to +0.016, mean +0.006;
            the TNR at 1 % FNR not up), the patch head alone +0.019 on average; bulk ore +0.000
            to +0.003 on three seeds, but the demo's 128 px ore model lost its patch head at
            the gate (0.979 -> 0.958; ``bench/README.md``, session 21).
        patch_hidden: the width of the patch head's hidden layer (``DetectorConfig.patch_hidden``;
            64 before session 21) on frozen features; a fine-tuned head keeps
            ``FineTuneConfig.hidden`` (64), the width its figures were measured at. 128 against
            64, vacuum packs: test image AUROC level (mean +0.003 over twelve seeds), the TNR at
            1 % FNR up on nine of twelve (mean 0.242 -> 0.336), on all three seeds measured last
            and used for nothing else; bulk ore -0.001 to +0.003 on three (``bench/README.md``,
            session 21).
    """

    backbone: str = "lite0"
    backbone_weights: str | None = None
    image_size: int = 256
    target_miss_rate: float = 0.01
    hold_false_alarm_rate: float = 0.005
    cargo_type: str | None = None
    coreset_ratio: float = 0.1
    max_bank: int = 16384
    proj_dim: int = 0
    score_reduction: str = "topk"
    pad: int = 16
    position_norm: bool = True
    zero_padded_pooling: bool = True
    patch_head: bool = True
    fine_scale: str = "off"
    fine_tune_steps: int = 0
    fine_tune_lr: float = 3e-4
    fusion: str = "sum"
    val_fraction: float = 0.2
    val_anomaly_fraction: float | None = None
    folds: int = 2
    tile_size: int = 0
    tile_overlap: int | None = None
    sixteen_bit_depth: int | None = None
    batch_size: int = 16
    seed: int = 0
    threads: int | None = None
    min_head_auroc: float = 0.9
    head_gate_evidence: str = "out-of-fold"
    head_gate_tolerance: float = 0.003
    co_located: bool = True
    patch_mirrors: bool = True
    grey_offsets: bool = True
    deep_features: str = "auto"
    patch_negatives: int = NEGATIVES_PER_VIEW
    patch_negative_share: float = 0.25
    patch_hidden: int = 128

    @property
    def val_anomaly_share(self) -> float:
        """The share of each labelled anomaly type held out: ``val_anomaly_fraction`` or ``val_fraction``."""
        return self.val_fraction if self.val_anomaly_fraction is None else self.val_anomaly_fraction

    @property
    def tiling(self) -> TilingConfig:
        """The tiling the model is trained and scores with (no overlap without tiles)."""
        return TilingConfig(self.tile_size, self._overlap if self.tile_size else 0)

    @property
    def _overlap(self) -> int:
        return default_overlap(self.tile_size) if self.tile_overlap is None else self.tile_overlap

    def __post_init__(self) -> None:
        given_overlap = self.tile_overlap  # None: not given, a quarter of a tile where there are tiles
        object.__setattr__(self, "tile_overlap", self._overlap)  # frozen: None becomes its pixels once
        seed = str(self.seed) if len(str(self.seed)) <= 24 else f"{str(self.seed)[:20]}..."  # bounded
        checks: list[tuple[bool, str]] = [
            (
                32 <= self.image_size <= MAX_IMAGE_SIZE,
                f"image_size {self.image_size} must be in [32, {MAX_IMAGE_SIZE}]",
            ),
            (
                0.0 < self.target_miss_rate < 1.0,
                f"target_miss_rate {self.target_miss_rate} must be in (0, 1)",
            ),
            (
                0.0 <= self.hold_false_alarm_rate < 1.0,
                f"hold_false_alarm_rate {self.hold_false_alarm_rate} must be in [0, 1)",
            ),
            (0.0 < self.coreset_ratio <= 1.0, f"coreset_ratio {self.coreset_ratio} must be in (0, 1]"),
            (self.max_bank >= 1, f"max_bank {self.max_bank} must be >= 1"),
            (self.proj_dim >= 0, f"proj_dim {self.proj_dim} must be >= 0"),
            (
                0 <= self.pad <= self.image_size // 2 and self.pad % 16 == 0,
                f"pad {self.pad} must be a multiple of 16 in [0, image_size / 2]",
            ),
            (
                self.score_reduction in ("max", "topk"),
                f"score_reduction {self.score_reduction!r} not in max, topk",
            ),
            (0.0 < self.val_fraction < 1.0, f"val_fraction {self.val_fraction} must be in (0, 1)"),
            (
                self.val_anomaly_fraction is None or 0.0 < self.val_anomaly_fraction < 1.0,
                f"val_anomaly_fraction {self.val_anomaly_fraction} must be in (0, 1)",
            ),
            (self.folds >= 2, f"folds {self.folds} must be >= 2"),
            (self.patch_negatives >= 1, f"patch_negatives {self.patch_negatives} must be >= 1"),
            (self.patch_hidden >= 1, f"patch_hidden {self.patch_hidden} must be >= 1"),
            (
                0.0 < self.patch_negative_share <= 1.0,
                f"patch_negative_share {self.patch_negative_share} must be in (0, 1]",
            ),
            (
                self.deep_features in DEEP_FEATURES,
                f"deep_features {self.deep_features!r} not in {', '.join(DEEP_FEATURES)}",
            ),
            (
                self.fine_scale in FINE_SCALE_MODES,
                f"fine_scale {self.fine_scale!r} not in {', '.join(FINE_SCALE_MODES)}",
            ),
            (self.fine_tune_steps >= 0, f"fine_tune_steps {self.fine_tune_steps} must be >= 0"),
            (self.fine_tune_lr > 0, f"fine_tune_lr {self.fine_tune_lr} must be > 0"),
            (self.fusion in FUSION_RULES, f"fusion {self.fusion!r} not in {', '.join(FUSION_RULES)}"),
            (
                self.fine_tune_steps == 0 or self.fine_scale == "off",
                f"fine_tune_steps {self.fine_tune_steps} needs fine_scale 'off' (got {self.fine_scale!r}): "
                "the fine-scale bank is not fine-tuned",
            ),
            (self.batch_size >= 1, f"batch_size {self.batch_size} must be >= 1"),
            (self.threads is None or self.threads >= 1, f"threads {self.threads} must be >= 1"),
            # torch and numpy take no negative seed, torch none past 64 bits; 63 keep the card's seed
            # a signed 64-bit integer wherever it is read back
            (0 <= self.seed < 2**63, f"seed {seed} must be an integer in [0, {2**63 - 1}]"),
            (
                0.0 <= self.min_head_auroc <= 1.0,
                f"min_head_auroc {self.min_head_auroc} must be in [0, 1]",
            ),
            (
                0.0 <= self.head_gate_tolerance <= 0.1,
                f"head_gate_tolerance {self.head_gate_tolerance} must be in [0, 0.1]",
            ),
            (
                self.head_gate_evidence in HEAD_GATE_EVIDENCE,
                f"head_gate_evidence {self.head_gate_evidence!r} not in {', '.join(HEAD_GATE_EVIDENCE)}",
            ),
            (
                self.tile_size == 0 or self.tile_size >= min_tile_size(self.image_size),
                f"tile_size {self.tile_size} must be 0 (resize, never tile) or at least "
                f"{min_tile_size(self.image_size)} (half the image_size {self.image_size}): a smaller tile "
                "adds no pixel, only views",
            ),
            (
                not self.cargo_type
                or cargo_type_problem(self.cargo_type) is None,  # empty: the folder's name
                f"cargo_type {self.cargo_type!r} must be {cargo_type_problem(self.cargo_type)}",
            ),
            (
                self.tile_size <= 0 or 0 <= self._overlap < self.tile_size,
                f"tile_overlap {self.tile_overlap} must be in [0, tile_size={self.tile_size})",
            ),
            # refused whether or not there are tiles: a negative overlap was accepted without them
            (given_overlap is None or given_overlap >= 0, f"tile_overlap {given_overlap} must be >= 0"),
            # an overlap without tiles did nothing, silently: the user meant to tile and forgot the size
            (
                given_overlap is None or self.tile_size > 0,
                f"tile_overlap {given_overlap} is given but tiling is off (tile_size 0): give a tile_size "
                "too, or leave tile_overlap out",
            ),
            (
                self.sixteen_bit_depth is None or self.sixteen_bit_depth in SENSOR_BIT_DEPTHS,
                f"sixteen_bit_depth {self.sixteen_bit_depth} must be auto (measured on the training images) "
                f"or one of {', '.join(map(str, SENSOR_BIT_DEPTHS))}, the depths cameras store",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)


def deep_features_choice(configured: str, cargo: str) -> tuple[str, str]:
    """``TrainConfig.deep_features`` for a cargo type -> ("pooled" or "sharp", the card's words)."""
    if configured != "auto":
        return configured, f"{configured} (--deep-features {configured})"
    chosen = "sharp" if cargo in SHARP_CARGO_TYPES else "pooled"
    return chosen, f"{chosen} (auto for {cargo})"
