"""Automation for celestial: tests, pipelines, lint, benchmarks.

Every session installs from ``uv.lock`` (``uv sync --locked``) into its own
environment, which nox reuses between runs, so a stale lock fails loudly and a
second run spends well under a second on set-up.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PROJECTS_DIR = ROOT / "projects"
BENCH_DIR = ROOT / "bench"
TOOLS_DIR = ROOT / "tools"
WORKFLOWS_DIR = ROOT / ".github" / "workflows"

# nox puts neither this folder nor tools/ on sys.path; the scripts in tools/
# import dvcrepo as a sibling, and this file imports it by the same name.
sys.path.insert(0, str(TOOLS_DIR))
import dvcrepo  # noqa: E402

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
        # Bytecode written once at install: with PYTHONDONTWRITEBYTECODE set
        # (as on these machines) every process would otherwise recompile keras,
        # jax and dvc on import. Only installs compile: `uv run` stays instant.
        "--compile-bytecode",
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
    # The workspace and the dev tools too: mypy follows the imports of the
    # packages and of tools/ (hypothesis, for the hostile requests).
    sync(session, "lint", "dev")
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


STRICT_ENV = "CELESTIAL_REPRO_STRICT"


@nox.session(python=PYTHON)
def repro(session: nox.Session) -> None:
    """Reproduce every project's DVC pipeline (or those named; --strict: no skipping)."""
    known = dvc_projects()
    names = [
        project_name(arg, session.invoked_from, known)
        for arg in session.posargs
        if arg != "--strict"
    ]
    strict = "--strict" in session.posargs or os.environ.get(STRICT_ENV, "") not in ("", "0")
    unknown = sorted(set(names) - set(known))
    if unknown:
        session.error(f"No project named {', '.join(unknown)}; known: {', '.join(known)}")
    sync(session)
    folders = [PROJECTS_DIR / name for name in names or known]
    outcomes = dvcrepo.reproduce(folders, Path(session.bin), strict, session.log)
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
        "python",
        "tools/new_project.py",
        str(TEMPLATE_DIR),
        "--output-dir",
        str(PROJECTS_DIR),
        *session.posargs,
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


#: The views of ``nox -s show`` (tools/views.py): a first argument that is none
#: of them names a project.
SHOW_VIEWS = ("params", "metrics", "plots", "exp")


def project_name(arg: str, invoked_from: str, known: list[str]) -> str:
    """The project ``arg`` names: its name, or its folder (``projects/NAME/``, tab-completed)."""
    folder = (Path(invoked_from) / arg).resolve()
    if folder.parent == PROJECTS_DIR.resolve() and folder.name in known:
        return folder.name
    return arg


def project_and_options(
    session: nox.Session, words: tuple[str, ...] | None = None
) -> tuple[Path, list[str]]:
    """The project a session works on, and the arguments after it.

    The first argument names the project (``synthetic-bodies`` or a folder);
    without it, the folder nox was started from, when that is a project
    (``uv run nox -f ../../noxfile.py -s show -- metrics`` in a project folder).
    With ``words``, what may follow the project, a first argument that is
    none of them is a project's name, and an unknown one is an error.
    """
    args = list(session.posargs)
    if args and (PROJECTS_DIR / args[0] / "dvc.yaml").is_file():
        return PROJECTS_DIR / args[0], args[1:]
    if args and (Path(session.invoked_from) / args[0] / "dvc.yaml").is_file():
        return Path(session.invoked_from) / args[0], args[1:]
    here = Path(session.invoked_from)
    known = ", ".join(dvc_projects()) or "none yet"
    if words and args and not args[0].startswith("-") and args[0] not in words:
        session.error(f"No project named {args[0]}; known: {known}")
    if (here / "dvc.yaml").is_file():
        return here, args
    session.error(
        f"Name the project first, or run nox from its folder with -f ../../noxfile.py; "
        f"known: {known}"
    )


@nox.session(python=PYTHON)
def exp(session: nox.Session) -> None:
    """Run a DVC experiment in a project, each -S checked first (nox -s exp -- PROJECT -S ...)."""
    folder, options = project_and_options(session)
    sync(session)
    session.run("python", str(TOOLS_DIR / "exp.py"), str(folder), *options)


@nox.session(python=PYTHON)
def show(session: nox.Session) -> None:
    """Show one project's params, metrics, plots or experiments (nox -s show -- PROJECT VIEW)."""
    folder, options = project_and_options(session, SHOW_VIEWS)
    sync(session)
    session.run("python", str(TOOLS_DIR / "views.py"), str(folder), *options)


@nox.session(python=PYTHON)
def serve(session: nox.Session) -> None:
    """Serve a project's trained model on 127.0.0.1:8000 (nox -s serve -- PROJECT [options])."""
    if not session.posargs:
        session.error(
            f"Name the project to serve; known: {', '.join(dvc_projects()) or 'none yet'}"
        )
    project, *options = session.posargs
    folder = PROJECTS_DIR / project if (PROJECTS_DIR / project).is_dir() else Path(project)
    sync(session)
    # SIGTERM would end nox alone, leaving the server running: make it a Ctrl+C. On
    # either, nox then sends the server SIGTERM at once (it waits interrupt_timeout for
    # a server that got no signal of its own) and gives it time to stop its workers.
    signal.signal(signal.SIGTERM, interrupt)
    session.run(
        "celestial-serve",
        str(folder),
        *options,
        external=False,
        interrupt_timeout=0,
        terminate_timeout=SERVE_STOP_TIMEOUT,
    )


#: Seconds the server gets to stop after SIGTERM before nox kills it.
SERVE_STOP_TIMEOUT = 30.0


def interrupt(signum: int, frame: object) -> None:
    """A signal handler that raises KeyboardInterrupt, as Ctrl+C does."""
    raise KeyboardInterrupt
