"""A model folder is the same bytes on every x86 CPU: BLAS kernels and XLA targets.

DVC records every output's hash in ``dvc.lock``, so a fresh clone on another
machine must train the same bytes, or ``git status`` shows a change after its
first ``dvc repro``. NumPy's BLAS picks its kernels per CPU (forced here with
``OPENBLAS_CORETYPE``) and XLA compiles for the CPU's instruction set (capped
here with ``--xla_cpu_max_isa``); neither may change an output. Nor may the
compilation cache: a program loaded from it trains what a fresh compile does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHILD = """
import hashlib, json, logging, sys
# Each program loaded from the compilation cache is logged (to stderr).
logging.basicConfig(level=logging.WARNING)
logging.getLogger("jax._src.compiler").setLevel(logging.DEBUG)
from pathlib import Path
import numpy as np
from celestial_data import write_prepared
from celestial_models import TrainParams, train_model
from celestial_models.ood import OodParams

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
labels = np.arange(120) % 4
images = np.clip(
    rng.integers(0, 255, (4, 1, 1, 3))[labels] + rng.integers(-40, 40, (120, 16, 16, 3)), 0, 255
).astype(np.uint8)
names = [f"c{label}/{i}.png" for i, label in enumerate(labels)]
prepared = write_prepared(
    out / "prepared", list("abcd"), "rgb",
    {"train": (images, labels, names), "val": (images[:40], labels[:40], names[:40])},
)
train_model(prepared, out / "model", TrainParams(epochs=2, min_steps=0, batch_size=16, conv_size=4),
            ood=OodParams(score="mahalanobis"))
print(json.dumps({f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                  for f in sorted((out / "model").iterdir())}))
"""

CACHE_ENV = "CELESTIAL_COMPILATION_CACHE"
CACHE_HIT = "Persistent compilation cache hit for 'jit_train_step'"

# Kernels every x86-64 CPU with AVX2 can run, oldest first; every program compiled.
VARIANTS = {
    "default": {CACHE_ENV: "off"},
    "blas-prescott": {"OPENBLAS_CORETYPE": "Prescott"},
    "blas-sandybridge": {"OPENBLAS_CORETYPE": "Sandybridge"},
    "blas-haswell": {"OPENBLAS_CORETYPE": "Haswell"},
    "xla-avx2": {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"},
}


def run_child(variant: dict[str, str], out: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "XLA_FLAGS")}
    env.pop("OPENBLAS_L2_SIZE", None)  # set together with the core type on some machines
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(out)],
        env={**env, **variant},
        capture_output=True,
        text=True,
        check=True,
    )


def train_under(variant: dict[str, str], out: Path) -> dict[str, str]:
    return json.loads(run_child(variant, out).stdout.strip().splitlines()[-1])


def test_every_output_has_the_same_hash_under_every_kernel(tmp_path: Path) -> None:
    hashes = {name: train_under(env, tmp_path / name) for name, env in VARIANTS.items()}
    reference = hashes["default"]
    assert {
        "model.keras",
        "ood.json",
        "ood_precision.npy",
        "metadata.json",
        "reference.jsonl",
    } <= set(reference)
    for name, found in hashes.items():
        differing = sorted(f for f in reference if found.get(f) != reference[f])
        assert not differing, f"{name} trains other bytes for {differing}"


def test_a_program_loaded_from_the_compilation_cache_trains_the_same_bytes(
    tmp_path: Path,
) -> None:
    compiled = train_under({CACHE_ENV: "off"}, tmp_path / "compiled")
    cache = {CACHE_ENV: str(tmp_path / "xla")}
    filling = run_child(cache, tmp_path / "filling")
    assert CACHE_HIT not in filling.stderr  # an empty cache: compiled, then kept
    assert any((tmp_path / "xla").rglob("*train_step*"))
    loading = run_child(cache, tmp_path / "loading")
    assert CACHE_HIT in loading.stderr
    for name, run in (("filling", filling), ("loading", loading)):
        found = json.loads(run.stdout.strip().splitlines()[-1])
        assert found == compiled, f"training {name} the cache wrote other bytes"


def test_the_compilation_cache_can_be_turned_off(tmp_path: Path) -> None:
    run = run_child({CACHE_ENV: "off", "XDG_CACHE_HOME": str(tmp_path / "home")}, tmp_path / "m")
    assert CACHE_HIT not in run.stderr
    assert not (tmp_path / "home").exists()


def test_the_inverse_is_the_same_under_every_blas_kernel(tmp_path: Path) -> None:
    code = (
        "import hashlib, numpy as np; from celestial_models.ood import invert_spd\n"
        "x = np.random.default_rng(0).standard_normal((500, 64))\n"
        "c = np.einsum('nd,ne->de', x, x) / 500 + np.eye(64)\n"  # not x.T @ x: BLAS again
        "print(hashlib.sha256(invert_spd(c).tobytes()).hexdigest())\n"
    )
    digests = set()
    for variant in VARIANTS.values():
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE",)}
        env.pop("OPENBLAS_L2_SIZE", None)
        run = subprocess.run(
            [sys.executable, "-c", code], env={**env, **variant}, capture_output=True, text=True
        )
        digests.add(run.stdout.strip())
    assert len(digests) == 1, digests
