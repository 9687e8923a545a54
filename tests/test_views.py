"""One project's views (`nox -s show`, tools/views.py) and its queued experiments.

Fast tests read a baked template project and fake DVC's JSON. Slow tests build
a git + DVC repository with two tiny template projects, reproduce both, point
the remote at an S3 address where nothing answers (so any fetch from it shows
as an error), and remove the other project's images from the workspace and the
cache: what a clone that never pulled that project has.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import views  # tools/ is on pytest's pythonpath
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VIEWS = [sys.executable, str(ROOT / "tools" / "views.py")]
EXP = [sys.executable, str(ROOT / "tools" / "exp.py")]
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "celestial tests",
    "GIT_AUTHOR_EMAIL": "tests@celestial.invalid",
    "GIT_COMMITTER_NAME": "celestial tests",
    "GIT_COMMITTER_EMAIL": "tests@celestial.invalid",
}
TINY = {
    "synth": {"per_class": 6, "size": 16},
    "train": {"batch_size": 16, "conv_size": 4, "min_steps": 200},
    "rejection": {"classes": ["Moon"], "epochs": 1},
}
# An S3 remote with an endpoint where nothing listens: any fetch fails at once.
DEAD_REMOTE = ("s3://celestial-views-tests/store", "http://127.0.0.1:9")


def load_check_projects():
    spec = importlib.util.spec_from_file_location(
        "check_projects", ROOT / "templates" / "check_projects.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_projects = load_check_projects()


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=ENV)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    return done


def width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def bake(projects: Path, name: str, seed: int) -> Path:
    project = check_projects.render(
        {"dataset_name": name, "data_source": "synthetic", "image_size": 16}, projects
    )
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    params["synth"]["seed"] = seed  # other images, or DVC's run cache would share the outputs
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


# Fast: the project's files, the tables


def test_a_project_names_its_own_files_as_each_dvc_command_wants(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    project = views.load_project(
        check_projects.render({"data_source": "synthetic"}, tmp_path / "projects")
    )
    assert project.prefix == "projects/planets-and-moons"
    assert project.params == ("params.yaml",)
    assert project.metrics == ("evaluation/metrics.json", "evaluation/rejection.json")
    assert project.plots == (
        "dvc.yaml::Confusion matrix",
        "dvc.yaml::Accuracy per epoch",
        "dvc.yaml::Loss per epoch",
        "evaluation/confusion.png",
        "evaluation/history.png",
        "evaluation/preview.png",
    )
    assert project.from_root("params.yaml") == "projects/planets-and-moons/params.yaml"


def test_a_folder_without_a_pipeline_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    assert views.main([str(tmp_path), "metrics"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"celestial-show: error: {tmp_path} holds no dvc.yaml. Name a project folder, "
        "e.g. projects/synthetic-bodies."
    ]


def fake_exp_show(prefix: str, rows: int) -> list[dict[str, Any]]:
    """``dvc exp show --json`` of a baseline and ``rows`` experiments, two projects."""

    def data(epochs: int, accuracy: float) -> dict[str, Any]:
        metrics = {"accuracy": accuracy, "loss": 1 - accuracy, "macro": {"f1": accuracy}}
        metrics["classes"] = {f"Body{i}": {"f1": accuracy} for i in range(40)}
        return {
            "params": {
                f"projects/{name}/params.yaml": {"data": {"train": {"epochs": epochs, "seed": 0}}}
                for name in (prefix, "other")
            },
            "metrics": {
                f"projects/{name}/evaluation/metrics.json": {"data": metrics}
                for name in (prefix, "other")
            },
        }

    experiments = [
        {
            "executor": {"state": "success"},
            "revs": [{"rev": f"{i:040x}", "name": f"exp-{i}", "data": data(i, i / 10)}],
        }
        for i in range(1, rows + 1)
    ]
    return [
        {"rev": "workspace", "name": None, "data": data(8, 0.8)},
        {"rev": "a" * 40, "name": "main", "data": data(8, 0.8), "experiments": experiments},
    ]


def test_exp_shows_changed_params_and_headline_metrics_in_100_columns(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    (tmp_path / ".dvc").mkdir()
    folder = check_projects.render({"data_source": "folder"}, tmp_path / "projects")
    shown = fake_exp_show(folder.name, rows=3)
    monkeypatch.setattr(views, "dvc_json", lambda *args, cwd: shown)

    assert views.main([str(folder), "exp"]) == 0

    out = capsys.readouterr().out
    assert width(out) <= 100
    lines = out.splitlines()
    assert lines[0].split() == ["Experiment", "train.epochs", "accuracy", "loss", "macro.f1"]
    assert [line.split()[0] for line in lines[1:]] == [
        "workspace",
        "main",
        *(f"exp-{i}" for i in (1, 2, 3)),
    ]
    assert "Body" not in out  # per-class columns only when asked for

    assert views.main([str(folder), "exp", "--keep", r"classes\..*", "--width", "60"]) == 0
    out = capsys.readouterr().out
    assert width(out) <= 60
    assert out.splitlines()[0].split()[:2] == ["Experiment", "classes.Body0.f1"]
    assert "more columns left out to fit 60 columns: classes.Body" in " ".join(out.split())


def test_tables_are_plain_or_markdown() -> None:
    rows = [["a", "1"], ["bbb", "0.5"]]
    assert views.table(["x", "y"], rows) == "x    y\na    1\nbbb  0.5"
    assert views.table(["x", "y"], rows, markdown=True).splitlines()[:2] == [
        "| x | y |",
        "| --- | --- |",
    ]
    assert views.flatten({"a": {"b": 1, "c": [1]}, "d": None}) == {"a.b": 1, "d": None}
    assert views.cell(0.1234567) == "0.12346"


# Slow: real dvc processes


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny projects reproduced by one ``dvc repro``, committed, with a dead remote."""
    root = tmp_path_factory.mktemp("views")
    for folder in ("data", "models", "eval"):
        shutil.copytree(
            ROOT / "packages" / folder / "src",
            root / "packages" / folder / "src",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    run("git", "init", "-q", cwd=root)
    run("dvc", "init", "-q", cwd=root)
    shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")
    url, endpoint = DEAD_REMOTE
    run("dvc", "remote", "add", "-d", "storage", url, cwd=root)
    run("dvc", "remote", "modify", "storage", "endpointurl", endpoint, cwd=root)
    run("dvc", "remote", "modify", "storage", "access_key_id", "test", cwd=root)
    run("dvc", "remote", "modify", "storage", "secret_access_key", "test", cwd=root)
    ours = bake(root / "projects", "Tiny ours", seed=1)
    other = bake(root / "projects", "Tiny other", seed=2)
    run("git", "add", "-A", cwd=root)
    run("git", "commit", "-q", "-m", "Two projects", cwd=root)
    run(
        "dvc",
        "repro",
        "--keep-going",
        "projects/tiny-ours/dvc.yaml",
        "projects/tiny-other/dvc.yaml",
        cwd=root,
    )
    run("git", "add", "-A", cwd=root)
    run("git", "commit", "-q", "-m", "Two projects, reproduced", cwd=root)
    # The other project's images: in the remote only (which does not answer).
    lock = yaml.safe_load((other / "dvc.lock").read_text())
    for out in lock["stages"]["evaluate"]["outs"]:
        if out["path"].endswith(".png"):
            (other / out["path"]).unlink()
            md5 = out["md5"]
            (root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).unlink()
    return {"root": root, "ours": ours, "other": other}


@pytest.mark.slow
def test_plain_dvc_views_show_every_project_and_fetch_its_plots(repo) -> None:
    # What the views are for: DVC's own commands, typed in a project folder.
    ours = repo["ours"]
    metrics = run("dvc", "metrics", "show", cwd=ours).stdout
    assert "../tiny-other/evaluation/metrics.json" in metrics
    assert width(metrics) > 1000
    plots = run("dvc", "plots", "diff", "-o", "dvc_plots", cwd=ours)
    assert "DVC failed to load some plots" in plots.stderr  # it asked the dead remote


@pytest.mark.slow
def test_metrics_show_only_the_project_one_per_row(repo) -> None:
    done = run(*VIEWS, ".", "metrics", cwd=repo["ours"])
    assert width(done.stdout) <= 100
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[0] == ["Path", "Metric", "Value"]
    assert {row[0] for row in rows[1:]} == {"evaluation/metrics.json", "evaluation/rejection.json"}
    assert ["evaluation/metrics.json", "accuracy"] in [row[:2] for row in rows]


@pytest.mark.slow
def test_params_and_metrics_diff_show_only_the_project(repo) -> None:
    for project in (repo["ours"], repo["other"]):
        params = project / "params.yaml"
        params.write_text(params.read_text().replace("epochs: 8", "epochs: 5", 1))
    try:
        done = run(*VIEWS, ".", "params", cwd=repo["ours"])
    finally:
        run("git", "checkout", "--", "projects", cwd=repo["root"])
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["Path", "Param", "HEAD", "workspace"]
    assert [line.split() for line in lines[1:]] == [["params.yaml", "train.epochs", "8", "5"]]

    metrics = run(*VIEWS, ".", "metrics", "HEAD", "--all", cwd=repo["ours"]).stdout
    assert width(metrics) <= 100
    assert "../" not in metrics and "evaluation/rejection.json" in metrics


@pytest.mark.slow
def test_plots_show_only_the_project_and_never_ask_the_remote(repo) -> None:
    ours = repo["ours"]
    done = run(*VIEWS, ".", "plots", "--json", cwd=ours)
    document = json.loads(done.stdout)
    assert "errors" not in document, document.get("errors")
    assert sorted(document["data"]) == [
        "Accuracy per epoch",
        "Confusion matrix",
        "Loss per epoch",
        "projects/tiny-ours/evaluation/confusion.png",
        "projects/tiny-ours/evaluation/history.png",
        "projects/tiny-ours/evaluation/preview.png",
    ]
    html = run(*VIEWS, ".", "plots", cwd=ours)
    assert "failed to load" not in html.stderr + html.stdout
    assert (ours / "dvc_plots" / "index.html").is_file()


@pytest.mark.slow
def test_two_queued_experiments_run_in_parallel_and_both_are_shown(repo, tmp_path: Path) -> None:
    ours = repo["ours"]
    for epochs in (1, 2):
        # The documented way: nox -s exp runs tools/exp.py, which checks -S first.
        run(
            *EXP, str(ours), "--queue", "-S", f"train.epochs={epochs}", "-n", f"e{epochs}", cwd=ours
        )
    assert run("git", "status", "--porcelain", cwd=ours).stdout == ""  # queued, not applied
    # The workers run on in the background with the command's output streams:
    # read through pipes, the command would not end before they do (a file).
    log = tmp_path / "queue-start.log"  # outside the repository, which stays clean
    with open(log, "w") as stream:
        command = ["dvc", "queue", "start", "--jobs", "2"]
        started = subprocess.run(command, cwd=ours, env=ENV, stdout=stream, stderr=stream)
    assert started.returncode == 0, log.read_text()
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status = run("dvc", "queue", "status", cwd=ours).stdout
            if not any(word in status for word in ("Queued", "Running")):
                break
            time.sleep(2)
    finally:
        run("dvc", "queue", "stop", cwd=ours, check=False)
    assert status.count("Success") == 2, status

    table = run(*VIEWS, ".", "exp", cwd=ours).stdout
    assert width(table) <= 100
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:] if line.strip()}
    header = table.splitlines()[0].split()
    assert header[:2] == ["Experiment", "train.epochs"]
    assert (rows["e1"][1], rows["e2"][1]) == ("1", "2")
    assert "accuracy" in header or "accuracy" in table  # shown, or named as left out


def test_the_parser_takes_each_view() -> None:
    parser = views.build_parser()
    args = parser.parse_args(["p", "metrics", "HEAD~1", "--all"])
    assert (args.view, args.revisions, args.dvc) == ("metrics", ["HEAD~1"], ["--all"])
    args = parser.parse_args(["p", "exp", "-n", "3", "--all-commits"])
    assert args.dvc == ["--num=3", "--all-commits"]
    assert isinstance(args, argparse.Namespace)
