"""The cross-project leaderboard, on a git repository of two projects."""

import json
import subprocess
from pathlib import Path

import pytest

from celestial_eval.cli import main
from celestial_eval.leaderboard import leaderboard, to_markdown

METRICS = {
    "split": "test",
    "images": 30,
    "accuracy": 0.9,
    "loss": 0.3,
    "macro": {"precision": 0.91, "recall": 0.9, "f1": 0.8954},
    "dataset": {"images": 200, "classes": 10},
    "model": {"size_bytes": 2_500_000, "parameters": 310_000},
    "varied": {"images": 60, "accuracy": 0.85, "accepted": 0.75},
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def projects(tmp_path: Path) -> Path:
    root = tmp_path / "projects"
    for name in ("moons", "planets"):
        (root / name).mkdir(parents=True)
        (root / name / "dvc.yaml").write_text("metrics:\n  - evaluation/metrics.json\n")
    (root / "planets" / "evaluation").mkdir()
    (root / "planets" / "evaluation" / "metrics.json").write_text(json.dumps(METRICS))
    (root / "notes").mkdir()  # not a project: no dvc.yaml
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "projects")
    return root


def test_lists_projects_with_and_without_metrics(projects: Path) -> None:
    revision = git(projects, "rev-parse", "--short", "HEAD")
    rows = leaderboard(projects)

    assert [row["project"] for row in rows] == ["moons", "planets"]
    assert rows[0] == {"project": "moons", "metrics": None}
    assert rows[1]["accuracy"] == 0.9
    assert rows[1]["macro_f1"] == 0.8954
    assert rows[1]["revision"] == revision
    assert rows[1]["modified"] is False

    table = to_markdown(rows).splitlines()
    assert table[0] == (
        "| project | images | classes | accuracy | macro F1 | varied copies | model size "
        "| metrics revision |"
    )
    assert table[2] == "| moons | - | - | no metrics yet | - | - | - | - |"
    assert table[3] == (
        f"| planets | 200 | 10 | 90.0% (test, 30 images) | 89.5% | 85.0% "
        f"| 2.5 MB (310,000 params) | `{revision}` |"
    )


def test_a_project_without_varied_copies_shows_a_dash(projects: Path) -> None:
    path = projects / "planets" / "evaluation" / "metrics.json"
    path.write_text(json.dumps({key: value for key, value in METRICS.items() if key != "varied"}))
    (planets,) = leaderboard(projects)[1:]
    assert planets["varied_accuracy"] is None
    assert "| 89.5% | - | 2.5 MB" in to_markdown([planets])


def test_uncommitted_metrics_are_marked(projects: Path) -> None:
    path = projects / "planets" / "evaluation" / "metrics.json"
    path.write_text(json.dumps({**METRICS, "accuracy": 0.95}))
    (projects / "moons" / "evaluation").mkdir()
    (projects / "moons" / "evaluation" / "metrics.json").write_text(json.dumps(METRICS))

    moons, planets = leaderboard(projects)

    assert planets["modified"] is True
    assert "+ local changes" in to_markdown([planets])
    assert moons["revision"] is None
    assert "not committed" in to_markdown([moons])


def test_json_format_for_machines(projects: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leaderboard", str(projects), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)

    assert [p["project"] for p in document["projects"]] == ["moons", "planets"]
    assert document["projects"][0]["metrics"] is None
    assert document["projects"][1]["metrics"] == "evaluation/metrics.json"


def test_missing_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["leaderboard", str(tmp_path / "nowhere")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("celestial-eval: error: Projects folder")
    assert error.count("\n") == 1


def test_metrics_kept_out_of_git_take_the_revision_of_dvc_lock(tmp_path: Path) -> None:
    project = tmp_path / "projects" / "moons"
    (project / "evaluation").mkdir(parents=True)
    (project / "dvc.yaml").write_text("metrics:\n  - evaluation/metrics.json\n")
    (project / ".gitignore").write_text("/evaluation/metrics.json\n")
    (project / "dvc.lock").write_text("schema: '2.0'\n")
    (project / "evaluation" / "metrics.json").write_text(json.dumps(METRICS))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "lock")

    (row,) = leaderboard(tmp_path / "projects")

    assert row["revision"] == git(tmp_path, "rev-parse", "--short", "HEAD")
    assert row["modified"] is False
