"""`nox -s repro` tells reproduced, up to date, skipped and failed projects apart.

The session's logic (``tools/dvcrepo.py``) runs here against small DVC
repositories in temporary folders, with real ``dvc`` processes: a project whose
data is nowhere to be had is skipped with its fix (or fails in strict mode),
data in the cache is checked out instead of skipped, and a stage that fails
fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import dvcrepo  # tools/ is on pytest's pythonpath
import pytest

BIN = Path(sys.executable).parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "celestial tests",
    "GIT_AUTHOR_EMAIL": "tests@celestial.invalid",
    "GIT_COMMITTER_NAME": "celestial tests",
    "GIT_COMMITTER_EMAIL": "tests@celestial.invalid",
}

pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_ENV, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty git + DVC repository with a ``projects/`` folder."""
    run("git", "init", "-q", cwd=tmp_path)
    run("dvc", "init", "-q", cwd=tmp_path)
    (tmp_path / "projects").mkdir()
    return tmp_path


def project(repo: Path, name: str, cmd: str, dep: str = "data/raw") -> Path:
    """A one-stage project reading ``dep`` and writing ``out.txt``."""
    folder = repo / "projects" / name
    folder.mkdir()
    (folder / "dvc.yaml").write_text(
        f"stages:\n  count:\n    cmd: {cmd}\n    deps:\n      - {dep}\n    outs:\n      - out.txt\n"
    )
    return folder


def add_data(folder: Path) -> None:
    raw = folder / "data" / "raw"
    (raw / "Mars").mkdir(parents=True)
    (raw / "Mars" / "a.jpg").write_bytes(b"not really a jpeg")
    run("dvc", "add", "-q", "data/raw", cwd=folder)


def reproduce(repo: Path, project: str, strict: bool) -> dvcrepo.Outcome:
    """What ``nox -s repro`` does for one project, with this environment's ``dvc``."""
    [outcome] = dvcrepo.reproduce([repo / "projects" / project], BIN, strict, log=print)
    return outcome


COUNT = "python -c \"import os; open('out.txt', 'w').write(str(len(os.listdir('data/raw'))))\""


def test_data_in_the_cache_is_checked_out_not_skipped(repo: Path) -> None:
    folder = project(repo, "cached", COUNT)
    add_data(folder)
    run("rm", "-r", "data/raw", cwd=folder)
    outcome = reproduce(repo, "cached", strict=True)
    assert (outcome.status, outcome.detail) == ("reproduced", "")
    assert (folder / "data" / "raw" / "Mars" / "a.jpg").is_file()
    assert (folder / "out.txt").read_text() == "1"
    again = reproduce(repo, "cached", strict=True)
    assert again.status == "up to date"


def test_data_nowhere_to_be_had_is_skipped_with_the_fix(repo: Path) -> None:
    folder = project(repo, "remote-only", COUNT)
    add_data(folder)
    # What a fresh clone has: the pointer, not the data, and an empty cache.
    run("rm", "-r", "data/raw", "../../.dvc/cache", cwd=folder)
    run("dvc", "remote", "add", "-d", "store", str(repo / "unreachable-remote"), cwd=repo)

    outcome = reproduce(repo, "remote-only", strict=False)

    assert outcome.status == "skipped"
    assert "\n" not in outcome.detail
    assert "data/raw is neither in the workspace nor in the DVC cache" in outcome.detail
    assert "fix: run `uv run dvc pull` in projects/remote-only" in outcome.detail
    assert not (folder / "out.txt").exists()

    strict = reproduce(repo, "remote-only", strict=True)
    assert strict.status == "failed"
    assert strict.detail == outcome.detail


def test_an_input_nothing_provides_is_skipped_with_dvc_add(repo: Path) -> None:
    project(repo, "new-folder", COUNT)
    outcome = reproduce(repo, "new-folder", strict=False)
    assert outcome.status == "skipped"
    assert outcome.detail == (
        "data/raw does not exist and no stage or .dvc file provides it; fix: put the data "
        "there and run `uv run dvc add data/raw` in projects/new-folder"
    )


def test_a_stage_that_fails_fails_with_dvc_s_error_line(repo: Path) -> None:
    folder = project(repo, "broken", "python -c \"raise SystemExit('boom')\"")
    add_data(folder)
    outcome = reproduce(repo, "broken", strict=False)
    assert outcome.status == "failed"
    assert outcome.detail.startswith(
        "ERROR: failed to reproduce 'projects/broken/dvc.yaml:count': boom"
    ), outcome.detail


def test_a_param_missing_from_params_yaml_is_the_failure_s_reason(repo: Path) -> None:
    # DVC says why only in a WARNING before its ERROR: the stage never ran.
    folder = project(repo, "unset", COUNT)
    (folder / "dvc.yaml").write_text(
        (folder / "dvc.yaml")
        .read_text()
        .replace("    deps:", "    params: [train.epochs]\n    deps:")
    )
    (folder / "params.yaml").write_text("prepare:\n  seed: 1\n")
    add_data(folder)
    outcome = reproduce(repo, "unset", strict=False)
    assert outcome.status == "failed"
    assert outcome.detail == (
        "ERROR: failed to reproduce 'projects/unset/dvc.yaml:count': Parameters "
        "'train.epochs' are missing from 'projects/unset/params.yaml'."
    )


def test_a_dvc_lock_with_merge_conflicts_is_named_with_the_fix(repo: Path) -> None:
    folder = project(repo, "merged", COUNT)
    add_data(folder)
    assert reproduce(repo, "merged", strict=False).status == "reproduced"
    lock = folder / "dvc.lock"
    text = lock.read_text()
    lock.write_text(text.replace("    outs:", "<<<<<<< HEAD\n=======\n>>>>>>> other\n    outs:", 1))
    outcome = reproduce(repo, "merged", strict=False)
    assert outcome.status == "failed"
    assert outcome.detail.startswith(
        "'./projects/merged/dvc.lock' is invalid (possible merge conflicts): resolve the "
    ), outcome.detail
    assert "git checkout --theirs FILE" in outcome.detail


def test_one_dvc_run_serves_every_project_and_a_failure_hides_none(repo: Path) -> None:
    names = ["alpha", "broken", "gamma", "missing"]
    for name in names:
        command = "python -c \"raise SystemExit('no good')\"" if name == "broken" else COUNT
        folder = project(repo, name, command)
        if name != "missing":
            add_data(folder)
    starts = []
    folders = [repo / "projects" / name for name in names]

    outcomes = dvcrepo.reproduce(folders, BIN, strict=False, log=starts.append)

    assert len(starts) == 1  # one dvc repro for the three projects that have their data
    assert [(o.project, o.status) for o in outcomes] == [
        ("alpha", "reproduced"),
        ("broken", "failed"),
        ("gamma", "reproduced"),
        ("missing", "skipped"),
    ]
    assert "no good" in outcomes[1].detail
    assert (repo / "projects" / "gamma" / "out.txt").read_text() == "1"
    again = dvcrepo.reproduce(folders, BIN, strict=False, log=starts.append)
    assert [o.status for o in again] == ["up to date", "failed", "up to date", "skipped"]


def test_only_the_projects_asked_for_run_each_under_its_own_name(repo: Path) -> None:
    # Projects are targets by folder (dvc repro --recursive): a folder whose name
    # another begins with must neither take in nor lend the other's stages.
    for name in ("gamma", "gamma-two", "left-out"):
        add_data(project(repo, name, COUNT))
    folders = [repo / "projects" / name for name in ("gamma", "gamma-two")]

    outcomes = dvcrepo.reproduce(folders, BIN, strict=False, log=print)

    assert [(o.project, o.status) for o in outcomes] == [
        ("gamma", "reproduced"),
        ("gamma-two", "reproduced"),
    ]
    assert not (repo / "projects" / "left-out" / "out.txt").exists()
    (repo / "projects" / "gamma-two" / "data" / "raw" / "Mars" / "b.jpg").write_bytes(b"more")
    run("dvc", "add", "-q", "data/raw", cwd=repo / "projects" / "gamma-two")
    again = dvcrepo.reproduce(folders, BIN, strict=False, log=print)
    assert [o.status for o in again] == ["up to date", "reproduced"]


def test_a_remote_whose_server_does_not_answer_is_skipped_saying_so(repo: Path) -> None:
    folder = project(repo, "s3-down", COUNT)
    add_data(folder)
    run("rm", "-r", "data/raw", "../../.dvc/cache", cwd=folder)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run("dvc", "remote", "add", "-d", "store", "s3://celestial-tests/store", cwd=repo)
    run("dvc", "remote", "modify", "--local", "store", "access_key_id", "x", cwd=repo)
    run(
        "dvc",
        "remote",
        "modify",
        "--local",
        "store",
        "endpointurl",
        f"http://127.0.0.1:{port}",
        cwd=repo,
    )

    outcome = reproduce(repo, "s3-down", strict=False)

    assert outcome.status == "skipped"
    assert f"the server of the remote 'store' does not answer at http://127.0.0.1:{port}" in (
        outcome.detail
    )
    assert "`uv run nox -s s3`" in outcome.detail


def test_an_s3_remote_without_credentials_is_skipped_without_asking_it(
    repo: Path, monkeypatch
) -> None:
    folder = project(repo, "s3-only", COUNT)
    add_data(folder)
    run("rm", "-r", "data/raw", "../../.dvc/cache", cwd=folder)
    run("dvc", "remote", "add", "-d", "store", "s3://celestial-tests/store", cwd=repo)
    for variable in dvcrepo.AWS_CREDENTIAL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(repo / "home"))

    outcome = reproduce(repo, "s3-only", strict=False)

    assert outcome.status == "skipped"
    assert "no credentials are configured for the remote 'store'" in outcome.detail
    assert "fix: run `uv run dvc pull` in projects/s3-only" in outcome.detail

    monkeypatch.setenv("AWS_PROFILE", "team")
    assert dvcrepo.missing_credentials(folder) is None
