"""The repository's one reader of the DVC config, against real ``dvc config`` output.

Each test makes a DVC repository (``dvc init --no-scm``) in a temporary folder
and writes its settings with ``dvc remote add`` and ``dvc remote modify
--local``, as a user does.
"""

from __future__ import annotations

from pathlib import Path

import dvcrepo  # tools/ is on pytest's pythonpath
import pytest
from dvcrepo import RemoteConfig


def dvc(*args: str, cwd: Path) -> None:
    result = dvcrepo.run(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    dvc("init", "--no-scm", "-q", cwd=tmp_path)
    return tmp_path


@pytest.mark.slow
def test_a_repo_without_a_remote_has_none(repo: Path) -> None:
    remote = dvcrepo.remote_config(repo)

    assert remote == RemoteConfig(None)
    assert (remote.bucket, remote.prefix) == (None, None)
    assert dvcrepo.remote_config(repo, "storage") == RemoteConfig("storage")


@pytest.mark.slow
def test_the_default_remote_merges_the_committed_and_the_local_config(repo: Path) -> None:
    dvc("remote", "add", "-d", "storage", "s3://celestial-dvc/store/v1", cwd=repo)
    dvc("remote", "modify", "--local", "storage", "endpointurl", "http://127.0.0.1:9", cwd=repo)
    dvc("remote", "add", "backup", str(repo.parent / "backup"), cwd=repo)

    remote = dvcrepo.remote_config(repo / ".dvc")  # any folder of the repository

    assert remote == RemoteConfig("storage", "s3://celestial-dvc/store/v1", "http://127.0.0.1:9")
    assert (remote.bucket, remote.prefix) == ("celestial-dvc", "store/v1")
    assert not remote.has_credentials_configured
    backup = dvcrepo.remote_config(repo, "backup")
    assert backup == RemoteConfig("backup", str(repo.parent / "backup"))
    assert backup.bucket is None
    assert dvcrepo.read_config(repo, "local") == {
        "remote.storage.endpointurl": "http://127.0.0.1:9"
    }


@pytest.mark.slow
@pytest.mark.parametrize("key", ["access_key_id", "profile", "credentialpath"])
def test_credentials_in_the_config_are_noticed(repo: Path, key: str) -> None:
    dvc("remote", "add", "-d", "storage", "s3://celestial-dvc", cwd=repo)
    dvc("remote", "modify", "--local", "storage", key, "team", cwd=repo)

    remote = dvcrepo.remote_config(repo)

    assert remote.has_credentials_configured
    assert (remote.bucket, remote.prefix) == ("celestial-dvc", "")


@pytest.mark.slow
def test_an_unreadable_config_raises_with_dvc_s_error(repo: Path) -> None:
    (repo / ".dvc" / "config").write_text("[core\n")

    with pytest.raises(dvcrepo.DvcError, match=r"'dvc config --list \.\.\.' failed in .*ERROR"):
        dvcrepo.remote_config(repo)


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://celestial-dvc/store", "celestial-dvc", "store"),
        ("s3://celestial-dvc/a/b/", "celestial-dvc", "a/b"),
        ("s3://celestial-dvc", "celestial-dvc", ""),
        ("s3:///store", None, None),
        ("gs://celestial-dvc/store", None, None),
        ("/srv/dvc-store", None, None),
        (None, None, None),
    ],
)
def test_bucket_and_prefix_come_from_an_s3_url_only(
    url: str | None, bucket: str | None, prefix: str | None
) -> None:
    remote = RemoteConfig("storage", url)

    assert (remote.bucket, remote.prefix) == (bucket, prefix)
