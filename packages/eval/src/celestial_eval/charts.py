"""Inline SVG charts (lines of DVC plot data, grouped bars), drawn without JavaScript.

`dvc plots show` renders Vega specs with scripts fetched from a CDN. These
functions draw the same data (the ``linear`` family of templates) as plain
SVG, so a report opens anywhere, offline included. Points carry ``<title>``
tooltips with their exact values. The confusion matrix is not drawn here: the
report embeds the evaluate stage's ``confusion.png`` (see `celestial_eval.report`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from celestial_eval.figures import COLORS

__all__ = ["PALETTE", "bars_svg", "line_svg", "nice_ticks"]

PALETTE = (COLORS["train"], COLORS["val"], "#7c3aed", "#0891b2", "#ca8a04", "#db2777")
FONT = "font-family='DejaVu Sans, Verdana, sans-serif'"


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round ticks covering ``[low, high]``, about ``count`` of them (whole if ``integer``)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        low, high = low - 0.5, high + 0.5
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1, round(step))
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def _frame(
    title: str, width: int, height: int, left: int, right: int, y_ticks: list[tuple[float, float]]
) -> list[str]:
    """The opening ``<svg>`` tag, the title and the y axis's grid lines and labels.

    ``y_ticks`` holds ``(value, pixel row)`` pairs.
    """
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' "
        f"width='{width}' height='{height}' role='img' aria-label='{escape(title)}' {FONT}>",
        f"<text x='{left}' y='20' font-size='14' font-weight='bold' "
        f"fill='{COLORS['ink']}'>{escape(title)}</text>",
    ]
    for tick, tick_y in y_ticks:
        parts.append(
            f"<line x1='{left}' x2='{width - right}' y1='{tick_y:.1f}' y2='{tick_y:.1f}' "
            f"stroke='{COLORS['grid']}'/><text x='{left - 6}' y='{tick_y + 4:.1f}' font-size='11' "
            f"text-anchor='end' fill='{COLORS['muted']}'>{_label(tick)}</text>"
        )
    return parts


def line_svg(
    title: str,
    x_label: str,
    series: Sequence[tuple[str, Sequence[float], Sequence[float | None]]],
    y_label: str = "",
    width: int = 640,
    height: int = 320,
) -> str:
    """A line chart of one or more series.

    Args:
        title: Shown above the chart.
        x_label: Name of the x field.
        series: ``(name, xs, ys)`` per line; ``None`` values leave a gap.
        y_label: Name of the y axis (default: none).
        width: Width in pixels.
        height: Height in pixels.

    Returns:
        An ``<svg>`` element.
    """
    left, right, top, bottom = 62, 20, 48, 46
    xs = [x for _, xv, _ in series for x in xv]
    ys = [y for _, _, yv in series for y in yv if y is not None and math.isfinite(y)]
    whole = all(float(x).is_integer() for x in xs)
    x_ticks = nice_ticks(min(xs, default=0), max(xs, default=1), 8, integer=whole)
    y_ticks = nice_ticks(min(ys, default=0), max(ys, default=1), 6)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - (y - y0) / ((y1 - y0) or 1) * (height - top - bottom)

    parts = _frame(title, width, height, left, right, [(tick, py(tick)) for tick in y_ticks])
    for tick in x_ticks:
        x = px(tick)
        parts.append(
            f"<text x='{x:.1f}' y='{height - bottom + 16}' font-size='11' text-anchor='middle' "
            f"fill='{COLORS['muted']}'>{_label(tick)}</text>"
        )
    parts.append(
        f"<line x1='{left}' x2='{width - right}' y1='{height - bottom}' y2='{height - bottom}' "
        f"stroke='{COLORS['muted']}'/><text x='{(left + width - right) / 2:.1f}' "
        f"y='{height - 8}' font-size='12' text-anchor='middle' "
        f"fill='{COLORS['ink']}'>{escape(x_label)}</text>"
    )
    if y_label:
        parts.append(
            f"<text transform='translate(14 {(top + height - bottom) / 2:.1f}) rotate(-90)' "
            f"font-size='12' text-anchor='middle' fill='{COLORS['ink']}'>{escape(y_label)}</text>"
        )
    legend_x = width - right
    for index, (name, xv, yv) in reversed(list(enumerate(series))):
        color = PALETTE[index % len(PALETTE)]
        legend_x -= 7 * len(name) + 34
        parts.append(
            f"<g class='legend'><rect x='{legend_x}' y='{top - 20}' width='14' height='4' "
            f"rx='2' fill='{color}'/><text x='{legend_x + 19}' y='{top - 14}' font-size='12' "
            f"fill='{COLORS['ink']}'>{escape(name)}</text></g>"
        )
        segments: list[list[tuple[float, float]]] = [[]]
        for x, y in zip(xv, yv, strict=True):
            if y is None or not math.isfinite(y):
                segments.append([])
            else:
                segments[-1].append((x, y))
        for segment in segments:
            if len(segment) > 1:
                points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in segment)
                parts.append(
                    f"<polyline class='series' points='{points}' fill='none' stroke='{color}' "
                    "stroke-width='2.2' stroke-linejoin='round'/>"
                )
        radius = 3 if len(xv) <= 60 else 0
        for x, y in (p for s in segments for p in s):
            parts.append(
                f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='{radius}' fill='{color}'>"
                f"<title>{escape(name)} at {escape(x_label)} {_label(x)}: {y:.4g}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    y_label: str = "",
    width: int = 640,
    height: int = 320,
) -> str:
    """A grouped bar chart: one group per category, one bar per series.

    Args:
        title: Shown above the chart.
        categories: The group names, left to right.
        series: ``(name, values)`` per series, one value per category.
        y_label: Name of the y axis (default: none).
        width: Width in pixels.
        height: Height in pixels.

    Returns:
        An ``<svg>`` element.
    """
    left, right, top, bottom = 62, 20, 48, 62
    values = [v for _, vs in series for v in vs if math.isfinite(v)]
    y_ticks = nice_ticks(min([0.0, *values]), max(values, default=1.0), 6)
    y0, y1 = y_ticks[0], y_ticks[-1]
    group = (width - left - right) / max(len(categories), 1)
    bar = group * 0.8 / max(len(series), 1)

    def py(y: float) -> float:
        return height - bottom - (y - y0) / ((y1 - y0) or 1) * (height - top - bottom)

    parts = _frame(title, width, height, left, right, [(tick, py(tick)) for tick in y_ticks])
    if y_label:
        parts.append(
            f"<text transform='translate(14 {(top + height - bottom) / 2:.1f}) rotate(-90)' "
            f"font-size='12' text-anchor='middle' fill='{COLORS['ink']}'>{escape(y_label)}</text>"
        )
    for index, category in enumerate(categories):
        centre = left + group * (index + 0.5)
        parts.append(
            f"<text transform='translate({centre:.1f} {height - bottom + 14}) rotate(-30)' "
            f"font-size='11' text-anchor='end' fill='{COLORS['ink']}'>{escape(category)}</text>"
        )
        for number, (name, series_values) in enumerate(series):
            value = series_values[index]
            x = centre - group * 0.4 + bar * number
            y = py(max(value, y0))
            parts.append(
                f"<rect class='bar' x='{x:.1f}' y='{y:.1f}' width='{bar * 0.92:.1f}' "
                f"height='{max(py(y0) - y, 0):.1f}' fill='{PALETTE[number % len(PALETTE)]}'>"
                f"<title>{escape(name)}, {escape(category)}: {value:.4g}</title></rect>"
            )
    legend_x = width - right
    for index, (name, _) in reversed(list(enumerate(series))):
        legend_x -= 7 * len(name) + 34
        parts.append(
            f"<g class='legend'><rect x='{legend_x}' y='{top - 22}' width='14' height='8' "
            f"rx='2' fill='{PALETTE[index % len(PALETTE)]}'/><text x='{legend_x + 19}' "
            f"y='{top - 14}' font-size='12' fill='{COLORS['ink']}'>{escape(name)}</text></g>"
        )
    parts.append(
        f"<line x1='{left}' x2='{width - right}' y1='{py(y0):.1f}' y2='{py(y0):.1f}' "
        f"stroke='{COLORS['muted']}'/></svg>"
    )
    return "".join(parts)
