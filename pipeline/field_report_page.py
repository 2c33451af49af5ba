"""``field_report.html``: the field figures (:mod:`pipeline.field_report`) for a customs risk manager,
in one self-contained file: the verdict per cargo type first, then the decisions week by week and the
estimated miss rate against its target as charts, the tables behind them, and every random audit of a
would-be release that found an anomaly. Inline CSS and SVG, no JavaScript, nothing fetched."""

from __future__ import annotations

import html
import math
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from pipeline.field_report import FieldReport, GroupFigures, rate_text
from pipeline.intervals import binomial_interval
from pipeline.report import percent, percent_span

__all__ = ["render_field_report", "weekly_miss_svg", "weekly_tiers_svg", "write_field_report"]

TIER_COLOURS = {"RELEASE": "#2b8a3e", "REMOTE_INSPECTION": "#f08c00", "PHYSICAL_INSPECTION": "#c92a2a"}
_W, _H = 720, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 14, 16, 46


def _x(i: int, n: int) -> float:
    """The centre of the ``i``-th of ``n`` week slots."""
    return _LEFT + (i + 0.5) * (_W - _LEFT - _RIGHT) / n


def _y(value: float, top: float) -> float:
    return _H - _BOTTOM - value / top * (_H - _TOP - _BOTTOM)


def _frame(weeks: list[str], top: float, ticks: list[tuple[float, str]], y_label: str) -> list[str]:
    parts = [
        f'<rect x="{_LEFT}" y="{_TOP}" width="{_W - _LEFT - _RIGHT}" height="{_H - _TOP - _BOTTOM}" '
        'fill="#fff" stroke="#adb5bd"/>'
    ]
    for value, label in ticks:
        y = _y(value, top)
        parts.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}" stroke="#f1f3f5"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{label}</text>')
    step = max(1, len(weeks) // 12)  # at most a dozen week labels
    for i, week in enumerate(weeks):
        if i % step == 0:
            parts.append(
                f'<text x="{_x(i, len(weeks)):.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle" '
                f'class="tick">{html.escape(week)}</text>'
            )
    parts.append(
        f'<text transform="translate(14 {(_TOP + _H - _BOTTOM) / 2:.0f}) rotate(-90)" text-anchor="middle" '
        f'class="axis">{html.escape(y_label)}</text>'
    )
    # the x axis's title: its labels ("2026-W45") are weeks of the ISO calendar, not dates
    parts.append(
        f'<text x="{(_LEFT + _W - _RIGHT) / 2:.0f}" y="{_H - 8}" text-anchor="middle" '
        'class="axis">ISO week</text>'
    )
    return parts


def _svg(parts: list[str], title: str) -> Markup:
    return Markup(
        f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="{html.escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(title)}</title>{"".join(parts)}</svg>'
    )


def weekly_tiers_svg(by_week: dict[str, GroupFigures]) -> Markup:
    """Shipments decided per week, stacked by tier."""
    weeks = list(by_week)
    top = max([g.decided for g in by_week.values()] + [1])
    # whole shipments, each drawn at its own height: round(top / 2) labelled the line at 0.5 "0"
    # (an axis of 0, 0, 1) and the one at 20.5 "20"
    ticks = [(value, f"{value:,}") for value in sorted({0, top // 2, top})]
    parts = _frame(weeks, top, ticks, "shipments decided")
    width = min(60.0, 0.7 * (_W - _LEFT - _RIGHT) / max(len(weeks), 1))  # one week: a bar, not a wall
    for i, figures in enumerate(by_week.values()):
        base = 0
        for tier, colour in TIER_COLOURS.items():
            count = figures.tiers.get(tier, 0)
            if count:
                y0, y1 = _y(base, top), _y(base + count, top)
                parts.append(
                    f'<rect x="{_x(i, len(weeks)) - width / 2:.1f}" y="{y1:.1f}" width="{width:.1f}" '
                    f'height="{y0 - y1:.1f}" fill="{colour}"><title>{html.escape(weeks[i])}: {count:,} '
                    f"{tier}</title></rect>"
                )
            base += count
    return _svg(parts, "Shipments decided per week, by tier")


def _share_ticks(top: float) -> tuple[float, list[tuple[float, str]]]:
    """An axis of shares from 0 to at least ``top`` at round steps (1, 2 or 5 times a power of ten,
    two to four of them), each labelled as a percentage with the decimals its step takes: the top,
    where the axis ends, and the ticks. Quarters of the top labelled with one decimal read 0.0%,
    0.0%, 0.1%, 0.1%, 0.1% on the axis of a 0.01 % target."""
    wanted = top / 4
    power = 10.0 ** math.floor(math.log10(wanted))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= wanted * (1 - 1e-9))
    count = max(1, math.ceil(top / step - 1e-9))
    decimals = max(1, -math.floor(math.log10(100.0 * step) + 1e-9))
    return count * step, [(k * step, f"{100.0 * k * step:.{decimals}f}%") for k in range(count + 1)]


def weekly_miss_svg(by_week: dict[str, GroupFigures], target: float) -> Markup:
    """The estimated field miss rate per week with its 95 % interval, and the target as a line;
    a week without an estimate (no audit or hold outcome) is left empty."""
    weeks = list(by_week)
    estimates = [g.miss_rate() for g in by_week.values()]
    highs = [interval[1] for _, interval in estimates if interval is not None]
    # at most ten times the target: a week's interval reaching far past it is clipped there; the
    # axis goes on to the next round tick
    clip = min(1.0, 10 * target, max([2.5 * target, *highs]))
    top, ticks = _share_ticks(clip)
    parts = _frame(weeks, top, ticks, "anomalous cargo released")
    y = _y(target, top)
    parts.append(
        f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}" stroke="#c92a2a" '
        f'stroke-dasharray="6 4"/><text x="{_W - _RIGHT - 4}" y="{y - 5:.1f}" text-anchor="end" '
        f'class="tick" fill="#c92a2a">target {rate_text(target, significant=3)}</text>'
    )
    for i, (point, interval) in enumerate(estimates):
        if point is None or interval is None:
            continue
        x = _x(i, len(weeks))
        colour = "#c92a2a" if interval[0] > target else "#1c7ed6"
        point_text, low_text, high_text = (rate_text(v, apart_from=(target,)) for v in (point, *interval))
        parts.append(
            f'<line x1="{x:.1f}" y1="{_y(min(interval[0], clip), top):.1f}" x2="{x:.1f}" '
            f'y2="{_y(min(interval[1], clip), top):.1f}" stroke="{colour}" stroke-width="2"/>'
            f'<circle cx="{x:.1f}" cy="{_y(min(point, clip), top):.1f}" r="4" fill="{colour}">'
            f"<title>{html.escape(weeks[i])}: {point_text} ({low_text} to {high_text})"
            "</title></circle>"
        )
    if not any(point is not None for point, _ in estimates):
        parts.append(
            f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle" class="axis">no week has audit and hold '
            "outcomes yet</text>"
        )
    return _svg(parts, "Estimated share of anomalous cargo released, per week")


def _row(name: str, g: GroupFigures, target: float) -> dict[str, str]:
    point, interval = g.miss_rate()
    return {
        "name": name,
        "decided": f"{g.decided:,}",
        # the policy's would-be releases, those picked for a random audit among them (inspected,
        # and drawn at their audit's tier in the tier chart)
        "released": percent(g.released_share),
        "audits": f"{g.audited_inspected:,} of {g.audited:,}",
        "found": f"{g.audited_found:,}",
        "among_released": (
            f"{percent(g.anomalous_among_released, 2)} "
            f"({percent_span(binomial_interval(g.audited_found, g.audited_inspected), 2)})"
            if g.audited_inspected
            else "—"
        ),
        "held_found": (
            f"{g.held_found:,} of {g.held_inspected:,} ({percent(g.anomalous_among_held)})"
            if g.held_inspected
            else "—"
        ),
        "miss": f"{percent(point, 2)} ({percent_span(interval, 2)})" if point is not None else "—",
        "verdict": g.verdict(target),
        "state": (
            "fail"
            if point is not None and interval is not None and interval[0] > target
            else "ok"
            if point is not None and interval is not None and interval[1] <= target
            else "warn"
        ),
    }


def render_field_report(report: FieldReport, *, store: str) -> str:
    """The page as one HTML string; ``store``: the audit store it was read from, as shown."""
    env = Environment(
        loader=PackageLoader("pipeline", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
    )
    return env.get_template("field_report.html").render(
        report=report,
        store=store,
        cargo=[_row(name, g, report.target) for name, g in report.by_cargo.items()],
        weeks=[_row(name, g, report.target) for name, g in report.by_week.items()],
        models=[_row(name, g, report.target) for name, g in report.by_model.items()],
        tiers_chart=weekly_tiers_svg(report.by_week),
        miss_chart=weekly_miss_svg(report.by_week, report.target),
        target=rate_text(report.target, significant=3),
        colours=TIER_COLOURS,
    )


def write_field_report(report: FieldReport, path: Path, *, store: str) -> Path:
    """Render the page and write it to ``path``; returns ``path``."""
    path.write_text(render_field_report(report, store=store), encoding="utf-8")
    return path
