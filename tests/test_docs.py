"""The documentation and the workflows tell the truth about the code.

- The params reference in ``docs/pipeline.md`` is what
  ``tools/params_reference.py`` generates from the params models.
- Every command the docs and the README show exists: the program, its
  subcommand, its long options, and each ``nox -s`` session.
- Shell blocks marked runnable (an HTML comment ``<!-- runnable -->`` on the
  line before the fence) run and succeed, from the repository root, with the
  commands of the environment running the tests (``uv run`` is dropped).
- The site builds with ``mkdocs build --strict``.
- The workflows pass jactionlint, and a broken one does not.
- The CML report script compares a pull request with its base in a real DVC
  repository.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
SHOWN = [*PAGES, ROOT / "README.md"]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
RUNNABLE = "<!-- runnable -->"

# Programs the docs may show besides the project's own commands: shell
# built-ins and common tools whose existence is the reader's machine's business.
SYSTEM_TOOLS = {
    "base64",
    "cat",
    "cd",
    "cp",
    "curl",
    "export",
    "git",
    "ls",
    "mkdir",
    "python3",
    # Label Studio lives outside the workspace's lock, in an environment of its own.
    "pipx",
    "label-studio",
}
# Tools from the locked environment whose subcommands are checked.
CHECKED_TOOLS = {"celestial-data", "celestial-models", "celestial-eval", "dvc", "cruft"}
# Commands whose first argument is itself a command, by program.
GROUPS = {
    "dvc": {
        "exp",
        "experiments",
        "plots",
        "metrics",
        "params",
        "remote",
        "cache",
        "stage",
        "queue",
    },
    "celestial-eval": {"label"},
}


def env() -> dict[str, str]:
    """The environment for running the docs' commands with this interpreter's tools."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "NO_COLOR": "1"}


# ----------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Block:
    """A fenced shell block of a page."""

    page: str
    line: int
    runnable: bool
    commands: tuple[tuple[str, ...], ...]


def shell_blocks(path: Path) -> Iterator[Block]:
    """The ``sh`` blocks of a Markdown file, each as its list of commands."""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() in ("```sh", "```bash"):
            start = i
            body = []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            runnable = start > 0 and lines[start - 1].strip() == RUNNABLE
            yield Block(path.name, start + 1, runnable, tuple(commands(body)))
        i += 1


def commands(body: list[str]) -> Iterator[tuple[str, ...]]:
    """The commands of a shell block: continuations joined, comments dropped."""
    text = "\n".join(body).replace("\\\n", " ")
    for line in text.splitlines():
        for part in re.split(r"\s(?:&&|;)\s", line):
            words = shlex.split(part, comments=True)
            if words:
                yield tuple(words)


def without_uv_run(words: tuple[str, ...]) -> tuple[str, ...]:
    """The command ``uv run [options]`` runs, or ``words`` unchanged."""
    if words[:2] != ("uv", "run"):
        return words
    rest = list(words[2:])
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("--group", "--only-group", "--package", "--with") and rest:
            rest.pop(0)
    return tuple(rest)


def all_commands() -> list[tuple[str, int, tuple[str, ...]]]:
    """Every command shown in a shell block of the docs or the README."""
    return [
        (block.page, block.line, without_uv_run(words))
        for path in SHOWN
        for block in shell_blocks(path)
        for words in block.commands
    ]


# ----------------------------------------------------------------- the tools


@cache
def run_help(*command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command --help``; argparse and DVC exit non-zero for an unknown command."""
    return subprocess.run(
        [*command, "--help"], capture_output=True, text=True, env=env(), cwd=ROOT, check=False
    )


def help_text(*command: str) -> str:
    """The ``--help`` output of ``command``; fails the test if there is no such command."""
    proc = run_help(*command)
    assert proc.returncode == 0, f"'{' '.join(command)}' is not a command:\n{proc.stderr[-2000:]}"
    return proc.stdout


@cache
def nox_sessions() -> frozenset[str]:
    """Names of the sessions ``nox -l`` lists."""
    listing = subprocess.run(
        [sys.executable, "-m", "nox", "-l", "--noxfile", str(ROOT / "noxfile.py")],
        capture_output=True,
        text=True,
        env=env(),
        check=True,
    ).stdout
    return frozenset(
        line[2:].split(" -> ")[0].split("(")[0].strip()
        for line in listing.splitlines()
        if line[:2] in ("* ", "- ")
    )


def long_options(words: tuple[str, ...]) -> list[str]:
    """The ``--options`` of a command, without their ``=value``; stops at ``--``."""
    options = []
    for word in words:
        if word == "--":
            break
        if word.startswith("--"):
            options.append(word.split("=")[0])
    return options


def check_command(words: tuple[str, ...]) -> None:
    """Assert that the program, subcommand, options or nox session of ``words`` exist."""
    program = words[0]
    if program in SYSTEM_TOOLS:
        return
    if program == "nox":
        for flag, name in itertools.pairwise(words):
            if flag in ("-s", "--session", "--sessions"):
                assert name in nox_sessions(), f"no nox session '{name}' ({sorted(nox_sessions())})"
        return
    if program == "celestial-serve":
        usage = help_text(program)
        for option in long_options(words[1:]):
            assert option in usage, f"celestial-serve has no option {option}"
        return
    if program == "mkdocs":
        return  # in the docs group; the docs session runs it
    assert program in CHECKED_TOOLS, f"unknown program '{program}': add it to the checks"
    command = [program]
    rest = list(words[1:])
    if rest and not rest[0].startswith("-"):
        command.append(rest.pop(0))
        if command[1] in GROUPS.get(program, ()) and rest and not rest[0].startswith("-"):
            command.append(rest.pop(0))
    usage = help_text(*command)
    for option in long_options(tuple(rest)):
        assert option in usage, f"'{' '.join(command)}' has no option {option}"


# ----------------------------------------------------------------- tests


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load(
        (ROOT / "mkdocs.yml").read_text().replace("!!python/name:", "python-name:")
    )
    listed = {next(iter(item.values())) for item in config["nav"]}
    assert listed == {p.name for p in PAGES} | {"remote.md"}


def test_runnable_blocks_are_marked_and_found() -> None:
    marked = sum(p.read_text().count(RUNNABLE) for p in PAGES)
    found = [b for p in PAGES for b in shell_blocks(p) if b.runnable]
    assert marked == len(found) >= 2, "a runnable marker must sit right above a ```sh fence"


def load_tool(name: str):
    """A script of ``tools/`` as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TEMPLATE_PARAMS = ROOT / "templates" / "project" / "{{cookiecutter.__folder}}" / "params.yaml"


def test_every_params_section_is_documented() -> None:
    reference = load_tool("params_reference")
    # The template's params.yaml is Jinja: its sections are its unindented keys.
    sections = re.findall(r"^(\w+):", TEMPLATE_PARAMS.read_text(), re.MULTILINE)
    assert sections == [model.section for model in reference.SECTIONS]
    documented = re.findall(r"^### `(\w+)`$", (DOCS / "pipeline.md").read_text(), re.MULTILINE)
    assert sections == documented


def test_params_reference_is_generated_from_the_models() -> None:
    page = DOCS / "pipeline.md"
    reference = load_tool("params_reference")
    assert reference.render(page.read_text()) == page.read_text(), (
        "docs/pipeline.md's params tables are stale: run `uv run python "
        "tools/params_reference.py` (or `uv run nox -s docs`)."
    )


def test_params_reference_regenerates_a_stale_table(tmp_path: Path) -> None:
    reference = load_tool("params_reference")
    page = tmp_path / "pipeline.md"
    blocks = "".join(
        f"### `{m.section}`\n\n<!-- params: {m.section} -->\n| stale |\n<!-- /params -->\n\n"
        for m in reference.SECTIONS
    )
    page.write_text(blocks)
    assert reference.main([str(page), "--check"]) == 1
    assert reference.main([str(page)]) == 0
    text = page.read_text()
    assert "| stale |" not in text
    assert "| `epochs` | `8` | passes over the training split, more when `min_steps`" in text
    assert reference.main([str(page), "--check"]) == 0
    page.write_text(blocks.replace("<!-- params: ood -->", "<!-- params: odd -->"))
    with pytest.raises(ValueError, match=r"unknown: \['odd'\], missing: \['ood'\]"):
        reference.render(page.read_text())


def option_table(page: Path) -> dict[str, object]:
    """The ``| `--option` | `default` | effect |`` rows of ``page``.

    A default in backticks is parsed as YAML; one in words (``one per
    worker``) stands for a default the command computes, which argparse
    holds as None.
    """
    rows = re.findall(r"^\| `(--[\w-]+)` \| ([^|]*) \|", page.read_text(), re.MULTILINE)
    return {
        option: yaml.safe_load(cell.strip("`")) if cell.startswith("`") else None
        for option, cell in rows
    }


def test_serving_options_match_the_command() -> None:
    from celestial_serve.cli import build_parser

    # A flag's default (off) is in words, as one the command computes.
    defaults = {
        action.option_strings[-1]: None if action.nargs == 0 else action.default
        for action in build_parser()._actions
        if action.option_strings and action.dest != "help"
    }
    assert option_table(DOCS / "serving.md") == defaults, (
        "docs/serving.md's table of options must list every option of celestial-serve "
        f"with its default: {defaults}"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("page", "line", "words"),
    all_commands(),
    ids=[f"{page}:{line}:{' '.join(w[:3])}" for page, line, w in all_commands()],
)
def test_every_command_shown_exists(page: str, line: int, words: tuple[str, ...]) -> None:
    check_command(words)


@pytest.mark.slow
def test_every_command_named_in_prose_exists() -> None:
    text = "\n".join(path.read_text() for path in SHOWN)
    for session in set(re.findall(r"nox -s ([\w-]+)", text)):
        assert session in nox_sessions(), f"the docs name 'nox -s {session}', which does not exist"
    for span in set(re.findall(r"`(celestial-(?:data|models|eval) [^`]+)`", text)):
        if "..." in span or "=" in span:
            continue  # a quoted message, not a command
        program, command = span.split()[:2]
        help_text(program, command)


@pytest.mark.slow
def test_the_command_check_catches_a_missing_command() -> None:
    with pytest.raises(AssertionError, match="'celestial-data fly' is not a command"):
        check_command(("celestial-data", "fly", "data/raw"))
    with pytest.raises(AssertionError, match="no option --fast"):
        check_command(("dvc", "exp", "run", "--fast"))
    with pytest.raises(AssertionError, match="no nox session 'deploy'"):
        check_command(("nox", "-s", "deploy"))


RUNNABLE_COMMANDS = [
    (block.page, words)
    for path in PAGES
    for block in shell_blocks(path)
    if block.runnable
    for words in block.commands
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("page", "words"), RUNNABLE_COMMANDS, ids=[" ".join(w) for _, w in RUNNABLE_COMMANDS]
)
def test_runnable_blocks_run(page: str, words: tuple[str, ...]) -> None:
    command = list(without_uv_run(words))
    if command[0] == "nox":
        command = [sys.executable, "-m", "nox", *command[1:]]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env(), check=False)
    assert proc.returncode == 0, f"{page}: {' '.join(words)} failed:\n{proc.stdout}{proc.stderr}"
    assert proc.stdout.strip(), f"{page}: {' '.join(words)} printed nothing"


@pytest.mark.slow
def test_site_builds_strictly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nox", "-s", "docs", "--", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (tmp_path / "site" / "pipeline" / "index.html").is_file()


# ----------------------------------------------------------------- workflows


def jactionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    """Run jactionlint from this environment on ``paths``."""
    return subprocess.run(
        [str(BIN / "jactionlint"), "--no-color", *map(str, paths)],
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )


def test_workflows_pass_jactionlint() -> None:
    assert [w.name for w in WORKFLOWS] == ["ci.yml", "drift.yml", "mlops.yml"]
    proc = jactionlint(*WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


BREAKAGES = {
    "unknown key": ("    runs-on: ubuntu-24.04\n", "    runs-on: ubuntu-24.04\n    run-on: x\n"),
    "undefined context": ("uv run --locked nox -s lint", "uv run nox -s ${{ github.nope }}"),
    "unpinned action": (
        "actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8 # v5.0.0",
        "actions/checkout@v5",
    ),
    "job needs no job": ("  docs:\n", "  docs:\n    needs: [nowhere]\n"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_workflow_fails_jactionlint(tmp_path: Path, breakage: str) -> None:
    good, bad = BREAKAGES[breakage]
    source = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert good in source
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(source.replace(good, bad, 1))
    proc = jactionlint(broken)
    assert proc.returncode != 0, f"jactionlint accepted a workflow with {breakage}"
    assert "ci.yml" in proc.stdout + proc.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_a_commit_with_its_version(workflow: Path) -> None:
    uses = re.findall(r"uses: (\S+)(.*)", workflow.read_text())
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), action
        assert re.fullmatch(r" # v\d+(\.\d+)*", comment), f"{action} needs a '# vX.Y.Z' comment"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_secrets_reach_scripts_only_through_the_environment(workflow: Path) -> None:
    document = yaml.safe_load(workflow.read_text())
    for job in document["jobs"].values():
        for step in job["steps"]:
            assert "secrets." not in step.get("run", ""), step.get("name", step.get("run"))


# ----------------------------------------------------------------- the CML report


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def dvc(cwd: Path, *args: str) -> None:
    proc = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=cwd, capture_output=True, text=True, env=env(), check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


MAKE = """\
import json, sys
from pathlib import Path
from PIL import Image
value = int(sys.argv[1])
Path("evaluation").mkdir(exist_ok=True)
Image.new("RGB", (8, 8), (value, 0, 0)).save("evaluation/confusion.png")
metrics = {"accuracy": value / 255, "classes": {"Ceres": {"f1": value / 510}}}
Path("evaluation/metrics.json").write_text(json.dumps(metrics))
"""

DVC_YAML = """\
stages:
  evaluate:
    cmd: python make.py ${train.value}
    deps: [make.py]
    params: [train.value]
    outs: [evaluation/confusion.png]
    metrics:
      - evaluation/metrics.json:
          cache: false
plots:
  - evaluation/confusion.png
"""


@pytest.mark.slow
def test_cml_report_compares_each_project_with_the_base(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    dvc(repo, "init", "-q")
    for name, value in (("alpha", 10), ("beta", 20)):
        project = repo / "projects" / name
        project.mkdir(parents=True)
        (project / "make.py").write_text(MAKE)
        (project / "dvc.yaml").write_text(DVC_YAML)
        (project / "params.yaml").write_text(f"train:\n  value: {value}\n")
        dvc(project, "repro", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    git(repo, "checkout", "-q", "-b", "change")
    (repo / "projects" / "alpha" / "params.yaml").write_text("train:\n  value: 200\n")
    dvc(repo / "projects" / "alpha", "repro", "-q")
    # A stand-in leaderboard: this test is about the report, not the metrics.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    leaderboard = fake_bin / "celestial-eval"
    leaderboard.write_text("#!/bin/sh\necho '| project | accuracy |'\necho '| --- | --- |'\n")
    leaderboard.chmod(0o755)

    report = tmp_path / "report" / "report.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / ".github" / "scripts" / "cml_report.py"),
            "--base",
            "main",
            "--out",
            str(report),
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**env(), "PATH": f"{fake_bin}{os.pathsep}{env()['PATH']}"},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = report.read_text()
    alpha, beta = text.split("## alpha")[1].split("## beta")
    assert "| project | accuracy |" in text.split("## alpha")[0]
    # alpha changed: its param, metric and both images; nothing of beta's.
    assert re.search(r"train\.value \| 10 +\| 200", alpha), alpha
    assert "accuracy" in alpha and "0.78431" in alpha
    headline, per_class = alpha.split("<details>")
    assert "classes.Ceres.f1" in per_class and "classes.Ceres.f1" not in headline
    assert "../" not in alpha.replace("](", "")
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", alpha)
    assert len(images) == 2
    base_image, head_image = (report.parent / image for image in images)
    assert base_image.read_bytes() != head_image.read_bytes()
    # beta did not change: said in words, and its plots are still shown.
    assert "No params changed against main" in beta
    assert "No metrics changed against main" in beta
    assert len(re.findall(r"!\[", beta)) == 2


def test_report_script_is_documented_where_the_workflow_runs_it() -> None:
    workflow = (ROOT / ".github" / "workflows" / "mlops.yml").read_text()
    assert ".github/scripts/cml_report.py" in workflow
    assert "cml comment update" in workflow
    assert "cml_report.py" in (DOCS / "cicd.md").read_text()
