"""A self-contained HTML report of one project's metrics and plots.

The page needs no network: the project's PNGs are embedded as data URIs, the
line plots its ``dvc.yaml`` declares are drawn as inline SVG (see
`celestial_eval.charts`), and a Content-Security-Policy forbids any fetch, so
it opens the same on a laptop offline, in a CI artifact or attached to an email.

The confusion matrix has one renderer, the evaluate stage's
(`celestial_eval.confusion.draw_confusion`): a plot of DVC's ``confusion``
templates is shown as the ``confusion.png`` that stage drew beside its
``confusion.csv``, byte for byte, so the report, ``dvc plots show``'s image
and the CI report show the same figure (recall per class, never-predicted
classes named). DVC's Vega template stays DVC's own interactive view of the CSV.
"""

from __future__ import annotations

import base64
import csv
import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from celestial_eval.charts import line_svg
from celestial_eval.errors import EvalError, MissingInputError
from celestial_eval.leaderboard import find_metrics, metrics_revision

__all__ = ["PlotSpec", "build_report", "plot_specs", "write_report"]

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".svg": "image/svg+xml"}  # fmt: skip
CONFUSION_TEMPLATES = ("confusion", "confusion_normalized")
MISCLASSIFIED_SHOWN = 100


@dataclass
class PlotSpec:
    """One plot of a project, as ``dvc.yaml`` declares it.

    ``sources`` maps each data or image file (relative to the project) to the
    y fields drawn from it (empty: DVC's default, the last field).
    """

    title: str
    sources: dict[str, list[str]]
    x: dict[str, str] = field(default_factory=dict)
    template: str = "linear"
    x_label: str = ""
    y_label: str = ""


def _fields(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _spec(name: str, config: dict[str, Any] | None) -> PlotSpec:
    config = config or {}
    y = config.get("y")
    if isinstance(y, dict):
        sources = {path: _fields(fields) for path, fields in y.items()}
    else:
        sources = {name: _fields(y)}
    x = config.get("x")
    xs = dict(x) if isinstance(x, dict) else {path: x for path in sources} if x else {}
    return PlotSpec(
        title=str(config.get("title") or name),
        sources=sources,
        x=xs,
        template=str(config.get("template") or "linear"),
        x_label=str(config.get("x_label") or ""),
        y_label=str(config.get("y_label") or ""),
    )


def plot_specs(project: Path) -> list[PlotSpec]:
    """The plots declared in ``project/dvc.yaml`` (top-level and stage outputs), in order.

    Raises:
        EvalError: If dvc.yaml is not valid YAML.
    """
    path = project / "dvc.yaml"
    if not path.is_file():
        return []
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise EvalError(f"{path} is not valid YAML ({error}). Fix it and rerun.") from error
    entries = list(config.get("plots") or [])
    for stage in (config.get("stages") or {}).values():
        entries += (stage or {}).get("plots") or []
    specs = []
    for entry in entries:
        if isinstance(entry, str):
            specs.append(_spec(entry, None))
        elif isinstance(entry, dict):
            specs += [_spec(str(name), conf) for name, conf in entry.items()]
    return specs


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix in (".csv", ".tsv"):
        with open(path, newline="") as stream:
            return list(csv.DictReader(stream, delimiter="\t" if path.suffix == ".tsv" else ","))
    document = json.loads(path.read_text())
    if isinstance(document, dict):
        document = next((v for v in document.values() if isinstance(v, list)), [])
    return [row for row in document if isinstance(row, dict)]


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img src='data:{IMAGE_TYPES[path.suffix.lower()]};base64,{data}' alt='{escape(alt)}'>"


def drawn_once(specs: list[PlotSpec]) -> list[PlotSpec]:
    """``specs`` as the report draws them: confusion matrices as PNGs, each image once.

    A plot of a ``confusion`` template becomes the PNG of the same name beside
    its data (``confusion.csv`` -> ``confusion.png``, drawn by the evaluate
    stage); a plot of images already shown is dropped (the project template's
    ``dvc.yaml`` lists ``confusion.png`` too, for ``dvc plots show``).
    """
    kept: list[PlotSpec] = []
    shown: set[str] = set()
    for spec in specs:
        if spec.template in CONFUSION_TEMPLATES:
            png: dict[str, list[str]] = {
                str(PurePosixPath(s).with_suffix(".png")): [] for s in spec.sources
            }
            spec = PlotSpec(spec.title, png)
        images = {s for s in spec.sources if PurePosixPath(s).suffix.lower() in IMAGE_TYPES}
        if images == spec.sources.keys() and images <= shown:
            continue
        shown |= images
        kept.append(spec)
    return kept


def _render(project: Path, spec: PlotSpec) -> str:
    """The chart of one plot, or a note saying why it cannot be drawn."""
    charts = []
    series = []
    x_name = ""
    for source, y_fields in spec.sources.items():
        path = project / source
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_TYPES)
            charts += [_image(p, str(p.relative_to(project))) for p in files]
            continue
        if not path.is_file():
            charts.append(
                f"<p class='note'>{escape(source)} not found: <code>dvc pull</code> it, or make it "
                "with <code>dvc repro</code>.</p>"
            )
            continue
        if path.suffix.lower() in IMAGE_TYPES:
            charts.append(_image(path, source))
            continue
        rows = _rows(path)
        if not rows:
            charts.append(f"<p class='note'>{escape(source)} holds no rows.</p>")
            continue
        columns = list(rows[0])
        x_field = spec.x.get(source)
        fields = y_fields or [columns[-1]]
        x_name = x_name or x_field or "step"
        xs = [_number(r.get(x_field)) if x_field else float(i) for i, r in enumerate(rows)]
        for y_field in fields:
            label = y_field if len(spec.sources) == 1 else f"{source}: {y_field}"
            series.append((label, [x or 0.0 for x in xs], [_number(r.get(y_field)) for r in rows]))
    if series:
        charts.insert(0, line_svg(spec.title, spec.x_label or x_name, series, spec.y_label))
    return "".join(charts)


def _format(value: Any, percent: bool = True) -> str:
    if value is None:
        return "<span class='undefined' title='undefined: see the warnings'>undefined</span>"
    if isinstance(value, float) and percent:
        return f"{value:.1%}"
    return escape(f"{value:.4g}" if isinstance(value, float) else str(value))


def _metrics_html(metrics: dict[str, Any]) -> str:
    macro = metrics.get("macro") or {}
    cards = [
        ("accuracy", _format(metrics.get("accuracy"))),
        ("macro F1", _format(macro.get("f1"))),
        ("macro precision", _format(macro.get("precision"))),
        ("macro recall", _format(macro.get("recall"))),
        ("loss", _format(metrics.get("loss"), percent=False)),
        ("images", _format(metrics.get("images"))),
    ]
    varied = metrics.get("varied") or {}
    if "accuracy" in varied:  # prepare.test_varied: the test pictures' varied copies
        cards.append(("accuracy on varied copies", _format(varied["accuracy"])))
    if "accepted" in varied:
        cards.append(("varied copies accepted", _format(varied["accepted"])))
    html = ["<div class='cards'>"]
    html += [
        f"<div class='card'><div class='value'>{v}</div><div>{k}</div></div>" for k, v in cards
    ]
    html.append("</div>")
    warnings = metrics.get("warnings") or []
    if warnings:
        html.append("<div class='warnings'><strong>Warnings</strong><ul>")
        html += [f"<li>{escape(w)}</li>" for w in warnings]
        html.append("</ul></div>")
    html.append(
        "<table class='classes'><thead><tr><th>class</th><th>precision</th><th>recall</th>"
        "<th>F1</th><th>support</th><th>predicted</th></tr></thead><tbody>"
    )
    for name, values in (metrics.get("classes") or {}).items():
        cells = [_format(values.get(k)) for k in ("precision", "recall", "f1")]
        cells += [_format(values.get(k), percent=False) for k in ("support", "predicted")]
        html.append(
            f"<tr><td>{escape(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )
    html.append("</tbody></table>")
    return "".join(html)


def _misclassified_html(path: Path) -> str:
    if not path.is_file():
        return ""
    rows = _rows(path)
    if not rows:
        return (
            "<h2>Misclassified images</h2><p>None: every evaluated image was classified right.</p>"
        )
    shown = rows[:MISCLASSIFIED_SHOWN]
    more = (
        f" (the {len(shown)} most confident shown; all in {escape(path.name)})"
        if len(rows) > len(shown)
        else ""
    )
    header = "".join(f"<th>{escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row.values()) + "</tr>"
        for row in shown
    )
    return (
        f"<h2>Misclassified images</h2><p>{len(rows)} images{more}.</p>"
        f"<table class='misclassified'><thead><tr>{header}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


STYLE = """
body{font-family:'DejaVu Sans',Verdana,sans-serif;color:#1f2937;margin:0;background:#f9fafb}
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px}
h1{margin:8px 0 4px;font-size:26px}h2{margin-top:36px;font-size:19px}
.meta{color:#6b7280;margin-bottom:20px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:white;border:1px solid #e5e7eb;border-radius:10px;padding:12px 18px;
min-width:120px}
.card .value{font-size:24px;font-weight:bold}
.warnings{background:#fffbeb;border:1px solid #f59e0b;border-radius:10px;padding:10px 16px;
margin:16px 0}
table{border-collapse:collapse;background:white;margin:12px 0;font-size:14px}
th,td{border-bottom:1px solid #e5e7eb;padding:6px 12px;text-align:right}
th:first-child,td:first-child{text-align:left}
td:first-child{max-width:28em;overflow-wrap:anywhere}
.misclassified td{text-align:left}
.undefined{color:#b45309;font-style:italic}
figure{background:white;border:1px solid #e5e7eb;border-radius:10px;padding:16px;margin:16px 0;
overflow-x:auto}
figure img{max-width:100%;height:auto;display:block}
figcaption{color:#6b7280;font-size:13px;margin-bottom:8px}
.note{color:#b45309}
pre{background:white;border:1px solid #e5e7eb;border-radius:10px;padding:12px;overflow-x:auto}
"""
# No script, no remote anything: the browser itself refuses every fetch.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def build_report(project_dir: str | Path) -> str:
    """The HTML of ``project_dir``'s report.

    Raises:
        MissingInputError: If the project or its metrics file does not exist.
    """
    project = Path(project_dir)
    if not project.is_dir():
        raise MissingInputError(f"Project folder {project} not found. Pass a project folder.")
    metrics_path = find_metrics(project)
    if not metrics_path.is_file():
        raise MissingInputError(
            f"No metrics at {metrics_path}. Pull them (dvc pull) or run the pipeline "
            f"(dvc repro) in {project} first."
        )
    try:
        metrics = json.loads(metrics_path.read_text())
    except ValueError as error:
        raise EvalError(
            f"{metrics_path} is not valid JSON ({error}). Rerun the evaluate stage."
        ) from error
    evaluation = metrics_path.parent
    revision, modified = metrics_revision(metrics_path)
    state = (
        "not committed"
        if revision is None
        else f"revision {revision}" + (" with local changes" if modified else "")
    )
    specs = drawn_once(plot_specs(project) or default_specs(project, evaluation))
    declared = {project / s for spec in specs for s in spec.sources}
    extra = [
        p
        for p in sorted(evaluation.glob("*.png"))
        if p not in declared and not any(d.is_dir() and d in p.parents for d in declared)
    ]
    figures = [
        f"<figure><figcaption>{escape(', '.join(spec.sources))}</figcaption>"
        f"{_render(project, spec)}</figure>"
        for spec in specs
    ]
    figures += [
        f"<figure><figcaption>{escape(str(p.relative_to(project)))}</figcaption>"
        f"{_image(p, p.name)}</figure>"
        for p in extra
    ]
    params = project / "params.yaml"
    name = escape(project.resolve().name)
    split = {"val": "validation"}.get(metrics.get("split"), metrics.get("split"))
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>{name}: evaluation</title><style>{STYLE}</style></head><body><main>",
            f"<h1>{name}</h1><div class='meta'>Measured on the {escape(str(split))} split "
            f"({metrics.get('images')} images) · metrics {escape(state)} · "
            f"{escape(str(metrics_path.relative_to(project)))}</div>",
            _metrics_html(metrics),
            "<h2>Plots</h2>",
            *figures,
            _misclassified_html(evaluation / "misclassified.csv"),
            f"<h2>Parameters</h2><pre>{escape(params.read_text())}</pre>"
            if params.is_file()
            else "",
            "</main></body></html>\n",
        ]
    )


def default_specs(project: Path, evaluation: Path) -> list[PlotSpec]:
    """The evaluate stage's plots, for a project whose dvc.yaml declares none."""
    folder = str(evaluation.relative_to(project))
    confusion, history = f"{folder}/confusion.csv", f"{folder}/history.csv"
    return [
        PlotSpec(
            "Confusion matrix", {confusion: ["predicted"]}, {confusion: "actual"}, "confusion"
        ),
        PlotSpec("Loss", {history: ["loss", "val_loss"]}, {history: "epoch"}),
        PlotSpec("Accuracy", {history: ["accuracy", "val_accuracy"]}, {history: "epoch"}),
    ]


def write_report(project_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write the report of ``project_dir`` to ``output`` (default: ``PROJECT_DIR/report.html``).

    Returns:
        The path written.
    """
    html = build_report(project_dir)
    path = Path(output) if output else Path(project_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
