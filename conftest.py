"""Settings shared by every test of the workspace."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Keep the tests on loopback.

    With no credentials configured, AWS SDKs (boto, and so dvc-s3) ask the
    cloud metadata address for some. Tests only ever talk to servers on
    127.0.0.1, so that lookup is turned off for the tests and their
    subprocesses.
    """
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
