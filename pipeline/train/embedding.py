"""The run's backbone and detector, and what the steps compute with them (step 2 and the banks of
steps 3 and 5): each image's embedded views, the memory banks, and the optional fine-tuning of the
backbone before any of it."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch

from models.detector import DetectorConfig, build_detector
from models.inference import GOOD
from models.patchcore import FineBank, MemoryBank, fit_fine_scale, select_bank
from models.registry import create_model
from models.tiling import make_views
from pipeline.fine_tuning import FineTuneConfig, FineTuned, fine_tune_backbone
from pipeline.train.config import ProgressFn, TrainConfig


class Embedded(NamedTuple):
    """One image's views, embedded: patches (T, D, h, w), pooled (T, C)."""

    patches: torch.Tensor
    pooled: torch.Tensor


class Trainer:
    """The state of one training run (kept in one place so the steps stay readable)."""

    def __init__(
        self, config: TrainConfig, progress: ProgressFn | None, *, sharp: bool = False, workers: int = 1
    ) -> None:
        self.config = config
        self.workers = workers
        self.progress = progress or (lambda stage, done, total: None)
        self.rng = np.random.default_rng(config.seed)
        self.tiling = config.tiling
        weights: str = config.backbone_weights or "pretrained"
        self.backbone = create_model(config.backbone, weights=weights)
        spec = self.backbone.spec
        self.base_config = DetectorConfig(
            backbone=config.backbone,
            input_size=config.image_size,
            mean=tuple(spec.mean),
            std=tuple(spec.std),
            proj_dim=config.proj_dim,
            bank_size=1,
            class_names=(GOOD, "anomalous"),
            score_reduction=config.score_reduction,
            pad=config.pad,
            fine_scale=config.fine_scale != "off",
            zero_padded_pooling=config.zero_padded_pooling,
            fusion=config.fusion,
            # sharp: the shallowest map keeps its 3x3 context, the deeper ones are read cell by cell
            pool_sizes=(3,) + (1,) * (len(self.backbone.out_channels) - 1) if sharp else (),
            # a fine-tuned patch head is trained with the backbone, at fine-tuning's own width
            patch_hidden=FineTuneConfig.hidden if config.fine_tune_steps else config.patch_hidden,
        )
        self.detector = build_detector(self.base_config, backbone=self.backbone, embed_seed=config.seed)

    def embed(self, images: Sequence[np.ndarray], stage: str) -> list[Embedded]:
        """Each image's views embedded, ``workers`` images at a time.

        Run with torch on one thread per op (:func:`pipeline.train.run.train_model` sets it), each
        image's embeddings are the same whatever ``workers`` is: the threads share out whole images,
        never the sums inside one convolution, whose rounding would then depend on their number."""
        cfg = self.base_config

        def one(rgb: np.ndarray) -> Embedded:
            with torch.inference_mode():  # thread-local: set in the worker
                views, _ = make_views(
                    rgb, size=cfg.input_size, mean=cfg.mean, std=cfg.std, tiling=self.tiling
                )
                patches, pooled = [], []
                for lo in range(0, views.shape[0], self.config.batch_size):
                    p, g = self.detector.embed(views[lo : lo + self.config.batch_size])
                    patches.append(p)
                    pooled.append(g)
                return Embedded(torch.cat(patches), torch.cat(pooled))

        out: list[Embedded] = []
        with ThreadPoolExecutor(max(1, self.workers)) as pool:
            for n, embedded in enumerate(pool.map(one, images)):
                out.append(embedded)
                self.progress(stage, n + 1, len(images))
        return out

    def banks(
        self, embedded: Sequence[Embedded], held_out: Sequence[Embedded]
    ) -> tuple[MemoryBank, FineBank | None]:
        """The memory bank of ``embedded``'s patches and, with ``fine_scale``, the fine-scale bank,
        its distances mapped onto the main bank's scale on the normal views of ``held_out``."""
        d = embedded[0].patches.shape[1]
        flat = torch.cat([e.patches.permute(0, 2, 3, 1).reshape(-1, d) for e in embedded])
        split = self.detector.embedder.out_dim

        def select(rows: torch.Tensor) -> MemoryBank:
            kept = select_bank(
                rows.contiguous(),
                ratio=self.config.coreset_ratio,
                max_bank=self.config.max_bank,
                seed=self.config.seed,
            )
            return MemoryBank(kept, chunk=self.base_config.chunk)

        if not self.base_config.fine_scale:
            return select(flat), None
        main, fine = select(flat[:, :split]), FineBank(select(flat[:, split:]))
        k = self.base_config.topk
        main_scores, fine_scores = [], []
        with torch.inference_mode():
            for e in held_out:
                q = e.patches.flatten(2).transpose(1, 2)  # (T, h*w, D)
                top = min(k, q.shape[1])
                main_scores.append(main(q[:, :, :split]).topk(top, dim=1).values.mean(dim=1))
                fine_scores.append(fine.bank(q[:, :, split:]).topk(top, dim=1).values.mean(dim=1))
        scale, shift = fit_fine_scale(torch.cat(main_scores), torch.cat(fine_scores))
        fine.scale.fill_(scale)
        fine.shift.fill_(shift)
        return main, fine

    def fine_tune(
        self, normals: Sequence[np.ndarray], masked: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> FineTuned:
        """Fine-tune the backbone in place on ``masked`` (image, (H, W) defect mask) pairs and
        pseudo-anomalies pasted into ``normals`` (:func:`pipeline.fine_tuning.fine_tune_backbone`)."""
        return fine_tune_backbone(
            self.detector,
            normals,
            masked,
            config=FineTuneConfig(steps=self.config.fine_tune_steps, lr=self.config.fine_tune_lr),
            tiling=self.tiling,
            rng=self.rng,
            seed=self.config.seed,
            progress=self.progress,
        )
