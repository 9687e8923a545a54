"""Training spreads batches over every device JAX sees (two forced CPU devices here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

CODE = """
import json, sys
import jax
from celestial_models import ParamsError, load_classifier, train_model
from celestial_models.params import TrainParams
prepared, model_dir, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
try:
    train_model(prepared, model_dir, TrainParams(**{**params, "batch_size": 7}))
except ParamsError as error:
    refused = str(error)
train_model(prepared, model_dir, TrainParams(**params))
classifier = load_classifier(model_dir)
print(json.dumps({"devices": jax.device_count(), "refused": refused,
                  "classes": len(classifier.classes)}))
"""


@pytest.mark.slow
def test_trains_data_parallel_on_two_devices(
    make_prepared: Callable, tmp_path: Path, fast: dict
) -> None:
    prepared = make_prepared().path
    done = subprocess.run(
        [sys.executable, "-c", CODE, str(prepared), str(tmp_path / "model"), json.dumps(fast)],
        capture_output=True,
        text=True,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["devices"] == 2
    assert result["classes"] == 3
    assert "batch_size must be a multiple of the 2 devices" in result["refused"]
    assert (tmp_path / "model" / "model.keras").is_file()
