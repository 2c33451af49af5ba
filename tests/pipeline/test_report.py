"""report.html: the sections, figures and images a reader needs, self-contained; the evaluate CLI."""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from evaluate_fakes import CARD_VALIDATION, FakePredictor, write_dataset  # noqa: E402

from models.inference import GOOD, Thresholds  # noqa: E402
from pipeline.cli import app, run  # noqa: E402
from pipeline.evaluate import EvaluationResult, GalleryItem, ImageRecord, _metrics  # noqa: E402
from pipeline.report import histogram_svg, percent, render_report, roc_svg, write_report  # noqa: E402
from pipeline.resolution import card_resolution  # noqa: E402
from pipeline.signal_evidence import fused_signals  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Browser

TH = Thresholds(release=0.5, hold=0.75, target_miss_rate=0.01, method="miss_rate_on_validation")


def _gallery(record: ImageRecord, with_mask: bool) -> GalleryItem:
    image = np.full((16, 16, 3), 90, np.uint8)
    amap = np.zeros((16, 16), np.float32)
    amap[4:8, 4:8] = 0.9
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    return GalleryItem(record, image, amap, mask if with_mask else None)


def _result(
    records: list[ImageRecord],
    thresholds: Thresholds = TH,
    *,
    empty_masks: list[str] | None = None,
    known_types: list[str] | None = None,
) -> EvaluationResult:
    result = EvaluationResult(
        model_id="bulk_ore-lite0-0badc0de",
        cargo_type="bulk_ore",
        thresholds=thresholds,
        data_root="/data/ore",
        records=records,
        metrics={},
        evaluated_at="2025-01-01T00:00:00+00:00",
        empty_masks=empty_masks or [],
        known_types=known_types,
    )
    result.metrics = _metrics(result, None, {}, {})  # no ground-truth masks
    return result


RECORDS = [
    ImageRecord("test/good/a.png", GOOD, GOOD, 0.1, GOOD, None, False),
    ImageRecord("test/good/b.png", GOOD, GOOD, 0.2, GOOD, None, False),
    ImageRecord("test/good/c.png", GOOD, GOOD, 0.6, "anomalous", "crack", False),
    ImageRecord("test/crack/x.png", "anomalous", "crack", 0.3, GOOD, None, True),
    ImageRecord("test/crack/y.png", "anomalous", "crack", 0.9, "anomalous", "crack", True),
    ImageRecord("test/good/bad.png", GOOD, GOOD, None, None, None, False, "test/good/bad.png: truncated"),
]


@pytest.fixture()
def result() -> EvaluationResult:
    res = _result(RECORDS)
    res.worst_misses = [_gallery(RECORDS[3], True), _gallery(RECORDS[4], True)]
    res.worst_false_alarms = [_gallery(RECORDS[2], False)]
    return res


def test_headline_in_plain_words_comes_first(result: EvaluationResult) -> None:
    page = render_report(result)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    # 2 of 3 clean released; 1 of 2 anomalous released
    assert "66.7 % of clean cargo would be released without inspection (2 of 3 clean images" in text
    assert "50.0 % of anomalous cargo would be released too — missed (1 of 2 anomalous images)" in text
    assert "Misses the miss-rate target on this test set: 50.0 % of anomalous images released" in text
    order = [page.index(f'id="{s}"') for s in ("operating-point", "summary", "curves", "per-type")]
    assert order == sorted(order)


def test_sections_charts_and_tables(result: EvaluationResult) -> None:
    page = render_report(result)
    for section in ("operating-point", "bands", "summary", "confusion", "curves", "per-type-table",
                    "worst-misses", "worst-false-alarms", "failed", "glossary"):  # fmt: skip
        assert f'id="{section}"' in page, section
    assert page.count("<svg ") == 4  # histogram, ROC, PR, and the heatmaps' colour scale
    assert 'aria-label="Heatmap colour scale: blue is like clean cargo, red a defect"' in page
    assert 'aria-label="ROC curve"' in page and 'aria-label="Precision-recall curve"' in page
    assert "release 0.500" in page and "hold 0.750" in page  # thresholds drawn on the histogram
    assert "test/good/bad.png: truncated" in page
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert "crack 2 50.0 % up to 98.7 %" in text  # 1 of 2 missed: the exact interval reaches 98.7 %
    assert re.search(r"Image AUROC 0\.833 0\.\d{3}–1\.000", text)  # the value, then its bootstrap interval
    # 2 anomalous images: the 1 % FNR cut is the lowest one, whose bootstrap interval would mislead
    assert "TNR at 1 % FNR) 66.7 % none under 200 anomalous images" in text


def test_blank_masks_are_named() -> None:
    result = _result(RECORDS, empty_masks=["ground_truth/crack/<x>_mask.png"])
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", render_report(result)))
    assert "1 blank mask (mark no defect pixel, e.g. ground_truth/crack/&lt;x&gt;_mask.png ;" in text
    assert "blank mask" not in render_report(_result(RECORDS))


def test_a_type_with_none_flagged_is_told_apart_from_one_without_masks() -> None:
    # a stain the model missed: no flagged image whose predicted type could be checked
    stain = ImageRecord("test/stain/z.png", "anomalous", "stain", 0.2, GOOD, None, True)
    page = render_report(_result([*RECORDS[:5], stain]))
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))
    assert re.search(r"stain 1 100\.0 % .* none flagged", text)
    assert re.search(r"crack 2 50\.0 % .* 100\.0 %", text)  # y flagged, as a crack
    assert '"none flagged": the model flagged no image of that type' in text
    # the policy's own cuts are named as they are now: no trusted trader's offset any more
    assert "offset" not in re.search(r"A decision policy may set its own[^.]*\.", text).group(0)


def test_type_accuracy_of_a_model_that_knows_no_type_reads_n_a_with_the_reason() -> None:
    # trained on pseudo-anomalies alone, the model types y "unknown": "0.0 %" said it typed it wrong
    records = [r._replace(predicted_type="unknown") if r.predicted_type else r for r in RECORDS]
    stain = ImageRecord("test/stain/z.png", "anomalous", "stain", 0.2, GOOD, None, True)
    text = html.unescape(
        re.sub(
            r"\s+", " ", re.sub(r"<[^>]+>", " ", render_report(_result([*records, stain], known_types=[])))
        )
    )
    assert "Anomaly type right, of flagged anomalies n/a" in text
    assert re.search(r"crack 2 50\.0 % .* n/a", text) and re.search(r"stain 1 100\.0 % .* n/a", text)
    assert "none flagged" not in re.search(r"crack 2 .* Each type is measured", text).group(0)
    reason = "the model knows no anomaly type (trained without labelled anomalies): it types every anomaly"
    assert f"type_accuracy ({reason}" in text  # in the summary's list of what is not measurable
    assert f'"n/a" under type right: {reason}' in text


def test_a_type_the_model_was_not_trained_on_reads_n_a_and_the_overall_figure_says_whose() -> None:
    # the model knows crack alone: stain (held out of its training) cannot be named, and 0.0 % said it
    # typed stains wrong
    stain = ImageRecord("test/stain/z.png", "anomalous", "stain", 0.9, "anomalous", "crack", True)
    text = html.unescape(
        re.sub(
            r"\s+",
            " ",
            re.sub(r"<[^>]+>", " ", render_report(_result([*RECORDS, stain], known_types=["crack"]))),
        )
    )
    assert re.search(r"stain 1 0\.0 % .* n/a", text)
    assert re.search(r"crack 2 50\.0 % .* 100\.0 %", text)
    assert "Anomaly type right, of flagged anomalies of the types it was trained on 100.0 %" in text
    held_out = "not a type the model was trained on (held out of its training): it cannot name it"
    assert f'"n/a" under type right (stain): {held_out}' in text


@pytest.mark.parametrize(
    ("scores", "misses_noted", "false_alarms_noted"),
    [
        ((0.3, 0.6), False, False),  # x missed, c a false alarm: the galleries are what they say
        ((0.55, 0.6), True, False),  # none missed: the misses gallery shows flagged images
        ((0.3, 0.45), False, True),
        ((0.55, 0.45), True, True),
    ],
)
def test_a_gallery_of_closest_calls_says_so(
    scores: tuple[float, float], misses_noted: bool, false_alarms_noted: bool
) -> None:
    """With no anomaly released, "Worst misses" showed flagged images without a word, where the false
    alarms' gallery said that none was flagged."""
    x_score, c_score = scores
    records = [*RECORDS]
    records[3] = records[3]._replace(score=x_score, predicted_label="anomalous" if x_score >= 0.5 else GOOD)
    records[2] = records[2]._replace(score=c_score, predicted_label="anomalous" if c_score >= 0.5 else GOOD)
    result = _result(records)
    result.worst_misses = [_gallery(records[3], True), _gallery(records[4], True)]
    result.worst_false_alarms = [_gallery(records[2], False)]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", render_report(result)))
    misses = "No anomalous image was released at the release threshold; these are the closest calls."
    false_alarms = "No clean image was flagged at the release threshold; these are the closest calls."
    assert (misses in text, false_alarms in text) == (misses_noted, false_alarms_noted)
    # the miss itself says whether it was released
    assert ("released — missed" in text) == (not misses_noted)


def test_colour_and_grayscale_pictures_are_compared_when_both_are_there() -> None:
    # colour: clean a (0.1) and c (0.6), anomalous x (0.3); grayscale: clean b (0.2), anomalous y (0.9)
    grey = ("test/good/b.png", "test/crack/y.png")
    mixed = [r._replace(image_kind="grayscale" if r.path in grey else "colour") for r in RECORDS[:5]]
    page = render_report(_result(mixed))
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert 'id="per-image-kind-table"' in page
    # colour: c held, x missed, a below x (released at 1 % missed), x ranked between a and c
    assert "colour 2 1 50.0 % 100.0 % up to 100.0 % 50.0 % 0.500" in text
    assert "grayscale 1 1 100.0 % 0.0 % up to 97.5 % 100.0 % 1.000" in text
    assert "One threshold serves both kinds" not in text  # a card that says nothing on it
    offset = _result(mixed)
    offset.grey_offsets = "grey views' one-class distances x1.250"
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", render_report(offset))))
    assert "on clean training pictures of each kind: grey views' one-class distances x1.250." in text
    one_kind = [r._replace(image_kind="colour") for r in RECORDS[:5]]
    assert 'id="per-image-kind-table"' not in render_report(_result(one_kind))


def test_self_contained_with_decodable_gallery_images(result: EvaluationResult, tmp_path: Path) -> None:
    path = write_report(result, tmp_path / "out" / "report.html")
    page = path.read_text(encoding="utf-8")
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 6  # photo + heatmap for 2 misses and 1 false alarm
    images = [cv2.imdecode(np.frombuffer(base64.b64decode(u), np.uint8), cv2.IMREAD_COLOR) for u in uris]
    assert all(im is not None and im.shape == (16, 16, 3) for im in images)
    # the first miss has a mask: its heatmap carries the cyan outline (BGR 255, 255, 0)
    outline = np.all(images[1] == (255, 255, 0), axis=2)
    assert int(outline.sum()) == 12  # the 4x4 square's border
    assert "released — missed" in page and "flagged — false alarm" in page


def test_fallback_and_no_anomalies_are_said_plainly() -> None:
    fallback = TH._replace(method="normal_quantile_fallback")
    page = render_report(_result([r for r in RECORDS if r.label == GOOD], fallback))
    assert "The release threshold was set from clean images only" in page
    assert "The miss rate cannot be measured: the test set has no anomalous images." in page
    assert "ROC needs good and anomalous images" in page


@pytest.mark.parametrize(
    ("method", "said", "not_said"),
    [
        ("normal_quantile_fallback", "set from clean images only", "capped just above the clean"),
        ("normal_bound_few_anomalies", "capped just above the clean", "set from clean images only"),
        ("miss_rate_on_validation", None, "The release threshold was"),
    ],
)
def test_how_the_threshold_was_set_is_said(method: str, said: str | None, not_said: str) -> None:
    page = render_report(_result(RECORDS, TH._replace(method=method)))
    if said:
        assert said in page
    assert not_said not in page


def _records(n_good: int, n_anomalous: int) -> list[ImageRecord]:
    """Clean images scoring 0.1-0.3, anomalous ones 0.6-0.9: nothing missed, nothing held wrongly."""
    good = [
        ImageRecord(f"g{i}.png", GOOD, GOOD, 0.1 + 0.2 * i / n_good, GOOD, None, False) for i in range(n_good)
    ]
    bad = [
        ImageRecord(
            f"a{i}.png", "anomalous", "crack", 0.6 + 0.3 * i / n_anomalous, "anomalous", "crack", False
        )
        for i in range(n_anomalous)
    ]
    return good + bad


@pytest.mark.parametrize(
    ("n_anomalous", "said", "not_said"),
    [
        # none missed of 60: consistent with 1 %, but the exact interval reaches 6.0 %
        (
            60,
            "No more than the target missed on this test set (0.0 % ≤ 1.0 %), but 60 anomalous images cannot "
            "show a miss rate that low: its 95 % interval reaches 6.0 %. Showing 1.0 % takes at least 368",
            "Meets the miss-rate target",
        ),
        # none missed of 400: shown, with the interval's upper end
        (
            400,
            "Meets the miss-rate target on this test set (0.0 % ≤ 1.0 %, 95 % interval up to 0.9 %)",
            "cannot show",
        ),
    ],
)
def test_whether_the_test_set_can_show_the_target_is_said(n_anomalous: int, said: str, not_said: str) -> None:
    page = render_report(_result(_records(50, n_anomalous)))
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert said in text
    assert not_said not in text
    assert "95 % interval 92.9–100.0 %" in text  # 50 of 50 clean released: 0.025 ** (1 / 50) = 0.929


@pytest.mark.parametrize(
    ("promise", "said", "not_said"),
    [
        (
            {"validation_anomalies": 6, "miss_rate_bound": 1 / 7, "anomalies_for_target": 99},
            "The release threshold was set on 6 anomalous validation images. For new anomalies like them it "
            "promises no more than 14.3 % released, not 1.0 % (99 would promise that)",
            "Meets",
        ),
        (
            {"validation_anomalies": 99, "miss_rate_bound": 1 / 100, "anomalies_for_target": 99},
            "The release threshold was set on 99 anomalous validation images: for new anomalies like them it "
            "promises no more than 1.0 % released.",
            "would promise that",
        ),
        (
            # a model trained before the cut's rule kept the promise: more would not help, retraining does
            {"validation_anomalies": 150, "miss_rate_bound": 2 / 151, "anomalies_for_target": 99},
            "promises no more than 1.3 % released, not 1.0 % (its cut allowed more misses than this "
            "version allows; trained again, the model would promise that)",
            "99 would promise",
        ),
        ({"validation_anomalies": 0, "miss_rate_bound": None, "anomalies_for_target": 99}, None, "promises"),
    ],
)
def test_what_the_threshold_promises_is_said(
    promise: dict[str, object], said: str | None, not_said: str
) -> None:
    result = _result(_records(50, 60))
    result.promise = promise
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", render_report(result)))
    if said is not None:
        assert said in text
    assert not_said not in text.split("No more than the target")[0]


def test_chart_helpers() -> None:
    labels = np.array([False, False, True, True])
    svg = roc_svg(np.array([0.1, 0.4, 0.35, 0.8]), labels)
    assert 'points="48.0,258.0 48.0,136.0 198.0,136.0 198.0,14.0 348.0,14.0"' in svg
    hist = histogram_svg(np.array([0.1, 0.1, 0.9, 0.9]), labels, release=0.5, hold=0.75, bins=4)
    assert hist.count("<rect ") == 1 + 2  # the frame + one full bar per class
    assert percent(None) == "n/a" and percent(0.9375) == "93.8 %"


def test_the_drawn_pr_curve_encloses_the_average_precision() -> None:
    from pipeline.metrics import image_aupr
    from pipeline.report import pr_svg

    scores, labels = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), np.array([1, 0, 1, 0, 0, 1], bool)
    points = re.findall(r'<polyline points="([^"]+)"', str(pr_svg(scores, labels)))[-1].split()
    px = np.array([[float(v) for v in point.split(",")] for point in points])
    # back from pixels to (recall, precision): the frame's origin is at (48, 258), its (1, 1) at (348, 14)
    xs, ys = (px[:, 0] - 48.0) / 300.0, (258.0 - px[:, 1]) / 244.0
    area = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2))
    assert area == pytest.approx(image_aupr(scores, labels).value, abs=0.01)  # 0.722, not 0.633


THRESHOLD_PAIRS = [
    (0.5, 0.75),
    (0.0097, 0.097),  # a vacuum-pack model's cuts
    (0.2, 0.95),
    (0.712, 0.849),  # a model trained in review: its hold label was cut off at the right edge
    (0.5, 0.87),
    (0.3, 0.31),  # close cuts: a row each
    (0.0004, 0.9999),  # cuts beyond 0.001 and 0.999 widen the axis
    (0.001, 0.001),
    (0.5, 0.99995),  # the axis widened to 1e-5: its decades' labels ran into each other
    (2e-6, 0.5),
    (0.5, 0.9999999716853225),  # float64 scores reach it: the axis stopped at 1 - 1e-6, on its line
]


@pytest.mark.parametrize(("release", "hold"), THRESHOLD_PAIRS)
def test_threshold_labels_stay_on_the_chart(release: float, hold: float) -> None:
    from pipeline.report import _NOTE_CHAR_WIDTH, ScoreAxis

    labels = np.array([False, True])
    svg = histogram_svg(np.array([0.01, 0.9]), labels, release=release, hold=hold, bins=4)
    found = re.findall(
        r'<text x="([\d.]+)" y="(\d+)" text-anchor="(start|end)" class="note" fill="[^"]+"[^>]*>'
        r"((?:release|hold) [^<]+)<",
        svg,
    )
    assert [text.split()[0] for *_, text in found] == ["release", "hold"]
    spans = []
    for x, y, anchor, text in found:
        width = len(text) * _NOTE_CHAR_WIDTH
        left = float(x) - width if anchor == "end" else float(x)
        assert left >= 48 and left + width <= 348, text  # inside the plot area
        spans.append((int(y), left, left + width))
    (y0, a0, b0), (y1, a1, b1) = spans
    assert y0 != y1 or b0 <= a1 or b1 <= a0  # on one row, apart
    # each line where its cut is, on the axis the bins use
    axis = ScoreAxis.around(release, hold)
    xs = [float(v) for v in re.findall(r'<line x1="([\d.]+)" y1="14"', svg)[-2:]]
    assert xs == pytest.approx([48 + 300 * float(axis.position(c)) for c in (release, hold)], abs=0.06)


@pytest.mark.parametrize(
    ("value", "cuts", "text"),
    [
        (0.00999, (0.0097, 0.097), "0.00999"),  # read "0.010", like the cut's "0.010"
        (0.0102, (0.0097, 0.097), "0.0102"),
        (0.0097, (0.0097, 0.097), "0.00970"),  # a score on the cut needs no more digits
        (0.4, (0.5, 0.75), "0.400"),
        (0.74996, (0.5, 0.75), "0.74996"),
        (None, (0.5,), "n/a"),
        (3.2e-7, (0.0097, 0.097), "3.20e-07"),
        # compared as the numbers written: "1.00e-04" is the cut's "0.000100", on the other side
        (0.00009999, (0.0001,), "9.999e-05"),
        (0.50001, (0.50049,), "0.50001"),  # "0.5000" and the cut's "0.500" are one number
        # past 12 decimals, the float's own shortest text: "0.500000000000" read as the cut
        (math.nextafter(0.5, 0.0), (0.5,), "0.49999999999999994"),
        (math.nextafter(1e-5, 0.0), (1e-5,), "9.999999999999999e-06"),
        (math.nan, (0.5,), "nan"),  # raised ValueError
        (0.4, (math.nan, 0.5), "0.400"),  # a cut that is no number is no side
    ],
)
def test_a_score_reads_apart_from_the_cuts(value: float | None, cuts: tuple[float, ...], text: str) -> None:
    from pipeline.report import score_text

    assert score_text(value, cuts) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.712, "0.712"),
        (0.0097, "0.00970"),
        (0.05, "0.0500"),
        (0.000123, "0.000123"),
        (0.0, "0.000"),
        (1.0, "1.000"),
        (0.95, "0.9500"),
        (0.9999999716853225, "0.9999999717"),  # a hold near 1 read "1.000", as if nothing were held
    ],
)
def test_a_cut_reads_to_three_significant_digits(value: float, text: str) -> None:
    from pipeline.report import cut_text

    assert cut_text(value) == text


def test_the_histogram_resolves_a_vacuum_pack_models_cuts() -> None:
    # clean packs at 0.001-0.008, anomalies at 0.005-0.9, release 0.0097: on a linear axis every clean
    # image, 4 of 12 anomalies and the release line shared the first of 40 bins
    good = np.linspace(0.001, 0.008, 30)
    bad = np.r_[np.linspace(0.005, 0.02, 4), np.linspace(0.1, 0.9, 8)]
    scores, labels = np.r_[good, bad], np.r_[np.zeros(30, bool), np.ones(12, bool)]
    svg = str(histogram_svg(scores, labels, release=0.0097, hold=0.097))
    greens = re.findall(r'<rect x="([\d.]+)"[^>]*fill="#2b8a3e"', svg)
    assert len(greens) >= 4  # the clean scores spread over several bins


# -------------------------------------------------------------------------------------------- CLI


def test_cli_missing_model_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        app,
        [
            "evaluate",
            "--model",
            str(tmp_path / "nope"),
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert code == 2
    assert capsys.readouterr().err == (
        f"Error: model directory {str(tmp_path / 'nope')!r} does not exist or is not a folder; "
        "pass the folder written by `clearsight train --out`\n"
    )


def _install_fake_model(
    monkeypatch: pytest.MonkeyPatch, release: float | None = None, *, signals: bool = False
) -> None:
    """``models.artifact`` replaced by a module whose load_model returns the fake predictor."""
    predictor = FakePredictor(signals=signals)
    if release is not None:
        predictor.thresholds = predictor.thresholds._replace(release=release)  # type: ignore[misc]
    fake = types.ModuleType("models.artifact")
    fake.load_model = lambda path, runtime: predictor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "models.artifact", fake)


def test_cli_missing_data_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake_model(monkeypatch)
    (tmp_path / "model").mkdir()
    code = run(
        app,
        [
            "evaluate",
            "--model",
            str(tmp_path / "model"),
            "--data",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert code == 2
    assert capsys.readouterr().err.startswith(f"Error: data root {str(tmp_path / 'none')!r} does not exist")


@pytest.mark.parametrize(
    ("folder", "out_is_file", "said"),
    [
        (
            "vacuum_pack",
            False,
            "is for bulk_ore but --data '{root}' holds vacuum_pack: its figures would say",
        ),
        ("ore", True, "--out '{out}' is a file; give a folder for the report"),
    ],
    ids=["another-cargo-type", "out-is-a-file"],
)
def test_cli_refuses_before_scoring(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    folder: str,
    out_is_file: bool,
    said: str,
) -> None:
    _install_fake_model(monkeypatch)
    ds = write_dataset(tmp_path / folder)
    (tmp_path / "model").mkdir()
    out = tmp_path / "report"
    if out_is_file:
        out.write_text("kept")
    code = run(
        app, ["evaluate", "--model", str(tmp_path / "model"), "--data", str(ds.root), "--out", str(out)]
    )
    assert code == 2
    assert said.format(root=ds.root, out=out) in capsys.readouterr().err
    assert out.is_file() == out_is_file


def test_cli_fails_a_model_that_scores_nan_after_writing_what_it_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = FakePredictor(nan_at=204 / 255)  # the c1 image scores NaN
    fake = types.ModuleType("models.artifact")
    fake.load_model = lambda path, runtime: predictor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "models.artifact", fake)
    code, out = _run_evaluate(tmp_path)
    assert code == 2
    captured = capsys.readouterr()
    assert "1 given a non-finite score or map by the model" in captured.out
    assert "Error: model fake-0001 gave 1 of 8 test images a NaN or infinite score or map" in captured.err
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "1 given a non-finite score or map by the model" in page and "Images left out (1)" in page


def test_cli_prints_its_progress_as_lines_into_a_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # stderr captured is no terminal, as a log file is: rich's bar drew nothing until it stopped (and,
    # transient, not even then)
    _install_fake_model(monkeypatch)
    code, _ = _run_evaluate(tmp_path)
    assert code == 0
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("evaluating ")]
    assert (
        said
        and said[0].startswith("evaluating fake-0001: ")
        and said[-1].startswith("evaluating fake-0001: 8/8")
    )


def _without_progress(err: str) -> str:
    """What the command said on stderr, less its progress lines (printed there as text, stderr being no
    terminal under capsys)."""
    return "\n".join(line for line in err.strip().splitlines() if not line.startswith("evaluating "))


def _run_evaluate(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    """``clearsight evaluate`` of the installed fake model on the fake dataset: (exit code, --out)."""
    if not (tmp_path / "ore").exists():  # a second run evaluates the same files
        write_dataset(tmp_path / "ore")
        (tmp_path / "model").mkdir()
    out = tmp_path / "report"
    args = ["--model", str(tmp_path / "model"), "--data", str(tmp_path / "ore"), "--out", str(out), *extra]
    return run(app, ["evaluate", *args]), out


def test_cli_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake_model(monkeypatch, signals=True)
    code, out = _run_evaluate(tmp_path, "--batch-size", "2")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "report.html", "scores.csv"]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["counts"] == {
        "images": 8,
        "good": 4,
        "anomalous": 4,
        "failed": 0,
        "non_finite": 0,
        "with_mask": 3,
        "empty_masks": 0,
    }
    assert metrics["release_rate"] == 0.75 and metrics["miss_rate"] == 0.25
    assert (
        "75.0 % of clean cargo released (19.4–99.4 %), 25.0 % of anomalous cargo released (0.6–80.6 %; "
        "target <= 1.0 %)" in captured.out
    )
    assert "(in brackets: 95 % confidence intervals)" in captured.out
    # the fake set's two colour pictures tie (test_evaluate's per_image_kind); its grayscale ones separate
    assert "colour pictures (1 clean, 1 anomalous): image AUROC 0.500" in captured.out
    assert "grayscale pictures (3 clean, 3 anomalous): image AUROC 1.000 (1.000–1.000)" in captured.out
    assert metrics["intervals"]["miss_rate"] == pytest.approx([0.006309, 0.805880], abs=1e-5)
    # the fake's one-class signal ranks every pair the wrong way round, its patch head as the score
    assert "each signal alone: one-class 0.094 (" in captured.out and ", patch head 0.906 (" in captured.out
    # another run's files in --out (a batch's scores.csv) were written over without a word
    (out / "metrics.json").unlink()
    (out / "scores.csv").write_text("path,sha256,shipment_id\n/archive/a.png,ab,S1\n")
    assert _run_evaluate(tmp_path)[0] == 2
    assert capsys.readouterr().err.startswith(
        f"Error: --out {str(out)!r} already holds scores.csv, report.html; pass --overwrite to replace them"
    )
    assert (out / "scores.csv").read_text().startswith("path,sha256,shipment_id") and not (
        out / "metrics.json"
    ).exists()
    assert _run_evaluate(tmp_path, "--overwrite")[0] == 0
    assert (out / "scores.csv").read_text().startswith("path,label,")


@pytest.mark.parametrize(
    ("release", "said"),
    [
        (0.5, None),  # one of the four anomalies missed: over the target, nothing more to say
        # none of four missed (the lowest scores 0.4): 1 - 0.025 ** (1 / 4) = 60.2 %
        (0.35, "4 anomalous images cannot show a miss rate of at most 1.0 %: its interval reaches 60.2 % "
         "(368 with none missed would)"),
    ],
)  # fmt: skip
def test_cli_says_when_the_test_set_cannot_show_the_target(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    release: float,
    said: str | None,
) -> None:
    _install_fake_model(monkeypatch, release)
    assert _run_evaluate(tmp_path)[0] == 0
    out = capsys.readouterr().out
    if said is None:
        assert "cannot show" not in out
    else:
        assert said in out


@pytest.mark.parametrize(
    ("image", "content", "counted"),
    [
        ("good/g1", b"not a picture", "(3 clean, 4 anomalous)"),
        # an anomalous image with a mask: read_mvtec stopped the whole run on it ("unreadable image or
        # mask"), where a good image was left out and the rest evaluated
        ("crack/c1", b"not a picture", "(4 clean, 3 anomalous)"),
        ("crack/c1", b"", "(4 clean, 3 anomalous)"),
    ],
    ids=["good", "anomalous-with-mask", "anomalous-with-mask-empty"],
)
def test_cli_counts_the_unreadable_images_apart_from_those_measured(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    image: str,
    content: bytes,
    counted: str,
) -> None:
    """It read "on 7 test images (3 clean, 4 anomalous, 1 unreadable)": the unreadable one is not of the 7."""
    _install_fake_model(monkeypatch)
    write_dataset(tmp_path / "ore")
    (tmp_path / "model").mkdir()
    broken = tmp_path / "ore" / "test" / f"{image}.png"
    broken.write_bytes(content)
    code, out = _run_evaluate(tmp_path)
    captured = capsys.readouterr()
    said = " ".join(captured.out.split())
    assert code == 0, captured.err
    assert f"on 7 test images {counted}; left out: 1 unreadable" in said
    rows = (out / "scores.csv").read_text(encoding="utf-8")
    assert f"test/{image}.png" in rows and str(broken) in rows  # its row names why


def test_cli_writes_no_report_when_no_test_image_could_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It wrote an all-n/a report and exited 0: read as a result, and the run as a pass."""
    _install_fake_model(monkeypatch)
    write_dataset(tmp_path / "ore")
    (tmp_path / "model").mkdir()
    broken = sorted((tmp_path / "ore" / "test").rglob("*.png"))
    for path in broken:
        path.write_bytes(b"")
    code, out = _run_evaluate(tmp_path)
    assert code == 2
    first = (tmp_path / "ore" / "test" / "good" / "g1.png").resolve()  # good images come first
    assert _without_progress(capsys.readouterr().err) == (
        f"Error: no test image could be read (8 unreadable, e.g. {first}: empty file (0 bytes))"
    )
    assert not any((out / name).exists() for name in ("metrics.json", "scores.csv", "report.html"))


@pytest.mark.parametrize(
    ("copied", "train", "warned", "noted"),
    [
        ([], True, None, None),
        (
            ["good/g1", "hole/h1"],
            True,
            # without g1 (0.2) and h1 (0.902): AUROC 7.5 / 9, one of three clean below the lowest anomaly
            "Warning: 2 test image(s) are exact copies of training images (test/good/g1.png = "
            "train/good/g1_copy.png, for one): the test figures on them are optimistic; without them "
            "image AUROC 0.833, TNR at 1 % FNR 33.3 % (on 3 clean, 3 anomalous images).",
            None,
        ),
        ([], False, None, "not compared with training images for exact copies: --data has no train/ folder"),
    ],
    ids=["no-copies", "two-copies", "no-train-folder"],
)
def test_cli_and_report_say_when_test_images_are_copies_of_training_images(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    copied: list[str],
    train: bool,
    warned: str | None,
    noted: str | None,
) -> None:
    """train warned of them and the card counted them; evaluate's report, the one shared, was silent."""
    _install_fake_model(monkeypatch)
    root = write_dataset(tmp_path / "ore").root
    (tmp_path / "model").mkdir()
    if not train:
        shutil.rmtree(root / "train")
    for name in copied:
        kind, stem = name.split("/")
        (root / "train" / kind).mkdir(exist_ok=True)
        shutil.copyfile(root / "test" / kind / f"{stem}.png", root / "train" / kind / f"{stem}_copy.png")
    code, out = _run_evaluate(tmp_path)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    err, said = " ".join(captured.err.split()), " ".join(captured.out.split())
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    copies = metrics["duplicates"]
    page = (out / "report.html").read_text(encoding="utf-8")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert copies["checked"] is train and copies["training_and_test"] == (len(copied) if train else None)
    if warned is None:
        assert "exact copies" not in err and copies.get("without_copies") is None
        assert 'id="training-copies"' not in page and "are exact copies" not in text
    else:
        assert warned in err and 'id="training-copies"' in page
        assert copies["examples"] == [
            ["train/good/g1_copy.png", "test/good/g1.png"],
            ["train/hole/h1_copy.png", "test/hole/h1.png"],
        ]
        assert copies["without_copies"]["image_auroc"] == pytest.approx(7.5 / 9)
        assert (
            "2 test images are exact copies of training images ( test/good/g1.png = train/good/g1_copy.png , "
            "for one): a model trained on this train/ has seen them, so the figures in this report are "
            "optimistic. Without them (3 clean, 3 anomalous images): image AUROC 0.833, TNR at 1 % FNR "
            "33.3 %, 66.7 % of clean cargo released, 33.3 % of anomalous cargo released." in text
        )
    if noted is None:
        assert "not compared with training images" not in said + text
    else:
        assert noted in said
        assert "not compared with training images for exact copies (no train/ folder)" in text


def test_cli_prints_a_small_release_cut_as_the_report_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake_model(monkeypatch, 0.0097)  # a vacuum-pack model's cut read "0.010" on the console
    assert _run_evaluate(tmp_path)[0] == 0
    assert "at release threshold 0.00970:" in capsys.readouterr().out


def test_cli_help() -> None:
    from typer.testing import CliRunner

    out = CliRunner().invoke(app, ["evaluate", "--help"]).output
    assert "--model" in out and "--data" in out and "--out" in out and "--batch-size" in out


def test_no_remote_review_band_when_hold_equals_release() -> None:
    page = render_report(_result(RECORDS, TH._replace(hold=0.5)))
    assert "none: hold = release" in page
    assert "release 0.500" in page and "hold 0.500" in page


def test_report_says_what_the_score_is_made_of(result: EvaluationResult) -> None:
    assert "What the score is made of" not in render_report(result)
    result.signals = fused_signals({"validation": CARD_VALIDATION})
    page = render_report(result)
    assert "What the score is made of" in page
    assert "fused 0.834 &gt; without it 0.721" in page  # the gate's own words, escaped
    assert page.count("<td>yes</td>") == 2 and page.count("<td>no</td>") == 1
    assert "the largest of the calibrated probabilities" in page and "log-odds" not in page
    result.fusion_rule = "sum"  # training's default
    page = render_report(result)
    assert "adds up the calibrated log-odds" in page and "largest of the calibrated" not in page
    assert "read at one spot" not in page
    result.co_located = True
    assert "read at one spot" in render_report(result)
    assert "Patch features" not in render_report(result)  # a card from before the choice


@pytest.mark.parametrize(
    ("deep_features", "said"),
    [
        ("sharp (auto for vacuum_pack)", "deeper map read cell by cell, so small and thin defects stand out"),
        ("pooled (auto for bulk_ore)", "deeper map averaged over 3x3 neighbours, so large, diffuse"),
    ],
)
def test_report_says_how_the_patch_features_read_the_deeper_map(
    result: EvaluationResult, deep_features: str, said: str
) -> None:
    result.signals = fused_signals({"validation": CARD_VALIDATION})
    result.deep_features = deep_features
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", render_report(result))))
    assert f"Patch features, {deep_features}: the backbone's {said}" in text


def test_report_shows_each_signal_alone_and_in_the_gallery(result: EvaluationResult) -> None:
    result.signals = fused_signals({"validation": CARD_VALIDATION})
    result.fusion_rule = "sum"
    assert "test AUROC alone" not in render_report(result)  # a predictor that reports no signals
    result.metrics["per_signal"] = {
        "one_class": {"image_auroc": 0.781, "image_auroc_interval": [0.697, 0.861], "images": 120},
        "patch_head": {"image_auroc": 0.872, "image_auroc_interval": [0.802, 0.930], "images": 120},
    }
    miss = result.worst_misses[0]
    result.worst_misses[0] = miss._replace(
        record=miss.record._replace(signal_log_odds={"one_class": -1.83, "patch_head": -1.234})
    )
    page = render_report(result)
    assert "test AUROC alone" in page
    assert "<td>0.781 (0.697–0.861)</td>" in page and "<td>0.872 (0.802–0.930)</td>" in page
    assert '<td class="na">not in the score</td>' in page  # the type head, switched off
    assert "log-odds: one-class −1.83 + patch head −1.23 = −3.06" in page
    assert page.count('class="evidence"') == 1  # the other gallery images report no signals


RESOLUTION = {
    "input_size": 256,
    "longest_side_px": {"min": 512, "median": 512, "max": 512},
    "downscale": 2.0,
    "warning": "the training images (512 px, median longer side) are shrunk 2.0x",
}


@pytest.mark.parametrize(
    ("resolution", "said", "warned"),
    [
        (RESOLUTION, "model input 256 px, trained on 512 px images (downscaled 2x)", True),
        (
            {
                **RESOLUTION,
                "longest_side_px": {"min": 250, "median": 250, "max": 250},
                "downscale": 0.977,
                "warning": None,
            },
            "model input 256 px, trained on 250 px images (enlarged 1.02x)",
            False,
        ),
        (None, None, False),  # a card from before training recorded it
    ],
)
def test_report_says_what_resolution_the_model_saw(
    resolution: dict[str, object] | None, said: str | None, warned: bool
) -> None:
    res = _result(RECORDS)
    res.resolution = resolution
    page = " ".join(render_report(res).split())
    if said:
        assert said in page
    else:
        assert "model input" not in page
    assert ('id="resolution-warning"' in page) is warned
    if warned:
        assert "Training warned: the training images (512 px, median longer side) are shrunk 2.0x." in page


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        (
            {
                "preprocessing": {
                    "input_size": 256,
                    "source_resolution": {k: v for k, v in RESOLUTION.items() if k != "input_size"},
                }
            },
            RESOLUTION,
        ),
        ({"preprocessing": {"input_size": 256}}, None),
        ({}, None),
    ],
)
def test_card_resolution(card: dict[str, object], expected: dict[str, object] | None) -> None:
    assert card_resolution(card) == expected


@pytest.mark.browser
@pytest.mark.slow
def test_threshold_labels_fit_the_chart_in_a_browser(
    result: EvaluationResult, tmp_path: Path, chromium: Browser
) -> None:
    # measured, not estimated: the text as the report's own style draws it
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    for i, (release, hold) in enumerate(THRESHOLD_PAIRS):
        result.thresholds = Thresholds(release, hold, 0.01, "miss_rate_on_validation")
        page.goto(write_report(result, tmp_path / f"report{i}.html").as_uri())
        boxes = page.evaluate(
            """() => [...document.querySelectorAll('svg[aria-label="Score histogram"] text.note')]
                .map(t => { const b = t.getBBox(); return [t.textContent, b.x, b.y, b.width, b.height]; })"""
        )
        assert len(boxes) == 2
        for text, x, _, w, _ in boxes:
            assert x >= 48 and x + w <= 348, (release, hold, text, x, w)
        (_, x0, y0, w0, h0), (_, x1, y1, w1, h1) = boxes
        apart = x0 + w0 <= x1 or x1 + w1 <= x0 or y0 + h0 <= y1 or y1 + h1 <= y0
        assert apart, (release, hold, boxes)
        ticks = page.evaluate(
            """() => [...document.querySelectorAll('svg[aria-label="Score histogram"] text.tick')]
                .filter(t => t.getAttribute('y') === '274')
                .map(t => { const b = t.getBBox(); return [t.textContent, b.x, b.width]; })"""
        )
        assert len(ticks) >= 5 and ticks[-1][1] + ticks[-1][2] <= 360, (release, hold, ticks)
        for (a, xa, wa), (b, xb, _) in zip(ticks, ticks[1:], strict=False):
            assert xa + wa <= xb, (release, hold, a, b)


@pytest.mark.browser
@pytest.mark.slow
def test_every_table_fits_the_page_in_a_browser(
    result: EvaluationResult, tmp_path: Path, chromium: Browser
) -> None:
    # A long sentence in a table (a gate's or a calibration's reason) must wrap, not push the
    # table past the page's edge, where its end is cut off from the reader.
    from pipeline.evaluate import fused_signals

    fallback = (
        "fallback: validation did not rank anomalies above normals, so no slope was fitted; the "
        "standardised one-class score goes through a fixed logistic"
    )
    result.signals = fused_signals({"validation": {**CARD_VALIDATION, "calibration": fallback}})
    path = write_report(result, tmp_path / "report.html")
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    page.goto(path.as_uri())
    overflowing = page.evaluate(
        """() => {
            const main = document.querySelector('main').getBoundingClientRect();
            return [...document.querySelectorAll('table')]
                .filter(t => t.getBoundingClientRect().right > main.right + 1)
                .map(t => t.id || t.parentElement.id);
        }"""
    )
    assert "fixed logistic" in page.locator("#signals-table").inner_text()
    assert overflowing == []


@pytest.mark.parametrize(
    ("out", "said"),
    [
        ("s_file/report", "Error: --out 's_file/report': cannot make its folder: 's_file' is a file"),
        (
            "/proc/clearsight-report",
            "Error: --out '/proc/clearsight-report': no file can be made in '/proc' (",
        ),
    ],
    ids=["a-file-in-the-way", "takes-no-file"],
)
def test_cli_refuses_a_report_folder_it_cannot_make_before_loading_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, out: str, said: str
) -> None:
    """Found when the report was written, after the whole evaluation: 'unexpected NotADirectoryError'."""

    def too_early(path: Path, runtime: str) -> None:
        raise AssertionError("the model was loaded before --out was checked")

    fake = types.ModuleType("models.artifact")
    fake.load_model = too_early  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "models.artifact", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "s_file").write_text("a file where a folder must go\n")
    assert run(app, ["evaluate", "--model", "model", "--data", "ore", "--out", out]) == 2
    assert capsys.readouterr().err.startswith(said)


def test_cli_names_out_when_the_report_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder that changed after it was checked (a full disk, say) is named, not 'unexpected'."""
    import pipeline.evaluate

    def full_disk(result: object, out_dir: Path, **kwargs: object) -> tuple[Path, Path]:
        raise OSError(28, "No space left on device")

    _install_fake_model(monkeypatch)
    monkeypatch.setattr(pipeline.evaluate, "write_outputs", full_disk)
    code, out = _run_evaluate(tmp_path)
    assert code == 2
    said = f"Error: --out {str(out)!r}: cannot write there (No space left on device)"
    assert _without_progress(capsys.readouterr().err) == said


def test_cli_a_report_that_cannot_be_written_leaves_the_earlier_report_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --overwrite, report.html failing (here a folder by that name) left the new metrics.json
    and scores.csv beside the earlier report.html, a page about another model."""
    _install_fake_model(monkeypatch)
    out = tmp_path / "report"
    out.mkdir()
    for name in ("metrics.json", "scores.csv"):
        (out / name).write_text(f"earlier {name}\n", encoding="utf-8")
    (out / "report.html").mkdir()
    code, _ = _run_evaluate(tmp_path, "--overwrite")
    assert code == 2
    assert "Error: --out" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "report.html", "scores.csv"]
    for name in ("metrics.json", "scores.csv"):
        assert (out / name).read_text(encoding="utf-8") == f"earlier {name}\n"


INSIDE = "lies inside --data 'ore': the report's files would become part of the dataset"


@pytest.mark.parametrize(
    ("out", "said"),
    [
        ("ore/test/good", f"Error: --out 'ore/test/good' {INSIDE}"),
        ("ore", f"Error: --out 'ore' {INSIDE}"),
        ("ore/reports/new", f"Error: --out 'ore/reports/new' {INSIDE}"),
        ("linked", f"Error: --out 'linked' {INSIDE}"),  # a link into the dataset
        # the dataset inside the report folder takes nothing of the report's files: accepted
        (".", None),
    ],
    ids=["test-split", "the-root", "new-folder", "linked", "around-the-dataset"],
)
def test_cli_refuses_a_report_folder_inside_the_dataset(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    out: str,
    said: str | None,
) -> None:
    """--out ore/test/good was accepted; every later train or evaluate over the dataset then failed
    ("metrics.json, report.html, scores.csv are not an image")."""
    _install_fake_model(monkeypatch)
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "ore")
    (tmp_path / "model").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "ore" / "test", target_is_directory=True)
    before = sorted((tmp_path / "ore").rglob("*"))
    code = run(app, ["evaluate", "--model", "model", "--data", "ore", "--out", out])
    if said is None:
        assert code == 0, capsys.readouterr().err
        assert (tmp_path / "report.html").is_file()
    else:
        assert code == 2
        assert capsys.readouterr().err.startswith(said)
    assert sorted((tmp_path / "ore").rglob("*")) == before


def test_cli_evaluates_a_held_out_batch_without_training_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test-only folder was refused for its missing train/good, though evaluate reads test/ alone:
    a new batch needed a dummy training image to be evaluated."""
    _install_fake_model(monkeypatch)
    shutil.rmtree(write_dataset(tmp_path / "ore").root / "train")
    (tmp_path / "model").mkdir()
    out = tmp_path / "report"
    code = run(
        app,
        ["evaluate", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "ore"), "--out", str(out)],
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["counts"]["images"] == 8 and metrics["counts"]["with_mask"] == 3
