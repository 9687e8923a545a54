"""The evaluate outputs work with real DVC: plots render, metrics are read."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

DVC = Path(sys.executable).with_name("dvc")

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE_DVC_YAML = ROOT / "templates" / "project" / "{{cookiecutter.__folder}}" / "dvc.yaml"


def template_dvc_yaml() -> str:
    """The project template's dvc.yaml, rendered for a project with a folder source."""
    import jinja2

    return jinja2.Template(TEMPLATE_DVC_YAML.read_text()).render(
        cookiecutter={"data_source": "folder", "dataset_name": "Test", "slug": "test"}
    )


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
    # The declaration every project gets, so these tests follow the template.
    (project / "dvc.yaml").write_text(template_dvc_yaml())
    return project


@pytest.mark.slow
def test_dvc_plots_show_renders_the_confusion_and_history_data(repo: Path, case) -> None:
    shown = json.loads(run(repo, str(DVC), "plots", "show", "--json"))["data"]

    confusion = shown["Confusion matrix"][0]
    assert confusion["type"] == "vega"
    values = confusion["content"]["data"]["values"]
    expected = Counter(
        (case.classes[a], case.classes[p]) for a, p in zip(case.actual, case.predicted, strict=True)
    )
    assert Counter((v["actual"], v["predicted"]) for v in values) == expected
    loss = shown["Loss per epoch"][0]["content"]["data"]["values"]
    assert {(v["epoch"], v["dvc_inferred_y_value"]) for v in loss if v["field"] == "val_loss"} == {
        ("1", "1.1"),
        ("2", "0.9"),
        ("3", "0.95"),
    }
    # each plot drawn once
    assert sorted(shown) == [
        "Accuracy per epoch",
        "Confusion matrix",
        "Loss per epoch",
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
