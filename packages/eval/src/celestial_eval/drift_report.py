"""The drift page: one self-contained HTML file of a drift verdict and its distributions.

Like the project report (`celestial_eval.report`), it needs no network: charts
are inline SVG (`celestial_eval.charts`), there is no script, and the same
Content-Security-Policy forbids every fetch, so it opens offline, from a CI
artifact or an email.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

import numpy as np

from celestial_eval.charts import bars_svg, line_svg
from celestial_eval.report import CSP, STYLE

__all__ = ["BINS", "build_page", "histogram"]

#: Bins of each distribution's chart.
BINS = 24
PAGE_STYLE = """
.verdict{display:inline-block;font-size:22px;font-weight:bold;padding:8px 18px;border-radius:10px;
color:white}
.drift{background:#dc2626}.stable{background:#15803d}
tr.failed td{color:#b91c1c;font-weight:bold}
td.name{text-align:left}
"""


#: The histograms stop at Tukey's far-out fences of both samples together
#: (this many interquartile ranges beyond the quartiles); the values beyond
#: fall in the end bins. A heavy tail (the unknown-image score of a few junk
#: pictures, thousands against tens) would otherwise squeeze every other value
#: into the first bin, and the shift the checks report would not show.
FENCE = 3.0


def histogram(
    reference: np.ndarray, log: np.ndarray, bins: int = BINS
) -> tuple[list[float], list[float], list[float], bool]:
    """Bin centres, the share of each sample per bin, and whether values were clipped.

    The bins span both samples' range, cut at the far-out fences (`FENCE`);
    values beyond a fence are counted in the end bin on its side.
    """
    values = np.concatenate([reference, log])
    if not len(values):
        values = np.array([0.0, 1.0])
    low, high = float(values.min()), float(values.max())
    first, third = (float(v) for v in np.percentile(values, [25.0, 75.0]))
    if third > first:
        low = max(low, first - FENCE * (third - first))
        high = min(high, third + FENCE * (third - first))
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    centres = ((edges[:-1] + edges[1:]) / 2).tolist()
    shares = [
        (np.histogram(np.clip(sample, low, high), edges)[0] / max(len(sample), 1)).tolist()
        for sample in (reference, log)
    ]
    clipped = bool(((values < low) | (values > high)).any())
    return centres, shares[0], shares[1], clipped


def _figure(value: Any, digits: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return escape(format(value, digits))
    return escape(str(value))


def _checks_table(checks: Sequence[dict[str, Any]], changes: Sequence[str]) -> str:
    rows = []
    for check, moved in zip(checks, changes, strict=True):
        verdict = "skipped" if check["skipped"] else "drift" if check["drift"] else "ok"
        rows.append(
            f"<tr class='{'failed' if check['drift'] else ''}'>"
            f"<td class='name'>{escape(check['name'])}</td><td>{escape(check['test'])}</td>"
            f"<td>{_figure(check['statistic'])}</td><td>{_figure(check['threshold'])}</td>"
            f"<td>{_figure(check['p_value'], '.2g')}</td><td>{escape(moved)}</td>"
            f"<td>{verdict}</td></tr>"
        )
    return (
        "<table><thead><tr><th>check</th><th>test</th><th>statistic</th><th>threshold</th>"
        "<th>p-value</th><th>moved (reference → log)</th><th>verdict</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def build_page(
    result: dict[str, Any],
    class_mix: tuple[Sequence[str], Sequence[float], Sequence[float]],
    distributions: Sequence[tuple[str, np.ndarray, np.ndarray]],
    changes: Sequence[str],
) -> str:
    """The HTML of a drift verdict.

    Args:
        result: The verdict, as ``drift.json`` holds it.
        changes: What moved, per check (``"rate 0.05 -> 0.2"``; empty when skipped).
        class_mix: ``(labels, reference shares, log shares)`` of the answers.
        distributions: ``(check name, reference values, log values)`` per numeric check.

    Returns:
        A complete HTML document.
    """
    log, reference = result["log"], result["reference"]
    span = log["time_span"]
    failed = result["failed"]
    verdict = (
        f"<span class='verdict drift'>Drift: {len(failed)} of {len(result['checks'])} checks "
        "failed</span>"
        if result["drift"]
        else "<span class='verdict stable'>No drift</span>"
    )
    labels, reference_shares, log_shares = class_mix
    charts = [
        bars_svg(
            "Answers: class mix, unknown included" + (": drift" if "class_mix" in failed else ""),
            labels,
            [("reference", reference_shares), ("log", log_shares)],
            "share of answers",
        )
    ]
    for name, reference_values, log_values in distributions:
        centres, reference_hist, log_hist, clipped = histogram(reference_values, log_values)
        charts.append(
            line_svg(
                f"{name}: drift" if name in failed else name,
                f"{name} (far-out values in the end bins)" if clipped else name,
                [("reference", centres, reference_hist), ("log", centres, log_hist)],
                "share of answers",
            )
        )
    warnings = "".join(f"<li>{escape(w)}</li>" for w in result["warnings"])
    meta = (
        f"Model {escape(result['model'][:12])} · {log['kept']} logged answers "
        f"({_figure(span['first'])} to {_figure(span['last'])}) against {reference['records']} "
        f"reference answers · records of other models left out: {log['other_models']} · "
        f"cut-short lines skipped: {log['skipped_lines']}"
    )
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>Drift: {'found' if result['drift'] else 'none'}</title>",
            f"<style>{STYLE}{PAGE_STYLE}</style></head><body><main>",
            f"<h1>Prediction drift</h1><div class='meta'>{meta}</div>{verdict}",
            f"<div class='warnings'><strong>Warnings</strong><ul>{warnings}</ul></div>"
            if warnings
            else "",
            "<h2>Checks</h2>",
            _checks_table(result["checks"], changes),
            "<p class='meta'>A check fails when its statistic is above its threshold and its "
            f"p-value below {_figure(result['params']['p_value'])}.</p>",
            "<h2>Distributions</h2>",
            *(f"<figure>{chart}</figure>" for chart in charts),
            "</main></body></html>\n",
        ]
    )
