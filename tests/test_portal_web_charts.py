"""The SVG chart renderer: well-formed SVG, scaled by viewBox, values kept in order, gaps kept
as gaps, names escaped."""

from __future__ import annotations

from datetime import date, timedelta

from lxml import etree

from portal.charts import Chart, Series, Threshold, bar_chart, line_chart

SVG = "{http://www.w3.org/2000/svg}"
DAYS = [date(2026, 11, 1) + timedelta(days=i) for i in range(5)]


def _parse(markup: str) -> etree._Element:
    return etree.fromstring(str(markup).encode())


def test_line_chart_is_scalable_svg_with_gaps_and_thresholds() -> None:
    chart = Chart(
        "Latency <p99> & more",
        DAYS,
        [Series("p99 <x>", [0.5, 1.0, None, 6.0, 2.0])],
        unit=" s",
        thresholds=[Threshold(5.0, "5 s")],
    )
    root = _parse(line_chart(chart))
    assert root.get("viewBox") and root.get("width") is None  # CSS decides the size
    assert root.findtext(f"{SVG}title") == "Latency <p99> & more"
    assert "2026-11-03 no data" in root.findtext(f"{SVG}desc")
    lines = root.findall(f".//{SVG}polyline")
    assert [len(line.get("points").split()) for line in lines] == [2, 2]  # broken at the gap
    assert len(root.findall(f".//{SVG}line[@class='threshold']")) == 1
    ys = [float(p.split(",")[1]) for line in lines for p in line.get("points").split()]
    assert ys[2] < ys[3]  # 6 s is drawn above (smaller y) 2 s


def test_bar_chart_stacks_series_and_counts_use_whole_numbers() -> None:
    chart = Chart(
        "Calls",
        DAYS,
        [Series("answered", [3, 0, 1, 2, 1]), Series("unavailable", [1, 0, 0, 0, 0])],
        counts=True,
    )
    root = _parse(bar_chart(chart))
    bars = root.findall(f".//{SVG}rect[@class]")
    drawn = [b for b in bars if "bar" in b.get("class")]
    assert len(drawn) == 5  # four days with answers, one with an unavailable on top
    ticks = [t.text for t in root.findall(f".//{SVG}text[@class='tick']") if t.text[0].isdigit()]
    assert all("." not in t for t in ticks if "-" not in t)  # 0 1 2 3 4, no 0.25
