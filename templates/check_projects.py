"""Check that every project still is what the template generates from its answers.

Each project records the answers it was generated with in ``.cruft.json``.
This renders the template of the working tree with those answers and compares:
every file the template writes must be identical in the project, except
``params.yaml``, whose values are the project's to tune but whose sections and
keys must be the template's; files the template does not write must be ones
DVC writes (``dvc.lock``, ``*.dvc``, the ``cache: false`` outputs of
``dvc.yaml``). The template commit the project records must hold the
template of the working tree, so that ``cruft update`` has nothing to replay.
A template change is rolled into a project with ``cruft update`` run from its
folder, after the change is committed.

Usage: ``python templates/check_projects.py [PROJECT_DIR ...]`` (default: every
``projects/*`` with a ``dvc.yaml``). Exit status 1 when a project drifted.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_DIR = ROOT / "templates" / "project"
PROJECTS_DIR = ROOT / "projects"
CRUFT_FILE = ".cruft.json"
QUIET_ENV = "CELESTIAL_TEMPLATE_QUIET"


def answers(project: Path) -> dict[str, Any]:
    """The template answers recorded in the project's ``.cruft.json``.

    Raises:
        FileNotFoundError: If the project has no ``.cruft.json``.
    """
    state = json.loads((project / CRUFT_FILE).read_text())
    context = state["context"]["cookiecutter"]
    return {key: value for key, value in context.items() if not key.startswith("_")}


def render(answers: dict[str, Any], output_dir: Path, template: Path = TEMPLATE_DIR) -> Path:
    """Bake ``template`` with ``answers`` (no prompts) into ``output_dir``; return the project."""
    saved = os.environ.get(QUIET_ENV)
    os.environ[QUIET_ENV] = "1"  # no "next steps" from the hook for a throwaway render
    try:
        baked = cookiecutter(
            str(template), no_input=True, extra_context=answers, output_dir=str(output_dir)
        )
    finally:
        if saved is None:
            del os.environ[QUIET_ENV]
        else:
            os.environ[QUIET_ENV] = saved
    return Path(baked)


def files_under(folder: Path) -> set[str]:
    """Paths of the files under ``folder`` that git would track (all of them outside git)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "."],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    return {name for name in listed.stdout.split("\0") if name and (folder / name).is_file()}


def dvc_written(dvc_yaml: Path) -> set[str]:
    """Files DVC writes that belong in git: outputs of ``dvc.yaml`` declared ``cache: false``."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    found = set()
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                if isinstance(entry, dict):
                    (path, options), *_ = entry.items()
                    if (options or {}).get("cache") is False:
                        found.add(path)
    return found


def keys(document: Any, prefix: str = "") -> set[str]:
    """The dotted keys of a params document (``train.epochs``), without the values."""
    if not isinstance(document, dict):
        return {prefix}
    return {k for key, value in document.items() for k in keys(value, f"{prefix}{key}.")}


def differences(project: Path, rendered: Path) -> Iterator[str]:
    """How ``project`` differs from ``rendered``, the template baked with its answers."""
    expected = files_under(rendered) - {CRUFT_FILE}
    present = files_under(project)
    for name in sorted(expected):
        mine, theirs = project / name, rendered / name
        if name not in present:
            yield f"{name} is missing (the template writes it)"
        elif name == "params.yaml":
            want = keys(yaml.safe_load(theirs.read_text()))
            got = keys(yaml.safe_load(mine.read_text()))
            if want != got:
                extra = ", ".join(k.rstrip(".") for k in sorted(got - want)) or "none"
                lacking = ", ".join(k.rstrip(".") for k in sorted(want - got)) or "none"
                yield f"params.yaml keys differ: not in the template: {extra}; missing: {lacking}"
        elif mine.read_bytes() != theirs.read_bytes():
            diff = difflib.unified_diff(
                theirs.read_text().splitlines(),
                mine.read_text().splitlines(),
                f"template/{name}",
                f"project/{name}",
                lineterm="",
                n=1,
            )
            yield f"{name} differs from the template:\n    " + "\n    ".join(list(diff)[:20])
    allowed = expected | {CRUFT_FILE, "dvc.lock"} | dvc_written(rendered / "dvc.yaml")
    for name in sorted(present - allowed):
        if not name.endswith(".dvc"):
            yield f"{name} is not from the template (move it into the template or a package)"


def git(folder: Path, *args: str) -> str | None:
    """The output of ``git args`` run in ``folder``, or None if git fails there."""
    done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def stale_commit(project: Path, template: Path) -> str | None:
    """Why the template commit ``project`` records is not the template's, or None if it is.

    ``cruft update`` replays every change to the template since the recorded
    commit: a project that already holds them (rendered again by hand) gets
    them twice, as rejected patches. A clone without that commit (a shallow
    one) has nothing to compare it with, and passes.
    """
    commit = json.loads((project / CRUFT_FILE).read_text()).get("commit")
    top = git(template, "rev-parse", "--show-toplevel")
    if (
        not commit
        or top is None
        or git(Path(top), "cat-file", "-e", f"{commit}^{{commit}}") is None
    ):
        return None
    where = template.resolve().relative_to(Path(top).resolve()).as_posix()
    changed = (git(Path(top), "diff", "--name-only", commit, "--", where) or "").splitlines()
    if not changed:
        return None
    return (
        f"{CRUFT_FILE} records template commit {commit[:12]}, but {where} has changed since "
        f"({len(changed)} file(s), e.g. {changed[0]}), so `cruft update` would apply those "
        "changes again. Commit the template change, then run `uv run cruft update "
        "--skip-apply-ask` in the project's folder; if the project already holds the change, "
        "`uv run cruft update --skip-update --skip-apply-ask` records the commit alone."
    )


def check(project: Path, template: Path = TEMPLATE_DIR) -> list[str]:
    """Problems that keep ``project`` from matching ``template``; empty when it matches."""
    if not (project / CRUFT_FILE).is_file():
        return [
            f"no {CRUFT_FILE}: generate projects with `uv run nox -s new` so that the "
            "answers are recorded"
        ]
    with tempfile.TemporaryDirectory() as tmp:
        rendered = render(answers(project), Path(tmp), template)
        if rendered.name != project.name:
            return [f"{CRUFT_FILE} records slug {rendered.name!r}, the folder is {project.name!r}"]
        problems = list(differences(project, rendered))
    stale = stale_commit(project, template)
    return problems + ([stale] if stale else [])


def main(argv: Sequence[str] | None = None) -> int:
    """Check the projects named in ``argv`` (default: all) and return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    projects = [Path(a) for a in args] or sorted(p.parent for p in PROJECTS_DIR.glob("*/dvc.yaml"))
    drifted = 0
    for project in projects:
        problems = check(project.resolve())
        drifted += bool(problems)
        print(f"{project.name}: {'matches the template' if not problems else 'DRIFTED'}")
        for problem in problems:
            print(f"  - {problem}")
    if drifted:
        print(
            f"{drifted} project(s) drifted from templates/project. Change the template (and "
            "run `uv run cruft update` in each project) or undo the edit.",
            file=sys.stderr,
        )
    return 1 if drifted else 0


if __name__ == "__main__":
    sys.exit(main())
