"""One project's params, metrics, plots and experiments, in a terminal 100 columns wide.

The repository is one DVC repository, so DVC's own views, typed in a project
folder, show every project: ``dvc metrics show`` prints one column per metric
of every project (thousands of columns: the metrics files hold figures per
class), ``dvc exp show`` squeezes hundreds of columns into ellipses, and
``dvc plots diff`` loads every project's images, fetching from the remote those
of projects that were never pulled. DVC's ``--targets`` would narrow them, but
each command reads its targets differently: ``params diff`` from the
repository root, ``metrics diff`` from the current folder, and ``plots diff``
matches ``evaluation/confusion.png`` in every project. This names each
project's own files the way each command wants them, from ``dvc.yaml``, and
prints the tables DVC cannot make narrow (``metrics`` and ``exp``) as rows or
as a few chosen columns.

Usage: ``python tools/views.py PROJECT_DIR {params,metrics,plots,exp} [options]``
(what ``nox -s show -- [PROJECT] VIEW ...`` runs). Exit status 2 for a usage
error, else that of DVC.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROG = "celestial-show"
#: The widest table the views print (``exp``), in columns.
WIDTH = 100
#: Metrics kept out of ``exp``'s default columns: per class, per held-out class, per score.
DETAIL_PREFIXES = ("classes.", "held_out.", "by_score.")
#: Digits after the point, as DVC rounds metrics.
PRECISION = 5


class ViewError(Exception):
    """A project folder or an option the views cannot use; the message names the fix."""


@dataclass(frozen=True)
class Project:
    """A project folder, the DVC repository around it, and the files its ``dvc.yaml`` names."""

    folder: Path
    root: Path
    params: tuple[str, ...]
    metrics: tuple[str, ...]
    plots: tuple[str, ...]

    @property
    def prefix(self) -> str:
        """The folder from the repository root: ``projects/NAME``."""
        return self.folder.relative_to(self.root).as_posix()

    def from_root(self, path: str) -> str:
        """``path`` (relative to the project) as DVC names it from the repository root."""
        return f"{self.prefix}/{path}" if self.prefix != "." else path


def _entries(items: Iterable[Any] | None) -> list[str]:
    """The paths of a ``deps``/``metrics``/``plots`` list: plain strings or one-key mappings."""
    return [item if isinstance(item, str) else next(iter(item)) for item in items or []]


def load_project(folder: Path) -> Project:
    """Read ``folder/dvc.yaml`` and find the DVC repository around it.

    Raises:
        ViewError: If the folder holds no ``dvc.yaml`` or lies in no DVC repository.
    """
    folder = folder.resolve()
    pipeline = folder / "dvc.yaml"
    if not pipeline.is_file():
        raise ViewError(
            f"{folder} holds no dvc.yaml. Name a project folder, e.g. projects/synthetic-bodies."
        )
    root = next((p for p in (folder, *folder.parents) if (p / ".dvc").is_dir()), None)
    if root is None:
        raise ViewError(f"{folder} is in no DVC repository (no .dvc/ above it). Run `dvc init`.")
    config = yaml.safe_load(pipeline.read_text()) or {}
    stages = (config.get("stages") or {}).values()
    params = {"params.yaml"}
    for stage in stages:
        params |= {p for p in stage.get("params") or [] if isinstance(p, dict) for p in p}
    metrics = _entries(config.get("metrics")) + [
        path for stage in stages for path in _entries(stage.get("metrics"))
    ]
    # Plots named in dvc.yaml's top-level list are targeted as dvc.yaml::NAME, files by path.
    plots = []
    for entry in config.get("plots") or []:
        if isinstance(entry, str):
            plots.append(entry)
        else:
            plots.append(f"dvc.yaml::{next(iter(entry))}")
    plots += [path for stage in stages for path in _entries(stage.get("plots"))]
    return Project(folder, root, tuple(sorted(params)), tuple(metrics), tuple(plots))


def dvc(*args: str, cwd: Path, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Run this environment's ``dvc`` in ``cwd``; output to the terminal unless captured."""
    command = [str(Path(sys.executable).parent / "dvc"), *args]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, text=True, capture_output=capture)


def dvc_json(*args: str, cwd: Path) -> Any:
    """The JSON that ``dvc ARGS --json`` prints.

    Raises:
        ViewError: If DVC fails; the message ends with its last line.
    """
    done = dvc(*args, "--json", cwd=cwd, capture=True)
    if done.returncode != 0:
        said = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise ViewError(f"'dvc {' '.join(args[:2])}' failed: {said[-1] if said else 'no output'}")
    return json.loads(done.stdout or "null")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``; lists (warnings, class lists) are left out."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {} if isinstance(data, list) else {prefix.rstrip("."): data}


def cell(value: Any) -> str:
    """A value as DVC prints it: floats rounded, a missing value as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(round(value, PRECISION))
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """A plain table (columns two spaces apart, as DVC prints them) or a Markdown one."""
    if markdown:
        lines = [header, ["---"] * len(header), *rows]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in (header, *rows)
    )


# The views


def show_params(project: Project, args: argparse.Namespace) -> int:
    """``dvc params diff`` of the project's params files (targets from the repository root)."""
    targets = [project.from_root(path) for path in project.params]
    return dvc(
        "params", "diff", *args.revisions, "--targets", *targets, *args.dvc, cwd=project.folder
    ).returncode


def show_metrics(project: Project, args: argparse.Namespace) -> int:
    """The project's metrics one per row; with revisions, ``dvc metrics diff`` of its files."""
    if not project.metrics:
        raise ViewError(f"{project.prefix}/dvc.yaml declares no metrics.")
    if args.revisions:
        return dvc(
            "metrics",
            "diff",
            *args.revisions,
            "--targets",
            *project.metrics,
            *args.dvc,
            *(["--md"] if args.md else []),
            cwd=project.folder,
        ).returncode
    shown = dvc_json("metrics", "show", *project.metrics, *args.dvc, cwd=project.folder)
    rows = []
    for revision in shown.values():
        for path, found in (revision.get("data") or {}).items():
            if "error" in found:
                rows.append([path, "(not readable)", str(found["error"].get("msg", "error"))])
            for key, value in flatten(found.get("data")).items():
                rows.append([path, key, cell(value)])
    print(table(["Path", "Metric", "Value"], rows, args.md))
    return 0


def show_plots(project: Project, args: argparse.Namespace) -> int:
    """``dvc plots diff`` of the project's plots alone, from the repository root."""
    targets = [project.from_root(path) for path in project.plots]
    if not targets:
        raise ViewError(f"{project.prefix}/dvc.yaml declares no plots.")
    out = args.out or project.folder / "dvc_plots"
    return dvc(
        "plots",
        "diff",
        *args.revisions,
        "--targets",
        *targets,
        "--out",
        str(out.resolve()),
        *args.dvc,
        cwd=project.root,
    ).returncode


@dataclass(frozen=True)
class ExpRow:
    """One row of ``dvc exp show``: a commit, the workspace or an experiment."""

    name: str
    values: dict[str, Any]


def exp_rows(project: Project, shown: list[dict[str, Any]]) -> tuple[list[ExpRow], list[str]]:
    """The rows of ``dvc exp show --json`` with the project's params and metrics.

    Returns:
        The rows, and the names of the params and then of the metrics, in file order.
    """
    params = [project.from_root(path) for path in project.params]
    metrics = [project.from_root(path) for path in project.metrics]

    def values(data: dict[str, Any] | None) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for kind, paths in (("params", params), ("metrics", metrics)):
            for path in paths:
                section = ((data or {}).get(kind) or {}).get(path) or {}
                found.update(flatten(section.get("data")))
        return found

    rows: list[ExpRow] = []
    for baseline in shown:
        rev = str(baseline.get("rev", ""))
        name = baseline.get("name") or (rev if rev == "workspace" else rev[:7])
        rows.append(ExpRow(name, values(baseline.get("data"))))
        for experiment in baseline.get("experiments") or []:
            state = ((experiment.get("executor") or {}).get("state")) or "success"
            for revision in experiment.get("revs") or []:
                label = revision.get("name") or str(revision.get("rev", ""))[:7]
                label += "" if state == "success" else f" ({state})"
                rows.append(ExpRow(f"  {label}", values(revision.get("data"))))
    names = list(dict.fromkeys(key for row in rows for key in row.values))
    return rows, names


def exp_columns(
    rows: list[ExpRow], names: list[str], metric_names: set[str], keep: list[str]
) -> list[str]:
    """The columns ``exp`` would show: those kept, else changed params and headline metrics."""
    if keep:
        pattern = re.compile("|".join(f"(?:{k})" for k in keep))
        return [name for name in names if pattern.fullmatch(name)]
    changed = [
        name
        for name in names
        if name not in metric_names and len({cell(row.values.get(name)) for row in rows}) > 1
    ]
    headline = [
        name
        for name in names
        if name in metric_names
        and not name.startswith(DETAIL_PREFIXES)
        and any(isinstance(row.values.get(name), int | float) for row in rows)
    ]
    # The metrics that differ between the rows first: they are what a comparison is for.
    return changed + sorted(headline, key=lambda name: name not in changed_metrics(rows, name))


def changed_metrics(rows: list[ExpRow], name: str) -> set[str]:
    """``{name}`` if the rows disagree on it, else an empty set."""
    return {name} if len({cell(row.values.get(name)) for row in rows}) > 1 else set()


def show_exp(project: Project, args: argparse.Namespace) -> int:
    """``dvc exp show`` of the project: its experiments, changed params and headline metrics."""
    shown = dvc_json("exp", "show", *args.dvc, cwd=project.folder) or []
    rows, names = exp_rows(project, shown)
    metric_names = _metric_names(project, shown)
    wanted = exp_columns(rows, names, metric_names, args.keep)
    header = ["Experiment"]
    width = max(len(header[0]), *(len(row.name) for row in rows))
    left_out = []
    for name in wanted:
        column = max(len(name), *(len(cell(row.values.get(name))) for row in rows))
        if args.md or width + 2 + column <= args.width:
            header.append(name)
            width += 2 + column
        else:
            left_out.append(name)
    body = [[row.name] + [cell(row.values.get(n)) for n in header[1:]] for row in rows]
    print(table(header, body, args.md))
    if left_out:
        note = (
            f"{len(left_out)} more columns left out to fit {args.width} columns: "
            f"{', '.join(left_out)}. Choose with --keep REGEX (or --width)."
        )
        print(textwrap.fill(note, width=args.width))
    return 0


def _metric_names(project: Project, shown: list[dict[str, Any]]) -> set[str]:
    """The flattened keys of the project's metrics files, in any row of ``shown``."""
    metrics = [project.from_root(path) for path in project.metrics]
    names: set[str] = set()
    for baseline in shown:
        datas = [baseline.get("data")] + [
            revision.get("data")
            for experiment in baseline.get("experiments") or []
            for revision in experiment.get("revs") or []
        ]
        for data in datas:
            for path in metrics:
                section = (((data or {}).get("metrics")) or {}).get(path) or {}
                names |= set(flatten(section.get("data")))
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command line: a project folder, then one view with its options."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="One project's params, metrics, plots and experiments."
    )
    parser.add_argument("project", type=Path, help="the project folder (holds dvc.yaml)")
    views = parser.add_subparsers(dest="view", required=True, metavar="VIEW")

    def view(name: str, run: Any, help: str, revisions: bool = True) -> argparse.ArgumentParser:
        sub = views.add_parser(name, help=help, description=help)
        if revisions:
            sub.add_argument(
                "revisions", nargs="*", metavar="REV", help="git revisions to compare (DVC's)"
            )
        sub.set_defaults(run=run)
        return sub

    params = view(
        "params", show_params, "params that changed against HEAD or REV (dvc params diff)"
    )
    params.add_argument("--all", dest="dvc", action="append_const", const="--all")
    params.add_argument("--md", dest="dvc", action="append_const", const="--md")
    metrics = view(
        "metrics",
        show_metrics,
        "every metric, one per row; with REV, what changed against it (dvc metrics diff)",
    )
    metrics.add_argument("--all", dest="dvc", action="append_const", const="--all")
    metrics.add_argument("--md", action="store_true", help="print Markdown")
    plots = view("plots", show_plots, "the plots of HEAD or REV beside the workspace's")
    plots.add_argument("-o", "--out", type=Path, help="HTML folder (default: PROJECT/dvc_plots)")
    plots.add_argument("--json", dest="dvc", action="append_const", const="--json")
    exp = view("exp", show_exp, "experiments: changed params and headline metrics", False)
    exp.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="REGEX",
        help="show the params and metrics whose whole name matches (repeatable)",
    )
    exp.add_argument("--width", type=int, default=WIDTH, help=f"columns (default {WIDTH})")
    exp.add_argument("--md", action="store_true", help="print Markdown, every column")
    for flag in ("--all-commits", "--all-branches"):
        exp.add_argument(flag, dest="dvc", action="append_const", const=flag)
    exp.add_argument("-n", "--num", dest="dvc", type=lambda n: f"--num={int(n)}", action="append")
    for sub in (params, metrics, plots, exp):
        sub.set_defaults(dvc=[])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, show the view; usage and project errors in one line, exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.dvc = args.dvc or []
    try:
        project = load_project(args.project)
        return int(args.run(project, args))
    except ViewError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
