"""Shared fixtures: a tiny trained project and a real server process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT.parent / "shared" / "datasets" / "planets-moons" / "raw"
IMAGES_PER_CLASS = 3
SIZE = 16
TRANSPORTS = ("lean", "stock")
API_KEY = "let-me-in"


def reference_files() -> dict[str, list[Path]]:
    """A few reference images per class (the test skips when the dataset is absent)."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference images not found at {REFERENCE} (CI provides them)")
    classes = sorted(p.name for p in REFERENCE.iterdir() if p.is_dir())
    return {name: sorted((REFERENCE / name).glob("*.jpg"))[:IMAGES_PER_CLASS] for name in classes}


@pytest.fixture(scope="session")
def reference() -> dict[str, list[Path]]:
    return reference_files()


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory, reference) -> Path:
    """A project folder holding a tiny model trained on 16 x 16 reference images."""
    from celestial_data import ImageFormat, decode, to_array, write_prepared
    from celestial_models import TrainParams, train_model
    from celestial_models.ood import OodParams

    root = tmp_path_factory.mktemp("serve")
    classes = list(reference)
    images, labels, names = [], [], []
    for label, name in enumerate(classes):
        for path in reference[name]:
            images.append(to_array(decode(path), ImageFormat(SIZE, "rgb")))
            labels.append(label)
            names.append(f"{name}/{path.name}")
    images = np.stack(images)
    labels = np.array(labels)
    prepared = write_prepared(
        root / "prepared",
        classes,
        "rgb",
        {"train": (images, labels, names), "val": (images, labels, names)},
    )
    project = root / "tiny-bodies"
    # Its validation images are its training images: calibrating the unknown-image
    # threshold to accept all of them keeps the reference images labelled.
    train_model(
        prepared,
        project / "model",
        TrainParams(epochs=2, min_steps=0, batch_size=16),
        ood=OodParams(acceptance=1.0),
    )
    return project


@pytest.fixture(scope="session")
def classifier(trained_project: Path):
    """The tiny model, loaded in this process, to compare the server's answers with."""
    from celestial_models import load_classifier

    return load_classifier(trained_project / "model")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    """A running ``celestial-serve`` process."""

    url: str
    port: int
    process: subprocess.Popen
    log: Path
    api_key: str | None = None

    @property
    def key_header(self) -> dict[str, str]:
        """The header that passes this server's API key check (none without a key)."""
        return {} if self.api_key is None else {"X-API-Key": self.api_key}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> bool:
        """SIGTERM the server; return whether its whole process group ended by itself."""
        return stop(self)

    def wait_until_healthy(self, headers: dict[str, str] | None = None) -> None:
        """Return once ``/health`` answers 200; raise if the server exits or hangs."""
        wait_until_healthy(self, headers=headers)


def wait_until_healthy(
    server: Server, timeout: float = 180, headers: dict[str, str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"celestial-serve exited early:\n{server.log_text()}")
        try:
            health = requests.get(f"{server.url}/health", headers=headers, timeout=2)
            if health.status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"celestial-serve not healthy after {timeout} s:\n{server.log_text()}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(server: Server) -> bool:
    """SIGTERM the server; return whether its whole process group ended by itself."""
    pgid = server.process.pid  # start_new_session: the group is the process's own
    try:
        server.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=60)
        deadline = time.monotonic() + 20
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        return not group_alive(pgid)
    finally:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        server.process.wait(timeout=10)


def start(project: Path, log: Path, *options: str, env: dict | None = None) -> Server:
    """Start ``celestial-serve`` on a free port of 127.0.0.1 in its own process group.

    ``env`` adds to (or overrides) this process's environment.
    """
    port = free_port()
    with open(log, "wb") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "celestial_serve", str(project), "--port", str(port), *options],
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    key = (env or {}).get("LIT_SERVER_API_KEY")
    return Server(f"http://127.0.0.1:{port}", port, process, log, key)


@pytest.fixture(scope="session", params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The transport of the servers a test starts: every server test runs on each."""
    return request.param


@contextlib.contextmanager
def launcher(transport: str) -> Iterator:
    """``launch(project, log, *options, env=...)`` starts a server; all are ended on exit."""
    started: list[Server] = []

    def launch_one(project: Path, log: Path, *options: str, env: dict | None = None) -> Server:
        started.append(start(project, log, "--transport", transport, *options, env=env))
        return started[-1]

    try:
        yield launch_one
    finally:
        for one in started:
            one.stop()


@pytest.fixture
def launch(transport: str) -> Iterator:
    """Start extra servers (``launch(project, log, *options, env=...)``), ended after the test."""
    with launcher(transport) as launch_one:
        yield launch_one


@pytest.fixture(scope="module")
def launch_for_module(transport: str) -> Iterator:
    """Start extra servers, as `launch` does, ended after the test module."""
    with launcher(transport) as launch_one:
        yield launch_one


@pytest.fixture(scope="session")
def server(
    trained_project: Path, tmp_path_factory: pytest.TempPathFactory, transport: str
) -> Iterator[Server]:
    """The tiny project served on 127.0.0.1 (batching on, as by default)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    running = start(trained_project, log, "--log-level", "warning", "--transport", transport)
    try:
        wait_until_healthy(running)
        yield running
    finally:
        ended = stop(running)
    assert ended, f"processes of the server were left running after SIGTERM:\n{log.read_text()}"


@pytest.fixture(scope="session")
def guarded_server(
    trained_project: Path, tmp_path_factory: pytest.TempPathFactory, transport: str
) -> Iterator[Server]:
    """The tiny project served with an API key (`API_KEY`): requests take LitServe's route."""
    log = tmp_path_factory.mktemp("guarded") / "server.log"
    running = start(
        trained_project,
        log,
        "--log-level",
        "warning",
        "--transport",
        transport,
        env={"LIT_SERVER_API_KEY": API_KEY},
    )
    try:
        wait_until_healthy(running, headers={"X-API-Key": API_KEY})
        yield running
    finally:
        ended = stop(running)
    assert ended, f"processes of the server were left running after SIGTERM:\n{log.read_text()}"
