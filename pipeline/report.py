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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

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
    x_label: str, y_label: str, y_max: float = 1.0, y_ticks: Sequence[float] | None = None
) -> list[str]:
    parts = [
        f'<rect x="{_LEFT}" y="{_TOP}" width="{_W - _LEFT - _RIGHT}" height="{_H - _TOP - _BOTTOM}" '
        'fill="#fff" stroke="#adb5bd"/>'
    ]
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = _sx(t)
        parts.append(
            f'<line x1="{x:.1f}" y1="{_H - _BOTTOM}" x2="{x:.1f}" y2="{_H - _BOTTOM + 4}" stroke="#495057"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle" class="tick">{t:g}</text>'
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


def histogram_svg(
    scores: np.ndarray, labels: np.ndarray, *, release: float, hold: float, bins: int = 40
) -> Markup:
    """Score histograms of good vs anomalous (share of each class per bin), thresholds drawn."""
    if scores.size == 0:
        return _empty_chart("no scored images", "Score histogram")
    edges = np.linspace(0.0, 1.0, bins + 1)
    shares = []
    for group in (scores[~labels], scores[labels]):
        counts = np.histogram(np.clip(group, 0.0, 1.0), bins=edges)[0].astype(np.float64)
        shares.append(counts / max(1, group.size))
    top = max(float(max(s.max() for s in shares)), 1e-9)
    y_max = float(np.ceil(top * 10) / 10)  # round the axis up to the next 10 %
    ticks = [round(float(t), 3) for t in np.linspace(0.0, y_max, 5)]
    parts = _frame("anomaly score", "share of the class", y_max=y_max, y_ticks=ticks)
    width = (_W - _LEFT - _RIGHT) / bins
    for share, colour in ((shares[0], GOOD_COLOUR), (shares[1], ANOMALOUS_COLOUR)):
        for i, value in enumerate(share):
            if value > 0:
                y = _sy(float(value), y_max)
                parts.append(
                    f'<rect x="{_sx(edges[i]):.1f}" y="{y:.1f}" width="{width:.1f}" '
                    f'height="{_H - _BOTTOM - y:.1f}" fill="{colour}" fill-opacity="0.5"/>'
                )
    # labels sit either side of their line; when the lines are close the hold label drops a row
    hold_row = 14 if hold - release < 0.15 else 0
    # a label that would run off the chart's edge turns to the other side of its line
    release_side = ("end", -3) if release > 0.12 else ("start", 3)
    hold_side = ("start", 3) if hold < 0.88 else ("end", -3)
    if release_side[0] == "start" and hold_side[0] == "start" and hold - release < 0.15:
        hold_row = 28  # both labels to the right of two close lines: a row each
    for value, colour, name, (anchor, dx), dy in (
        (release, RELEASE_COLOUR, "release", release_side, 0),
        (hold, HOLD_COLOUR, "hold", hold_side, hold_row),
    ):
        x = _sx(value)
        parts.append(
            f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_H - _BOTTOM}" stroke="{colour}" '
            'stroke-width="2" stroke-dasharray="5 3"/>'
            f'<text x="{x + dx:.1f}" y="{_TOP + 12 + dy}" text-anchor="{anchor}" class="note" '
            f'fill="{colour}">{name} {value:.3f}</text>'
        )
    return _svg(parts, "Score histogram")


# --------------------------------------------------------------------------------------- gallery


def _png_data_uri(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:  # pragma: no cover - only on an empty image
        raise ValueError("could not encode a gallery image as PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _gallery_card(item: GalleryItem, release: float, rule: str) -> dict[str, Any]:
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
        "score": number(r.score),
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
        "per_image_kind": per_image_kind,
        "misses": [_gallery_card(g, th.release, result.fusion_rule) for g in result.worst_misses],
        "false_alarms": [_gallery_card(g, th.release, result.fusion_rule) for g in result.worst_false_alarms],
        "per_signal": metrics.get("per_signal", {}),
        "failed": failed,
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
    """Render the report and write it to ``path`` (parent folders created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(result), encoding="utf-8")
    return path
