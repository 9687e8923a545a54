"""Build, train, save and load Keras 3 classifiers on the JAX backend.

The public API, imported lazily so that ``import celestial_models`` (and the
command line's ``--help``) does not pay for importing Keras and JAX:

- `train_model` trains on a prepared dataset and writes a model directory;
- `load_classifier` loads one for inference and returns a `Classifier`;
- `build_model` builds an architecture by name;
- `synchronous_dispatch` makes JAX compute in the calling thread (for servers);
- every error raised on purpose derives from `ModelError`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

from celestial_models.errors import (
    ModelDirError,
    ModelError,
    ParamsError,
    TrainingDataError,
    TrainingDivergedError,
)

if TYPE_CHECKING:
    from celestial_models.architectures import build_model
    from celestial_models.classifier import Classifier, load_classifier
    from celestial_models.params import TrainParams
    from celestial_models.runtime import synchronous_dispatch
    from celestial_models.train import train_model

__all__ = [
    "Classifier",
    "ModelDirError",
    "ModelError",
    "ParamsError",
    "TrainParams",
    "TrainingDataError",
    "TrainingDivergedError",
    "__version__",
    "build_model",
    "load_classifier",
    "synchronous_dispatch",
    "train_model",
]

__version__ = importlib.metadata.version("celestial-models")

# Public names that need JAX (most of them Keras too), and the module that defines each.
_LAZY = {
    "Classifier": "celestial_models.classifier",
    "load_classifier": "celestial_models.classifier",
    "TrainParams": "celestial_models.params",
    "train_model": "celestial_models.train",
    "build_model": "celestial_models.architectures",
    "synchronous_dispatch": "celestial_models.runtime",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'celestial_models' has no attribute {name!r}")
