"""Small server-rendered SVG charts for the compliance page (no JavaScript, nothing fetched).

Each chart is one ``<svg>`` with a ``viewBox``, so CSS scales it to the screen's width; colours
come from CSS classes (``series-0`` …) in ``static/portal.css``. Every chart carries a ``<title>``
and a ``<desc>`` (the values as text) for screen readers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from markupsafe import Markup, escape

# Small enough that the text stays readable when a phone scales the chart to its width.
WIDTH = 440
HEIGHT = 230
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 30, 46


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per day; None: no data that day


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    days: Sequence[date]
    series: Sequence[Series]
    unit: str = ""
    thresholds: Sequence[Threshold] = field(default_factory=tuple)
    y_max: float | None = None
    counts: bool = False  # whole numbers: the axis never shows fractions


def _nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10ⁿ at or above ``value`` (tidy axis labels)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    while magnitude > value:
        magnitude /= 10
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= value:
            return factor * magnitude
    return 10 * magnitude


def _fmt(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value / 1000:g}k"


class _Frame:
    def __init__(self, chart: Chart, bars: bool = False) -> None:
        self.bars = bars
        values = [v for s in chart.series for v in s.values if v is not None]
        top = max([*values, *(t.value for t in chart.thresholds), 0.0])
        if chart.y_max is not None:
            self.y_max = chart.y_max
        elif chart.counts:  # four grid steps of a whole number each
            self.y_max = 4.0 * math.ceil(_nice_max(top / 4))
        else:
            self.y_max = _nice_max(top)
        self.n = max(len(chart.days), 1)
        self.plot_w = WIDTH - LEFT - RIGHT
        self.plot_h = HEIGHT - TOP - BOTTOM

    def x(self, index: int) -> float:
        if self.bars:
            return LEFT + self.plot_w * (index + 0.5) / self.n
        if self.n == 1:
            return LEFT + self.plot_w / 2
        return LEFT + self.plot_w * index / (self.n - 1)

    def y(self, value: float) -> float:
        return TOP + self.plot_h * (1 - min(value, self.y_max) / self.y_max)


def _axes(chart: Chart, frame: _Frame) -> list[str]:
    parts = [
        f'<text class="chart-title" x="{LEFT}" y="18">{escape(chart.title)}</text>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + frame.plot_h}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + frame.plot_h}" '
        f'x2="{LEFT + frame.plot_w}" y2="{TOP + frame.plot_h}"/>',
    ]
    for i in range(5):
        value = frame.y_max * i / 4
        y = frame.y(value)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + frame.plot_w}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_fmt(value)}{escape(chart.unit)}</text>"
        )
    last = len(chart.days) - 1
    label_every = max(1, len(chart.days) // 4)
    for i, day in enumerate(chart.days):
        if (i % label_every == 0 and last - i >= label_every / 2) or i == last:
            x, anchor = frame.x(i), "middle"
            if i == last and last > 0:  # keep the newest day's label inside the frame
                x, anchor = LEFT + frame.plot_w, "end"
            elif i == 0 and not frame.bars and last > 0:
                anchor = "start"
            parts.append(
                f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                f'text-anchor="{anchor}">{day:%m-%d}</text>'
            )
    for threshold in chart.thresholds:
        y = frame.y(threshold.value)
        parts.append(
            f'<line class="threshold" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + frame.plot_w}" '
            f'y2="{y:.1f}"/><text class="threshold-label" x="{LEFT + frame.plot_w}" '
            f'y="{y - 4:.1f}" text-anchor="end">{escape(threshold.label)}</text>'
        )
    return parts


def _legend(chart: Chart) -> list[str]:
    parts = []
    x = LEFT
    for i, series in enumerate(chart.series):
        parts.append(
            f'<rect class="series-{i} swatch" x="{x}" y="{HEIGHT - 16}" width="12" height="12"/>'
            f'<text class="legend" x="{x + 16}" y="{HEIGHT - 5}">{escape(series.name)}</text>'
        )
        x += 30 + 8 * len(series.name)
    return parts


def _desc(chart: Chart) -> str:
    lines = []
    for series in chart.series:
        points = ", ".join(
            f"{day:%Y-%m-%d} {'no data' if v is None else _fmt(round(v, 2))}"
            for day, v in zip(chart.days, series.values, strict=False)
        )
        lines.append(f"{series.name}: {points}")
    return "; ".join(lines)


def _wrap(chart: Chart, body: list[str], kind: str) -> Markup:
    return Markup(
        f'<svg class="chart chart-{kind}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">'
        f"<title>{escape(chart.title)}</title><desc>{escape(_desc(chart))}</desc>"
        + "".join(body)
        + "</svg>"
    )


def line_chart(chart: Chart) -> Markup:
    """One polyline per series; days without data break the line."""
    frame = _Frame(chart)
    body = _axes(chart, frame)
    for i, series in enumerate(chart.series):
        runs: list[list[str]] = [[]]
        for index, value in enumerate(series.values):
            if value is None:
                runs.append([])
                continue
            runs[-1].append(f"{frame.x(index):.1f},{frame.y(value):.1f}")
        for run in runs:
            if len(run) > 1:
                body.append(f'<polyline class="series-{i} line" points="{" ".join(run)}"/>')
            if len(run) == 1 or len(series.values) <= 15:  # dots only where lines say little
                for point in run:
                    cx, cy = point.split(",")
                    body.append(f'<circle class="series-{i} dot" cx="{cx}" cy="{cy}" r="3"/>')
    body.extend(_legend(chart))
    return _wrap(chart, body, "line")


def bar_chart(chart: Chart) -> Markup:
    """Stacked bars per day, series in order from the bottom."""
    frame = _Frame(
        Chart(
            chart.title,
            chart.days,
            [Series("total", [_sum_day(chart, d) for d in range(len(chart.days))])],
            chart.unit,
            chart.thresholds,
            chart.y_max,
            chart.counts,
        ),
        bars=True,
    )
    body = _axes(chart, frame)
    slot = frame.plot_w / max(len(chart.days), 1)
    bar_w = max(slot * 0.7, 1.0)
    for day_index in range(len(chart.days)):
        base = 0.0
        x = LEFT + slot * day_index + (slot - bar_w) / 2
        for i, series in enumerate(chart.series):
            value = series.values[day_index] or 0.0
            if value <= 0:
                continue
            y_top, y_bottom = frame.y(base + value), frame.y(base)
            body.append(
                f'<rect class="series-{i} bar" x="{x:.1f}" y="{y_top:.1f}" '
                f'width="{bar_w:.1f}" height="{max(y_bottom - y_top, 0.5):.1f}"/>'
            )
            base += value
    body.extend(_legend(chart))
    return _wrap(chart, body, "bar")


def _sum_day(chart: Chart, index: int) -> float:
    return sum(s.values[index] or 0.0 for s in chart.series)
