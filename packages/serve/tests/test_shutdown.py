"""Stopping a real server from outside: SIGTERM to ``nox -s serve``, a parent that dies, Ctrl+C,
a worker killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


def group_members(pgid: int) -> list[tuple[int, str]]:
    """The pid and command line of each live process of a process group (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, process group
            found.append((int(entry.name), cmdline))
    return found


def group_processes(pgid: int) -> list[str]:
    """The command lines of the live processes of a process group (Linux)."""
    return [command for _, command in group_members(pgid)]


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def wait_until_healthy(
    port: int, process: subprocess.Popen, log: Path, seconds: float = 300
) -> None:
    """Wait for /health to answer 200 while ``process`` runs (its log, should it not)."""
    deadline = time.monotonic() + seconds
    while not healthy(port):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)


def inference_workers(pgid: int) -> list[int]:
    """The pids of the inference workers of the server whose process group is ``pgid``."""
    return [pid for pid, command in group_members(pgid) if "spawn_main" in command]


def post_image(port: int, image: bytes, timeout: float = 30) -> requests.Response:
    return requests.post(
        f"http://127.0.0.1:{port}/predict",
        data=image,
        headers={"Content-Type": "image/jpeg"},
        timeout=timeout,
    )


def assert_all_gone(port: int, pgid: int, log: Path) -> None:
    """Within 20 s, the port is closed and no process of the group is left."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (port_open(port) or group_processes(pgid)):
        time.sleep(0.2)
    assert not port_open(port), log.read_text()
    assert group_processes(pgid) == [], log.read_text()


def started_in_a_group(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as stream:
        return subprocess.Popen(
            command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ends_the_server_when_killed(starter: subprocess.Popen, port: int, log: Path, signum) -> None:
    """Once ``starter``'s server is healthy, signal ``starter`` alone; check all of it ends."""
    pgid = starter.pid  # start_new_session: its own process group
    try:
        # The first nox run also makes its environment.
        wait_until_healthy(port, starter, log, seconds=600)
        assert any("celestial" in c for c in group_processes(pgid) if "-m nox" not in c)
        starter.send_signal(signum)  # not to its group
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            port_open(port) or any("celestial" in c for c in group_processes(pgid))
        ):
            time.sleep(0.2)
        assert not port_open(port), log.read_text()
        assert [c for c in group_processes(pgid) if "celestial" in c] == [], log.read_text()
    finally:
        if group_processes(pgid):
            os.killpg(pgid, signal.SIGKILL)
        starter.wait(timeout=30)


def serve_in_a_group(
    project: Path, tmp_path: Path, *options: str
) -> tuple[subprocess.Popen, int, Path]:
    """``celestial-serve PROJECT`` on a free port, in a process group of its own.

    Returns:
        The server's process, its port and its log.
    """
    port = free_port()
    log = tmp_path / "serve.log"
    serve = [sys.executable, "-m", "celestial_serve", str(project), "--port", str(port)]
    return started_in_a_group([*serve, *options], log), port, log


def test_sigterm_to_nox_ends_the_server_and_its_workers(trained_project: Path, tmp_path) -> None:
    port = free_port()
    nox = [sys.executable, "-m", "nox", "--noxfile", str(ROOT / "noxfile.py"), "-s", "serve"]
    options = ["--port", str(port), "--log-level", "warning", "--workers", "2"]
    log = tmp_path / "nox.log"
    starter = started_in_a_group([*nox, "--", str(trained_project), *options], log)
    ends_the_server_when_killed(starter, port, log, signal.SIGTERM)


def test_the_server_stops_when_the_process_that_started_it_dies(
    trained_project: Path, tmp_path
) -> None:
    port = free_port()
    serve = [sys.executable, "-m", "celestial_serve", str(trained_project), "--port", str(port)]
    parent = f"import subprocess, time; subprocess.Popen({serve!r}); time.sleep(3600)"
    log = tmp_path / "parent.log"
    starter = started_in_a_group([sys.executable, "-c", parent], log)
    ends_the_server_when_killed(starter, port, log, signal.SIGKILL)


def test_the_server_s_processes_stop_when_its_main_process_is_killed(
    trained_project: Path, tmp_path
) -> None:
    # SIGKILL leaves no time to stop anything: the HTTP processes and the
    # inference workers must stop by themselves, and free the port.
    options = ("--api-servers", "2", "--workers", "2")
    server, port, log = serve_in_a_group(trained_project, tmp_path, *options)
    pgid = server.pid
    try:
        wait_until_healthy(port, server, log)
        assert len(group_processes(pgid)) >= 5  # main, 2 HTTP processes, 2 workers
        server.kill()
        server.wait(timeout=10)
        assert_all_gone(port, pgid, log)
    finally:
        if group_processes(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_ctrl_c_lets_the_requests_in_flight_be_answered(
    trained_project: Path, reference, tmp_path
) -> None:
    # Ctrl+C in a terminal signals every process of the group at once. An
    # inference worker leaves the stopping to the main process, which stops
    # it once the HTTP processes have answered what they hold: shown here by
    # a worker that got its SIGINT and still answers.
    server, port, log = serve_in_a_group(trained_project, tmp_path, "--workers", "2")
    pgid = server.pid
    try:
        wait_until_healthy(port, server, log)
        workers = inference_workers(pgid)
        assert len(workers) == 2, group_processes(pgid)
        for pid in workers:
            os.kill(pid, signal.SIGINT)
        time.sleep(1)
        image = next(iter(reference.values()))[0].read_bytes()
        for _ in range(4):  # both workers
            answer = post_image(port, image)
            assert answer.status_code == 200, (answer.text, log.read_text())

        os.killpg(pgid, signal.SIGINT)  # Ctrl+C
        server.wait(timeout=60)
        assert_all_gone(port, pgid, log)
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        if group_processes(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_a_worker_that_dies_fails_its_requests_at_once_and_stops_the_server(
    trained_project: Path, reference, tmp_path
) -> None:
    # A worker killed while it holds requests (the kernel's out-of-memory
    # killer sends SIGKILL): its requests are answered 503 at once, the other
    # worker's as usual, and the server stops saying why, leaving nothing behind.
    options = ("--workers", "2", "--api-servers", "1")
    server, port, log = serve_in_a_group(trained_project, tmp_path, *options)
    pgid = server.pid
    image = next(iter(reference.values()))[0].read_bytes()

    try:
        wait_until_healthy(port, server, log)
        workers = inference_workers(pgid)
        assert len(workers) == 2, group_processes(pgid)
        os.kill(workers[0], signal.SIGSTOP)  # it holds its requests
        with ThreadPoolExecutor(6) as pool:
            # In turn to each worker. (LitServe alone would hold the dead worker's
            # 30 s, then drop the connections.)
            calls = [pool.submit(post_image, port, image, 20) for _ in range(6)]
            time.sleep(3)
            os.kill(workers[0], signal.SIGKILL)
            answers = [call.result() for call in calls]

        assert sorted(a.status_code for a in answers) == [200, 200, 200, 503, 503, 503]
        gone = [a.json() for a in answers if a.status_code == 503]
        assert all("inference worker holding this request stopped" in g["detail"] for g in gone)
        assert server.wait(timeout=60) == 1
        last = log.read_text().strip().splitlines()[-1]
        assert last.startswith(
            "celestial-serve: error: An inference worker stopped (killed by SIGKILL, which the "
            "kernel's out-of-memory killer sends), and the server with it. Start the server again"
        ), log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()
        assert_all_gone(port, pgid, log)
    finally:
        if group_processes(pgid):
            os.killpg(pgid, signal.SIGKILL)
