"""Automation for celestial: tests, pipelines, lint, benchmarks.

Every session installs from ``uv.lock`` (``uv sync --locked``) into its own
environment, which nox reuses between runs, so a stale lock fails loudly and a
second run spends well under a second on set-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PROJECTS_DIR = ROOT / "projects"
BENCH_DIR = ROOT / "bench"
WORKFLOWS_DIR = ROOT / ".github" / "workflows"

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "tests"]

PYTHON = "3.11"


def sync(session: nox.Session, *groups: str, only: bool = False) -> None:
    """Install the locked workspace (or only ``groups``) into the session."""
    flag = "--only-group" if only else "--group"
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--no-default-groups",
        *(f"{flag}={group}" for group in groups),
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        silent=True,
    )


def dvc_projects() -> list[str]:
    """Names of the folders under ``projects/`` that hold a DVC pipeline."""
    return sorted(path.parent.name for path in PROJECTS_DIR.glob("*/dvc.yaml"))


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite of every package (pytest; arguments pass through)."""
    sync(session, "dev")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff, and the GitHub workflows with jactionlint."""
    sync(session, "lint", only=True)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("jactionlint", "--no-color", *sorted(map(str, WORKFLOWS_DIR.glob("*.yml"))))


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site with MkDocs, failing on any warning (arguments pass through)."""
    sync(session, "docs", only=True)
    session.run("mkdocs", "build", "--strict", *session.posargs)


@dataclass
class Outcome:
    """What ``dvc repro`` did in one project."""

    project: str
    status: str  # "reproduced", "up to date" or "failed"
    detail: str = ""


UP_TO_DATE = "Data and pipelines are up to date."


def repro_one(session: nox.Session, project: str) -> Outcome:
    """Run ``dvc repro`` in one project, streaming its output."""
    session.log(f"dvc repro in projects/{project}")
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=PROJECTS_DIR / project,
        env={**os.environ, "PATH": session.bin + os.pathsep + os.environ["PATH"]},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line.rstrip("\n"))
    if proc.wait() != 0:
        errors = [line for line in lines if line.startswith("ERROR")]
        return Outcome(project, "failed", errors[-1] if errors else f"exit {proc.returncode}")
    if any(UP_TO_DATE in line for line in lines):
        return Outcome(project, "up to date")
    return Outcome(project, "reproduced")


@nox.session(python=PYTHON)
def repro(session: nox.Session) -> None:
    """Reproduce the DVC pipeline of every project (or of the projects named)."""
    known = dvc_projects()
    unknown = sorted(set(session.posargs) - set(known))
    if unknown:
        session.error(f"No project named {', '.join(unknown)}; known: {', '.join(known)}.")
    sync(session)
    outcomes = [repro_one(session, name) for name in session.posargs or known]
    width = max((len(o.project) for o in outcomes), default=0)
    session.log("Summary:")
    for o in outcomes:
        session.log(f"  {o.project:<{width}}  {o.status}{': ' + o.detail if o.detail else ''}")
    failed = [o.project for o in outcomes if o.status == "failed"]
    if failed:
        session.error(f"dvc repro failed in: {', '.join(failed)}")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks under bench/ and record their figures in bench/results/."""
    sync(session, "dev")
    scripts = sorted(BENCH_DIR.glob("bench_*.py"))
    chosen = [
        s
        for s in scripts
        if not session.posargs or s.stem.removeprefix("bench_") in session.posargs
    ]
    if not chosen:
        session.error(f"No benchmark matches {session.posargs}; known: {[s.stem for s in scripts]}")
    (BENCH_DIR / "results").mkdir(exist_ok=True)
    for script in chosen:
        result = BENCH_DIR / "results" / f"{script.stem.removeprefix('bench_')}.json"
        session.run("python", str(script), "--out", str(result))


# Remote storage: a local S3 server for development, and push/pull with clear errors.
TOOLS_DIR = ROOT / "tools"


@nox.session(python=PYTHON)
def s3(session: nox.Session) -> None:
    """Start a local S3 server on 127.0.0.1 and point the DVC remote at it (.dvc/config.local)."""
    sync(session, "dev")
    session.run(
        "python", str(TOOLS_DIR / "locals3.py"), "start", "--repo", str(ROOT), *session.posargs
    )


@nox.session(name="s3-stop", python=PYTHON)
def s3_stop(session: nox.Session) -> None:
    """Stop the local S3 server and give the DVC remote its previous local settings back."""
    sync(session, "dev")
    session.run("python", str(TOOLS_DIR / "locals3.py"), "stop", "--repo", str(ROOT))


@nox.session(python=PYTHON)
def push(session: nox.Session) -> None:
    """Push data and pipeline outputs to the DVC remote (dvc push arguments pass through)."""
    sync(session)
    session.run("python", str(TOOLS_DIR / "transfer.py"), "push", *session.posargs)


@nox.session(python=PYTHON)
def pull(session: nox.Session) -> None:
    """Pull data and pipeline outputs from the DVC remote (dvc pull arguments pass through)."""
    sync(session)
    session.run("python", str(TOOLS_DIR / "transfer.py"), "pull", *session.posargs)
