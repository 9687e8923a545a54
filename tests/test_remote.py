"""DVC push and pull against a real S3-compatible server (moto) on 127.0.0.1.

Each test builds a tiny git + DVC repository in a temporary folder: a raw
dataset tracked by ``data/raw.dvc`` and a one-stage pipeline of its own, so
nothing here depends on the ML packages. Transfers run through
``tools/transfer.py`` (what ``nox -s push`` and ``nox -s pull`` run) in real
``dvc`` processes; the server is ``moto_server`` in its own process group,
killed as a group. The server checks signatures, so wrong keys fail as on AWS.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dvcrepo  # tools/ is on pytest's pythonpath
import locals3
import pytest
import transfer
from dvcrepo import RemoteConfig

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "celestial-test"
ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
}


@dataclass
class S3:
    """A moto server started for the tests, with the keys of its one user."""

    proc: subprocess.Popen
    log: Path
    key: str
    secret: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{locals3.port_of(self.proc)}"

    def stop(self) -> None:
        locals3.kill_group(self.proc.pid)
        self.proc.wait(timeout=10)


def start_s3(log: Path) -> S3:
    proc = locals3.launch(log)
    try:
        key, secret = locals3.provision(f"http://127.0.0.1:{locals3.port_of(proc)}", BUCKET)
    except BaseException:
        locals3.kill_group(proc.pid)
        raise
    return S3(proc, log, key, secret)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """One server for the tests that do not stop it; each repo uses its own prefix."""
    server = start_s3(tmp_path_factory.mktemp("moto") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[S3]:
    """A server that the test may stop part-way."""
    server = start_s3(tmp_path / "server.log")
    yield server
    if server.proc.poll() is None:
        server.stop()


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, env=ENV)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}"
        )
    return result


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "dvc", *args, cwd=cwd, check=check)


def nox_transfer(verb: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """What ``nox -s push`` / ``nox -s pull`` run."""
    return run(
        sys.executable, str(ROOT / "tools" / "transfer.py"), verb, *args, cwd=cwd, check=False
    )


SUMMARIZE = """\
import hashlib, json, sys
from pathlib import Path

raw, out, metrics = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
files = sorted(p for p in raw.rglob("*") if p.is_file())
out.mkdir(parents=True, exist_ok=True)
with (out / "digests.txt").open("w") as f:
    for p in files:
        f.write(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(raw)}\\n")
(out / "reversed.bin").write_bytes(b"".join(p.read_bytes()[::-1] for p in files))
metrics.write_text(json.dumps({"files": len(files), "bytes": sum(p.stat().st_size for p in files)}))
"""

DVC_YAML = """\
stages:
  summarize:
    cmd: python summarize.py data/raw out metrics.json
    deps:
      - summarize.py
      - data/raw
    outs:
      - out
    metrics:
      - metrics.json
"""


def write_raw(raw: Path, per_class: int, seed: int = 0) -> None:
    """Random bytes in class folders, plus an empty file and a name with a space."""
    rng = random.Random(seed)
    for body in ("Mars", "Moon", "Titan"):
        (raw / body).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (raw / body / f"{i:03d}.jpg").write_bytes(rng.randbytes(rng.randint(200, 3000)))
    (raw / "Moon" / "empty.jpg").write_bytes(b"")
    (raw / "Titan" / "with space.jpg").write_bytes(rng.randbytes(777))


def make_repo(path: Path, s3: S3 | None, prefix: str, per_class: int = 3) -> Path:
    """A git + DVC repo with ``data/raw`` added and the ``summarize`` stage declared.

    ``s3`` None: no remote at all. Settings are written as ``dvc remote add``
    and ``dvc remote modify --local`` write them.
    """
    path.mkdir()
    run("git", "init", "-q", cwd=path)
    dvc("init", "-q", cwd=path)
    if s3 is not None:
        add_remote(path, prefix)
        set_local(path, endpointurl=s3.endpoint, access_key_id=s3.key, secret_access_key=s3.secret)
    write_raw(path / "data" / "raw", per_class)
    (path / "summarize.py").write_text(SUMMARIZE)
    (path / "dvc.yaml").write_text(DVC_YAML)
    dvc("add", "-q", "data/raw", cwd=path)
    return path


def add_remote(repo: Path, prefix: str) -> None:
    """What ``dvc remote add -d storage s3://BUCKET/PREFIX`` writes."""
    config = (
        f"[core]\n    remote = storage\n['remote \"storage\"']\n    url = s3://{BUCKET}/{prefix}\n"
    )
    (repo / ".dvc" / "config").write_text(config)


def set_local(repo: Path, **settings: str) -> None:
    lines = ["['remote \"storage\"']", *(f"    {key} = {value}" for key, value in settings.items())]
    (repo / ".dvc" / "config.local").write_text("\n".join(lines) + "\n")


OUTPUTS = ("data/raw", "out", "metrics.json")


def snapshot(repo: Path, paths: tuple[str, ...] = OUTPUTS) -> dict[str, bytes]:
    """Every file under ``paths``, by path relative to the repo."""
    files = {}
    for name in paths:
        top = repo / name
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            if path.is_file():
                files[str(path.relative_to(repo))] = path.read_bytes()
    return files


def push_then_pull_on_a_new_server(
    repo: Path, log: Path, workspace: dict[str, bytes], clear: Callable[[], None]
) -> None:
    """Point the remote at a new S3 server, push, ``clear()``, pull: the data comes back."""
    server = start_s3(log)
    try:
        set_local(
            repo,
            endpointurl=server.endpoint,
            access_key_id=server.key,
            secret_access_key=server.secret,
        )
        assert nox_transfer("push", "data/raw.dvc", cwd=repo).returncode == 0
        clear()
        pulled = nox_transfer("pull", "data/raw.dvc", cwd=repo)
        assert pulled.returncode == 0, pulled.stderr
        assert snapshot(repo, ("data/raw",)) == workspace
    finally:
        server.stop()


def remove_cache_and_workspace(repo: Path) -> None:
    shutil.rmtree(repo / ".dvc" / "cache")
    for name in OUTPUTS:
        path = repo / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


CACHE_OBJECT = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{30}(\.dir)?$")


def cache_objects(repo: Path) -> dict[str, bytes]:
    """The objects of the DVC cache by name (``ab/cdef....``), temporary files left out."""
    root = repo / ".dvc" / "cache" / "files" / "md5"
    if not root.is_dir():
        return {}
    found = {}
    for path in root.rglob("*"):
        name = path.relative_to(root).as_posix()
        if path.is_file() and CACHE_OBJECT.match(name):
            found[name] = path.read_bytes()
    return found


def assert_cache_trustworthy(repo: Path) -> None:
    """Every object DVC would trust holds exactly the bytes its name promises."""
    for name, data in cache_objects(repo).items():
        assert hashlib.md5(data).hexdigest() == name.replace("/", "").removesuffix(".dir"), name


def one_clear_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    """The failure was told in one line, without a traceback, naming ``expected``."""
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "ERROR" not in result.stdout
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def start_transfer(verb: str, repo: Path) -> subprocess.Popen:
    """``nox -s push/pull`` of the raw data, one file at a time, running in the background."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "transfer.py"), verb, "-j", "1", "data/raw.dvc"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def wait_until_logged(
    server: S3, request: str, transfer_proc: subprocess.Popen, times: int = 1
) -> None:
    """Return once the server's log shows ``request`` ``times`` times, while the transfer runs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.log.read_text(errors="replace").count(request) >= times:
            return
        assert transfer_proc.poll() is None, "the transfer ended before the server could be stopped"
        time.sleep(0.01)
    pytest.fail(f"the server never logged {request!r}")


def kill_when_logged(
    server: S3, request: str, transfer_proc: subprocess.Popen, times: int = 1
) -> None:
    """Stop the server once its log shows ``request`` ``times`` times, while the transfer runs."""
    wait_until_logged(server, request, transfer_proc, times)
    server.stop()


@pytest.mark.slow
def test_pull_gives_back_raw_data_and_pipeline_outputs_byte_for_byte(
    s3: S3, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", s3, "roundtrip")
    dvc("repro", cwd=repo)
    before = snapshot(repo)
    assert {"data/raw/Moon/empty.jpg", "data/raw/Titan/with space.jpg", "out/reversed.bin"} <= set(
        before
    )

    pushed = nox_transfer("push", cwd=repo)
    assert pushed.returncode == 0, pushed.stderr
    remove_cache_and_workspace(repo)
    pulled = nox_transfer("pull", cwd=repo)

    assert pulled.returncode == 0, pulled.stderr
    assert snapshot(repo) == before
    assert_cache_trustworthy(repo)
    status = dvc("status", cwd=repo).stdout
    assert "Data and pipelines are up to date." in status
    assert "didn't change" in dvc("repro", cwd=repo).stdout


@pytest.mark.slow
def test_a_missing_bucket_is_named_and_nothing_local_changes(s3: S3, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", s3, "nobucket")
    set_local(
        repo,
        url="s3://no-such-bucket/x",
        endpointurl=s3.endpoint,
        access_key_id=s3.key,
        secret_access_key=s3.secret,
    )
    workspace, cache = snapshot(repo, ("data/raw",)), cache_objects(repo)

    line = one_clear_line(
        nox_transfer("push", cwd=repo), "'storage'", "'no-such-bucket' does not exist"
    )

    assert "dvc remote modify --local storage url" in line
    assert snapshot(repo, ("data/raw",)) == workspace
    assert cache_objects(repo) == cache


@pytest.mark.slow
def test_wrong_keys_are_refused_with_the_fix(s3: S3, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", s3, "badkeys")
    assert nox_transfer("push", "data/raw.dvc", cwd=repo).returncode == 0
    set_local(
        repo, endpointurl=s3.endpoint, access_key_id=s3.key, secret_access_key="not-the-secret"
    )
    workspace, cache = snapshot(repo, ("data/raw",)), cache_objects(repo)

    line = one_clear_line(nox_transfer("push", cwd=repo), "'storage'", "refused the credentials")
    assert line.startswith("dvc push: error:")
    assert "secret_access_key" in line
    assert "AWS_PROFILE" in line
    assert snapshot(repo, ("data/raw",)) == workspace
    assert cache_objects(repo) == cache

    remove_cache_and_workspace(repo)
    line = one_clear_line(
        nox_transfer("pull", "data/raw.dvc", cwd=repo), "'storage'", "refused the credentials"
    )
    assert line.startswith("dvc pull: error:")
    assert cache_objects(repo) == {}
    assert not (repo / "data" / "raw").exists()


@pytest.mark.slow
def test_no_remote_configured_says_how_to_add_one(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", None, "")

    line = one_clear_line(nox_transfer("push", cwd=repo), "no DVC remote is configured")

    assert "dvc remote add -d storage s3://" in line


@pytest.mark.slow
def test_a_server_that_is_down_is_named_with_the_command_that_starts_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", None, "")
    add_remote(repo, "down")
    endpoint = f"http://127.0.0.1:{locals3.free_port()}"
    set_local(repo, endpointurl=endpoint, access_key_id="AKIAEXAMPLE", secret_access_key="x")
    workspace, cache = snapshot(repo, ("data/raw",)), cache_objects(repo)

    line = one_clear_line(nox_transfer("push", cwd=repo), "'storage'", endpoint, "does not answer")

    assert "uv run nox -s s3" in line
    assert snapshot(repo, ("data/raw",)) == workspace
    assert cache_objects(repo) == cache


@pytest.mark.slow
def test_server_stopped_mid_push_loses_nothing_and_a_second_push_completes(
    own_s3: S3, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", own_s3, "midpush", per_class=100)
    workspace, cache = snapshot(repo, ("data/raw",)), cache_objects(repo)
    push = start_transfer("push", repo)
    kill_when_logged(own_s3, f"PUT /{BUCKET}/midpush/files/md5/", push)
    stdout, stderr = push.communicate(timeout=300)

    one_clear_line(
        subprocess.CompletedProcess(push.args, push.returncode, stdout, stderr),
        "'storage'",
        "does not answer",
    )
    assert snapshot(repo, ("data/raw",)) == workspace
    assert cache_objects(repo) == cache

    # A fresh server: the push starts again from nothing and completes.
    push_then_pull_on_a_new_server(
        repo, tmp_path / "second.log", workspace, lambda: remove_cache_and_workspace(repo)
    )


@pytest.mark.slow
def test_server_stopped_mid_pull_leaves_no_object_dvc_would_trust_wrongly(
    own_s3: S3, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", own_s3, "midpull", per_class=100)
    workspace = snapshot(repo, ("data/raw",))
    saved_cache = tmp_path / "saved-cache"
    shutil.copytree(repo / ".dvc" / "cache", saved_cache)
    assert nox_transfer("push", "data/raw.dvc", cwd=repo).returncode == 0
    (repo / "notes.txt").write_text("work in progress\n")
    remove_cache_and_workspace(repo)

    pull = start_transfer("pull", repo)
    # Past the directory listing, some images in.
    kill_when_logged(own_s3, f"GET /{BUCKET}/midpull/files/md5/", pull, times=20)
    stdout, stderr = pull.communicate(timeout=300)

    one_clear_line(
        subprocess.CompletedProcess(pull.args, pull.returncode, stdout, stderr),
        "'storage'",
        "does not answer",
    )
    assert (repo / "notes.txt").read_text() == "work in progress\n"
    assert_cache_trustworthy(repo)
    assert len(cache_objects(repo)) < len(workspace) + 1  # the pull did not complete
    assert "data/raw" in dvc("status", cwd=repo).stdout  # and DVC does not claim it did

    # Once the remote holds the data again, a pull completes with the right bytes.
    partial = repo / ".dvc" / "cache"
    shutil.copytree(saved_cache, partial, dirs_exist_ok=True)

    def clear() -> None:
        shutil.rmtree(partial)
        shutil.rmtree(repo / "data" / "raw", ignore_errors=True)

    push_then_pull_on_a_new_server(repo, tmp_path / "second.log", workspace, clear)


@pytest.mark.slow
def test_a_server_frozen_mid_pull_is_given_up_in_seconds_not_minutes(
    own_s3: S3, tmp_path: Path
) -> None:
    # A frozen server's kernel still accepts connections; only requests go unanswered.
    repo = make_repo(tmp_path / "repo", own_s3, "frozen", per_class=100)
    assert nox_transfer("push", "data/raw.dvc", cwd=repo).returncode == 0
    remove_cache_and_workspace(repo)
    pull = start_transfer("pull", repo)
    wait_until_logged(own_s3, f"GET /{BUCKET}/frozen/files/md5/", pull, times=20)
    os.killpg(own_s3.proc.pid, signal.SIGSTOP)
    try:
        # botocore alone waits 60 s for each of its retries of every file.
        stdout, stderr = pull.communicate(timeout=90)
    finally:
        os.killpg(own_s3.proc.pid, signal.SIGCONT)

    one_clear_line(
        subprocess.CompletedProcess(pull.args, pull.returncode, stdout, stderr),
        "'storage'",
        "does not answer",
    )
    assert_cache_trustworthy(repo)
    assert "data/raw" in dvc("status", cwd=repo).stdout  # DVC does not claim it completed


def test_a_server_answers_only_when_it_serves_requests(s3: S3) -> None:
    assert dvcrepo.answers(s3.endpoint, timeout=5)  # an error status is an answer too
    with socket.socket() as listening:  # accepts connections, never reads them
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert not dvcrepo.answers(f"http://127.0.0.1:{port}", timeout=0.5)
        assert not dvcrepo.answers(f"https://127.0.0.1:{port}", timeout=0.5)
    assert not dvcrepo.answers(f"http://127.0.0.1:{port}", timeout=0.5)  # nothing listens


@pytest.mark.slow
def test_local_server_session_points_the_remote_and_gives_old_settings_back(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", None, "")
    dvc("remote", "add", "-d", "storage", f"s3://{BUCKET}/session", cwd=repo)
    dvc("remote", "modify", "--local", "storage", "endpointurl", "https://s3.example.org", cwd=repo)

    server = locals3.start(repo)
    try:
        local = dvc("config", "--list", "--local", cwd=repo).stdout
        assert f"remote.storage.endpointurl={server.endpoint}" in local
        assert f"remote.storage.secret_access_key={server.secret_access_key}" in local
        assert (repo / ".s3" / "server.pid").read_text().strip() == str(server.pid)
        assert locals3.start(repo).pid == server.pid  # a second start keeps the running server
        pushed = nox_transfer("push", cwd=repo)
        assert pushed.returncode == 0, pushed.stderr
    finally:
        stopped = locals3.stop(repo)

    assert stopped is not None and stopped.pid == server.pid
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    local = dvc("config", "--list", "--local", cwd=repo).stdout
    assert local.split() == ["remote.storage.endpointurl=https://s3.example.org"]
    assert not (repo / ".s3" / "server.pid").exists()
    assert locals3.stop(repo) is None

    # A remote with no local settings before is left with no local section at all.
    dvc("remote", "modify", "--local", "--unset", "storage", "endpointurl", cwd=repo)
    locals3.start(repo)
    locals3.stop(repo)
    assert "storage" not in (repo / ".dvc" / "config.local").read_text()
    assert dvc("remote", "list", cwd=repo).stdout.split()[0] == "storage"  # still in .dvc/config


REMOTE = RemoteConfig("storage", "s3://celestial-dvc/store", "http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("dvc_says", "expected"),
    [
        (
            "ERROR: failed to connect to s3 (celestial-dvc/store/files/md5) - Could not connect to "
            'the endpoint URL: "http://127.0.0.1:9/celestial-dvc/store/files/md5"',
            "does not answer",
        ),
        (
            "ERROR: unexpected error - The specified bucket does not exist: An error occurred "
            "(NoSuchBucket) when calling the ListObjectsV2 operation",
            "bucket 'celestial-dvc' does not exist",
        ),
        (
            "ERROR: unexpected error - Forbidden: An error occurred (403) when calling the "
            "HeadObject operation: Forbidden",
            "refused the credentials",
        ),
        ("ERROR: unexpected error - Unable to locate credentials", "no credentials were found"),
        (
            "WARNING: Some of the cache files do not exist neither locally nor on remote. "
            "Missing cache files:\nERROR: failed to pull data from the cloud - Checkout failed "
            "for following targets:",
            "neither in the local cache nor on the remote",
        ),
        ("ERROR: something new - a reason", "something new - a reason"),
    ],
)
def test_explain_names_the_remote_the_problem_and_a_fix(dvc_says: str, expected: str) -> None:
    line = transfer.explain("pull", dvc_says, REMOTE)

    assert "\n" not in line
    assert line.startswith("dvc pull: error: remote 'storage' (s3://celestial-dvc/store at ")
    assert expected in line


def test_explain_without_any_remote_tells_how_to_add_one() -> None:
    line = transfer.explain(
        "push",
        "ERROR: failed to push data to the cloud - config file error: no remote "
        "specified in /repo. Setup default remote with",
        RemoteConfig(None),
    )

    assert "no DVC remote is configured" in line
    assert "dvc remote add -d storage s3://BUCKET/PATH" in line
