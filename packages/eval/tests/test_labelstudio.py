"""The Label Studio round trip against a real Label Studio server on 127.0.0.1.

Label Studio pins many packages, so it is not in the workspace's lock: CI
installs it into its own virtual environment (``.ci/run``) and names the
executable in ``CELESTIAL_LABEL_STUDIO``; without it, ``label-studio`` on the
PATH is used, and the test is skipped only when neither exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from celestial_eval.cli import main
from celestial_eval.labelling import IMPORTED, NEW_CLASS

TOKEN = "0123456789abcdef0123456789abcdef01234567"
START_TIMEOUT = 240  # seconds: the first start applies every database migration


def label_studio() -> str | None:
    """The Label Studio executable: ``CELESTIAL_LABEL_STUDIO``, else ``label-studio``."""
    named = os.environ.get("CELESTIAL_LABEL_STUDIO")
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("label-studio")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, requests.Session, Path]]:
    """A Label Studio serving local files under ``tmp_path/logs``; its URL, a session, the root."""
    executable = label_studio()
    if executable is None:
        pytest.skip(
            "Label Studio is not installed: set CELESTIAL_LABEL_STUDIO to its executable "
            "(.ci/run installs it into its own virtual environment)"
        )
    root = tmp_path / "logs"
    root.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "label-studio"),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root),
        "LABEL_STUDIO_USERNAME": "labeller@example.com",
        "LABEL_STUDIO_PASSWORD": "a-long-test-password",
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    }
    log = open(tmp_path / "label-studio.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [executable, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    session = requests.Session()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"Label Studio exited: {(tmp_path / 'label-studio.log').read_text()}")
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Label Studio did not answer on {url} in {START_TIMEOUT} s")
            time.sleep(0.5)
        session.headers["Authorization"] = f"Token {TOKEN}"
        yield url, session, root
    finally:
        session.close()  # an open socket left to the collector fails the run
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def call(session: requests.Session, method: str, url: str, **kwargs: Any) -> Any:
    response = session.request(method, url, timeout=60, **kwargs)
    assert response.ok, f"{method} {url}: {response.status_code} {response.text[:500]}"
    return response.json()


@pytest.mark.slow
def test_round_trip_through_label_studio(
    server: tuple[str, requests.Session, Path],
    tmp_path: Path,
    review_image: Callable[..., str],
    annotate: Callable[..., list[dict[str, Any]]],
) -> None:
    url, session, root = server
    review = root / "review"
    answered = review_image(review, 1, "Mars")
    rejected = review_image(review, 2, "unknown", fmt="JPEG", ext="jpg")
    out = tmp_path / "tasks"
    assert main(["label", "export", str(review), "--out", str(out)]) == 0

    # What a person does in the web page, through the same REST API.
    config = (out / "config.xml").read_text()
    project = call(
        session, "POST", f"{url}/api/projects", json={"title": "Review", "label_config": config}
    )
    storage = {
        "project": project["id"],
        "path": str(review),
        "use_blob_urls": False,
        "title": "review",
    }
    call(session, "POST", f"{url}/api/storages/localfiles", json=storage)
    tasks = json.loads((out / "tasks.json").read_text())
    imported = call(session, "POST", f"{url}/api/projects/{project['id']}/import", json=tasks)
    assert imported["task_count"] == 2 and imported["prediction_count"] == 2
    listed = call(session, "GET", f"{url}/api/tasks", params={"project": project["id"]})["tasks"]
    by_digest = {task["data"]["digest"]: task for task in listed}
    for digest, task in by_digest.items():
        image = session.get(url + task["data"]["image"], timeout=60)  # as the page loads it
        assert image.ok
        (original,) = (p for p in review.glob(f"{digest}.*") if p.suffix != ".json")
        assert image.content == original.read_bytes()
    labels = {answered: annotate("Venus"), rejected: annotate(NEW_CLASS, "Comet")}
    for digest, result in labels.items():
        task_id = by_digest[digest]["id"]
        call(session, "POST", f"{url}/api/tasks/{task_id}/annotations", json={"result": result})
    exported = call(
        session, "GET", f"{url}/api/projects/{project['id']}/export", params={"exportType": "JSON"}
    )
    export = tmp_path / "export.json"
    export.write_text(json.dumps(exported))

    raw = tmp_path / "project" / "data" / "raw"
    for name, seed in (("Mars", 11), ("Moon", 12)):
        review_image(raw / name, seed, name)
        for record in (raw / name).glob("*.json"):
            record.unlink()
    argv = ["label", "import", str(export), "--review", str(review), "--raw", str(raw)]
    assert main(argv) == 0
    # Imported, and moved out of the review folder with their records.
    done = review / IMPORTED
    assert (raw / "Venus" / f"{answered}.png").read_bytes() == (
        done / f"{answered}.png"
    ).read_bytes()
    assert (raw / "Comet" / f"{rejected}.jpg").read_bytes() == (
        done / f"{rejected}.jpg"
    ).read_bytes()
    assert not list(review.glob("*.json")) and len(list(done.glob("*.json"))) == 2
    # a second import of the same export adds nothing: both images are there already
    assert main(argv) == 0
    assert sorted(p.name for p in raw.iterdir()) == ["Comet", "Mars", "Moon", "Venus"]
    assert [len(list((raw / name).iterdir())) for name in ("Comet", "Venus")] == [1, 1]
