"""Write the Markdown report that the MLOps workflow posts on a pull request.

For every project under ``projects/`` (a folder with a ``dvc.yaml``) the report
holds the params and metrics that changed against a base revision, as DVC's
own Markdown tables, and the image plots of the base beside the workspace's.
The cross-project leaderboard comes first. Run it from the repository root
after ``dvc pull`` and ``dvc repro``:

    python .github/scripts/cml_report.py --base origin/main --out report/report.md

Images are written next to the report, under ``plots/<project>/``, and linked
by relative paths so that ``cml comment update report.md`` can upload them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

WORKSPACE = "workspace"
# Plots the report shows as pictures; DVC's data plots need a browser to draw.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg"}
# Metrics shown folded: per class (metrics.json), per held-out class and per
# score (rejection.json).
DETAIL_PREFIXES = ("classes.", "held_out.", "by_score.")


def run(command: Sequence[str], cwd: Path) -> str:
    """Run ``command`` in ``cwd`` and return its standard output.

    Raises:
        SystemExit: If the command fails; its standard error is shown first.
    """
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(
            f"cml_report: error: '{' '.join(command)}' failed in {cwd} (exit {proc.returncode})."
        )
    return proc.stdout


def projects(root: Path) -> list[Path]:
    """Project folders under ``root``: those that hold a ``dvc.yaml``, by name."""
    return sorted(path.parent for path in root.glob("*/dvc.yaml"))


def own_rows(table: str) -> str:
    """The rows of a DVC Markdown table that belong to the current project.

    DVC collects params, metrics and plots from every ``dvc.yaml`` of the
    repository whatever the working directory; paths of other projects start
    with ``../``. Returns an empty string when no row is left.
    """
    lines = [line for line in table.strip().splitlines() if line.strip()]
    header, rows = lines[:2], lines[2:]
    own = [row for row in rows if not row.lstrip("| ").startswith("../")]
    return "\n".join(header + own) if own else ""


def table_or(text: str, empty: str) -> str:
    """The project's rows of DVC's table, or the sentence ``empty`` when none."""
    text = own_rows(text)
    return text if text else f"_{empty}_"


def metrics_tables(text: str, empty: str) -> str:
    """The project's metrics table, detail rows folded under ``<details>``.

    The metrics files hold a dozen headline figures, and then figures per
    class, per held-out class and per score: the headline stays in view, the
    rest opens on demand.
    """
    table = own_rows(text)
    if not table:
        return f"_{empty}_"
    lines = table.splitlines()
    header, rows = lines[:2], lines[2:]

    def per_class(row: str) -> bool:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        return len(cells) > 1 and cells[1].startswith(DETAIL_PREFIXES)

    headline = [row for row in rows if not per_class(row)]
    classes = [row for row in rows if per_class(row)]
    parts = ["\n".join(header + headline)] if headline else []
    if classes:
        parts.append(
            f"<details><summary>Per class and per score ({len(classes)} rows)</summary>\n\n"
            + "\n".join(header + classes)
            + "\n\n</details>"
        )
    return "\n\n".join(parts)


def image_plots(
    project: Path, base: str, out_dir: Path
) -> tuple[dict[str, dict[str, Path]], list[str]]:
    """Render the image plots of ``base`` and of the workspace into ``out_dir``.

    Returns:
        For each image plot path, the image file of each revision that has it
        (``base`` and ``"workspace"``); and a line per plot DVC could not load
        image (typically an output missing from the remote).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    document = json.loads(
        run(["dvc", "plots", "diff", base, "--json", "--out", str(out_dir.resolve())], project)
    )
    errors = [
        f"`{e.get('name')}` ({e.get('rev')}): {e.get('msg')}"
        for e in document.get("errors", [])
        if Path(str(e.get("name", ""))).suffix.lower() in IMAGE_SUFFIXES
        and not str(e.get("name", "")).startswith("../")
    ]
    images: dict[str, dict[str, Path]] = {}
    for path, entries in sorted(document.get("data", {}).items()):
        if path.startswith("../"):  # another project's plot
            continue
        for entry in entries:
            if entry.get("type") != "image":
                continue
            for revision in entry.get("revisions", []):
                images.setdefault(path, {})[revision] = Path(entry["url"])
    return images, errors


def image_cell(image: Path | None, report_dir: Path, alt: str) -> str:
    """A Markdown image linked relative to the report, or ``(none)`` when missing."""
    if image is None:
        return "(none)"
    return f"![{alt}]({Path(os.path.relpath(image, report_dir)).as_posix()})"


def project_section(project: Path, base: str, report_dir: Path) -> str:
    """The report's section of one project: params, metrics and plots."""
    params = run(["dvc", "params", "diff", base, "--md"], project)
    metrics = run(["dvc", "metrics", "diff", base, "--md"], project)
    images, errors = image_plots(project, base, report_dir / "plots" / project.name)
    lines = [
        f"## {project.name}",
        "",
        "### Params",
        "",
        table_or(params, f"No params changed against {base}."),
        "",
        "### Metrics",
        "",
        metrics_tables(metrics, f"No metrics changed against {base}."),
        "",
        "### Plots",
        "",
    ]
    if images:
        lines += [f"| plot | {base} | this pull request |", "| --- | --- | --- |"]
        for path, revisions in images.items():
            name = Path(path).name
            lines.append(
                f"| `{path}` "
                f"| {image_cell(revisions.get(base), report_dir, f'{name} ({base})')} "
                f"| {image_cell(revisions.get(WORKSPACE), report_dir, f'{name} (pull request)')} |"
            )
    elif not errors:
        lines.append("_No image plots declared in dvc.yaml._")
    if errors:
        lines += [*([""] if images else []), "Plots DVC could not load:", ""]
        lines += [f"- {error}" for error in errors]
    return "\n".join(lines) + "\n"


def build_report(root: Path, base: str, report: Path) -> str:
    """The whole report: heading, leaderboard, then one section per project."""
    projects_dir = root / "projects"
    leaderboard = run(
        ["celestial-eval", "leaderboard", str(projects_dir), "--format", "markdown"], root
    )
    sections = [
        "# MLOps report",
        "",
        f"Params, metrics and plots of this pull request against `{base}`, "
        "after `dvc pull` and `nox -s repro`.",
        "",
        "## Leaderboard",
        "",
        leaderboard.strip(),
        "",
    ]
    sections += [project_section(p, base, report.parent) for p in projects(projects_dir)]
    return "\n".join(sections)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, write the report and return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with")
    parser.add_argument("--out", type=Path, default=Path("report/report.md"), help="report file")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(build_report(args.root.resolve(), args.base, args.out.resolve()))
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
