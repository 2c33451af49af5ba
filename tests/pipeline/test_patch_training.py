"""Patch-head training data from masks, and training a model whose anomalies have masks."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.artifact import load_model
from models.patch_head import FitStopped
from models.tiling import TilingConfig
from pipeline.patch_training import (
    MIN_COVERAGE,
    MIRRORS,
    NEGATIVES_PER_VIEW,
    mask_coverage,
    mirrored,
    out_of_fold_scores,
    patch_examples,
)
from pipeline.train import MIN_PATCH_POSITIVES, PATCH_PSEUDO_EVERY, TrainConfig, train_model
from pipeline.train.heads import side_by_side

WHOLE = TilingConfig(0, 0)


def test_mask_coverage_is_the_share_of_each_patch_cell() -> None:
    mask = np.zeros((64, 64), np.float32)
    mask[:, :32] = 1.0  # the left half
    mask[0:4, 32:40] = 1.0  # a quarter of one 8 x 8 cell... of the top-left cell of the right half
    cov = mask_coverage(mask, size=64, tiling=WHOLE, grid=8)
    assert cov.shape == (1, 8, 8)
    assert torch.all(cov[0, :, :4] == 1.0)
    assert float(cov[0, 0, 4]) == pytest.approx(0.5)
    assert torch.all(cov[0, 1:, 4:] == 0.0) and torch.all(cov[0, 0, 5:] == 0.0)


def test_mask_coverage_follows_the_views_of_a_tiled_image() -> None:
    mask = np.zeros((128, 128), np.float32)
    mask[:64, :64] = 1.0  # exactly the first of four 64 px tiles
    cov = mask_coverage(mask, size=64, tiling=TilingConfig(64, 0), grid=4)
    assert cov.shape == (4, 4, 4)
    assert [float(c.mean()) for c in cov] == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("negatives_per_view", "negatives"),
    [
        (64, 4 * 64),  # capped in every view
        (NEGATIVES_PER_VIEW, 3 * 256 + 256 - 17 - 1),  # more than a 16 x 16 view has: all clean cells
    ],
)
def test_patch_examples_label_covered_cells_and_cap_negatives(
    negatives_per_view: int, negatives: int
) -> None:
    rng = np.random.default_rng(0)
    d, grid = 6, 16
    normals = [torch.randn(1, d, grid, grid) for _ in range(3)]
    mask = np.zeros((64, 64), np.float32)
    mask[8:24, 8:24] = 1.0  # 4 x 4 cells of 4 px, fully covered
    mask[40:42, 40:44] = 1.0  # half a cell: above MIN_COVERAGE
    mask[60:61, 60:64] = 1.0  # a quarter of a cell: below it, and so neither class
    anomalous = [(torch.randn(1, d, grid, grid), mask)]
    kw = {"size": 64, "tiling": WHOLE, "negatives_per_view": negatives_per_view}
    ex = patch_examples(normals, anomalous, rng=rng, **kw)
    assert MIN_COVERAGE == 0.3
    assert ex.positives == 16 + 1
    assert ex.y.numel() - ex.positives == negatives
    assert ex.x.shape == (ex.y.numel(), d)
    assert ex.images_with_masks == 1
    again = patch_examples(normals, anomalous, rng=np.random.default_rng(0), **kw)
    assert torch.equal(ex.x, again.x) and torch.equal(ex.y, again.y)


def test_no_masks_gives_no_positives() -> None:
    ex = patch_examples([torch.randn(1, 4, 8, 8)], [], size=64, tiling=WHOLE, rng=np.random.default_rng(0))
    assert ex.positives == 0 and ex.images_with_masks == 0


def _texture(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    small = rng.random((8, 8, 3)).astype(np.float32)
    base = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    img = np.array([0.5, 0.35, 0.25], np.float32) * (0.7 + 0.5 * base)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _defect(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A blue bar somewhere in ``img``, and its 0/255 mask."""
    out, mask = img.copy(), np.zeros(img.shape[:2], np.uint8)
    y, x = (int(v) for v in rng.integers(12, 52, 2))
    for target, value in ((out, (230, 80, 30)), (mask, 255)):  # BGR: blue
        cv2.rectangle(target, (x - 10, y - 4), (x + 10, y + 4), value, -1)
    return out, mask


def _write_masked(root: Path) -> Path:
    rng = np.random.default_rng(4)

    def save(rel: str, img: np.ndarray) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)

    for i in range(14):
        save(f"train/good/{i:03d}.png", _texture(rng))
    for i in range(8):  # train stems differ from test stems, so each mask has one owner
        img, mask = _defect(_texture(rng), rng)
        save(f"train/plastic/t{i:03d}.png", img)
        save(f"ground_truth/plastic/t{i:03d}_mask.png", mask)
    for i in range(6):
        save(f"test/good/{i:03d}.png", _texture(rng))
        img, mask = _defect(_texture(rng), rng)
        save(f"test/plastic/{i:03d}.png", img)
        save(f"ground_truth/plastic/{i:03d}_mask.png", mask)
    return root


@pytest.mark.slow
def test_training_with_masks_fits_a_patch_head_that_finds_the_defects(tmp_path: Path) -> None:
    root = _write_masked(tmp_path / "bulk_ore")
    config = TrainConfig(image_size=64, coreset_ratio=0.5, seed=0, threads=1)
    result = train_model(root, tmp_path / "m", config=config)
    card = json.loads((result.out_dir / "model.json").read_text())
    trained = card["training"]["patch_head"]
    assert trained["trained"] is True
    assert trained["labelled_masks"] == 6  # 8 labelled, 2 held out for validation
    assert trained["mirrored_copies"] == 3 * 6  # left-right, up-down and both, of each
    assert trained["pseudo_anomalies"] == len(range(0, 11, PATCH_PSEUDO_EVERY))  # of 11 train normals
    assert trained["defect_patches"] >= MIN_PATCH_POSITIVES
    # up to 256 normal patches per view (all of a 64 px image's 8 x 8), a quarter of them per step,
    # for a hidden layer of 128
    assert trained["normal_patches_per_view"] == NEGATIVES_PER_VIEW == 256
    assert trained["normal_share_per_step"] == 0.25
    assert card["detector"]["patch_hidden"] == 128
    val = card["validation"]
    assert val["patch_head_auroc"] is not None and isinstance(val["patch_head_gate"], str)
    # the gate also judged it on the labelled training images, scored out of fold
    assert val["patch_head_evidence"]["out_of_fold_training_images"] > 0
    assert "out-of-fold training images" in val["patch_head_gate"]
    # and the type head's gate on all 17 training images (11 normals, 6 anomalies), out of fold too
    assert val["head_evidence"] == {
        "validation_images": 5,
        "out_of_fold_training_images": 17,
        "auroc_tolerance": 0.003,
    }
    assert "(on 5 validation and 17 out-of-fold training images)" in val["head_gate"]
    # Fused with the one-class score under the sum, the two are read at one spot, card and detector.
    detector = load_model(result.out_dir, runtime="torch").detector
    assert val["patch_head_in_fusion"] is True
    assert val["signals_co_located"] is True and detector.config.co_located is True
    # The head learned the defect: on unseen test images its score separates them.
    from datasets.decode import decode_image
    from models.predictor import ImageScorer
    from models.tiling import to_rgb_float

    scorer = ImageScorer(detector, tiling=WHOLE)
    with torch.inference_mode():

        def patch_score(kind: str) -> list[float]:
            paths = sorted((root / "test" / kind).iterdir())
            views = torch.cat([scorer.views(to_rgb_float(decode_image(p).pixels))[0] for p in paths])
            return detector.raw(views).patch_score.tolist()

        good, bad = patch_score("good"), patch_score("plastic")
    assert min(bad) > max(good)


@pytest.mark.slow
def test_the_same_data_and_seed_give_the_same_model_on_any_number_of_threads(tmp_path: Path) -> None:
    # A model retrained from the card's data and seed to audit it must come out the same on a
    # machine of another size. This fixture's 64 px images give Lite0 the small deep maps whose
    # 1x1 convolutions oneDNN split across threads, and a patch head is fitted.
    root = _write_masked(tmp_path / "bulk_ore")
    before = torch.get_num_threads()
    first, second = (
        train_model(
            root,
            tmp_path / f"threads-{n}",
            config=TrainConfig(image_size=64, coreset_ratio=0.5, seed=0, threads=n),
        )
        for n in (1, 2)
    )
    a, b = (load_file(result.out_dir / "weights.safetensors") for result in (first, second))
    assert first.card["training"]["patch_head"]["trained"] is True
    assert [name for name in a if not torch.equal(a[name], b[name])] == []  # names the tensors that differ
    assert first.card["weights_sha256"] == second.card["weights_sha256"]
    assert first.thresholds == second.thresholds
    assert torch.get_num_threads() == before  # the run's thread count is its own


@pytest.mark.slow
def test_the_patch_heads_width_and_normal_patches_come_from_the_training_config(tmp_path: Path) -> None:
    root = _write_masked(tmp_path / "bulk_ore")
    config = TrainConfig(
        image_size=64,
        coreset_ratio=0.5,
        threads=1,
        patch_hidden=16,
        patch_negatives=8,
        patch_negative_share=0.5,
    )
    result = train_model(root, tmp_path / "m", config=config)
    card = json.loads((result.out_dir / "model.json").read_text())
    assert card["detector"]["patch_hidden"] == 16
    trained = card["training"]["patch_head"]
    assert trained["normal_patches_per_view"] == 8 and trained["normal_share_per_step"] == 0.5
    # 8 from each of the 11 normal training images and from the clean part of each masked one (one view each)
    assert trained["normal_patches"] == 8 * (11 + trained["masked_images"])
    head = load_model(result.out_dir, runtime="torch").detector.patch_head
    assert head.hidden.out_channels == 16


@pytest.mark.slow
def test_cli_switches_off_the_one_spot_fusion_and_the_mirror_images(tmp_path: Path) -> None:
    from pipeline.cli import app, run

    root = _write_masked(tmp_path / "bulk_ore")
    args = ["--image-size", "64", "--coreset-ratio", "0.5", "--threads", "1"]
    off = ["--no-co-located", "--no-patch-mirrors"]
    assert run(app, ["train", "--data", str(root), "--out", str(tmp_path / "m"), *args, *off]) == 0
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    val = card["validation"]
    assert val["patch_head_in_fusion"] is True and val["signals_co_located"] is False
    assert load_model(tmp_path / "m", runtime="torch").detector.config.co_located is False
    trained = card["training"]["patch_head"]
    assert trained["labelled_masks"] == 6 and trained["mirrored_copies"] == 0


@pytest.mark.parametrize("channels", [(), (3,)], ids=["gray", "rgb"])
def test_mirror_images_flip_the_image_and_its_mask_alike(channels: tuple[int, ...]) -> None:
    image = np.zeros((6, 9, *channels), np.uint8)
    mask = np.zeros((6, 9), np.float32)
    image[0:2, 0:3] = 200  # a defect in the top-left corner, and its mask
    mask[0:2, 0:3] = 1.0
    image[5, 8] = 90  # an unmasked mark in the opposite corner
    copies = mirrored(image, mask)
    assert len(copies) == len(MIRRORS) == 3
    corners = []
    for img, m in copies:
        assert img.shape == image.shape and m.shape == mask.shape
        assert img.flags.c_contiguous and m.flags.c_contiguous
        assert (img[m == 1.0] == 200).all() and (img[m == 0.0] != 200).all() and m.sum() == 6
        rows, cols = np.nonzero(m)
        corners.append((int(rows.min()), int(cols.min())))
    assert corners == [(0, 6), (4, 0), (4, 6)]  # left-right, up-down, both


def test_mirror_images_refuse_a_mask_of_another_size() -> None:
    with pytest.raises(ValueError, match=r"image \(6, 9\) and mask \(9, 6\) differ in size"):
        mirrored(np.zeros((6, 9, 3)), np.zeros((9, 6)))


class _RecordingFit:
    """A fake ``fit``: remembers what each call was given; its head scores a patch by channel 0."""

    def __init__(self) -> None:
        self.seen: list[set[float]] = []

    def __call__(self, examples):  # type: ignore[no-untyped-def]
        from models.patch_head import PatchHead

        self.seen.append({float(v) for v in examples.x[:, 0].unique()})
        head = PatchHead(examples.x.shape[1], 1, topk=1)
        with torch.no_grad():  # logit = channel 0 of the patch, whatever the standardisation
            head.in_mean.zero_()
            head.in_std.fill_(1.0)
            head.hidden.weight.zero_()
            head.hidden.weight[0, 0] = 1.0
            head.hidden.bias.zero_()
            head.out.weight.fill_(1.0)
            head.out.bias.zero_()
        return head


def test_out_of_fold_scores_never_score_an_image_with_a_head_that_saw_its_fold() -> None:
    d, grid = 4, 8

    def patches(fold: int) -> torch.Tensor:
        p = torch.zeros(1, d, grid, grid)
        p[:, 0] = 10.0 + fold  # channel 0 names the fold
        return p

    mask = np.zeros((64, 64), np.float32)
    mask[:32, :32] = 1.0
    normals = [(patches(g), g) for g in (0, 1, 0, 1)]
    masked = [(patches(g), mask, g) for g in (0, 1)]
    scored = [(patches(g), g) for g in (1, 0, 1)]
    fit = _RecordingFit()
    out = out_of_fold_scores(
        normals, masked, scored, folds=2, size=64, tiling=WHOLE, rng=np.random.default_rng(0), fit=fit,
        min_positives=1,
    )  # fmt: skip
    assert fit.seen == [{11.0}, {10.0}]  # fold 0's head saw only fold 1's patches, and vice versa
    assert out.tolist() == [11.0, 10.0, 11.0]  # each image scored by the other fold's head


class _CountingPool(ThreadPoolExecutor):
    """A pool of two threads that counts the calls handed to its ``map``."""

    def __init__(self) -> None:
        super().__init__(2)
        self.mapped = 0

    def map(self, fn, *iterables, **kwargs):  # type: ignore[no-untyped-def,override]
        items = list(iterables[0])
        self.mapped += len(items)
        return super().map(fn, items, **kwargs)


def test_out_of_fold_heads_fitted_side_by_side_score_as_fitted_one_after_another() -> None:
    # The training run fits the folds' heads in its pool of workers: the draws of every fold's
    # examples must not depend on it, nor which head scores which image.
    d, grid = 4, 8
    mask = np.zeros((64, 64), np.float32)
    mask[:32, :32] = 1.0
    gen = torch.Generator().manual_seed(0)
    normals = [(torch.randn(1, d, grid, grid, generator=gen) + 10.0 * g, g) for g in (0, 1, 0, 1, 2, 2)]
    masked = [(torch.randn(1, d, grid, grid, generator=gen) + 10.0 * g, mask, g) for g in (0, 1, 2)]
    scored = [(p, g) for p, g in normals]
    runs = []
    for pool in (None, _CountingPool()):
        rng, fit = np.random.default_rng(0), _RecordingFit()
        out = out_of_fold_scores(
            normals, masked, scored, folds=3, size=64, tiling=WHOLE, rng=rng, fit=fit, min_positives=1,
            executor=pool,
        )  # fmt: skip
        runs.append((out.tolist(), sorted(sorted(seen) for seen in fit.seen), rng.random()))
        if pool is not None:
            pool.shutdown()
            assert pool.mapped == 3  # every fold's head fitted in the pool
    assert runs[0] == runs[1]


def test_out_of_fold_scores_leave_a_fold_without_defects_unscored() -> None:
    mask = np.zeros((64, 64), np.float32)
    mask[:32, :32] = 1.0
    p = torch.randn(1, 4, 8, 8)
    out = out_of_fold_scores(
        [(p, 0), (p, 1)], [(p, mask, 0)], [(p, 0), (p, 1)], folds=2, size=64, tiling=WHOLE,
        rng=np.random.default_rng(0), fit=_RecordingFit(), min_positives=1,
    )  # fmt: skip
    # fold 0 is scored by a head fitted on fold 1, which has no defect patches: NaN
    assert np.isnan(out[0]) and np.isfinite(out[1])


class _FakeFit:
    """A fit of up to ``STEPS`` short steps that checks ``stop`` before each, as fit_patch_head does;
    ``outcome`` says how it ended. With ``stopped_raises``, stopped, it raises FitStopped as
    fit_patch_head does."""

    STEPS = 5000

    def __init__(self, stop: threading.Event, *, stopped_raises: bool = False) -> None:
        self.stop, self.started, self.outcome = stop, threading.Event(), "never started"
        self.stopped_raises = stopped_raises

    def __call__(self) -> str:
        self.started.set()
        for _ in range(self.STEPS):
            if self.stop.is_set():
                self.outcome = "stopped"
                if self.stopped_raises:
                    raise FitStopped
                return self.outcome
            time.sleep(0.001)
        self.outcome = "finished"
        return self.outcome


def _failing_fold() -> str:
    raise ValueError("a fold's fit failed")


@pytest.mark.parametrize(
    ("raised", "failing_fold"), [(KeyboardInterrupt, False), (ValueError, True)], ids=["ctrl-c", "failed fit"]
)
def test_an_exception_while_the_heads_are_fitted_stops_the_fits_and_goes_on(
    raised: type[BaseException], failing_fold: bool
) -> None:
    # Leaving the pool waited for every fit to run to its end (234 s on the review's long fits)
    # before Ctrl-C or SIGTERM (raised in the main thread) reached the user.
    stop = threading.Event()
    final, folds = _FakeFit(stop), [_FakeFit(stop) for _ in range(3)]

    def rest(pool: Executor) -> list[str]:
        # the failing fold (if any) first: it ends at once and frees its worker for folds[0]
        futures = [pool.submit(fit) for fit in ([_failing_fold] if failing_fold else []) + folds]
        assert final.started.wait(10) and folds[0].started.wait(10)  # two workers, both fitting
        if failing_fold:
            return [f.result() for f in futures]
        raise KeyboardInterrupt

    with pytest.raises(raised):
        side_by_side(final, rest, workers=2, stop=stop)
    # the running fits stopped at their next step, the queued ones never started
    assert [fit.outcome for fit in (final, *folds)] == [
        "stopped",
        "stopped",
        "never started",
        "never started",
    ]


def _failing_final_fit() -> str:
    raise ValueError("the final fit failed")


def test_a_final_fit_that_fails_stops_the_fold_fits_and_its_own_error_goes_on() -> None:
    # The final fit's error set ``stop`` only once every fold fit had run to its end; and the folds,
    # once stopped, raise FitStopped, which must not stand in for the final fit's own error.
    stop = threading.Event()
    folds = [_FakeFit(stop, stopped_raises=True) for _ in range(2)]

    def rest(pool: Executor) -> list[str]:
        return [f.result() for f in [pool.submit(fit) for fit in folds]]

    with pytest.raises(ValueError, match="the final fit failed"):
        side_by_side(_failing_final_fit, rest, workers=2, stop=stop)
    assert [fit.outcome for fit in folds] == ["stopped", "stopped"]
