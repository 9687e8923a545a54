"""Inline SVG charts of DVC plot data, drawn without JavaScript.

`dvc plots show` renders Vega specs with scripts fetched from a CDN. These
functions draw the same data (the ``linear`` family and the ``confusion``
templates) as plain SVG, so a report opens anywhere, offline included. Points
and cells carry ``<title>`` tooltips with their exact values.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from html import escape

from celestial_eval.figures import COLORS

__all__ = ["PALETTE", "confusion_svg", "line_svg", "nice_ticks"]

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

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' "
        f"width='{width}' height='{height}' role='img' aria-label='{escape(title)}' {FONT}>",
        f"<text x='{left}' y='20' font-size='14' font-weight='bold' "
        f"fill='{COLORS['ink']}'>{escape(title)}</text>",
    ]
    for tick in y_ticks:
        y = py(tick)
        parts.append(
            f"<line x1='{left}' x2='{width - right}' y1='{y:.1f}' y2='{y:.1f}' "
            f"stroke='{COLORS['grid']}'/><text x='{left - 6}' y='{y + 4:.1f}' font-size='11' "
            f"text-anchor='end' fill='{COLORS['muted']}'>{_label(tick)}</text>"
        )
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


def confusion_svg(
    title: str,
    rows: Sequence[str],
    columns: Sequence[str],
    normalized: bool = False,
    row_label: str = "actual",
    column_label: str = "predicted",
) -> str:
    """A confusion matrix counted from paired labels, as DVC's confusion templates draw it.

    Like DVC, the plot's ``x`` field runs along the columns and its ``y`` field
    down the rows; cells are shaded by their share of the row, green on the
    diagonal (same label on both axes) and red elsewhere.

    Args:
        title: Shown above the chart.
        rows: One label per image for the rows (DVC's ``y`` field).
        columns: One label per image for the columns (DVC's ``x`` field).
        normalized: Show each cell as a share of its row (``confusion_normalized``).
        row_label: Name of the rows' field.
        column_label: Name of the columns' field.

    Returns:
        An ``<svg>`` element.
    """
    labels = sorted(set(rows) | set(columns))
    counts = Counter(zip(rows, columns, strict=True))
    totals = Counter(rows)
    n = max(len(labels), 1)
    cell = max(30, min(56, 520 // n))
    longest = max((len(label) for label in labels), default=1)
    left, top = 40 + 7 * longest, 48
    bottom = 40 + 5 * longest
    width, height = left + n * cell + 20, top + n * cell + bottom
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' "
        f"width='{width}' height='{height}' role='img' aria-label='{escape(title)}' {FONT}>",
        f"<text x='10' y='20' font-size='14' font-weight='bold' "
        f"fill='{COLORS['ink']}'>{escape(title)}</text>",
    ]
    for r, row in enumerate(labels):
        y = top + r * cell
        parts.append(
            f"<text x='{left - 8}' y='{y + cell / 2 + 4:.1f}' font-size='12' text-anchor='end' "
            f"fill='{COLORS['ink']}'>{escape(row)}</text>"
        )
        for c, column in enumerate(labels):
            x = left + c * cell
            count = counts.get((row, column), 0)
            share = count / totals[row] if totals[row] else 0.0
            base = COLORS["right"] if row == column else COLORS["wrong"]
            opacity = 0.0 if count == 0 else 0.12 + 0.88 * share
            text = f"{share:.0%}" if normalized else str(count)
            parts.append(
                f"<g class='cell'><rect x='{x}' y='{y}' width='{cell}' height='{cell}' "
                f"fill='{base}' fill-opacity='{opacity:.3f}' stroke='{COLORS['grid']}'/>"
                f"<title>{escape(row_label)} {escape(row)}, "
                f"{escape(column_label)} {escape(column)}: "
                f"{count} ({share:.1%} of {totals[row]})</title>"
            )
            if count:
                fill = "white" if share > 0.55 else COLORS["ink"]
                parts.append(
                    f"<text x='{x + cell / 2:.1f}' y='{y + cell / 2 + 4:.1f}' font-size='12' "
                    f"text-anchor='middle' fill='{fill}'>{text}</text>"
                )
            parts.append("</g>")
    for c, column in enumerate(labels):
        x = left + c * cell + cell / 2
        y = top + n * cell + 10
        parts.append(
            f"<text transform='translate({x + 4:.1f} {y}) rotate(-45)' font-size='12' "
            f"text-anchor='end' fill='{COLORS['ink']}'>{escape(column)}</text>"
        )
    parts.append(
        f"<text x='{left + n * cell / 2:.1f}' y='{height - 6}' font-size='12' "
        f"text-anchor='middle' fill='{COLORS['ink']}'>{escape(column_label)}</text>"
        f"<text transform='translate(14 {top + n * cell / 2:.1f}) rotate(-90)' font-size='12' "
        f"text-anchor='middle' fill='{COLORS['ink']}'>{escape(row_label)}</text></svg>"
    )
    return "".join(parts)
