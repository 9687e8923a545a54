"""The evaluate outputs work with real DVC: plots render, metrics are read."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

DVC = Path(sys.executable).with_name("dvc")

# The declaration the package README recommends for a project's evaluate stage.
DVC_YAML = """\
stages:
  evaluate:
    cmd: celestial-eval evaluate model data/prepared evaluation --params params.yaml
    deps: [model, data/prepared]
    params: [evaluate]
    metrics:
      - evaluation/metrics.json:
          cache: false
    plots:
      - evaluation/confusion.csv:
          template: confusion
          x: actual
          y: predicted
          title: Confusion matrix
          cache: false
      - evaluation/confusion.png: {cache: false}
      - evaluation/history.png: {cache: false}
      - evaluation/preview.png: {cache: false}
    outs:
      - evaluation/history.csv: {cache: false}
      - evaluation/misclassified.csv: {cache: false}
plots:
  - Loss:
      x: epoch
      y:
        evaluation/history.csv: [loss, val_loss]
  - Accuracy:
      x: epoch
      y:
        evaluation/history.csv: [accuracy, val_accuracy]
"""


def run(cwd: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, evaluation_inputs: dict) -> Path:
    """A git + DVC repository holding one project with evaluate's outputs."""
    from celestial_eval.evaluate import write_evaluation

    repo = tmp_path_factory.mktemp("repo")
    run(repo, "git", "init", "-q")
    run(repo, str(DVC), "init", "-q")
    project = repo / "project"
    write_evaluation(project / "evaluation", **evaluation_inputs)
    (project / "dvc.yaml").write_text(DVC_YAML)
    return project


@pytest.mark.slow
def test_dvc_plots_show_renders_the_confusion_and_history_data(repo: Path, case) -> None:
    shown = json.loads(run(repo, str(DVC), "plots", "show", "--json"))["data"]

    confusion = shown["evaluation/confusion.csv"][0]
    assert confusion["type"] == "vega"
    values = confusion["content"]["data"]["values"]
    expected = Counter(
        (case.classes[a], case.classes[p]) for a, p in zip(case.actual, case.predicted, strict=True)
    )
    assert Counter((v["actual"], v["predicted"]) for v in values) == expected
    loss = shown["Loss"][0]["content"]["data"]["values"]
    assert {(v["epoch"], v["dvc_inferred_y_value"]) for v in loss if v["field"] == "val_loss"} == {
        ("1", "1.1"),
        ("2", "0.9"),
        ("3", "0.95"),
    }
    # each plot drawn once
    assert sorted(shown) == [
        "Accuracy",
        "Loss",
        "evaluation/confusion.csv",
        "evaluation/confusion.png",
        "evaluation/history.png",
        "evaluation/preview.png",
    ]
    assert shown["evaluation/preview.png"][0]["type"] == "image"

    # and the HTML page DVC writes for people
    run(repo, str(DVC), "plots", "show", "-o", "plots_html")
    page = (repo / "plots_html" / "index.html").read_text()
    assert '"text": "Confusion matrix"' in page
    assert '{"actual": "Gamma", "predicted": "Beta"' in page


@pytest.mark.slow
def test_dvc_metrics_show_reads_the_metrics(repo: Path) -> None:
    shown = json.loads(run(repo, str(DVC), "metrics", "show", "--json"))
    metrics = next(iter(shown.values()))["data"]["evaluation/metrics.json"]["data"]

    assert metrics["accuracy"] == 0.5
    assert metrics["split"] == "test"
    assert metrics["classes"]["Gamma"]["predicted"] == 0
