"""Small server-rendered SVG charts for the compliance page (no JavaScript, nothing fetched).

Each chart is one ``<svg>`` with a ``viewBox``, so CSS scales it to the screen's width; colours
come from CSS classes (``series-0`` …) in ``static/portal.css``. Every chart carries a ``<title>``
and a ``<desc>`` (the values as text) for screen readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 28, 40


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
        self.y_max = chart.y_max if chart.y_max is not None else _nice_max(top)
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
    label_every = max(1, len(chart.days) // 6)
    for i, day in enumerate(chart.days):
        if i % label_every == 0 or i == len(chart.days) - 1:
            parts.append(
                f'<text class="tick" x="{frame.x(i):.1f}" y="{HEIGHT - BOTTOM + 16}" '
                f'text-anchor="middle">{day:%m-%d}</text>'
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
            f'<rect class="series-{i} swatch" x="{x}" y="{HEIGHT - 14}" width="10" height="10"/>'
            f'<text class="legend" x="{x + 14}" y="{HEIGHT - 5}">{escape(series.name)}</text>'
        )
        x += 24 + 8 * len(series.name)
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
            for point in run:
                cx, cy = point.split(",")
                body.append(f'<circle class="series-{i} dot" cx="{cx}" cy="{cy}" r="2.5"/>')
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
