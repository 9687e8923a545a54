"""A local S3-compatible server for development, tests and CI.

``start`` runs ``moto_server`` on 127.0.0.1 on a free port, in its own process
group so that ``stop`` ends it and every child it may have with one signal. It
creates an IAM user with an access key, creates the bucket of the DVC remote,
then turns on moto's credential checks, so that wrong keys fail here as they
would on AWS. Finally it points the remote at the server with
``dvc remote modify --local``: the endpoint and keys land in
``.dvc/config.local``, which git ignores. ``stop`` ends the server and puts
back whatever ``.dvc/config.local`` held before.

The server keeps objects in memory: stopping it discards what was pushed. The
remote and its bucket come from ``dvcrepo.remote_config``, the repository's one
reader of the DVC config; a DVC command that fails raises ``dvcrepo.DvcError``.

Usage (``uv run nox -s s3`` and ``uv run nox -s s3-stop`` call these)::

    python tools/locals3.py start [--repo DIR] [--remote NAME]
    python tools/locals3.py stop [--repo DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dvcrepo import DvcError, read_config, remote_config, run_checked

__all__ = [
    "REMOTE_KEYS",
    "LocalS3Error",
    "Server",
    "configure_remote",
    "free_port",
    "kill_group",
    "launch",
    "port_of",
    "provision",
    "start",
    "stop",
]

HOST = "127.0.0.1"
STATE_DIR = ".s3"
# Settings of the remote that ``start`` writes to .dvc/config.local.
REMOTE_KEYS = ("endpointurl", "access_key_id", "secret_access_key")
USER = "celestial-dvc"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


class LocalS3Error(RuntimeError):
    """The local server could not be started, reached or configured."""


@dataclass
class Server:
    """A running moto server, as recorded in its state file."""

    pid: int
    port: int
    host: str = HOST
    remote: str = ""
    bucket: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    # What .dvc/config.local held for each key of REMOTE_KEYS before ``start``.
    previous: dict[str, str | None] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        """The server's base URL, as boto3 and DVC's ``endpointurl`` expect it."""
        return f"http://{self.host}:{self.port}"


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _moto_server() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    if beside.is_file():
        return str(beside)
    raise LocalS3Error(
        f"moto_server was expected beside {sys.executable} but is not installed there. "
        "Install the dev dependencies: 'uv sync --locked'."
    )


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def port_of(proc: subprocess.Popen[bytes]) -> int:
    """The port a server started by `launch` listens on (its last argument)."""
    args = proc.args
    assert isinstance(args, list), "launch starts servers from an argument list"
    return int(args[-1])


def launch(log: Path, host: str = HOST, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """Start ``moto_server`` on a free port of ``host`` in a new process group.

    Waits until the server answers HTTP. A port taken between the choice and
    the bind makes the server exit; another port is tried then.

    Args:
        log: File that receives the server's output (appended to).
        host: Interface to bind; keep it on loopback.
        timeout: Seconds to wait for the server to answer.

    Returns:
        The server process; `port_of` gives its port.

    Raises:
        LocalS3Error: The server did not start.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        port = free_port(host)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [_moto_server(), "-H", host, "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(f"http://{host}:{port}"):
                return proc
            time.sleep(0.1)
        if proc.poll() is None:
            kill_group(proc.pid)
            proc.wait()
            break
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    raise LocalS3Error(
        f"moto_server did not answer on {host} within {timeout:.0f} s "
        f"(last output: {' | '.join(tail) or 'none'}). See {log}."
    )


def provision(endpoint: str, bucket: str) -> tuple[str, str]:
    """Create a user with S3 rights, its access key and ``bucket``; then require keys.

    After this call the server checks every request's signature, as AWS does.

    Args:
        endpoint: The server's base URL.
        bucket: Name of the bucket to create.

    Returns:
        The access key id and secret access key of the new user.
    """
    import boto3  # moto depends on it; only this step needs it
    from botocore.exceptions import BotoCoreError, ClientError

    # Any keys do while moto does not check them yet.
    anonymous = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "provisioning",
        "aws_secret_access_key": "provisioning",
    }
    try:
        iam = boto3.client("iam", **anonymous)
        iam.create_user(UserName=USER)
        iam.put_user_policy(UserName=USER, PolicyName="s3", PolicyDocument=json.dumps(POLICY))
        key = iam.create_access_key(UserName=USER)["AccessKey"]
        boto3.client("s3", **anonymous).create_bucket(Bucket=bucket)
        # From now on, every request needs a valid signature (moto's IAM checks).
        request = urllib.request.Request(
            endpoint + "/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10):
            pass
    except (BotoCoreError, ClientError, OSError) as error:
        raise LocalS3Error(
            f"Could not set up user and bucket {bucket!r} on {endpoint}: {error}"
        ) from error
    return key["AccessKeyId"], key["SecretAccessKey"]


def kill_group(pid: int, grace: float = 5.0) -> None:
    """End the process group led by ``pid``: SIGTERM, then SIGKILL after ``grace`` s."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers signal 0; it is gone for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_moto(pid: int) -> bool:
    # Guards against signalling an unrelated process that reuses a stale pid.
    try:
        return b"moto_server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def configure_remote(repo: Path, remote: str, settings: dict[str, str | None]) -> None:
    """Set (or, for ``None``, unset) settings of ``remote`` in ``.dvc/config.local``."""
    current = read_config(repo, "local") if None in settings.values() else {}
    for key, value in settings.items():
        if value is None:
            if f"remote.{remote}.{key}" in current:
                run_checked("remote", "modify", "--local", "--unset", remote, key, cwd=repo)
        else:
            run_checked("remote", "modify", "--local", remote, key, value, cwd=repo)


def _drop_empty_section(repo: Path, remote: str) -> None:
    """Remove ``remote``'s section from ``.dvc/config.local`` once no setting is left in it."""
    local = repo / ".dvc" / "config.local"
    header = f"['remote \"{remote}\"']"
    if not local.is_file() or header not in local.read_text():
        return
    if not any(key.startswith(f"remote.{remote}.") for key in read_config(repo, "local")):
        run_checked("remote", "remove", "--local", remote, cwd=repo)


def _state_file(repo: Path) -> Path:
    return repo / STATE_DIR / "server.json"


def _read_state(repo: Path) -> Server | None:
    path = _state_file(repo)
    if not path.is_file():
        return None
    return Server(**json.loads(path.read_text()))


def _write_state(repo: Path, server: Server) -> None:
    state = repo / STATE_DIR
    state.mkdir(exist_ok=True)
    tmp = state / "server.json.tmp"
    with tmp.open("w") as out:
        json.dump(asdict(server), out, indent=2)
    tmp.chmod(0o600)
    tmp.replace(_state_file(repo))
    (state / "server.pid").write_text(f"{server.pid}\n")


def start(repo: Path, remote: str | None = None) -> Server:
    """Start the local server for ``repo`` and point its DVC remote at it.

    A server already running for ``repo`` is kept, and the remote pointed at it
    again.

    Args:
        repo: Root of the DVC repository.
        remote: Remote to point at the server; the default remote if ``None``.

    Returns:
        The running server.
    """
    running = _read_state(repo)
    if running is not None and _alive(running.pid) and _answers(running.endpoint):
        configure_remote(repo, running.remote, _ours(running))
        return running
    if running is not None:
        stop(repo)
    bucket, remote = _bucket_of(repo, remote)
    proc = launch(repo / STATE_DIR / "server.log")
    local = read_config(repo, "local")
    server = Server(
        pid=proc.pid,
        port=port_of(proc),
        remote=remote,
        bucket=bucket,
        previous={key: local.get(f"remote.{remote}.{key}") for key in REMOTE_KEYS},
    )
    try:
        server.access_key_id, server.secret_access_key = provision(server.endpoint, bucket)
        _write_state(repo, server)
        configure_remote(repo, remote, _ours(server))
    except BaseException:
        if _state_file(repo).is_file():
            stop(repo)
        else:
            kill_group(proc.pid)
        raise
    return server


def _bucket_of(repo: Path, name: str | None) -> tuple[str, str]:
    """The bucket of remote ``name`` (or of the default remote), and the remote's name."""
    remote = remote_config(repo, name)
    config = repo / ".dvc" / "config"
    if remote.name is None:
        raise LocalS3Error(
            f"No default DVC remote is set in {config}. "
            "Add one with 'dvc remote add -d storage s3://BUCKET/PATH'."
        )
    if remote.url is None:
        raise LocalS3Error(
            f"Remote {remote.name!r} is not defined in {config}. "
            f"Add it with 'dvc remote add {remote.name} s3://BUCKET/PATH'."
        )
    if remote.bucket is None:
        raise LocalS3Error(
            f"An s3://BUCKET/PATH remote URL was expected; received {remote.url!r}. "
            "Set one with 'dvc remote add -d storage s3://BUCKET/PATH'."
        )
    return remote.bucket, remote.name


def _ours(server: Server) -> dict[str, str | None]:
    return {
        "endpointurl": server.endpoint,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
    }


def stop(repo: Path) -> Server | None:
    """Stop the local server of ``repo`` and restore its remote's local settings.

    Settings changed by hand since ``start`` are left as they are.

    Returns:
        The server that was stopped, or ``None`` when none was recorded.
    """
    server = _read_state(repo)
    if server is None:
        return None
    if _is_moto(server.pid):
        kill_group(server.pid)
    local = read_config(repo, "local")
    restore = {
        key: server.previous.get(key)
        for key, value in _ours(server).items()
        if local.get(f"remote.{server.remote}.{key}") == value
    }
    configure_remote(repo, server.remote, restore)
    _drop_empty_section(repo, server.remote)
    for name in ("server.json", "server.pid"):
        (repo / STATE_DIR / name).unlink(missing_ok=True)
    return server


def main(argv: list[str] | None = None) -> int:
    """Command line: ``start`` or ``stop`` the local server of a DVC repository."""
    parser = argparse.ArgumentParser(prog="locals3", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="DVC repository root")
    parser.add_argument("--remote", help="remote to point at the server (default: the default)")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    try:
        if args.action == "start":
            server = start(repo, args.remote)
            print(
                f"Local S3 server on {server.endpoint} (pid {server.pid}, bucket "
                f"{server.bucket!r}); remote {server.remote!r} points at it in "
                ".dvc/config.local. Stop it with 'uv run nox -s s3-stop'."
            )
        else:
            stopped = stop(repo)
            if stopped is None:
                print(f"No local S3 server is recorded in {repo / STATE_DIR}; nothing to stop.")
            else:
                print(
                    f"Stopped the local S3 server on {stopped.endpoint}; remote "
                    f"{stopped.remote!r} has its previous local settings back."
                )
    except (LocalS3Error, DvcError) as error:
        print(f"locals3: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
