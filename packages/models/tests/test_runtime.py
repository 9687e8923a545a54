"""Where compiled programs are kept between processes, and how to move or turn that off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from celestial_models.runtime import CACHE_ENV, CACHE_MAX_BYTES, compilation_cache_dir

COMPILE = (
    "import celestial_models.runtime, jax, jax.numpy as jnp\n"
    "print(jax.config.jax_compilation_cache_dir)\n"
    "print(jax.jit(lambda x: x * 2 + 1)(jnp.ones(3)).sum())\n"
    "print(jax.config.jax_compilation_cache_max_size)\n"
)


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if k not in (CACHE_ENV, "JAX_COMPILATION_CACHE_DIR")
    }
    return subprocess.run(
        [sys.executable, "-c", COMPILE], env={**base, **env}, capture_output=True, text=True
    )


def test_the_cache_is_in_the_user_cache_folder_one_folder_per_cpu(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = compilation_cache_dir()
    assert folder is not None and folder.parent == tmp_path / "celestial" / "xla"
    assert len(folder.name) == 16  # the CPU's digest
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    assert compilation_cache_dir() == tmp_path / "elsewhere" / folder.name


@pytest.mark.parametrize("value", ["off", "OFF", "0", "false", "no"])
def test_the_cache_can_be_turned_off(monkeypatch, value: str) -> None:
    monkeypatch.setenv(CACHE_ENV, value)
    assert compilation_cache_dir() is None


def test_a_process_keeps_its_programs_in_the_named_folder(tmp_path: Path) -> None:
    done = run({CACHE_ENV: str(tmp_path / "xla")})
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.splitlines()[0])
    assert folder.parent == tmp_path / "xla"
    assert any(folder.glob("*-cache"))
    # Bounded, least recently used first; and so read and written under a file lock.
    assert int(done.stdout.splitlines()[2]) == CACHE_MAX_BYTES
    assert any(folder.glob("*-atime"))


def test_jax_own_setting_wins(tmp_path: Path) -> None:
    done = run({"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax"), CACHE_ENV: str(tmp_path)})
    assert done.stdout.splitlines()[0] == str(tmp_path / "jax")


def test_a_folder_that_cannot_be_made_is_one_warning_and_programs_still_run() -> None:
    done = run({CACHE_ENV: "/proc/celestial-cannot-be-here"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == "9.0"  # the program ran, compiled
    assert done.stderr.count("Warning") == 1, done.stderr
    assert f"Set {CACHE_ENV} to a writable folder" in done.stderr
