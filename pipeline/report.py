"""``report.html``: an evaluation a customs risk manager can read, in one self-contained file.

The page leads with the operating point in plain words (how much clean cargo the model would release,
how much anomalous cargo would slip through), then shows the evidence: ROC and precision-recall
curves, score histograms with the thresholds drawn, the confusion table, a table per anomaly type,
and a gallery of the worst misses and false alarms with their heatmaps and ground-truth outlines.

Everything is inline — CSS, charts as SVG drawn here, images as base64 PNG — so the file can be
mailed or archived and opened offline. No JavaScript.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from datasets.whole_files import written_whole
from models.inference import GOOD
from models.threshold import METHOD_FALLBACK, METHOD_NORMAL_BOUND
from pipeline import metrics as m
from pipeline.evaluate import EvaluationResult, GalleryItem
from pipeline.heatmap import legend_svg, overlay
from pipeline.intervals import trials_to_show, unshown_upper
from pipeline.resolution import describe_resize
from pipeline.signal_evidence import describe_log_odds

__all__ = [
    "histogram_svg",
    "number",
    "number_span",
    "percent",
    "percent_span",
    "pr_svg",
    "render_report",
    "roc_svg",
    "write_report",
]

GOOD_COLOUR = "#2b8a3e"
ANOMALOUS_COLOUR = "#c92a2a"
RELEASE_COLOUR = "#1971c2"
HOLD_COLOUR = "#e8590c"
OUTLINE_RGB = (0, 255, 255)  # cyan: visible over both the photo and the JET heatmap


# ------------------------------------------------------------------------------------ formatting


def percent(value: float | None, digits: int = 1) -> str:
    """``0.9375`` -> ``"93.8 %"``; ``None`` -> ``"n/a"``."""
    return "n/a" if value is None else f"{100.0 * value:.{digits}f} %"


def number(value: float | None, digits: int = 3) -> str:
    """``0.93751`` -> ``"0.938"``; ``None`` -> ``"n/a"``."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def cut_text(value: float | None) -> str:
    """A threshold with three significant digits, and at least three decimals: ``0.712`` ->
    ``"0.712"``, ``0.0097`` -> ``"0.00970"``. Vacuum-pack models cut near 0.01, where three decimals
    printed 0.0097 as ``"0.010"``."""
    return "n/a" if value is None else f"{value:.{_cut_digits(value)}f}"


def _cut_digits(value: float) -> int:
    # three significant digits of the nearer of the value and its distance to 1: a hold of
    # 0.99999997 (float64 scores reach it) read "1.000", as if nothing could be held
    tail = min(value, 1.0 - value)
    return 3 if tail <= 0.0 or tail >= 0.1 else 2 - math.floor(math.log10(tail))


def score_text(value: float | None, cuts: Sequence[float] = ()) -> str:
    """A score with three significant digits (at least three decimals, as :func:`cut_text`), and
    more where it takes them to tell it from each of ``cuts`` it is not equal to: 0.00999 beside a
    release cut of 0.0097 reads ``"0.00999"``, not ``"0.010"`` like a score just above the cut.
    Scores under 1e-4 read in scientific notation (``"3.20e-07"``) where every cut is 1e-4 or more.

    The score as written is compared, as a number, with each cut as written (its own text,
    :func:`cut_text`, and at the score's digits): 0.00009999 read ``"1.00e-04"`` beside a cut written
    ``"0.000100"``, the same number on the other side. Past 12 digits the score reads as its
    ``repr`` (the shortest text of that float alone): 0.49999999999999994 beside a cut of 0.5 read
    ``"0.500000000000"``. NaN reads ``"nan"``; a cut that is not finite is no side to tell apart."""
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "nan"
    finite = [cut for cut in cuts if math.isfinite(cut)]
    if 0.0 < value < 1e-4 and all(cut >= 1e-4 for cut in finite):
        form, digits = "e", 2
    else:
        form, digits = "f", _cut_digits(value)
    written_cuts = [(cut, float(cut_text(cut))) for cut in finite if cut != value]

    def reads_as_a_cut(digits: int) -> bool:
        shown = float(f"{value:.{digits}{form}}")
        return any(shown in (float(f"{cut:.{digits}{form}}"), own) for cut, own in written_cuts)

    while reads_as_a_cut(digits):
        if digits >= 12:
            return repr(value)
        digits += 1
    return f"{value:.{digits}{form}}"


def percent_span(interval: Sequence[float] | None, digits: int = 1) -> str:
    """A 95 % interval ``[0.614, 0.836]`` -> ``"61.4–83.6 %"``; ``None`` -> ``"n/a"``."""
    return "n/a" if interval is None else number_span([100.0 * v for v in interval], digits) + " %"


def number_span(interval: Sequence[float] | None, digits: int = 3) -> str:
    """A 95 % interval ``[0.9123, 0.9871]`` -> ``"0.912–0.987"``; ``None`` -> ``"n/a"``."""
    if interval is None:
        return "n/a"
    low, high = interval
    return f"{low:.{digits}f}–{high:.{digits}f}"


# ---------------------------------------------------------------------------------------- charts
# Charts share one frame: a 360 x 300 viewBox, plot area inset for axis labels, data in [0, 1] on x.

_W, _H = 360, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 14, 42


def _sx(x: float) -> float:
    return _LEFT + x * (_W - _LEFT - _RIGHT)


def _sy(y: float, y_max: float = 1.0) -> float:
    return _H - _BOTTOM - (y / y_max) * (_H - _TOP - _BOTTOM)


def _frame(
    x_label: str,
    y_label: str,
    y_max: float = 1.0,
    y_ticks: Sequence[float] | None = None,
    x_ticks: Sequence[tuple[float, str]] | None = None,
) -> list[str]:
    """The chart's frame; ``x_ticks``: (position in [0, 1] of the plot's width, label) pairs."""
    parts = [
        f'<rect x="{_LEFT}" y="{_TOP}" width="{_W - _LEFT - _RIGHT}" height="{_H - _TOP - _BOTTOM}" '
        'fill="#fff" stroke="#adb5bd"/>'
    ]
    linear = [(t, f"{t:g}") for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    for t, label in x_ticks if x_ticks is not None else linear:
        x = _sx(t)
        parts.append(
            f'<line x1="{x:.1f}" y1="{_H - _BOTTOM}" x2="{x:.1f}" y2="{_H - _BOTTOM + 4}" stroke="#495057"/>'
        )
        anchor, x_text = ("end", x + 6) if _anchored_at_end(t, label) else ("middle", x)
        parts.append(
            f'<text x="{x_text:.1f}" y="{_H - _BOTTOM + 16}" text-anchor="{anchor}" class="tick">'
            f"{html.escape(label)}</text>"
        )
    for t in y_ticks if y_ticks is not None else (0.0, 0.25, 0.5, 0.75, 1.0):
        y = _sy(t, y_max)
        parts.append(
            f'<line x1="{_LEFT - 4}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}" stroke="#f1f3f5"/>'
        )
        parts.append(f'<text x="{_LEFT - 7}" y="{y + 4:.1f}" text-anchor="end" class="tick">{t:g}</text>')
    parts.append(
        f'<text x="{(_LEFT + _W - _RIGHT) / 2:.0f}" y="{_H - 6}" text-anchor="middle" class="axis">'
        f"{html.escape(x_label)}</text>"
    )
    parts.append(
        f'<text transform="translate(13 {(_TOP + _H - _BOTTOM) / 2:.0f}) rotate(-90)" text-anchor="middle" '
        f'class="axis">{html.escape(y_label)}</text>'
    )
    return parts


def _svg(parts: list[str], title: str) -> Markup:
    body = "".join(parts)
    return Markup(
        f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="{html.escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _polyline(xs: np.ndarray, ys: np.ndarray, colour: str, width: float = 2.0) -> str:
    points = " ".join(f"{_sx(float(x)):.1f},{_sy(float(y)):.1f}" for x, y in zip(xs, ys, strict=True))
    return f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{width}"/>'


def _empty_chart(message: str, title: str) -> Markup:
    return _svg(
        [
            f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#f8f9fa"/>',
            f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle" class="axis">'
            f"{html.escape(message)}</text>",
        ],
        title,
    )


def roc_svg(scores: np.ndarray, labels: np.ndarray, *, fnr: float = 0.01) -> Markup:
    """ROC curve as inline SVG, with the chance diagonal and the 1 %-miss operating line."""
    curve = m.roc_curve(scores, labels)
    if curve is None:
        return _empty_chart("ROC needs good and anomalous images", "ROC curve")
    parts = _frame("false alarm rate (good flagged)", "detection rate (anomalous flagged)")
    parts.append(
        f'<line x1="{_sx(0)}" y1="{_sy(0)}" x2="{_sx(1)}" y2="{_sy(1)}" stroke="#ced4da" '
        'stroke-dasharray="4 4"/>'
    )
    y = _sy(1.0 - fnr)
    parts.append(
        f'<line x1="{_sx(0)}" y1="{y:.1f}" x2="{_sx(1)}" y2="{y:.1f}" stroke="{HOLD_COLOUR}" '
        'stroke-dasharray="2 3"/>'
        f'<text x="{_sx(1) - 4:.1f}" y="{y + 14:.1f}" text-anchor="end" class="note">'
        f"{100 * (1 - fnr):g} % detected</text>"
    )
    parts.append(_polyline(curve.fpr, curve.tpr, ANOMALOUS_COLOUR))
    return _svg(parts, "ROC curve")


def pr_svg(scores: np.ndarray, labels: np.ndarray) -> Markup:
    """Precision-recall curve as inline SVG, with the base rate (a random scorer) dashed."""
    curve = m.pr_curve(scores, labels)
    if curve is None:
        return _empty_chart("PR curve needs good and anomalous images", "Precision-recall curve")
    parts = _frame("recall (anomalous flagged)", "precision (flagged that are anomalous)")
    base = float(labels.mean())
    parts.append(
        f'<line x1="{_sx(0)}" y1="{_sy(base):.1f}" x2="{_sx(1)}" y2="{_sy(base):.1f}" stroke="#ced4da" '
        'stroke-dasharray="4 4"/>'
    )
    # average precision sums (recall step) x the precision reached at its end: draw each step at that
    # height (up or down at the old recall, then across), so the area under the line is the AP printed
    xs, ys = [float(curve.recall[0])], [float(curve.precision[0])]
    for r, p in zip(curve.recall[1:], curve.precision[1:], strict=True):
        xs += [xs[-1], float(r)]
        ys += [float(p), float(p)]
    parts.append(_polyline(np.array(xs), np.array(ys), ANOMALOUS_COLOUR))
    return _svg(parts, "Precision-recall curve")


_NOTE_CHAR_WIDTH = 6.4
"""Width of one character of a chart note (class ``note``), in viewBox units, rounded up: enough to
tell whether a threshold's label fits beside its line."""


class ScoreAxis(NamedTuple):
    """The histogram's x axis: a score's log-odds, from ``low`` to ``high`` (log-odds too).

    Scores are calibrated probabilities, and a model's cuts may sit anywhere from 0.001 to 0.999: a
    vacuum-pack model cuts near 0.01, where 40 bins even in score put every clean image, a third of
    the anomalies and the release line in the first bin. In log-odds 0.01 and 0.001 lie as far apart
    as 0.5 and 0.9, so the bins resolve what the cuts separate. The axis spans 0.001 to 0.999, and
    further to a decade that takes in a cut outside it (down to 1e-10); scores beyond it count in the
    bin at its edge.
    """

    low: float
    high: float

    @classmethod
    def around(cls, *cuts: float) -> ScoreAxis:
        """The axis for a chart with these cuts (thresholds) on it."""
        decade = 3
        for cut in cuts:
            tail = min(cut, 1.0 - cut)
            # float64 scores reach cuts such as 0.99999997: the axis must hold them apart from 1
            while decade < 10 and tail < 10.0**-decade:
                decade += 1
        edge = _logit(10.0**-decade)
        return cls(edge, -edge)

    def position(self, score: np.ndarray | float) -> np.ndarray:
        """Score(s) -> position(s) in [0, 1] across the plot."""
        return np.clip((_logit(score) - self.low) / (self.high - self.low), 0.0, 1.0)

    def ticks(self) -> list[tuple[float, str]]:
        """(position, label) at 0.5 and the decades 0.1, 0.01, ... and 0.9, 0.99, ... out to the
        axis's ends, every decade or every second or third one: as many as fit side by side."""
        decades = int(round(-math.log10(_sigmoid(self.low))))
        ticks: list[tuple[float, str]] = []
        for step in (1, 2, 3, decades):
            ks = list(range(decades, 0, -step))  # the outermost decade is always marked
            ticks = (
                [(float(self.position(10.0**-k)), _decade_label(k, upper=False)) for k in ks]
                + [(0.5, "0.5")]
                + [(float(self.position(1 - 10.0**-k)), _decade_label(k, upper=True)) for k in reversed(ks)]
            )
            if _ticks_fit(ticks):
                break
        return ticks


def _decade_label(k: int, *, upper: bool) -> str:
    """10^-k (``upper``: 1 - 10^-k) as a tick label: decimals to 1e-4, beyond that ``1e-7`` and
    ``1-1e-7``, which take less room than 0.0000001 and 0.9999999."""
    if k <= 4:
        return f"{1 - 10.0**-k if upper else 10.0**-k:.{k}f}"
    return f"1-1e-{k}" if upper else f"1e-{k}"


_TICK_CHAR_WIDTH = 6.2
"""Width of one character of a tick label (class ``tick``, 11 px), in viewBox units, rounded up."""


def _ticks_fit(ticks: Sequence[tuple[float, str]]) -> bool:
    """Whether tick labels at these positions (as :func:`_frame` anchors them) leave a gap between
    neighbours."""
    spans = []
    for t, label in ticks:
        x, width = _sx(t), len(label) * _TICK_CHAR_WIDTH
        spans.append((x + 6 - width, x + 6) if _anchored_at_end(t, label) else (x - width / 2, x + width / 2))
    return all(right + 3 <= left for (_, right), (left, _) in zip(spans, spans[1:], strict=False))


def _anchored_at_end(t: float, label: str) -> bool:
    """A long tick label at the right edge ends there rather than running off the picture."""
    return t > 0.97 and len(label) > 3


def _logit(p: np.ndarray | float) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    return np.log(q) - np.log1p(-q)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def histogram_svg(
    scores: np.ndarray, labels: np.ndarray, *, release: float, hold: float, bins: int = 40
) -> Markup:
    """Score histograms of good vs anomalous (share of each class per bin) on a log-odds axis
    (:class:`ScoreAxis`), thresholds drawn."""
    if scores.size == 0:
        return _empty_chart("no scored images", "Score histogram")
    axis = ScoreAxis.around(release, hold)
    edges = np.linspace(0.0, 1.0, bins + 1)
    shares = []
    for group in (scores[~labels], scores[labels]):
        counts = np.histogram(axis.position(group), bins=edges)[0].astype(np.float64)
        shares.append(counts / max(1, group.size))
    top = max(float(max(s.max() for s in shares)), 1e-9)
    y_max = float(np.ceil(top * 10) / 10)  # round the axis up to the next 10 %
    ticks = [round(float(t), 3) for t in np.linspace(0.0, y_max, 5)]
    parts = _frame(
        "anomaly score (logit scale)",
        "share of the class",
        y_max=y_max,
        y_ticks=ticks,
        x_ticks=axis.ticks(),
    )
    width = (_W - _LEFT - _RIGHT) / bins
    for share, colour in ((shares[0], GOOD_COLOUR), (shares[1], ANOMALOUS_COLOUR)):
        for i, value in enumerate(share):
            if value > 0:
                y = _sy(float(value), y_max)
                parts.append(
                    f'<rect x="{_sx(edges[i]):.1f}" y="{y:.1f}" width="{width:.1f}" '
                    f'height="{_H - _BOTTOM - y:.1f}" fill="{colour}" fill-opacity="0.5"/>'
                )
    at = {"release": float(axis.position(release)), "hold": float(axis.position(hold))}
    text = {"release": f"release {cut_text(release)}", "hold": f"hold {cut_text(hold)}"}
    # Each label sits on its own side of its line (release left, hold right) unless it would run
    # off the plot there; labels that would overlap take a row each.
    sides: dict[str, tuple[str, int]] = {}
    spans: dict[str, tuple[float, float]] = {}
    for name, preferred in (("release", "end"), ("hold", "start")):
        x, width_of = _sx(at[name]), len(text[name]) * _NOTE_CHAR_WIDTH
        fits_left, fits_right = x - 3 - width_of >= _LEFT, x + 3 + width_of <= _W - _RIGHT
        anchor = (
            preferred
            if (fits_left if preferred == "end" else fits_right)
            else ("start" if preferred == "end" else "end")
        )
        sides[name] = (anchor, -3 if anchor == "end" else 3)
        spans[name] = (x - 3 - width_of, x - 3) if anchor == "end" else (x + 3, x + 3 + width_of)
    overlap = spans["release"][1] > spans["hold"][0] - 4 and spans["hold"][1] > spans["release"][0] - 4
    for name, colour in (("release", RELEASE_COLOUR), ("hold", HOLD_COLOUR)):
        x, (anchor, dx) = _sx(at[name]), sides[name]
        dy = 14 if name == "hold" and overlap else 0
        parts.append(
            f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_H - _BOTTOM}" stroke="{colour}" '
            'stroke-width="2" stroke-dasharray="5 3"/>'
            # a white halo keeps a label readable where it crosses the other line or a bar
            f'<text x="{x + dx:.1f}" y="{_TOP + 12 + dy}" text-anchor="{anchor}" class="note" '
            f'fill="{colour}" stroke="#fff" stroke-width="3" paint-order="stroke">{text[name]}</text>'
        )
    return _svg(parts, "Score histogram")


# --------------------------------------------------------------------------------------- gallery


def _png_data_uri(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:  # pragma: no cover - only on an empty image
        raise ValueError("could not encode a gallery image as PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _gallery_card(item: GalleryItem, release: float, hold: float, rule: str) -> dict[str, Any]:
    """Data URIs of the photo and the heatmap overlay (ground-truth outline in cyan) of one image."""
    photo = overlay(item.image, np.zeros(item.image.shape[:2], np.float32), alpha=0.0)
    heat = overlay(item.image, item.anomaly_map)
    if item.mask is not None:
        contours, _ = cv2.findContours(item.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        heat = np.ascontiguousarray(heat)
        cv2.drawContours(heat, contours, -1, OUTLINE_RGB, 1)
    r = item.record
    score = r.score if r.score is not None else float("nan")
    return {
        "path": r.path,
        "type": r.type,
        "score": score_text(r.score, (release, hold)),
        "released": score < release,
        "predicted_type": r.predicted_type or "—",
        # which signal raised the false alarm or let the anomaly through
        "evidence": describe_log_odds(r.signal_log_odds, rule),
        "has_mask": item.mask is not None,
        "photo": _png_data_uri(photo),
        "heat": _png_data_uri(heat),
    }


# ---------------------------------------------------------------------------------------- render


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pipeline", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = percent
    env.filters["num"] = number
    env.filters["cut"] = cut_text
    env.filters["pct_span"] = percent_span
    env.filters["num_span"] = number_span
    env.globals["heatmap_legend"] = Markup(legend_svg())  # drawn here, from the overlay's own colours
    return env


def render_report(result: EvaluationResult) -> str:
    """The report as one HTML string (self-contained: inline CSS, SVG charts, base64 images)."""
    metrics = result.metrics
    th = result.thresholds
    scores, labels = result.scores_and_labels()
    miss = metrics.get("miss_rate")
    miss_interval = metrics.get("intervals", {}).get("miss_rate")
    miss_high = None if miss_interval is None else miss_interval[1]
    per_type = [{"name": name, **block} for name, block in sorted(metrics.get("per_type", {}).items())]
    per_image_kind = [{"name": name, **block} for name, block in metrics.get("per_image_kind", {}).items()]
    failed = [r for r in result.records if r.error is not None]
    context = {
        "result": result,
        "m": metrics,
        "th": th,
        "meets_target": None if miss is None else miss <= th.target_miss_rate + 1e-12,
        # the test set's miss-rate interval reaching past the target: too few anomalies to show it
        "miss_unproven": unshown_upper(miss, miss_interval, th.target_miss_rate) is not None,
        "miss_high": miss_high,
        "test_anomalies_needed": trials_to_show(th.target_miss_rate),
        "promise": result.promise,
        "fallback": th.method == METHOD_FALLBACK,
        "normal_bound": th.method == METHOD_NORMAL_BOUND,
        "roc": roc_svg(scores, labels),
        "pr": pr_svg(scores, labels),
        "histogram": histogram_svg(scores, labels, release=th.release, hold=th.hold),
        "per_type": per_type,
        # types the model cannot name (held out of its training): their "type right" reads n/a
        "untyped": [t["name"] for t in per_type if "type_accuracy" in t.get("undefined", {})],
        "per_image_kind": per_image_kind,
        "misses": [_gallery_card(g, th.release, th.hold, result.fusion_rule) for g in result.worst_misses],
        "false_alarms": [
            _gallery_card(g, th.release, th.hold, result.fusion_rule) for g in result.worst_false_alarms
        ],
        "per_signal": metrics.get("per_signal", {}),
        "failed": failed,
        "copies": metrics.get("duplicates") or {},  # test images that are training images' exact copies
        "resize": None if result.resolution is None else describe_resize(result.resolution["downscale"]),
        "good_name": GOOD,
        "colours": {
            "good": GOOD_COLOUR,
            "anomalous": ANOMALOUS_COLOUR,
            "release": RELEASE_COLOUR,
            "hold": HOLD_COLOUR,
        },
    }
    return _environment().get_template("report.html").render(**context)


def write_report(result: EvaluationResult, path: Path) -> Path:
    """Render the report and write it to ``path`` (parent folders created), whole
    (:func:`~datasets.whole_files.written_whole`: a failure leaves no page cut short); returns ``path``."""
    page = render_report(result).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as fh:
        fh.write(page)
    return path
