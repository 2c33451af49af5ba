"""`clearsight train` end to end on a tiny dataset, and the training API's refusals."""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from datasets.errors import CargoTypeError, DatasetFormatError, InputError
from models.artifact import load_model
from models.fusion import OFF, fit_calibration
from models.predictor import ImageScorer
from models.tiling import TilingConfig, sixteen_bit_depth
from pipeline.cli import app, run
from pipeline.cli.train import (
    fallback_warning,
    promise_words,
    pseudo_words,
    raised_depth_warning,
    release_warning,
    sixteen_bit_words,
)
from pipeline.resolution import off_training_scale
from pipeline.train import TrainConfig, deep_features_choice, train_model
from pipeline.train import gates as gates_module
from pipeline.train.calibration import calibrate
from pipeline.train.data import FEW_BRIGHT_SHARE, TrainItem, decode, raised_by_few, read_training_data
from pipeline.train.embedding import Trainer
from pipeline.train.gates import Gates
from pipeline.train.image_sets import ValidationSet, training_set, validation_set


def _texture(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    small = rng.random((8, 8, 3)).astype(np.float32)
    base = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    img = np.array([0.5, 0.35, 0.25], np.float32) * (0.7 + 0.5 * base)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _write(root: Path, n_good: int, *, gray: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n_good):
        img = _texture(rng)
        path = root / "train" / "good" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img[:, :, 0] if gray else img[:, :, ::-1])
    return root


def _write_anomaly(root: Path, kind: str, n: int) -> None:
    img = _texture(np.random.default_rng(100 + n))
    cv2.rectangle(img, (20, 20), (40, 30), (40, 220, 40), -1)
    path = root / "train" / kind / f"{n:03d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img[:, :, ::-1])


def test_train_cli_end_to_end_on_normals_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _write(tmp_path / "vacuum_pack", 10, gray=True)
    (root / "test" / "good").mkdir(parents=True)
    (root / "test" / "good" / "copy.png").write_bytes((root / "train" / "good" / "004.png").read_bytes())
    out = tmp_path / "model"
    code = run(
        app,
        [
            "train",
            "--data",
            str(root),
            "--out",
            str(out),
            "--image-size",
            "64",
            "--coreset-ratio",
            "0.5",
            "--seed",
            "3",
            "--threads",
            "1",
            "--fine-scale",
            "auto",
        ],
    )
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0
    card = json.loads((out / "model.json").read_text())
    assert card["cargo_type"] == "vacuum_pack"
    assert card["preprocessing"]["source_resolution"] == {
        "longest_side_px": {"min": 64, "median": 64, "max": 64},
        "downscale": 1.0,
        "warning": None,
    }
    assert "64 px images -> 64 px model input, not resized" in printed
    # the two warnings: the threshold from clean images alone, a test image that is a copy of a training one
    err = " ".join(captured.err.split())
    assert err.count("Warning") == 2
    assert "Warning: the release threshold fell back to the clean validation images' scores alone" in err
    assert "(normal_quantile_fallback: above the clean validation images alone)" in " ".join(
        printed.replace("│", " ").split()
    )
    assert (
        "Warning: 1 test image(s) are exact copies of training images "
        "(test/good/copy.png = train/good/004.png" in err
    )
    assert card["training"]["duplicates"]["training_and_test"] == 1
    assert card["training"]["pseudo_anomalies"] is True
    assert card["training"]["class_names"] == [
        "good",
        "synthetic_blob",
        "synthetic_cutpaste",
        "synthetic_noise",
    ]
    assert card["validation"]["anomalies"].startswith("pseudo")
    # a head seen only against pseudo-anomalies cannot be validated: the one-class score decides
    assert card["validation"]["head_in_fusion"] is False
    assert card["validation"]["fusion_rule"] == "sum of the calibrated log-odds"  # the default
    assert "pseudo-anomalies is not fused" in card["validation"]["head_gate"]
    # nor can the patch head, so it is not even trained
    assert card["training"]["patch_head"]["trained"] is False
    assert "to judge it: not trained" in card["validation"]["patch_head_gate"]
    assert card["thresholds"]["method"] == "normal_quantile_fallback"
    spread = card["validation"]["one_class_spread"]  # ordinary normals: the floor does not bind
    assert spread["log_sd"] > spread["floor"] == 0.01 and spread["sd"] == spread["log_sd"]
    assert spread["warning"] is None
    assert card["validation"]["miss_rate_bound"] is None  # a cut from clean images promises nothing
    assert "miss-rate promise" in printed
    assert card["training"]["counts"] == {"train": {"good": 8}, "validation": {"good": 2}}
    fine = card["training"]["fine_scale"]  # asked for: kept or dropped by its gate
    assert "one-class AUROC" in fine["gate"] and "out of fold" in fine["gate"]
    assert (fine["bank_size"] > 0) is fine["used"]
    assert "fine-scale bank" in printed
    assert card["model_id"] in printed
    assert "pseudo-anomalies" in printed
    assert card["training"]["deep_features"] == "sharp (auto for vacuum_pack)"
    assert card["detector"]["pool_sizes"] == [3, 1]
    predictor = load_model(out)
    pred = predictor.predict([_texture(np.random.default_rng(9))[:, :, 0]])[0]
    assert pred.anomaly_map.shape == (64, 64)
    assert pred.anomaly_type in (None, "unknown")  # a synthetic type is never reported as a real one


def test_train_cli_warns_when_the_images_are_shrunk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _write(tmp_path / "bulk_ore", 8)
    out = tmp_path / "model"
    args = ["train", "--data", str(root), "--out", str(out), "--image-size", "32", "--pad", "0"]
    code = run(app, [*args, "--coreset-ratio", "0.5", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0
    assert "downscaled 2x" in captured.out
    err = " ".join(captured.err.split())  # rich wraps long lines
    assert "Warning: the training images (64 px, median longer side) are shrunk 2.0x" in err
    assert "--image-size 64 or --tile-size 32" in err
    card = json.loads((out / "model.json").read_text())
    assert card["preprocessing"]["source_resolution"]["warning"].startswith("the training images (64 px")


def test_train_refuses_an_image_far_off_the_others_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # scoring flags images this far off the median training view: trained on, they would be at a
    # scale the model does not vouch for (and a 1 px image among 64 px ones made the span of training
    # scales, all that scoring read then, [0.015625, 1.0], so a 16 px thumbnail was released)
    root = _write(tmp_path / "bulk_ore", 8)
    cv2.imwrite(str(root / "train" / "good" / "zz.png"), np.full((1, 1, 3), 128, np.uint8))
    cv2.imwrite(str(root / "train" / "good" / "big.png"), _texture(np.random.default_rng(5), 160))
    out = tmp_path / "model"
    code = run(app, ["train", "--data", str(root), "--out", str(out), "--image-size", "64", "--threads", "1"])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())  # after the decoding's progress
    assert err[err.index("Error: ") :] == (
        f"Error: {str(root.resolve())!r}: 2 training image(s) would be resized for the model more than 2x "
        "off the scale of the others (median size 64 x 64 px): 'train/good/big.png' (160 x 160 px, "
        "resized 2.5x smaller than the others), 'train/good/zz.png' (1 x 1 px, resized 64x larger than "
        "the others). Scoring takes images that far off the others' scale for off the training scale, "
        "warns of them and never releases a shipment on their score, so the model would not vouch for "
        "images like them; remove them, resize them to the others' view, or train a separate model on "
        "images of their resolution"
    )
    assert not out.exists()


def test_an_image_training_takes_at_the_tolerance_does_not_widen_the_training_scale(tmp_path: Path) -> None:
    # a 32 px image among 64 px ones is 2x off, which training takes; the span of training scales
    # then ran to it, and a 16 px thumbnail, 4x off the others, scored 2.0 against the span's end and
    # was released. Scored against the median training view, as training refuses images, it is 4x off.
    root = _write(tmp_path / "bulk_ore", 8)
    cv2.imwrite(str(root / "train" / "good" / "small.png"), _texture(np.random.default_rng(5), 32))
    out = tmp_path / "model"
    args = ["--image-size", "32", "--pad", "0", "--coreset-ratio", "0.5", "--threads", "1"]
    assert run(app, ["train", "--data", str(root), "--out", str(out), *args]) == 0
    source = json.loads((out / "model.json").read_text())["preprocessing"]["source_resolution"]
    assert (source["downscale_hw_range"], source["downscale_short_long"]) == ([[1.0, 2.0]] * 2, [2.0, 2.0])
    thumbnail = cv2.resize(_texture(np.random.default_rng(9)), (16, 16), interpolation=cv2.INTER_AREA)
    predictor = load_model(out, runtime="torch")
    [prediction] = predictor.predict([thumbnail])
    assert prediction.scale_vs_training == 4.0 and off_training_scale(prediction.scale_vs_training)
    assert predictor.scale_vs_training(32, 32) == 2.0  # the 2x training image itself: within


def test_images_of_several_resolutions_within_the_tolerance_train(tmp_path: Path) -> None:
    """Sizes 48-96 px around a median of 64-80 (none more than 2x off), and a portrait image among
    landscape ones of their resolution: the span of scales they make is their own."""
    rng = np.random.default_rng(1)
    good = tmp_path / "bulk_ore" / "train" / "good"
    good.mkdir(parents=True)
    shapes = [(48, 48), (64, 64), (64, 64), (80, 80), (96, 96), (64, 96), (96, 64), (64, 128)]
    for n, (h, w) in enumerate(shapes):
        cv2.imwrite(str(good / f"{n}.png"), (rng.random((h, w, 3)) * 255).astype(np.uint8))
    config = TrainConfig(image_size=64, seed=0, threads=1)
    data = read_training_data(tmp_path / "bulk_ore", config, np.random.default_rng(0), lambda *a: None)
    assert sorted(img.shape[:2] for img in data.images) == sorted(shapes)


@pytest.mark.parametrize(
    ("n", "bound", "row", "note"),
    [
        (0, None, "none: the release threshold came from clean images only", None),
        (
            6,
            1 / 7,
            "a new anomaly like the 6 validation ones is released with probability <= 14.3 % (target 1.0 %: "
            "99 would promise it)",
            "the release threshold rests on 6 anomalous validation images, so it promises a miss rate of at "
            "most 14.3 %, not the 1.0 % target; 99 would promise the target.",
        ),
        (99, 1 / 100, "released with probability <= 1.0 % (meets the target)", None),
    ],
)
def test_the_miss_rate_promise_in_words(n: int, bound: float | None, row: str, note: str | None) -> None:
    val = {"n_anomalous": n, "miss_rate_bound": bound, "anomalies_for_target_bound": 99}
    got_row, got_note = promise_words(val, 0.01)
    assert row in got_row
    if note is None:
        assert got_note is None
    else:
        assert got_note is not None and got_note.startswith(note)


LABELLED_VAL = {"anomalies": "labelled"}
PSEUDO_VAL = {"anomalies": "pseudo (synthetic, made from held-out normals)"}


@pytest.mark.parametrize(
    ("pseudo", "train", "validation", "val", "share", "row"),
    [
        (
            False,
            {"good": 8, "wet_patch": 2},
            {"good": 2, "wet_patch": 1},
            LABELLED_VAL,
            0.2,
            "no: labelled anomalies in training and in validation",
        ),
        (
            True,
            {"good": 8},
            {"good": 2},
            PSEUDO_VAL,
            0.2,
            "in training and validation (no labelled anomalies in train/)",
        ),
        # one image of each type: all stay in training, validation makes pseudo-anomalies (the row said "no")
        (
            False,
            {"good": 8, "wet_patch": 1, "foreign_object": 1},
            {"good": 2},
            PSEUDO_VAL,
            0.2,
            "in validation only: no labelled anomaly was held out, as each of the 2 type(s) has one "
            "image (a type needs 2 or more for one to be held out); training learned from foreign_object, "
            "wet_patch",
        ),
        # train/wet_patch held 3, --val-anomaly-fraction 0.9 took them all
        (
            True,
            {"good": 8},
            {"good": 2, "wet_patch": 3},
            LABELLED_VAL,
            0.9,
            "in training only: all 3 labelled anomalies went to validation (0.9 of each type held out: "
            "--val-anomaly-fraction, or --val-fraction without it)",
        ),
        (
            True,
            {"good": 8},
            {"good": 2, "wet_patch": 1, "foreign_object": 1},
            LABELLED_VAL,
            0.5,
            "in training only: all 2 labelled anomalies went to validation (0.5 of each type held out: "
            "--val-anomaly-fraction, or --val-fraction without it)",
        ),
    ],
    ids=[
        "labelled_on_both_sides",
        "none_labelled",
        "one_per_type",
        "all_held_out",
        "all_of_two_types_held_out",
    ],
)
def test_the_pseudo_anomalies_row_says_which_side(
    pseudo: bool,
    train: dict[str, int],
    validation: dict[str, int],
    val: dict[str, str],
    share: float,
    row: str,
) -> None:
    training = {
        "pseudo_anomalies": pseudo,
        "counts": {"train": train, "validation": validation},
        "validation_share": {"good": 0.2, "anomalous": share},
    }
    assert pseudo_words(training, val) == row


@pytest.mark.parametrize(
    ("train", "method", "warning"),
    [
        (
            {"good": 8},
            "normal_quantile_fallback",
            "the release threshold fell back to the clean validation images' scores alone "
            "(normal_quantile_fallback): there are no labelled anomalies (train/<type>). It promises no "
            "miss rate: it releases 25.0 % of the 4 pseudo-anomalies made from validation normals, which "
            "stand in for no real defect. For a threshold set on anomalies, add labelled anomalies, 2 or "
            "more of a type, so that validation holds some",
        ),
        (
            {"good": 8, "wet_patch": 1},
            "normal_quantile_fallback",
            "(normal_quantile_fallback): no labelled anomaly was held out, as each of the 1 type(s) has one "
            "image (a type needs 2 or more for one to be held out); training learned from wet_patch. It "
            "promises no miss rate: it releases 25.0 % of the 4 pseudo-anomalies made from validation "
            "normals, which stand in for no real defect. For a threshold set on anomalies, give a labelled "
            "type a second image, or more, so that validation holds some",
        ),
        ({"good": 8, "wet_patch": 2}, "miss_rate_on_validation", None),
        ({"good": 8, "wet_patch": 2}, "normal_bound_few_anomalies", None),
    ],
    ids=["none_labelled", "one_per_type", "validated", "normal_bound"],
)
def test_a_fallback_threshold_is_warned_about(
    train: dict[str, int], method: str, warning: str | None
) -> None:
    training = {"counts": {"train": train, "validation": {"good": 4}}}
    val = {"miss_rate_at_threshold": 0.25, "n_anomalous": 4}
    got = fallback_warning(training, val, method)
    if warning is None:
        assert got is None
    else:
        assert got is not None and warning in got


def _twelve_bits(image: np.ndarray) -> np.ndarray:
    """An 8-bit image as a 12-bit camera would store it in a 16-bit file: 0..4095."""
    return np.round(image.astype(np.float64) * 4095 / 255).astype(np.uint16)


def test_a_model_trained_on_12_bit_data_in_16_bit_files_reads_them_at_12_bits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Read over the full 16 bits, 12-bit data filled a sixteenth of [0, 1]: on the audit's ore set
    # the model released 2 of 12 anomalous images at its own threshold (none at 8 bits).
    root = tmp_path / "bulk_ore"
    rng = np.random.default_rng(0)
    for i in range(8):
        path = root / "train" / "good" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        twelve = _twelve_bits(_texture(rng))
        if i == 0:  # a stuck pixel: measured by the largest sample, it made the set 16-bit
            twelve[0, 0] = 65535
        cv2.imwrite(str(path), twelve[:, :, ::-1])
    out = tmp_path / "model"
    args = ["--image-size", "32", "--pad", "0", "--coreset-ratio", "0.5", "--threads", "1"]
    capsys.readouterr()
    assert run(app, ["train", "--data", str(root), "--out", str(out), *args]) == 0
    said = capsys.readouterr()
    assert "16-bit images" in said.out
    # the clipped samples are warned about, not only put in the summary's table
    assert "Warning: 0.0031 % of the 16-bit training images' samples lie above 12 bits" in " ".join(
        said.err.split()
    )
    assert "only because of" not in said.err  # three stuck samples raise no image's level
    card = json.loads((out / "model.json").read_text())
    assert card["preprocessing"]["sixteen_bit_depth"] == 12
    reading = card["training"]["sixteen_bit"]
    assert (reading["raised_by"], reading["rest_depth"]) == ([], None)
    assert reading["clipped_share"] == pytest.approx(3 / (8 * 64 * 64 * 3))  # the stuck pixel's
    assert re.fullmatch(
        r"8 read at 12 bits \(measured: [234],\d{3} is their brightest sample \(the 8th from the top of an "
        r"image\), rounded up to a sensor's depth\); 0\.0031 % of their samples lie above it and are clipped",
        sixteen_bit_words(reading),
    )
    eight = _texture(np.random.default_rng(7))
    twelve = _twelve_bits(eight)
    torch_model = load_model(out, runtime="torch")
    reference = torch_model.predict([eight])[0].score
    # each runtime reads the 12-bit file as the 8-bit picture it holds
    for runtime in ("torch", "onnxruntime"):
        score = load_model(out, runtime=runtime).predict([twelve])[0].score
        assert score == pytest.approx(reference, abs=2e-3)
    # a sample above 12 bits: clipped, counted and warned about once
    brighter = twelve.copy()
    brighter[0, 0] = 65535
    with caplog.at_level(logging.WARNING, logger="clearsight.models"):
        torch_model.predict([brighter, brighter])
    said = [r.getMessage() for r in caplog.records if r.name == "clearsight.models"]
    assert len(said) == 1 and re.search(
        r"above 4095, the most this model reads: its card records 16-bit images as holding 12 bits", said[0]
    )
    assert torch_model.scorer.beyond_bit_depth == 2


def _sixteen_bit_folder(root: Path, images: list[np.ndarray]) -> list[TrainItem]:
    items = []
    for i, image in enumerate(images):
        path = root / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        items.append(TrainItem(path, "good"))
    return items


@pytest.mark.parametrize(
    ("brightest", "depth"),
    [
        (31872, 16),  # a dark full-range set measured 15 bits: brighter clean images clipped, 9 of 10 held
        (4000, 12),
        (255, 8),  # 8-bit images stored wide
        (1000, 10),
    ],
)
def test_training_reads_16_bit_images_at_the_sensor_depth_that_holds_them(
    brightest: int, depth: int, tmp_path: Path
) -> None:
    ramp = np.linspace(0, brightest, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    items = _sixteen_bit_folder(tmp_path, [ramp, ramp // 2])
    images, _, _, reading = decode(items, lambda *_: None)
    assert (reading.depth, reading.chosen_by, reading.images, reading.clipped_share) == (
        depth,
        "measured",
        2,
        0.0,
    )
    assert float(images[0].max()) == pytest.approx(brightest / (2**depth - 1))


@pytest.mark.parametrize(
    ("levels", "raised"),
    [
        ([4000, 3000, 65535, 2000], ([2], 12)),  # one image's stuck pixels make a 12-bit set 16-bit
        ([4000] * 19 + [65535, 60000], ([19, 20], 12)),  # two of 21: a tenth at most, rounded down
        ([4000] * 9 + [65535, 60000], ([], None)),  # two of 11: more than a few
        ([4000, 65535], ([1], 12)),
        ([65535], ([], None)),  # no rest to measure
        ([60000, 65535, 3000], ([], None)),  # two of three at 16 bits: the set's depth
        ([4000, 3000, 1000], ([], None)),  # the brightest image alone sets 12 bits, as the next one
    ],
)
def test_the_images_that_alone_raise_the_measured_depth_are_found(
    levels: list[int], raised: tuple[list[int], int | None]
) -> None:
    assert raised_by_few(levels) == raised


def _raised_by_few_measuring_every_rest(levels: list[int]) -> tuple[list[int], int | None]:
    # the first implementation, the whole rest measured at each step (O(n**2)): the reference
    order = sorted(range(len(levels)), key=lambda k: levels[k], reverse=True)
    depth = sixteen_bit_depth(levels)
    for few in range(1, max(1, math.floor(FEW_BRIGHT_SHARE * len(levels))) + 1):
        if few >= len(levels):
            break
        rest = sixteen_bit_depth(levels[k] for k in order[few:])
        if rest < depth:
            return order[:few], rest
    return [], None


def test_the_images_that_raise_the_depth_are_found_as_by_measuring_every_rest() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 60))
        # a few levels per set, ties among them, across the sensor depths' boundaries
        choices = rng.choice([300, 1023, 1024, 4095, 4096, 9000, 16383, 16384, 40000, 65535], 4)
        levels = [int(v) for v in rng.choice(choices, n)]
        assert raised_by_few(levels) == _raised_by_few_measuring_every_rest(levels)


def test_training_names_a_few_images_that_alone_raise_the_depth(tmp_path: Path) -> None:
    # Eight stuck samples at full scale in one image made a 12-bit set read at 16 bits: nothing said so.
    ramp = np.linspace(0, 4000, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    stuck = ramp // 2
    stuck[0, :8] = 65535
    items = _sixteen_bit_folder(tmp_path, [ramp, stuck, ramp // 3])
    reading = decode(items, lambda *_: None)[3]
    assert (reading.depth, reading.raised_by, reading.rest_depth) == (16, (str(items[1].path),), 12)
    assert raised_depth_warning(reading._asdict()) == (
        f"the 16-bit training images are read at 16 bits only because of image {items[1].path}: the other "
        "2 measure 12 bits. If it holds stuck or saturated pixels (8 or more samples near full scale), every "
        "image is read with less contrast: train again with --sixteen-bit-depth 12, or without it; if the "
        "camera stores 16 bits, this depth is right"
    )
    # the depth given, nothing is measured and nothing named
    assert decode(items, lambda *_: None, 16)[3][5:] == ((), None)
    assert raised_depth_warning(decode(items[::2], lambda *_: None)[3]._asdict()) is None


def test_train_warns_of_one_image_that_alone_raises_the_depth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "bulk_ore"
    rng = np.random.default_rng(0)
    for i in range(8):
        path = root / "train" / "good" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        twelve = _twelve_bits(_texture(rng))
        if i == 3:
            twelve[0, :8] = 65535  # eight stuck pixels at full scale
        cv2.imwrite(str(path), twelve[:, :, ::-1])
    out = tmp_path / "model"
    args = ["--image-size", "32", "--pad", "0", "--coreset-ratio", "0.5", "--threads", "1"]
    capsys.readouterr()
    assert run(app, ["train", "--data", str(root), "--out", str(out), *args]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "Warning: the 16-bit training images are read at 16 bits only because of image "
        "train/good/003.png: the other 7 measure 12 bits." in err
    )
    card = json.loads((out / "model.json").read_text())
    assert card["preprocessing"]["sixteen_bit_depth"] == 16  # warned about, not changed


def test_a_12_bit_set_counting_down_from_white_reads_as_the_same_set_counting_up(tmp_path: Path) -> None:
    # Inverted against 65535, its samples lay in 61440..65535: the set measured 16 bits and reached the
    # model with a sixteenth of its contrast.
    from PIL import Image, TiffImagePlugin

    ramps = [np.linspace(0, top, 64 * 64).round().astype(np.uint16).reshape(64, 64) for top in (4000, 2500)]
    read = []
    for photometric in (1, 0):  # MinIsBlack, MinIsWhite with the detector's black declared
        items = []
        for i, ramp in enumerate(ramps):
            tags = TiffImagePlugin.ImageFileDirectory_v2()
            tags[262], tags[281] = photometric, 4095
            path = tmp_path / str(photometric) / f"{i:03d}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ramp if photometric else 4095 - ramp).save(path, tiffinfo=tags)
            items.append(TrainItem(path, "good"))
        images, _, _, reading = decode(items, lambda *_: None)
        read.append((images, reading.depth))
    (black, black_depth), (white, white_depth) = read
    assert black_depth == white_depth == 12
    for up, down in zip(black, white, strict=True):
        np.testing.assert_array_equal(up, down)


def test_sixteen_bit_depth_can_be_set_and_is_16_without_16_bit_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ramp = np.linspace(0, 4095, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    items = _sixteen_bit_folder(tmp_path / "wide", [ramp])
    reading = decode(items, lambda *_: None, 10)[3]
    assert (reading.depth, reading.chosen_by) == (10, "--sixteen-bit-depth")
    assert reading.clipped_share == pytest.approx(np.count_nonzero(ramp > 1023) / ramp.size)
    eight = _sixteen_bit_folder(tmp_path / "eight", [ramp.astype(np.uint8)])
    none = decode(eight, lambda *_: None)[3]
    assert none == (0, None, 16, "no 16-bit image", 0.0, (), None)
    assert (
        sixteen_bit_words(none._asdict())
        == "none in training: 16-bit inputs are read at 16 bits, the full range"
    )
    assert TrainConfig(sixteen_bit_depth=14).sixteen_bit_depth == 14
    for given, said in [
        ("13", "13 must be auto (measured"),
        ("deep", "'deep' must be auto or one of 8, 10, 12"),
    ]:
        argv = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--sixteen-bit-depth", given]
        assert run(app, argv) == 2
        assert f"Error: --sixteen-bit-depth {said}" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "overlap"), [([], 8), (["--tile-overlap", "0"], 0)])
def test_train_cli_overlaps_tiles_unless_told_not_to(
    flags: list[str], overlap: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Abutting tiles (the default was 0) left a straight seam in the anomaly map at every tile border.
    root = _write(tmp_path / "bulk_ore", 8)
    out = tmp_path / "model"
    args = ["--image-size", "32", "--tile-size", "32", "--pad", "0", "--threads", "1", *flags]
    assert run(app, ["train", "--data", str(root), "--out", str(out), "--coreset-ratio", "0.5", *args]) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["preprocessing"]["tiling"] == {"tile_size": 32, "overlap": overlap}
    err = " ".join(capsys.readouterr().err.split())
    seams = "Warning: the 32 px tiles do not overlap (--tile-overlap 0)"
    assert (seams in err) is (overlap == 0)


_TRAIN_IN_A_PROCESS = """
import json, sys
from pipeline.train import TrainConfig, train_model
config = TrainConfig(image_size=32, tile_size=32, pad=0, coreset_ratio=0.5, seed=0, threads=1)
result = train_model(sys.argv[1], sys.argv[2], config=config)
print(json.dumps([result.card["weights_sha256"], result.thresholds, result.card["training"]["patch_head"]]))
"""


@pytest.mark.slow
def test_a_tiled_model_on_normals_only_is_the_same_in_another_process(tmp_path: Path) -> None:
    # No labelled anomalies: the patch head is not trained, yet saved. Drawn from torch's global
    # generator, unseeded, it differed in every process, and on tiles its score chose which tile
    # of each validation image calibrated the one-class score, so the thresholds moved too.
    root = _write(tmp_path / "bulk_ore", 8)
    runs = [
        subprocess.run(
            [sys.executable, "-c", _TRAIN_IN_A_PROCESS, str(root), str(tmp_path / f"model-{n}")],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[2],
        )
        for n in (1, 2)
    ]
    (weights, thresholds, patch_head), second = (json.loads(r.stdout.splitlines()[-1]) for r in runs)
    assert patch_head["trained"] is False
    assert (weights, thresholds) == tuple(second[:2])


@pytest.mark.slow
def test_calibration_reads_a_normals_only_model_at_the_tile_it_will_score(tmp_path: Path) -> None:
    # The finished model fuses no head judged on pseudo-anomalies, nor an untrained patch head, so
    # it scores each image at its tile of highest one-class score: calibration must read that tile,
    # not one a random head's score picked. The head's weights are scaled up so that its score
    # would pick the tile, as it did before.
    root = _write(tmp_path / "bulk_ore", 8)
    config = TrainConfig(image_size=32, tile_size=32, pad=0, coreset_ratio=0.5, seed=0, threads=1)
    result = train_model(root, tmp_path / "m", config=config)
    det = load_model(result.out_dir, runtime="torch").detector
    det.fusion.slope.fill_(1.0)  # as calibration finds it
    det.fusion.bias.fill_(0.0)
    with torch.no_grad():
        det.patch_head.out.weight.mul_(1000.0)
    rng = np.random.default_rng(5)
    images = [_texture(rng) for _ in range(6)]
    validation = ValidationSet(images[:3], images[3:], ["synthetic_blob"] * 3, [], pseudo=True)
    cal = calibrate(det, config.tiling, 4, validation, patch_trained=False)
    outs = cal.scorer.raw_outputs(images, maps=False)
    assert all(len(views) > 1 for _, views, _ in outs)  # tiled
    highest = [float(det.fusion.one_class_z(out.score_raw).max()) for out, _, _ in outs]
    assert cal.signals[:, 0].tolist() == pytest.approx(highest, rel=0, abs=0)


@pytest.mark.slow
def test_a_tiled_model_whose_gate_drops_the_type_head_is_calibrated_at_the_tiles_it_reads(
    tmp_path: Path,
) -> None:
    # Calibration picks each validation image's tile with the type head counted; when the gate then
    # switches the head off, the model reads each image at its tile of highest one-class score, so
    # its one-class calibration must be the one fitted there (before: 0.986x - 1.875, fitted at
    # tiles the head chose; 0.941x - 1.915 at the tiles read).
    root = _write(tmp_path / "bulk_ore", 16)
    rng = np.random.default_rng(7)
    for kind in ("foreign_object", "wet_patch"):
        for n in range(3):
            img = _texture(rng)
            x, y = (int(v) for v in rng.integers(0, 40, 2))
            cv2.rectangle(img, (x, y), (x + 6, y + 4), (40, 220, 40), -1)
            path = root / "train" / kind / f"{n:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), img[:, :, ::-1])
    config = TrainConfig(
        image_size=32, tile_size=32, pad=0, coreset_ratio=0.5, seed=0, threads=1, patch_head=False
    )
    result = train_model(root, tmp_path / "m", config=config)
    assert result.card["validation"]["head_in_fusion"] is False
    # the validation split, drawn again as training drew it
    sharp = deep_features_choice(config.deep_features, "bulk_ore")[0] == "sharp"
    trainer = Trainer(config, None, sharp=sharp, workers=1)
    data = read_training_data(root.resolve(), config, trainer.rng, trainer.progress)
    training_set(data, config.folds, trainer.rng)
    validation = validation_set(data, trainer.rng)
    det = load_model(result.out_dir, runtime="torch").detector
    scorer = ImageScorer(det, tiling=config.tiling, batch_size=4)
    outs = [out for out, _, _ in scorer.raw_outputs([*validation.good, *validation.anomalies], maps=False)]
    assert all(out.score_raw.numel() > 1 for out in outs)  # tiled
    with torch.inference_mode():
        read = torch.stack(
            [
                det.fusion.signals(o.score_raw, o.type_logits, o.patch_score)[
                    int(det.fusion(o.score_raw, o.type_logits, o.patch_score).argmax()), 0
                ]
                for o in outs
            ]
        )
    labels = torch.tensor([0] * len(validation.good) + [1] * len(validation.anomalies))
    at_read = fit_calibration(read, labels)
    assert at_read.fitted
    saved = (float(det.fusion.slope[0]), float(det.fusion.bias[0]))
    assert saved == pytest.approx((at_read.a, at_read.b), rel=1e-6)


@pytest.mark.parametrize(
    ("platt", "refitted"),
    [
        ([(1.0, 0.0), OFF, OFF], True),  # the one-class score alone: its own views, known before the fit
        ([(1.0, 0.0), OFF, (1.2, -3.0)], False),  # a kept patch head: the views hang on its fit
        ([(1.0, 0.0), (0.8, -1.0), OFF], False),  # a kept type head: the same
    ],
)
def test_only_a_model_fusing_the_one_class_score_alone_is_calibrated_again(
    platt: list[tuple[float, float]], refitted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a patch head kept, views picked again by the uncalibrated fusion moved the release cut up
    # and released one more test anomaly on one of eight tiled models in review: those keep the first
    # views, and only a model whose fusion is the one-class score alone is refitted.
    fit = SimpleNamespace(a=0.9, b=-1.2)
    again = SimpleNamespace(one_class=fit, head=fit, patch=fit)
    monkeypatch.setattr(gates_module, "at_fused_views", lambda det, cal, fused: again)
    cal = SimpleNamespace(picked_by=torch.tensor([True, True, True]))  # every signal picked the views
    out, gates = gates_module.at_gated_views(None, cal, Gates(None, 0, None, 0, platt))
    assert (out is again) is refitted
    assert gates.platt == ([(0.9, -1.2), OFF, OFF] if refitted else platt)


def test_the_fine_tuning_help_says_it_is_not_retrained_bit_for_bit(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README promises the same model on any --threads, but for fine-tuning; its option says so.
    monkeypatch.setenv("COLUMNS", "240")
    assert run(app, ["train", "--help"]) == 0
    out = " ".join(re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    assert "A fine-tuned model may differ with --threads" in out
    # the cause is the thread count, which the card does not record, not the machine
    assert "may not be retrained bit for bit with another --threads (which the card does not record)" in out
    assert "another machine" not in out


def test_the_tile_overlap_defaults_to_a_quarter_of_the_tile() -> None:
    assert TrainConfig(image_size=64, tile_size=64).tile_overlap == 16
    assert TrainConfig(image_size=64, tile_size=64).tiling == TilingConfig(64, 16)
    assert TrainConfig(image_size=64, tile_size=64, tile_overlap=0).tiling == TilingConfig(64, 0)
    assert TrainConfig(image_size=64).tiling == TilingConfig(0, 0)  # no tiles, no overlap


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image-size", "8"], "Error: --image-size 8 must be in [32, 1024]"),
        (["--coreset-ratio", "1.5"], "Error: --coreset-ratio 1.5 must be in (0, 1]"),
        (["--pad", "8"], "Error: --pad 8 must be a multiple of 16 in [0, image_size / 2]"),
        (["--cargo-type", ""], "Error: cannot tell the cargo type"),
        (["--val-fraction", "1.0"], "Error: --val-fraction 1.0 must be in (0, 1)"),
        (["--val-anomaly-fraction", "0"], "Error: --val-anomaly-fraction 0.0 must be in (0, 1)"),
        (["--deep-features", "wide"], "Error: --deep-features 'wide' not in auto, pooled, sharp"),
        (["--fusion", "avg"], "Error: --fusion 'avg' not in max, sum"),
        (["--target-miss-rate", "2"], "Error: --target-miss-rate 2.0 must be in (0, 1)"),
        # no number: typer's words named neither the value nor the range, after a usage line
        (["--target-miss-rate", "abc"], "Error: --target-miss-rate 'abc' must be a number in (0, 1)\n"),
        (["--target-miss-rate", ""], "Error: --target-miss-rate '' must be a number in (0, 1)\n"),
        (["--val-fraction", "a fifth"], "Error: --val-fraction 'a fifth' must be a number in (0, 1)\n"),
        (["--val-anomaly-fraction", "x"], "Error: --val-anomaly-fraction 'x' must be a number in (0, 1)\n"),
        (["--coreset-ratio", "0,5"], "Error: --coreset-ratio '0,5' must be a number in (0, 1]\n"),
        # read as typer read them: numbers out of range reach the config's check, which names it
        (["--target-miss-rate", "nan"], "Error: --target-miss-rate nan must be in (0, 1)\n"),
        (["--target-miss-rate", "1e-400"], "Error: --target-miss-rate 0.0 must be in (0, 1)\n"),
        (["--tile-size", "-1"], "Error: --tile-size -1 must be 0 (resize, never tile) or at least 128"),
        # an overlap without tiles did nothing, and was accepted silently, negative ones included
        (
            ["--tile-overlap", "8"],
            "Error: --tile-overlap 8 is given but tiling is off without --tile-size: give --tile-size too",
        ),
        (["--tile-overlap", "-8"], "Error: --tile-overlap -8 is given but tiling is off without --tile-size"),
        (["--tile-overlap", "0"], "Error: --tile-overlap 0 is given but tiling is off without --tile-size"),
        (
            ["--tile-size", "128", "--tile-overlap", "-8"],
            "Error: --tile-overlap -8 must be in [0, tile_size=128)",
        ),
        # a tile under half the input would only fail when the finished model was saved
        (
            ["--tile-size", "127"],
            "Error: --tile-size 127 must be 0 (resize, never tile) or at least 128 (half",
        ),
        (["--cargo-type", "ore/wet"], "Error: --cargo-type 'ore/wet' must be at most 64 characters with no"),
        # a seed torch cannot take failed in the middle of training, an unexpected ValueError
        (["--seed", "-1"], "Error: --seed -1 must be an integer in [0, 9223372036854775807]\n"),
        (
            ["--seed", str(2**63)],
            "Error: --seed 9223372036854775808 must be an integer in [0, 9223372036854775807]",
        ),
        (["--seed", "9" * 40], "Error: --seed 99999999999999999999... must be an integer in [0, "),
    ],
)
def test_train_cli_reports_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    root = _write(tmp_path / "pile", 4)
    code = run(app, ["train", "--data", str(root), "--out", str(tmp_path / "m"), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Usage:" not in err  # the CLI's own error line alone


def test_train_cli_holds_out_the_validation_share_asked_for(tmp_path: Path) -> None:
    root = _write(tmp_path / "vacuum_pack", 10)
    out = tmp_path / "model"
    args = ["--image-size", "32", "--pad", "0", "--val-fraction", "0.5", "--threads", "1"]
    assert run(app, ["train", "--data", str(root), "--out", str(out), *args]) == 0
    counts = json.loads((out / "model.json").read_text())["training"]["counts"]
    assert counts == {"train": {"good": 5}, "validation": {"good": 5}}


def test_too_few_normals_are_refused(tmp_path: Path) -> None:
    root = _write(tmp_path / "bulk_ore", 3)
    with pytest.raises(DatasetFormatError, match="has 3 images in train/good; at least 4 are needed"):
        train_model(root, tmp_path / "m", config=TrainConfig(image_size=64))


@pytest.mark.parametrize("content", [b"garbage\n", b""], ids=["garbage", "empty"])
def test_an_unreadable_labelled_anomaly_with_a_mask_is_refused_by_name(
    tmp_path: Path, content: bytes
) -> None:
    """read_mvtec leaves an unreadable image with a mask to what decodes it (evaluation leaves it out):
    training still refuses it, naming the image, before anything is fitted."""
    root = _write(tmp_path / "bulk_ore", 8)
    for n in range(2):
        _write_anomaly(root, "hole", n)
        mask = np.zeros((64, 64), np.uint8)
        mask[20:31, 20:41] = 255
        (root / "ground_truth" / "hole").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "ground_truth" / "hole" / f"{n:03d}_mask.png"), mask)
    broken = root / "train" / "hole" / "001.png"
    broken.write_bytes(content)
    with pytest.raises(InputError, match=re.escape(str(broken.resolve()))):
        train_model(root, tmp_path / "m", config=TrainConfig(image_size=64))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kind", ["Foreign Object", "crack-line", "9_lives", "x" * 65, "synthetic_rubber"])
def test_an_anomaly_folder_that_is_no_type_name_is_refused_before_training(tmp_path: Path, kind: str) -> None:
    """The model's types are what an officer records as found, and the outcome form and API take
    type names only: a model trained on train/Foreign Object knew a type no outcome could name. A
    train/synthetic_rubber was taken for one of training's own pseudo-anomaly classes: scored as
    "unknown" whatever its probability, and no finding an officer could record."""
    root = _write(tmp_path / "bulk_ore", 8)
    _write_anomaly(root, kind, 0)
    _write_anomaly(root, kind, 1)
    with pytest.raises(DatasetFormatError) as info:
        train_model(root, tmp_path / "m", config=TrainConfig(image_size=64))
    assert str(info.value) == (
        f"{str(root / 'train' / kind)!r}: {kind!r} is not an anomaly type name: lower-case letters, digits "
        "and _, starting with a letter, at most 64 characters (e.g. foreign_object), not starting with "
        "synthetic_ (kept for the synthetic classes training makes); rename the folder"
    )
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("n_good", "anomalies", "args", "match"),
    [
        # no labelled anomaly held out: the release cut rests on the validation normals, 1 cannot place it
        (
            4,
            0,
            [],
            r"of the 4 images in train/good leaves 3 for training and 1 for validation, and no labelled",
        ),
        (
            4,
            0,
            [],
            # not "hold out more of them (--val-fraction 0.5)": 2 training normals measure no spread
            r"add normal images \(12 in train/good at --val-fraction 0.2\), or add labelled anomalies",
        ),
        (
            7,
            0,
            [],
            r"--val-fraction 0.2 of the 7 .* \(12 in train/good at --val-fraction 0.2\), or add labelled",
        ),
        # holding 2 of 14 out leaves 12 to train on: advised
        (
            14,
            0,
            ["--val-fraction", "0.1"],
            r"\(15 in train/good at --val-fraction 0.1\), or hold out more of them \(--val-fraction 0.15\)",
        ),
        (5, 1, [], r"leaves 4 for training and 1 for validation"),  # one of a type: none held out
        (9, 0, ["--val-fraction", "0.1"], r"\(15 in train/good at --val-fraction 0.1\)"),
        (
            4,
            0,
            ["--val-fraction", "0.9"],
            r"leaves 0 for training and 4 for validation; training needs at least 2",
        ),
    ],
)
def test_a_split_training_cannot_finish_on_is_refused_before_decoding(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    n_good: int,
    anomalies: int,
    args: list[str],
    match: str,
) -> None:
    # it was refused only after the whole fit, as an "unexpected ValueError" (exit 1)
    root = _write(tmp_path / "bulk_ore", n_good)
    for n in range(anomalies):
        _write_anomaly(root, "seal_defect", n)
    stages: list[str] = []
    config = TrainConfig(image_size=32, pad=0, val_fraction=float(args[1]) if args else 0.2)
    with pytest.raises(DatasetFormatError, match=match):
        train_model(root, tmp_path / "m", config=config, progress=lambda stage, *_: stages.append(stage))
    assert stages == []  # nothing decoded, embedded or fitted
    assert (
        run(app, ["train", "--data", str(root), "--out", str(tmp_path / "m"), "--image-size", "32", *args])
        == 2
    )
    assert re.search(match, " ".join(capsys.readouterr().err.split()))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("n_good", "anomalies"), [(8, 0), (4, 2)], ids=["2-normals-held-out", "a-labelled-anomaly-held-out"]
)
def test_a_split_with_enough_to_place_the_cut_is_accepted(n_good: int, anomalies: int) -> None:
    from pipeline.train.data import TrainItem, check_split, split

    items = [TrainItem(Path(f"g{n}.png"), "good") for n in range(n_good)]
    items += [TrainItem(Path(f"a{n}.png"), "seal_defect") for n in range(anomalies)]
    train, val = split(items, 0.2, np.random.default_rng(0), anomaly_fraction=0.2)
    check_split(Path("bulk_ore"), train, val, TrainConfig())  # raises nothing


@pytest.mark.parametrize(
    ("scores", "labels", "pseudo", "match"),
    [
        (
            [0.3, 0.3, 0.7, 0.9],
            [0, 0, 1, 1],
            True,
            r"\(2 normal, 0 labelled anomalous images\): all 2 normal",
        ),
        ([0.3, 0.3, 0.3], [0, 0, 1], False, r"\(2 normal, 1 labelled anomalous images\): all 3 validation"),
    ],
    ids=["pseudo", "labelled"],
)
def test_scores_no_threshold_can_be_placed_on_are_a_data_error(
    scores: list[float], labels: list[int], pseudo: bool, match: str
) -> None:
    # a ValueError out of models.threshold reached the CLI as "unexpected" (exit 1)
    from pipeline.train.thresholds import place_thresholds

    with pytest.raises(DatasetFormatError, match=match + r".*hold out more of them \(--val-fraction\)"):
        place_thresholds(np.array(scores), np.array(labels), TrainConfig(), val_pseudo=pseudo)


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        # 2 training normals (4 at --val-fraction 0.5): the validation normals scored at the top
        (
            [0.98, 0.995, 0.99, 0.5],
            [0, 0, 1, 1],
            r"^the release threshold 1.000 \(normal_quantile_fallback\) is at the top of the score scale, "
            r"so every image scores below it: it releases 2 of the 2 validation pseudo-anomalies",
        ),
        (
            [0.3, 0.5, 0.2, 0.4],
            [0, 0, 1, 1],
            r"^the release threshold 0.519 \(normal_quantile_fallback\) is above every validation "
            r"anomaly's score: it releases 2 of the 2 validation pseudo-anomalies",
        ),
    ],
    ids=["top-of-the-scale", "every-anomaly-released"],
)
def test_a_release_cut_that_releases_every_anomaly_is_refused(
    scores: list[float], labels: list[int], match: str
) -> None:
    # it trained (exit 0) a model that released 100 % of the test anomalies
    from pipeline.train.thresholds import place_thresholds

    with pytest.raises(DatasetFormatError, match=match + r".*add normal images to train/good \(10 or more"):
        place_thresholds(np.array(scores), np.array(labels), TrainConfig(), val_pseudo=True)


def test_a_release_cut_that_holds_one_anomaly_is_accepted() -> None:
    from pipeline.train.thresholds import place_thresholds

    cut = place_thresholds(
        np.array([0.3, 0.5, 0.2, 0.9]), np.array([0, 0, 1, 1]), TrainConfig(), val_pseudo=True
    )
    assert cut.thresholds.release == pytest.approx(0.519, abs=1e-3)


@pytest.mark.parametrize(
    ("rate", "warned"), [(0.0, True), (0.05, True), (0.1, False), (0.8, False), (None, False)]
)
def test_a_threshold_that_releases_almost_nothing_is_warned_about(rate: float | None, warned: bool) -> None:
    warning = release_warning({"release_rate_at_threshold": rate})
    assert (warning is not None) == warned
    if warned:
        assert warning.startswith("the release threshold releases ")


@pytest.mark.parametrize(
    ("target", "named", "share"),
    [
        (0.01, "train/seal/b.png", 0.75),  # no miss allowed: the lowest anomaly, under 3 of 4 clean
        (0.4, "train/seal/a.png", 0.25),  # one of four may be missed: the second lowest
    ],
)
def test_training_names_the_anomaly_that_set_the_release_cut(
    tmp_path: Path, target: float, named: str, share: float
) -> None:
    from pipeline.train.thresholds import release_setter

    paths = [tmp_path / "train" / "seal" / f"{n}.png" for n in "abcd"]
    anomalous = np.array([0.6, 0.05, 0.9, 0.7])  # b.png scores like a clean image
    normal = np.array([0.01, 0.1, 0.2, 0.65])
    setter = release_setter(tmp_path, paths, anomalous, normal, target)
    assert setter["path"] == named and setter["clean_at_or_above"] == share
    warning = release_warning({"release_rate_at_threshold": 0.05, "release_set_by": setter})
    assert warning is not None and f"It sits under validation anomaly {named}" in warning
    assert "`clearsight evaluate`" not in warning  # validation images are in no report
    near_one = release_warning(
        {"release_rate_at_threshold": 0.0, "release_set_by": {**setter, "score": 0.9999999716853225}}
    )
    assert near_one is not None and "(score 0.9999999717;" in near_one  # it read "score 1"


def test_a_relative_data_folder_gives_the_card_one_kind_of_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # release_set_by.path came out absolute, the duplicates relative, data_root relative to the cwd
    root = _write(tmp_path / "bulk_ore", 8)
    for n in range(4):
        _write_anomaly(root, "seal_defect", n)
    (root / "test" / "good").mkdir(parents=True)
    (root / "test" / "good" / "copy.png").write_bytes((root / "train" / "good" / "001.png").read_bytes())
    monkeypatch.chdir(tmp_path)
    args = ["--image-size", "32", "--pad", "0", "--threads", "1", "--val-anomaly-fraction", "0.5"]
    assert run(app, ["train", "--data", "bulk_ore", "--out", "m", "--target-miss-rate", "0.5", *args]) == 0
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["training"]["data_root"] == str(root.resolve())
    assert card["validation"]["release_set_by"]["path"] in {
        f"train/seal_defect/{n:03d}.png" for n in range(4)
    }
    assert card["training"]["duplicates"]["examples"]["training_and_test"][0] == [
        "train/good/001.png",
        "test/good/copy.png",
    ]


@pytest.mark.parametrize(
    ("log_sd", "normals", "sd", "warning"),
    [
        # copies of one picture: it was 1e-3, and float rounding decided the verdict
        (0.0, 12, 0.01, "the training normals' one-class scores barely differ (spread 0 in log units"),
        (0.001, 10, 0.01, "the training normals' one-class scores barely differ (spread 0.001 in log units"),
        # four distinct pictures gave 0.0041 on one seed: too few to say, not "copies of one another"
        (0.0041, 3, 0.01, "3 training normals are too few to measure how much normal images vary: their "),
        (0.001, 8, 0.01, "8 training normals are too few to measure how much normal images vary: their "),
        (0.03, 3, 0.03, None),  # ordinary data (0.02 to 0.10): kept as measured
        (0.03, 12, 0.03, None),
        (0.2, 6, 0.2, None),
    ],
)
def test_the_one_class_spread_has_a_floor_and_a_warning(
    log_sd: float, normals: int, sd: float, warning: str | None
) -> None:
    from types import SimpleNamespace

    from models.fusion import Fusion
    from pipeline.train.calibration import standardise_one_class

    signs = np.resize([-1.0, 1.0], normals)
    signs -= signs.mean()  # an odd count: the mean still 0
    logs = 2.0 + log_sd * signs / signs.std(ddof=1)  # sample sd = log_sd
    det = SimpleNamespace(fusion=Fusion())
    scores = [*np.exp(logs).tolist(), 50.0]  # the anomaly's score is no part of the normals' spread
    spread = standardise_one_class(det, scores, [0] * normals + [1])  # type: ignore[arg-type]
    assert spread.log_sd == pytest.approx(log_sd, abs=1e-5)  # float32 logs
    assert float(det.fusion.oc_sd) == pytest.approx(sd, rel=1e-5) and spread.sd == pytest.approx(sd, rel=1e-5)
    assert (spread.sd == spread.log_sd) is (
        warning is None
    )  # where the floor does not bind, sd is as measured
    assert float(det.fusion.oc_mu) == pytest.approx(2.0, abs=1e-6)
    card = spread.card()
    assert card["floor"] == 0.01 and card["sd"] == spread.sd and card["normals"] == normals
    if warning is None:
        assert card["warning"] is None
    else:
        assert card["warning"].startswith(warning)
        assert "0.01" in card["warning"]  # the floor it was raised to
        assert ("copies" in card["warning"]) is (normals >= 10)


def test_training_on_copies_of_one_picture_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "bulk_ore"
    picture = _texture(np.random.default_rng(5))
    for n in range(14):  # ten or more out-of-fold normals: fewer are said to be too few, not copies
        (root / "train" / "good").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "train" / "good" / f"{n:03d}.png"), picture[:, :, ::-1])
    for n in range(4):
        _write_anomaly(root, "seal_defect", n)
    args = ["--image-size", "32", "--pad", "0", "--threads", "1", "--val-anomaly-fraction", "0.5"]
    assert run(app, ["train", "--data", str(root), "--out", str(tmp_path / "m"), *args]) == 0
    spread = json.loads((tmp_path / "m" / "model.json").read_text())["validation"]["one_class_spread"]
    assert spread["log_sd"] < 0.01 and spread["sd"] == 0.01 and spread["normals"] >= 10
    assert "look like copies of one another" in spread["warning"]
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "Warning: the training normals' one-class scores barely differ" in err
    assert float(load_model(tmp_path / "m", runtime="torch").detector.fusion.oc_sd) == pytest.approx(0.01)


def test_an_output_that_is_a_file_is_refused_before_training(tmp_path: Path) -> None:
    root = _write(tmp_path / "bulk_ore", 4)
    (tmp_path / "taken").write_text("not a model folder")
    with pytest.raises(InputError, match=r"^--out '.*/taken' is a file; give a folder for the model"):
        train_model(root, tmp_path / "taken", config=TrainConfig(image_size=64))
    assert (tmp_path / "taken").read_text() == "not a model folder"


def test_a_missing_data_folder_is_named_as_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="does not exist or is not a folder"):
        train_model(tmp_path / "nothere", tmp_path / "m", config=TrainConfig(image_size=64))
    assert not (tmp_path / "m").exists()  # a failed run leaves no empty model folder


@pytest.mark.parametrize(
    ("out", "match"),
    [
        (
            "bulk_ore/models",
            r"lies inside --data '.*bulk_ore': the model's files would become part of the dataset",
        ),
        ("report", r"holds files that are not a Clearsight model \(no model.json\)"),
        ("model", r"holds a model already; pass --overwrite to replace it"),
        (".", r"--data '.*bulk_ore' lies inside --out '.*': replacing the model there would remove the data"),
    ],
    ids=["inside-the-data", "not-a-model", "a-model", "holds-the-data"],
)
def test_an_output_that_would_mix_or_replace_is_refused_before_training(
    tmp_path: Path, out: str, match: str
) -> None:
    root = _write(tmp_path / "bulk_ore", 4)
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "metrics.json").write_text("{}")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    with pytest.raises(InputError, match=match):
        train_model(root, tmp_path / out, config=TrainConfig(image_size=64))
    assert (tmp_path / "report" / "metrics.json").read_text() == (
        tmp_path / "model" / "model.json"
    ).read_text()


def test_overwrite_replaces_a_model_whole(tmp_path: Path) -> None:
    root = _write(tmp_path / "bulk_ore", 10)
    out = tmp_path / "model"
    args = ["--image-size", "32", "--pad", "0", "--threads", "1"]
    assert run(app, ["train", "--data", str(root), "--out", str(out), *args]) == 0
    before = out.stat().st_mode & 0o777
    assert run(app, ["train", "--data", str(root), "--out", str(out), "--seed", "1", *args]) == 2
    (out / "model.onnx").write_text("an export of the earlier model")
    # the folder is swapped whole: a file of the user's in it went with the old model, unasked
    again = ["train", "--data", str(root), "--out", str(out), "--seed", "1", "--overwrite", *args]
    assert run(app, again) == 2 and (out / "model.onnx").is_file()
    (out / "model.onnx").unlink()
    assert run(app, again) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "weights.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bulk_ore", "model"]  # nothing left beside it
    assert json.loads((out / "model.json").read_text())["training"]["seed"] == 1
    assert out.stat().st_mode & 0o777 == before  # a service account that read it still can
    load_model(out, runtime="torch")


@pytest.mark.parametrize(
    ("files", "overwrite", "match"),
    [
        # what save_artifact leaves when cut short: the weights, then the card, are written beside
        (
            ["weights.safetensors.tmp"],
            False,
            r"holds a model save that was cut short \(weights.safetensors.tmp; no",
        ),
        (
            ["weights.safetensors"],
            False,
            r"cut short \(weights.safetensors; no model.json\); pass --overwrite",
        ),
        (
            ["weights.safetensors", "model.json.tmp"],
            False,
            r"cut short \(model.json.tmp, weights.safetensors;",
        ),
        (["weights.safetensors.tmp"], True, None),
        (["weights.safetensors", "model.json.tmp", ".gitkeep"], True, None),
        (["weights.safetensors.tmp", "notes.txt"], True, r"holds files that are not a Clearsight model"),
        (["model.json/"], True, r"holds files that are not a Clearsight model"),  # a folder of that name
    ],
)
def test_a_save_cut_short_is_replaced_with_overwrite(
    tmp_path: Path, files: list[str], overwrite: bool, match: str | None
) -> None:
    from pipeline.train.model_folder import check_out_dir

    out = tmp_path / "model"
    out.mkdir()
    for name in files:
        if name.endswith("/"):
            (out / name).mkdir()
        else:
            (out / name).write_bytes(b"" if name.startswith(".") else b"partial")
    if match is None:
        check_out_dir(out, tmp_path / "bulk_ore", overwrite=overwrite)
    else:
        with pytest.raises(InputError, match=match):
            check_out_dir(out, tmp_path / "bulk_ore", overwrite=overwrite)
    assert sorted(p.name + "/" * p.is_dir() for p in out.iterdir()) == sorted(files)  # nothing touched


def test_overwrite_recovers_from_a_save_cut_short(tmp_path: Path) -> None:
    # the rerun with --overwrite was refused: "holds files that are not a Clearsight model"
    root = _write(tmp_path / "bulk_ore", 8)
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights.safetensors.tmp").write_bytes(b"half a model")
    args = [
        "train",
        "--data",
        str(root),
        "--out",
        str(out),
        "--image-size",
        "32",
        "--pad",
        "0",
        "--threads",
        "1",
    ]
    assert run(app, [*args, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "weights.safetensors"]
    load_model(out, runtime="torch")


def test_overwrite_through_a_link_replaces_the_folder_it_names(tmp_path: Path) -> None:
    root = _write(tmp_path / "bulk_ore", 10)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / ".gitkeep").write_text("")  # a hidden file is no content
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "shared" / "bulk", target_is_directory=True)
    (tmp_path / "shared" / "bulk").mkdir()
    (tmp_path / "shared" / "bulk" / ".gitkeep").write_text("")
    args = ["--image-size", "32", "--pad", "0", "--threads", "1", "--data", str(root), "--out", str(link)]
    assert run(app, ["train", *args]) == 0
    assert run(app, ["train", *args, "--seed", "1", "--overwrite"]) == 0
    assert link.is_symlink()  # still the link, naming the new model
    assert json.loads((tmp_path / "shared" / "bulk" / "model.json").read_text())["training"]["seed"] == 1
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == [".gitkeep", "bulk"]  # nothing left


@pytest.mark.parametrize(("cargo", "warned"), [("bulk_ore", False), ("banana", True)])
def test_a_cargo_type_the_policy_does_not_decide_is_warned_about(cargo: str, warned: bool) -> None:
    from pipeline.cli.train import cargo_warning

    warning = cargo_warning(cargo)
    assert (warning is not None) == warned
    if warned:
        assert warning.startswith("cargo type 'banana' is not one the packaged policy decides (bulk_ore, ")


def test_a_cargo_type_other_than_the_data_folders_is_refused(tmp_path: Path) -> None:
    root = _write(tmp_path / "bulk_ore", 4)
    with pytest.raises(
        CargoTypeError, match="--cargo-type 'vacuum_pack' but --data '.*bulk_ore' is a bulk_ore folder"
    ):
        train_model(root, tmp_path / "m", config=TrainConfig(image_size=64, cargo_type="vacuum_pack"))


def test_unknown_cargo_folder_needs_a_cargo_type(tmp_path: Path) -> None:
    root = _write(tmp_path / "pile", 4)
    with pytest.raises(CargoTypeError, match="folder name 'pile' is not one of"):
        train_model(root, tmp_path / "m", config=TrainConfig(image_size=64))


@pytest.mark.parametrize(
    ("overlap", "match"),
    [
        (-4, r"tile_overlap -4 must be >= 0"),
        (0, r"tile_overlap 0 is given but tiling is off \(tile_size 0\): give a tile_size too"),
        (16, r"tile_overlap 16 is given but tiling is off \(tile_size 0\)"),
    ],
)
def test_an_overlap_without_tiles_is_refused(overlap: int, match: str) -> None:
    with pytest.raises(InputError, match=match):
        TrainConfig(image_size=64, tile_overlap=overlap)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("target_miss_rate", 0.0, "target_miss_rate 0.0 must be in"),
        ("folds", 1, "folds 1 must be >= 2"),
        ("score_reduction", "mean", "score_reduction 'mean' not in"),
        ("tile_overlap", 64, "tile_overlap 64 must be in"),
        ("tile_overlap", -1, r"tile_overlap -1 must be in \[0, tile_size=64\)"),
        ("pad", 160, "pad 160 must be a multiple of 16 in"),
        ("pad", -16, "pad -16 must be a multiple of 16 in"),
        ("fusion", "auto", "fusion 'auto' not in max, sum"),  # sessions 10-13's default: now sum for all
        ("deep_features", "wide", "deep_features 'wide' not in auto, pooled, sharp"),
        ("patch_negatives", 0, "patch_negatives 0 must be >= 1"),
        ("patch_hidden", 0, "patch_hidden 0 must be >= 1"),
        ("patch_negative_share", 0.0, r"patch_negative_share 0.0 must be in \(0, 1\]"),
        ("patch_negative_share", 1.5, r"patch_negative_share 1.5 must be in \(0, 1\]"),
        ("seed", -1, r"seed -1 must be an integer in \[0, 9223372036854775807\]"),
        ("seed", 2**63, r"seed 9223372036854775808 must be an integer in \[0, 9223372036854775807\]"),
        # a name of goods, as a manifest's: a bidi control was taken, and no declaration could name it
        ("cargo_type", "\u202ebulk_ore", r"cargo_type '\\u202ebulk_ore' must be a name with no control or"),
    ],
)
def test_config_validates_eagerly(field: str, value: object, match: str) -> None:
    kw: dict[str, object] = {field: value}
    if field == "tile_overlap":
        kw.update(tile_size=64, image_size=64)  # a tile of at least half the input
    with pytest.raises(InputError, match=match):
        TrainConfig(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fraction", "in_training", "row"),
    [
        (0.5, 2, "pseudo-anomalies no: labelled anomalies in training and in validation"),
        (
            0.9,  # round(0.9 * 4): all four
            0,
            "pseudo-anomalies in training only: all 4 labelled anomalies went to validation (0.9 of each "
            "type held out: --val-anomaly-fraction, or --val-fraction without it)",
        ),
    ],
)
def test_train_cli_holds_out_a_separate_share_of_the_anomalies(
    fraction: float, in_training: int, row: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _write(tmp_path / "vacuum_pack", 10)
    for n in range(4):  # one labelled anomaly type beside the normals
        _write_anomaly(root, "seal_defect", n)
    out = tmp_path / "model"
    args = ["--image-size", "32", "--pad", "0", "--val-anomaly-fraction", str(fraction), "--threads", "1"]
    assert run(app, ["train", "--data", str(root), "--out", str(out), *args]) == 0
    training = json.loads((out / "model.json").read_text())["training"]
    assert training["counts"] == {
        "train": {"good": 8, "seal_defect": in_training} if in_training else {"good": 8},
        "validation": {"good": 2, "seal_defect": 4 - in_training},
    }
    assert training["validation_share"] == {"good": 0.2, "anomalous": fraction}
    assert training["pseudo_anomalies"] is (in_training == 0)
    # the summary table's row, its wrapped lines joined
    assert row in " ".join(capsys.readouterr().out.replace("│", " ").split())


def test_train_cli_says_one_image_per_type_left_validation_to_pseudo_anomalies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the summary said "pseudo-anomalies no" while validation used them and the cut fell back
    root = _write(tmp_path / "bulk_ore", 10)
    for kind in ("wet_patch", "foreign_object"):
        _write_anomaly(root, kind, 0)
    args = ["--image-size", "32", "--pad", "0", "--threads", "1", "--no-patch-head"]
    assert run(app, ["train", "--data", str(root), "--out", str(tmp_path / "model"), *args]) == 0
    captured = capsys.readouterr()
    printed = " ".join(captured.out.replace("│", " ").split())
    assert "pseudo-anomalies in validation only: no labelled anomaly was held out" in printed
    err = " ".join(captured.err.split())
    assert (
        "Warning: the release threshold fell back to the clean validation images' scores alone "
        "(normal_quantile_fallback): no labelled anomaly was held out, as each of the 2 type(s) has one "
        "image (a type needs 2 or more for one to be held out)"
    ) in err
    assert re.search(r"it releases \d+\.\d % of the 2 pseudo-anomalies made from validation normals", err)


def test_a_blank_mask_trains_no_patch_head_and_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its patches would teach the patch head that a real defect is normal.
    root = _write(tmp_path / "vacuum_pack", 10)
    for n in range(6):
        _write_anomaly(root, "seal_defect", n)
        mask = np.zeros((64, 64), np.uint8)
        if n % 2:
            mask[20:31, 20:41] = 255
        (root / "ground_truth" / "seal_defect").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "ground_truth" / "seal_defect" / f"{n:03d}_mask.png"), mask)
    out = tmp_path / "model"
    args = ["--image-size", "32", "--pad", "0", "--val-anomaly-fraction", "0.5", "--threads", "1"]
    assert run(app, ["train", "--data", str(root), "--out", str(out), *args]) == 0
    training = json.loads((out / "model.json").read_text())["training"]
    blank = training["empty_masks"]
    # every blank mask is named, the validation split's too
    assert blank == [f"ground_truth/seal_defect/{n:03d}_mask.png" for n in (0, 2, 4)]
    trained = training["counts"]["train"]["seal_defect"]
    assert 0 < training["patch_head"]["labelled_masks"] < trained  # the blank ones trained no patch head
    err = " ".join(capsys.readouterr().err.split())
    assert f"{len(blank)} ground-truth mask(s) mark no defect pixel ({blank[0]}, for one)" in err


@pytest.mark.parametrize(
    ("val_fraction", "val_anomaly_fraction", "share"), [(0.2, None, 0.2), (0.2, 0.5, 0.5), (0.4, 0.1, 0.1)]
)
def test_the_anomalies_share_defaults_to_the_validation_fraction(
    val_fraction: float, val_anomaly_fraction: float | None, share: float
) -> None:
    config = TrainConfig(val_fraction=val_fraction, val_anomaly_fraction=val_anomaly_fraction)
    assert config.val_anomaly_share == share


def _write_both_kinds(root: Path, n_each: int) -> Path:
    """Normals of both kinds: colour ones and the grey pictures of others."""
    rng = np.random.default_rng(4)
    for i in range(2 * n_each):
        img = _texture(rng)
        path = root / "train" / "good" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img[:, :, 1] if i % 2 else img[:, :, ::-1])
    return root


@pytest.mark.parametrize("switch", [[], ["--no-grey-offsets"]], ids=["default", "off"])
def test_grey_pictures_are_offset_onto_the_colour_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], switch: list[str]
) -> None:
    root = _write_both_kinds(tmp_path / "bulk_ore", 12)
    args = ["--image-size", "64", "--coreset-ratio", "0.5", "--threads", "1", *switch]
    assert run(app, ["train", "--data", str(root), "--out", str(tmp_path / "m"), *args]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "m" / "model.json").read_text())["training"]["grey_offsets"]
    offsets = load_model(tmp_path / "m", runtime="torch").detector.config.grey_offsets
    if switch:
        assert record == "off (--no-grey-offsets)" and offsets == (0.0, 0.0, 0.0)
        assert "off (--no-grey-offsets)" in printed
        return
    assert record["normals"] == {"colour": 9, "grey": 10}  # 19 after validation took 5 of the 24
    assert record["one_class_distance_factor"] == pytest.approx(np.exp(offsets[0]))
    assert offsets[0] != 0.0 and offsets[1] != 0.0  # the one-class score and the type head
    assert offsets[2] == 0.0  # no patch head without labelled anomalies
    assert "grey views' one-class distances x" in printed


@pytest.mark.parametrize(
    ("configured", "cargo", "chosen", "words"),
    [
        ("auto", "vacuum_pack", "sharp", "sharp (auto for vacuum_pack)"),
        ("auto", "bulk_ore", "pooled", "pooled (auto for bulk_ore)"),
        ("auto", "scrap_metal", "pooled", "pooled (auto for scrap_metal)"),  # a --cargo-type of the user's
        ("pooled", "vacuum_pack", "pooled", "pooled (--deep-features pooled)"),
        ("sharp", "bulk_ore", "sharp", "sharp (--deep-features sharp)"),
    ],
)
def test_the_deeper_features_by_cargo_type(configured: str, cargo: str, chosen: str, words: str) -> None:
    assert deep_features_choice(configured, cargo) == (chosen, words)


@pytest.mark.parametrize(
    ("cargo", "switch", "pool_sizes", "words"),
    [
        ("bulk_ore", [], [], "pooled (auto for bulk_ore)"),
        ("bulk_ore", ["--deep-features", "sharp"], [3, 1], "sharp (--deep-features sharp)"),
        ("vacuum_pack", ["--deep-features", "pooled"], [], "pooled (--deep-features pooled)"),
    ],
)
def test_train_cli_reads_the_deeper_features_as_asked(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cargo: str,
    switch: list[str],
    pool_sizes: list[int],
    words: str,
) -> None:
    root = _write(tmp_path / cargo, 8)
    args = ["--image-size", "32", "--pad", "0", "--threads", "1", *switch]
    assert run(app, ["train", "--data", str(root), "--out", str(tmp_path / "m"), *args]) == 0
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["training"]["deep_features"] == words
    assert card["detector"]["pool_sizes"] == pool_sizes
    printed = capsys.readouterr().out
    assert "deeper features" in printed and words in printed
    embedder = load_model(tmp_path / "m", runtime="torch").detector.embedder
    assert embedder.pool_sizes == tuple(pool_sizes or (3, 3))


@pytest.mark.parametrize(
    ("dtype", "high", "colour"),
    [
        (np.uint8, 1, False),
        (np.uint8, 255, False),
        (np.uint16, 1, False),
        (np.uint16, 255, False),
        (np.uint8, 255, True),  # drawn in green: the red channel alone read it as blank
    ],
)
def test_masks_read_as_evaluate_reads_them(tmp_path: Path, dtype: type, high: int, colour: bool) -> None:
    """A 0/1 mask marks the same defect as a 0/255 one, 16-bit as 8-bit, in training as in `clearsight
    evaluate` (both read through datasets.mvtec.read_defect_mask)."""
    from pipeline.evaluate import _read_mask
    from pipeline.train.data import read_mask

    mask = np.zeros((12, 16), dtype)
    mask[2:5, 3:9] = high
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), np.dstack([0 * mask, mask, 0 * mask]) if colour else mask)
    read = read_mask(path, (12, 16))
    assert read.dtype == np.float32 and int(read.sum()) == 18
    assert np.array_equal(_read_mask(path), read > 0)
    assert int(read_mask(path, (24, 32)).sum()) == 72  # at the image's size where that differs
