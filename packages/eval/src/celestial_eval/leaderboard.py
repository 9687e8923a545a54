"""One row of headline metrics per project, for people (Markdown) and machines (JSON)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from celestial_data.command import counted
from celestial_eval.errors import EvalError, MissingInputError

__all__ = [
    "DEFAULT_METRICS",
    "find_metrics",
    "leaderboard",
    "metrics_revision",
    "to_json",
    "to_markdown",
]

# Where the project template's evaluate stage writes its metrics.
DEFAULT_METRICS = "evaluation/metrics.json"


def find_metrics(project: Path) -> Path:
    """The project's metrics file: the first ``metrics`` entry of its dvc.yaml.

    Falls back to ``evaluation/metrics.json`` when dvc.yaml declares none.
    """
    try:
        config = yaml.safe_load((project / "dvc.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    declared = list(config.get("metrics") or []) if isinstance(config, dict) else []
    for stage in (config.get("stages") or {}).values() if isinstance(config, dict) else []:
        for entry in (stage or {}).get("metrics") or []:
            declared.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    for entry in declared:
        if isinstance(entry, str):
            return project / entry
    return project / DEFAULT_METRICS


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError:
        return None


def metrics_revision(path: Path) -> tuple[str | None, bool]:
    """The last commit that recorded ``path``, and whether the file differs from it.

    A metrics file that DVC keeps out of git is recorded by the ``dvc.lock``
    next to it, so that file's history is used instead.

    Returns:
        ``(short hash, modified)``; ``(None, True)`` when no commit records it
        (untracked, or not in a git repository).
    """
    folder = path.parent
    tracked = _git(folder, "ls-files", "--error-unmatch", path.name)
    if tracked is None:
        return None, True
    target = path
    if tracked.returncode != 0:
        ignored = _git(folder, "check-ignore", "-q", path.name)
        lock = next(
            (p / "dvc.lock" for p in (folder, *folder.parents) if (p / "dvc.lock").is_file()), None
        )
        if not ignored or ignored.returncode != 0 or lock is None:
            return None, True
        target = lock
    log = _git(target.parent, "log", "-1", "--format=%h", "--", target.name)
    revision = log.stdout.strip() if log and log.returncode == 0 else ""
    if not revision:
        return None, True
    diff = _git(target.parent, "diff", "--quiet", "HEAD", "--", target.name)
    return revision, bool(diff and diff.returncode != 0)


def project_row(project: Path) -> dict[str, Any]:
    """The leaderboard entry of one project folder."""
    path = find_metrics(project)
    row: dict[str, Any] = {"project": project.name, "metrics": None}
    if not path.is_file():
        return row
    try:
        metrics = json.loads(path.read_text())
    except ValueError as error:
        raise EvalError(f"{path} is not valid JSON ({error}). Rerun the evaluate stage.") from error
    revision, modified = metrics_revision(path)
    row.update(
        metrics=str(path.relative_to(project)),
        split=metrics.get("split"),
        images=(metrics.get("dataset") or {}).get("images"),
        classes=(metrics.get("dataset") or {}).get("classes"),
        evaluated=metrics.get("images"),
        accuracy=metrics.get("accuracy"),
        macro_f1=(metrics.get("macro") or {}).get("f1"),
        varied_accuracy=(metrics.get("varied") or {}).get("accuracy"),
        model_bytes=(metrics.get("model") or {}).get("size_bytes"),
        model_parameters=(metrics.get("model") or {}).get("parameters"),
        revision=revision,
        modified=modified,
    )
    return row


def leaderboard(projects_dir: str | Path) -> list[dict[str, Any]]:
    """The entries of every project (a folder with a dvc.yaml) under ``projects_dir``, by name.

    Raises:
        MissingInputError: If the folder does not exist or holds no project.
    """
    projects_dir = Path(projects_dir)
    if not projects_dir.is_dir():
        raise MissingInputError(
            f"Projects folder {projects_dir} not found. Pass the folder that holds the "
            "projects (default: ./projects)."
        )
    projects = sorted(p.parent for p in projects_dir.glob("*/dvc.yaml"))
    if not projects:
        raise MissingInputError(
            f"No project under {projects_dir} (no */dvc.yaml). Pass the folder that holds "
            "the projects."
        )
    return [project_row(p) for p in projects]


def _size(row: dict[str, Any]) -> str:
    size = row.get("model_bytes")
    if size is None:
        return "-"
    text = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
    params = row.get("model_parameters")
    return f"{text} ({params:,} params)" if params else text


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _revision(row: dict[str, Any]) -> str:
    if row.get("revision") is None:
        return "not committed"
    return f"`{row['revision']}`" + (" + local changes" if row.get("modified") else "")


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of ``rows``, one line per project."""
    header = [
        "project",
        "images",
        "classes",
        "accuracy",
        "macro F1",
        "varied copies",
        "model size",
        "metrics revision",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * 6 + ["---"]) + "|",
    ]
    for row in rows:
        if row["metrics"] is None:
            cells = [row["project"], "-", "-", "no metrics yet", "-", "-", "-", "-"]
        else:
            accuracy = _percent(row.get("accuracy"))
            if row.get("split"):
                accuracy += f" ({row['split']}, {counted(row.get('evaluated') or 0, 'image')})"
            cells = [
                row["project"],
                str(row.get("images") or "-"),
                str(row.get("classes") or "-"),
                accuracy,
                _percent(row.get("macro_f1")),
                _percent(row.get("varied_accuracy")),
                _size(row),
                _revision(row),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as a JSON document ``{"projects": [...]}``."""
    return json.dumps({"projects": list(rows)}, indent=2) + "\n"
