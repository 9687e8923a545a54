"""The repository's DVC set-up: its remote, its tracked data, what a pipeline lacks.

The one reader of ``dvc config --list`` for the whole repository:
``noxfile.py`` (``nox -s repro``), ``tools/transfer.py`` (``nox -s push`` and
``pull``) and ``tools/locals3.py`` (``nox -s s3`` and ``s3-stop``) ask
:func:`remote_config` for the remote as one typed record, or
:func:`read_config` for the raw settings of one config level. An
``s3://BUCKET/PREFIX`` URL is taken apart in one place,
:attr:`RemoteConfig.bucket` and :attr:`RemoteConfig.prefix`.

``nox -s repro`` asks :func:`reproduce` for each project: input data missing
from the workspace is checked out from the DVC cache or pulled from the
remote first, and a project whose data cannot be had is skipped with a reason
that names the fix (:func:`skip_reason`).

Only the standard library is imported at module level: nox imports this file
with its own Python, before any session has installed anything.
"""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "AWS_CREDENTIAL_VARIABLES",
    "DVC",
    "PULL_TIMEOUT_S",
    "UP_TO_DATE",
    "DvcError",
    "Outcome",
    "RemoteConfig",
    "answers",
    "endpoint_address",
    "last_error",
    "missing_credentials",
    "read_config",
    "remote_config",
    "reproduce",
    "run",
    "run_checked",
    "skip_reason",
    "tracked_paths",
    "unproduced_inputs",
    "unreachable_remote",
]

# The DVC command line of this Python environment; callers running under
# another Python (nox) pass the ``dvc`` of the environment that has it.
DVC: tuple[str, ...] = (sys.executable, "-m", "dvc")
UP_TO_DATE = "Data and pipelines are up to date."
# A remote that does not answer must not hang the caller.
PULL_TIMEOUT_S = 600
# Seconds a remote's own server (its endpointurl) has to accept a connection.
ENDPOINT_TIMEOUT_S = 3.0
# Settings of a remote that name the credentials it uses.
CREDENTIAL_KEYS = ("access_key_id", "profile", "credentialpath")
AWS_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


class DvcError(RuntimeError):
    """A DVC command failed; the message names the command, the folder and DVC's error."""


def run(
    *args: str, cwd: Path, dvc: Sequence[str] = DVC, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``dvc ARGS`` in ``cwd`` and capture its output; a failure is not raised.

    Args:
        *args: The DVC arguments, e.g. ``"config", "--list"``.
        cwd: Folder to run in.
        dvc: The DVC command line (default: this Python's ``python -m dvc``).
        timeout: Seconds before :class:`subprocess.TimeoutExpired` is raised.

    Returns:
        The finished process.
    """
    return subprocess.run(
        [*dvc, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )


def run_checked(*args: str, cwd: Path, dvc: Sequence[str] = DVC) -> str:
    """Run ``dvc ARGS`` in ``cwd`` and return its standard output.

    Raises:
        DvcError: DVC exited with an error; the message ends with its last error line.
    """
    result = run(*args, cwd=cwd, dvc=dvc)
    if result.returncode != 0:
        reason = last_error(result.stderr, default=f"exit {result.returncode}")
        raise DvcError(f"'dvc {' '.join(args[:3])} ...' failed in {cwd}: {reason}")
    return result.stdout


def last_error(output: str, default: str = "no output") -> str:
    """The last ``ERROR`` line of DVC's output (or its last line), for one-line reports."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or [default])[-1]


def read_config(
    cwd: Path,
    level: Literal["local", "repo", "global", "system"] | None = None,
    dvc: Sequence[str] = DVC,
) -> dict[str, str]:
    """The DVC settings that apply in ``cwd``, as ``dvc config --list`` prints them.

    Args:
        cwd: A folder of the DVC repository.
        level: Only the settings of this config file (``local``: ``.dvc/config.local``);
            ``None`` merges them all, as DVC does.
        dvc: The DVC command line.

    Returns:
        ``{"core.remote": "storage", "remote.storage.url": "s3://...", ...}``.

    Raises:
        DvcError: DVC could not read its configuration.
    """
    flags = [f"--{level}"] if level else []
    listing = run_checked("config", "--list", *flags, cwd=cwd, dvc=dvc)
    return dict(line.partition("=")[::2] for line in listing.splitlines() if "=" in line)


@dataclass(frozen=True)
class RemoteConfig:
    """A DVC remote as the merged config describes it.

    ``name`` is ``None`` when no remote was asked for and none is the default;
    ``url`` is ``None`` when the config does not define the remote named.
    """

    name: str | None
    url: str | None = None
    endpoint: str | None = None
    has_credentials_configured: bool = False

    @property
    def bucket(self) -> str | None:
        """The bucket of an ``s3://BUCKET/PREFIX`` URL; ``None`` for any other remote."""
        location = self._s3_location()
        return location[0] if location else None

    @property
    def prefix(self) -> str | None:
        """The ``PREFIX`` of an ``s3://BUCKET/PREFIX`` URL (``""`` at the bucket's top)."""
        location = self._s3_location()
        return location[1] if location else None

    def _s3_location(self) -> tuple[str, str] | None:
        parsed = urllib.parse.urlparse(self.url or "")
        if parsed.scheme != "s3" or not parsed.netloc:
            return None
        return parsed.netloc, parsed.path.strip("/")

    def describe(self) -> str:
        """``remote 'storage' (s3://bucket/path at http://host:port)`` or as much as is known."""
        if self.name is None:
            return "the default remote"
        where = self.url or "no URL"
        if self.endpoint:
            where += f" at {self.endpoint}"
        return f"remote {self.name!r} ({where})"


def remote_config(cwd: Path, name: str | None = None, dvc: Sequence[str] = DVC) -> RemoteConfig:
    """The remote ``name`` (by default, the default remote) as configured in ``cwd``.

    Args:
        cwd: A folder of the DVC repository.
        name: The remote asked for (``dvc push -r NAME``); ``None`` for the default.
        dvc: The DVC command line.

    Returns:
        The remote; ``RemoteConfig(None)`` when none was asked for and none is the default.

    Raises:
        DvcError: DVC could not read its configuration.
    """
    config = read_config(cwd, dvc=dvc)
    name = name or config.get("core.remote")
    if not name:
        return RemoteConfig(None)
    section = f"remote.{name}."
    return RemoteConfig(
        name,
        url=config.get(section + "url"),
        endpoint=config.get(section + "endpointurl"),
        has_credentials_configured=any(section + key in config for key in CREDENTIAL_KEYS),
    )


def tracked_paths(project_dir: Path) -> list[tuple[Path, Path]]:
    """``(dvc_file, path)`` for each output recorded by a ``.dvc`` file of the project."""
    found = []
    for dvc_file in sorted(project_dir.glob("**/*.dvc")):
        for line in dvc_file.read_text().splitlines():
            key, _, value = line.strip().removeprefix("- ").partition(":")
            if key == "path":
                found.append((dvc_file, dvc_file.parent / value.strip().strip("'\"")))
    return found


def unproduced_inputs(project_dir: Path) -> list[str]:
    """Stage inputs inside the project that no stage and no ``.dvc`` file provides."""
    import yaml  # DVC's own dependency, present wherever DVC is, not where nox starts

    stages = (yaml.safe_load((project_dir / "dvc.yaml").read_text()) or {}).get("stages", {})

    def paths(stage: dict, key: str) -> list[str]:
        entries = stage.get(key) or []
        return [e if isinstance(e, str) else next(iter(e)) for e in entries]

    kinds = ("outs", "metrics", "plots")
    provided = {p for stage in stages.values() for k in kinds for p in paths(stage, k)}
    provided |= {str(p.relative_to(project_dir)) for _, p in tracked_paths(project_dir)}
    return sorted(
        dep
        for stage in stages.values()
        for dep in paths(stage, "deps")
        if not dep.startswith("..") and dep not in provided and not (project_dir / dep).exists()
    )


def endpoint_address(endpoint: str) -> tuple[str, int]:
    """The host and TCP port of an ``endpointurl`` (the scheme's port when it names none)."""
    url = urllib.parse.urlparse(endpoint)
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def answers(endpoint: str, timeout: float) -> bool:
    """Whether the server at ``endpoint`` answers an HTTP request within ``timeout`` seconds.

    Any answer counts, an error status included: the question is whether the
    server is serving at all. A TCP connection is not enough, as a frozen or
    overloaded server's kernel still accepts them. The certificate is not
    checked: nothing is sent but the request line.
    """
    host, port = endpoint_address(endpoint)
    if urllib.parse.urlparse(endpoint).scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("HEAD", "/")
        connection.getresponse()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def missing_credentials(project_dir: Path, dvc: Sequence[str] = DVC) -> str | None:
    """Why an S3 remote certainly cannot be read here, or None when it may be.

    Without any credentials, the AWS SDK would spend many seconds asking the
    cloud metadata address before failing: a fresh clone must not wait for
    that on every run, so a pull is only tried where credentials are set.
    """
    try:
        return _without_credentials(remote_config(project_dir, dvc=dvc))
    except DvcError:
        return None  # the pull that follows reports DVC's own error


def unreachable_remote(project_dir: Path, dvc: Sequence[str] = DVC) -> str | None:
    """Why a pull from the project's remote cannot work, or None when it may.

    Without credentials (see `missing_credentials`), or with a server of its
    own (``endpointurl``) that does not answer a request: DVC would retry
    every file and end with "N files failed to download", naming no cause.
    """
    try:
        remote = remote_config(project_dir, dvc=dvc)
    except DvcError:
        return None  # the pull that follows reports DVC's own error
    problem = _without_credentials(remote)
    if problem is None and remote.endpoint and not answers(remote.endpoint, ENDPOINT_TIMEOUT_S):
        problem = (
            f"the server of the remote '{remote.name}' does not answer at "
            f"{remote.endpoint} (start the local one with `uv run nox -s s3`, or fix the "
            f"endpoint with `uv run dvc remote modify --local {remote.name} endpointurl URL`)"
        )
    return problem


def _without_credentials(remote: RemoteConfig) -> str | None:
    if remote.bucket is None or remote.has_credentials_configured:
        return None
    if any(os.environ.get(variable) for variable in AWS_CREDENTIAL_VARIABLES):
        return None
    aws_dir = Path(os.environ.get("HOME", "~")).expanduser() / ".aws"
    if (aws_dir / "credentials").is_file() or (aws_dir / "config").is_file():
        return None
    return f"no credentials are configured for the remote '{remote.name}' ({remote.url})"


def skip_reason(project_dir: Path, dvc: Sequence[str] = DVC) -> str | None:
    """Why the project's input data cannot be had, or None once it is in the workspace.

    Data tracked by a ``.dvc`` file but absent from the workspace is checked
    out from the DVC cache, else pulled from the remote; only when both fail is
    the project skipped. The reason names the fix.
    """
    here = project_dir.relative_to(project_dir.parent.parent)
    for dvc_file, path in tracked_paths(project_dir):
        if path.exists():
            continue
        target = str(dvc_file.relative_to(project_dir))
        if run("checkout", "--quiet", target, cwd=project_dir, dvc=dvc).returncode == 0:
            continue
        error = unreachable_remote(project_dir, dvc)
        if error is None:
            try:
                pulled = run("pull", target, cwd=project_dir, dvc=dvc, timeout=PULL_TIMEOUT_S)
                if pulled.returncode != 0:
                    error = last_error(pulled.stdout + pulled.stderr)
            except subprocess.TimeoutExpired:
                error = f"dvc pull gave no answer in {PULL_TIMEOUT_S} s"
        if error:
            return (
                f"{path.relative_to(project_dir)} is neither in the workspace nor in the DVC "
                f"cache, and the remote cannot provide it ({error}); fix: run `uv run dvc pull` "
                f"in {here} with access to the remote, or put the original data there "
                f"({here}/README.md says where it comes from)"
            )
    missing = unproduced_inputs(project_dir)
    if missing:
        return (
            f"{', '.join(missing)} does not exist and no stage or .dvc file provides it; fix: "
            f"put the data there and run `uv run dvc add {missing[0]}` in {here}"
        )
    return None


@dataclass
class Outcome:
    """What ``dvc repro`` did in one project."""

    project: str
    status: str  # "reproduced", "up to date", "skipped" or "failed"
    detail: str = ""


def reproduce(
    project_dirs: Sequence[Path],
    bin_dir: Path,
    strict: bool,
    log: Callable[[str], object] = print,
) -> list[Outcome]:
    """Run one ``dvc repro`` over every project, streaming its output to standard output.

    DVC starts once for all of them (``dvc repro --keep-going --recursive``
    with each project's folder as a target, from the repository root), and a
    stage that fails skips only the stages that depend on it: the other
    projects still run. Each project's outcome is read from the stages DVC
    names.

    A folder target takes its stages from the graph DVC has already built;
    a ``dvc.yaml`` target makes DVC read and check that file and its lock
    again, about 14 ms per project (a no-op of 20 projects: 2.06 s against
    2.34 s).

    Args:
        project_dirs: The projects' folders (``projects/<name>``).
        bin_dir: The environment whose ``dvc`` runs the pipelines and whose
            commands their stages call.
        strict: Report a project whose data cannot be had as failed, not skipped.
        log: Receives the line announcing the run.

    Returns:
        One outcome per project, in order: reproduced, up to date, skipped
        (with the reason and its fix) or failed (with DVC's error line).
    """
    if not project_dirs:
        return []
    root = project_dirs[0].parent.parent
    dvc = (str(bin_dir / "dvc"),)
    outcomes = {}
    targets = {}  # the folder from the root: the target, and what DVC's stage names start with
    for project_dir in project_dirs:
        reason = skip_reason(project_dir, dvc)
        if reason:
            outcomes[project_dir] = Outcome(
                project_dir.name, "failed" if strict else "skipped", reason
            )
        else:
            targets[project_dir] = project_dir.relative_to(root).as_posix()
    if targets:
        log(f"dvc repro of {', '.join(targets.values())}")
        lines, status = _stream(
            [*dvc, "repro", "--keep-going", "--recursive", *targets.values()],
            cwd=root,
            env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        )
        for project_dir, target in targets.items():
            # Its dvc.yaml's stages and its .dvc files: 'projects/NAME/...'
            outcomes[project_dir] = _outcome(project_dir.name, f"'{target}/", lines, status)
    return [outcomes[project_dir] for project_dir in project_dirs]


def _stream(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[list[str], int]:
    """Run ``command``, echoing its output as it comes; its lines and exit status."""
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line.rstrip("\n"))
    return lines, proc.wait()


def _outcome(project: str, stage_prefix: str, lines: list[str], status: int) -> Outcome:
    """One project's outcome from the output of a ``dvc repro`` over several projects.

    DVC names each stage as ``'projects/NAME/dvc.yaml:STAGE'`` (a ``.dvc``
    file as ``'projects/NAME/data/raw.dvc'``); a project
    failed if one of its stages did (or, when DVC failed before naming any
    stage, if DVC did), and was reproduced if one of its stages ran.
    """
    own = [line for line in lines if stage_prefix in line]
    failures = [line for line in own if line.startswith("ERROR")]
    if failures:
        # What the command printed last, else why DVC did not run it (a param
        # missing from params.yaml is only a WARNING before the ERROR).
        said = _last_words(lines, failures[-1].split("'")[1]) or next(
            (w.removeprefix("WARNING: ") for w in reversed(own) if w.startswith("WARNING")), ""
        )
        return Outcome(project, "failed", failures[-1] + (f": {said}" if said else ""))
    if status != 0 and not any(line.startswith("ERROR") and "dvc.yaml:" in line for line in lines):
        return Outcome(project, "failed", _before_any_stage(lines))
    ran = ("Running stage", "is cached - skipping run")
    return Outcome(
        project, "reproduced" if any(m in line for line in own for m in ran) else "up to date"
    )


def _before_any_stage(lines: list[str]) -> str:
    """Why DVC stopped before running any stage: a file it cannot read, or its last error.

    A file DVC cannot read is followed by the YAML parser's account of it,
    line by line; the line that names the file is the one to report.
    """
    invalid = next((line.strip() for line in lines if "is invalid" in line), None)
    if invalid is None:
        return last_error("\n".join(lines))
    if "merge conflicts" in invalid:
        return (
            f"{invalid.rstrip('.')}: resolve the conflict markers (<<<<<<<); in a dvc.lock, "
            "take either side ('git checkout --theirs FILE') and rerun: the repro writes it "
            "again"
        )
    return invalid


def _last_words(lines: list[str], stage: str) -> str:
    """The last line a stage's command printed (its error, when it failed), or ''."""
    start = next((i for i, line in enumerate(lines) if line == f"Running stage '{stage}':"), None)
    if start is None:
        return ""
    said = []
    for line in lines[start + 1 :]:
        if line.startswith(
            ("Running stage", "Stage '", "Generating lock", "Updating lock", "WARNING", "ERROR")
        ):
            break
        if line.strip() and not line.startswith(">"):
            said.append(line.strip())
    return said[-1] if said else ""
