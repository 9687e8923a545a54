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
    """Check style with ruff, types with mypy, and the GitHub workflows with jactionlint."""
    sync(session, "lint")  # the workspace too: mypy follows the packages' imports
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("jactionlint", "--no-color", *sorted(map(str, WORKFLOWS_DIR.glob("*.yml"))))


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Regenerate the params reference, then build the site with MkDocs, strictly."""
    sync(session, "docs")  # the workspace too: the params reference is read from its models
    session.run("python", "tools/params_reference.py")
    # NO_MKDOCS_2_WARNING: Material's banner about its successor, not a build problem.
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@dataclass
class Outcome:
    """What ``dvc repro`` did in one project."""

    project: str
    status: str  # "reproduced", "up to date", "skipped" or "failed"
    detail: str = ""


UP_TO_DATE = "Data and pipelines are up to date."
STRICT_ENV = "CELESTIAL_REPRO_STRICT"
# A remote that does not answer must not hang the session.
PULL_TIMEOUT_S = 600


def tracked_paths(project_dir: Path) -> list[tuple[Path, Path]]:
    """``(dvc_file, path)`` for each output recorded by a ``.dvc`` file of the project."""
    found = []
    for dvc_file in sorted(project_dir.glob("**/*.dvc")):
        for line in dvc_file.read_text().splitlines():
            key, _, value = line.strip().removeprefix("- ").partition(":")
            if key == "path":
                found.append((dvc_file, dvc_file.parent / value.strip().strip("'\"")))
    return found


def unproduced_inputs(project_dir: Path) -> list[str]:
    """Stage inputs inside the project that no stage and no ``.dvc`` file provides."""
    import yaml  # DVC's own dependency, present wherever DVC is

    stages = (yaml.safe_load((project_dir / "dvc.yaml").read_text()) or {}).get("stages", {})

    def paths(stage: dict, key: str) -> list[str]:
        entries = stage.get(key) or []
        return [e if isinstance(e, str) else next(iter(e)) for e in entries]

    kinds = ("outs", "metrics", "plots")
    provided = {p for stage in stages.values() for k in kinds for p in paths(stage, k)}
    provided |= {str(p.relative_to(project_dir)) for _, p in tracked_paths(project_dir)}
    return sorted(
        dep
        for stage in stages.values()
        for dep in paths(stage, "deps")
        if not dep.startswith("..") and dep not in provided and not (project_dir / dep).exists()
    )


def last_error(output: str) -> str:
    """The last ``ERROR`` line of DVC's output (or its last line), for one-line reports."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1]


AWS_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def missing_credentials(project_dir: Path, dvc: str = "dvc") -> str | None:
    """Why an S3 remote certainly cannot be read here, or None when it may be.

    Without any credentials, the AWS SDK would spend many seconds asking the
    cloud metadata address before failing: a fresh clone must not wait for
    that on every run, so a pull is only tried where credentials are set.
    """
    listing = subprocess.run(
        [dvc, "config", "--list"], cwd=project_dir, capture_output=True, text=True
    ).stdout
    config = dict(line.partition("=")[::2] for line in listing.splitlines() if "=" in line)
    name = config.get("core.remote")
    url = config.get(f"remote.{name}.url", "")
    if not name or not url.startswith("s3://"):
        return None
    keys = ("access_key_id", "profile", "credentialpath")
    if any(f"remote.{name}.{key}" in config for key in keys):
        return None
    if any(os.environ.get(variable) for variable in AWS_CREDENTIAL_VARIABLES):
        return None
    aws_dir = Path(os.environ.get("HOME", "~")).expanduser() / ".aws"
    if (aws_dir / "credentials").is_file() or (aws_dir / "config").is_file():
        return None
    return f"no credentials are configured for the remote '{name}' ({url})"


def skip_reason(project_dir: Path, dvc: str = "dvc") -> str | None:
    """Why the project's input data cannot be had, or None once it is in the workspace.

    Data tracked by a ``.dvc`` file but absent from the workspace is checked
    out from the DVC cache, else pulled from the remote; only when both fail is
    the project skipped. The reason names the fix.
    """
    here = project_dir.relative_to(project_dir.parent.parent)
    for dvc_file, path in tracked_paths(project_dir):
        if path.exists():
            continue
        target = str(dvc_file.relative_to(project_dir))
        run = {"cwd": project_dir, "capture_output": True, "text": True}
        if subprocess.run([dvc, "checkout", "--quiet", target], **run).returncode == 0:
            continue
        error = missing_credentials(project_dir, dvc)
        if error is None:
            try:
                pulled = subprocess.run([dvc, "pull", target], timeout=PULL_TIMEOUT_S, **run)
                if pulled.returncode != 0:
                    error = last_error(pulled.stdout + pulled.stderr)
            except subprocess.TimeoutExpired:
                error = f"dvc pull gave no answer in {PULL_TIMEOUT_S} s"
        if error:
            return (
                f"{path.relative_to(project_dir)} is neither in the workspace nor in the DVC "
                f"cache, and the remote cannot provide it ({error}); fix: run `uv run dvc pull` "
                f"in {here} with access to the remote, or put the original data there "
                f"({here}/README.md says where it comes from)"
            )
    missing = unproduced_inputs(project_dir)
    if missing:
        return (
            f"{', '.join(missing)} does not exist and no stage or .dvc file provides it; fix: "
            f"put the data there and run `uv run dvc add {missing[0]}` in {here}"
        )
    return None


def repro_one(session: nox.Session, project: str, strict: bool) -> Outcome:
    """Run ``dvc repro`` in one project, streaming its output."""
    project_dir = PROJECTS_DIR / project
    reason = skip_reason(project_dir, str(Path(session.bin) / "dvc"))
    if reason:
        return Outcome(project, "failed" if strict else "skipped", reason)
    session.log(f"dvc repro in projects/{project}")
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=project_dir,
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
        return Outcome(project, "failed", last_error("\n".join(lines)))
    if any(UP_TO_DATE in line for line in lines):
        return Outcome(project, "up to date")
    return Outcome(project, "reproduced")


@nox.session(python=PYTHON)
def repro(session: nox.Session) -> None:
    """Reproduce every project's DVC pipeline (or those named; --strict: no skipping)."""
    names = [arg for arg in session.posargs if arg != "--strict"]
    strict = "--strict" in session.posargs or os.environ.get(STRICT_ENV, "") not in ("", "0")
    known = dvc_projects()
    unknown = sorted(set(names) - set(known))
    if unknown:
        session.error(f"No project named {', '.join(unknown)}; known: {', '.join(known)}.")
    sync(session)
    outcomes = [repro_one(session, name, strict) for name in names or known]
    width = max((len(o.project) for o in outcomes), default=0)
    session.log("Summary:")
    for o in outcomes:
        line = f"  {o.project:<{width}}  {o.status}{': ' + o.detail if o.detail else ''}"
        (session.warn if o.status == "skipped" else session.log)(line)
    failed = [o.project for o in outcomes if o.status == "failed"]
    if failed:
        mode = f" (strict mode: {STRICT_ENV} or --strict turns a skip into a failure)"
        session.error(f"dvc repro failed in: {', '.join(failed)}{mode if strict else ''}")


TEMPLATE_DIR = ROOT / "templates" / "project"


@nox.session(python=PYTHON)
def new(session: nox.Session) -> None:
    """Create projects/<slug> from the template (cookiecutter arguments pass through)."""
    sync(session, "dev")
    # An absolute template path lets the template record itself in .cruft.json.
    session.run(
        "cookiecutter", str(TEMPLATE_DIR), "--output-dir", str(PROJECTS_DIR), *session.posargs
    )


@nox.session(python=PYTHON)
def template(session: nox.Session) -> None:
    """Bake and run the project template, and check every project still matches it."""
    sync(session, "dev")
    session.run("pytest", "tests/test_template.py", "-p", "no:cacheprovider", *session.posargs)
    session.run("python", "templates/check_projects.py")


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


@nox.session(python=PYTHON)
def serve(session: nox.Session) -> None:
    """Serve a project's trained model on 127.0.0.1:8000 (nox -s serve -- PROJECT [options])."""
    if not session.posargs:
        session.error(
            f"Name the project to serve; known: {', '.join(dvc_projects()) or 'none yet'}."
        )
    project, *options = session.posargs
    folder = PROJECTS_DIR / project if (PROJECTS_DIR / project).is_dir() else Path(project)
    sync(session)
    session.run("celestial-serve", str(folder), *options, external=False)
