"""The production loop end to end, on the embedded synthetic renders.

A project trained on four bodies is served with its prediction log on; it is
sent renders of its own bodies and of Pluto, which it never saw. The drift
check flags the log, the review folder is exported as Label Studio tasks, a
scripted labeller names every image (Pluto as a new class, as a person would
in the exported labelling config), the export is imported into the project's
raw folder, and ``dvc add`` + ``dvc repro`` retrain: the new model knows Pluto.
Every step is the command a newcomer runs (``docs/monitor.md``), as a real
process: ``dvc``, ``celestial-serve``, ``celestial-eval``, ``celestial-models``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    "GIT_AUTHOR_NAME": "celestial tests",
    "GIT_AUTHOR_EMAIL": "tests@celestial.invalid",
    "GIT_COMMITTER_NAME": "celestial tests",
    "GIT_COMMITTER_EMAIL": "tests@celestial.invalid",
}
KNOWN = ["Earth", "Jupiter", "Mars", "Saturn"]
NEW = "Pluto"
PARAMS = {
    "train": {"batch_size": 16, "epochs": 12, "min_steps": 200},
    "rejection": {"classes": ["Mars"], "epochs": 1},
}

pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=ENV)
    if check and done.returncode != 0:
        raise AssertionError(f"{shlex.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def render(out: Path, classes: list[str], per_class: int, seed: int) -> list[Path]:
    """Synthetic renders of ``classes``, with another seed than the training images."""
    run(
        "celestial-data", "synth", str(out), "--per-class", str(per_class), "--size", "32",
        "--seed", str(seed), "--classes", *classes, cwd=ROOT,
    )  # fmt: skip
    return sorted(out.rglob("*.jpg"))


def bake(projects: Path) -> Path:
    """A folder project from the template, with small training params."""
    spec = importlib.util.spec_from_file_location(
        "check_projects", ROOT / "templates" / "check_projects.py"
    )
    assert spec is not None and spec.loader is not None
    check_projects = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_projects)
    answers = {"dataset_name": "Loop bodies", "data_source": "folder", "image_size": 16}
    project: Path = check_projects.render(answers, projects)
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in PARAMS.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(project: Path, log_dir: Path, output: Path) -> tuple[subprocess.Popen, str]:
    """``celestial-serve PROJECT --log-dir LOG_DIR`` in its own process group, once healthy."""
    port = free_port()
    with open(output, "wb") as stream:
        process = subprocess.Popen(
            ["celestial-serve", str(project), "--port", str(port), "--log-dir", str(log_dir)],
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=ENV,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"celestial-serve exited:\n{output.read_text()}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"celestial-serve not healthy:\n{output.read_text()}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (the server writes its last records), then make sure the group is gone."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def label(tasks: list[dict[str, Any]], truth: dict[str, str], known: set[str]) -> list[dict]:
    """Label Studio's JSON export of ``tasks`` as a labeller who knows each image's body.

    A known body is chosen among the config's choices; another is typed as a
    new class, the way the exported labelling config asks for it.
    """
    exported = []
    for number, task in enumerate(tasks, start=1):
        body = truth[task["data"]["digest"]]
        result: list[dict[str, Any]] = [
            {
                "from_name": "label",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [body if body in known else "New class"]},
            }
        ]
        if body not in known:
            result.append(
                {
                    "from_name": "new_class",
                    "to_name": "image",
                    "type": "textarea",
                    "value": {"text": [body]},
                }
            )
        exported.append(
            {
                "id": number,
                "data": task["data"],
                "annotations": [{"id": number, "result": result, "was_cancelled": False}],
                "predictions": task.get("predictions", []),
            }
        )
    return exported


def closest(project: Path, folder: Path) -> list[str]:
    """``celestial-models predict``'s closest class for each image of ``folder``."""
    model = str(project / "model")
    done = run("celestial-models", "predict", "--no-reject", model, str(folder), cwd=ROOT)
    return [row["label"] for row in csv.DictReader(io.StringIO(done.stdout))]


def test_serve_log_drift_label_import_retrain(tmp_path: Path) -> None:
    # A repository laid out like this one, with a project trained on four bodies.
    root = tmp_path / "repo"
    for folder in ("data", "models", "eval"):
        shutil.copytree(
            ROOT / "packages" / folder / "src",
            root / "packages" / folder / "src",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")
    run("git", "init", "-q", cwd=root)
    run("dvc", "init", "-q", cwd=root)
    project = bake(root / "projects")
    render(project / "data" / "raw", KNOWN, per_class=40, seed=0)
    run("dvc", "add", "data/raw", cwd=project)
    run("git", "add", "-A", cwd=root)
    run("git", "commit", "-q", "-m", "Loop bodies, four classes", cwd=root)
    run("dvc", "repro", cwd=project)
    classes = json.loads((project / "model" / "metadata.json").read_text())["classes"]
    assert classes == KNOWN

    # Serve it with the prediction log on; send renders of known bodies and of Pluto.
    sent = tmp_path / "sent"
    images = render(sent / "known", KNOWN, per_class=20, seed=11)
    images += render(sent / "new", [NEW], per_class=60, seed=12)
    truth = {hashlib.sha256(path.read_bytes()).hexdigest(): path.parent.name for path in images}
    logs = tmp_path / "logs"
    server, url = serve(project, logs, tmp_path / "serve.log")
    try:
        with requests.Session() as client:
            answers = [
                client.post(
                    f"{url}/predict",
                    data=path.read_bytes(),
                    headers={"Content-Type": "image/jpeg"},
                    timeout=30,
                )
                for path in images
            ]
    finally:
        stop(server)
    assert [answer.status_code for answer in answers] == [200] * len(images)
    lines = [line for log in sorted(logs.glob("*.jsonl")) for line in log.read_text().splitlines()]
    assert len(lines) == len(images)

    # Drift: the log is flagged against the model's own reference, exit status 1.
    drift = run(
        "celestial-eval", "drift", str(logs), "--model", str(project / "model"),
        "--out", str(tmp_path / "drift"), "--params", str(project / "params.yaml"),
        cwd=ROOT, check=False,
    )  # fmt: skip
    assert drift.returncode == 1, drift.stdout + drift.stderr
    verdict = json.loads((tmp_path / "drift" / "drift.json").read_text())
    assert verdict["drift"] is True
    assert {"class_mix", "unknown_rate"} & set(verdict["failed"])
    assert (tmp_path / "drift" / "drift.html").is_file()

    # The review folder kept the images the model could not answer: Pluto's among them.
    review = logs / "review"
    kept = {path.stem: truth[path.stem] for path in review.glob("*.json")}
    assert sum(body == NEW for body in kept.values()) >= 20, kept

    # Export to Label Studio, label (scripted), import into the project's raw folder.
    run(
        "celestial-eval", "label", "export", str(review), "--out", str(tmp_path / "ls"),
        "--model", str(project / "model"), cwd=ROOT,
    )  # fmt: skip
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert len(tasks) == len(kept)
    export = tmp_path / "ls" / "export.json"
    export.write_text(json.dumps(label(tasks, truth, set(KNOWN))))
    raw = project / "data" / "raw"
    before = {path.relative_to(raw) for path in raw.rglob("*.jpg")}
    run(
        "celestial-eval", "label", "import", str(export), "--review", str(review),
        "--raw", str(raw), cwd=ROOT,
    )  # fmt: skip
    added = {path.relative_to(raw) for path in raw.rglob("*.jpg")} - before
    assert len(added) == len(kept)
    assert {path.parent.name for path in added} <= {*KNOWN, NEW}
    assert all(truth[path.stem] == path.parent.name for path in added)

    # Version the new images and retrain: the new model knows Pluto.
    run("dvc", "add", "data/raw", cwd=project)
    done = run("dvc", "repro", cwd=project)
    assert "Running stage 'train'" in done.stdout
    classes = json.loads((project / "model" / "metadata.json").read_text())["classes"]
    assert classes == sorted([*KNOWN, NEW])
    fresh = render(tmp_path / "fresh", [NEW], per_class=40, seed=13)
    labels = closest(project, fresh[0].parent)
    assert sum(answer == NEW for answer in labels) >= 0.75 * len(labels), labels
