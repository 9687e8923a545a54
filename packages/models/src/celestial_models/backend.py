"""The one place that imports Keras, on the JAX backend.

Every module of this package that needs Keras imports it from here
(``from celestial_models.backend import keras``), so the backend is chosen and
checked before Keras reads it, whichever module a program imports first, and
JAX is set up first (`celestial_models.runtime`: compiled programs kept on
disk for the next process).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from celestial_models.errors import ModelError

__all__ = ["BACKEND", "fast_initializers", "keras"]

BACKEND = "jax"
_chosen = os.environ.setdefault("KERAS_BACKEND", BACKEND)
if _chosen != BACKEND:
    raise ModelError(
        f"celestial-models runs Keras on JAX, but KERAS_BACKEND={_chosen!r}. "
        f"Unset KERAS_BACKEND or set it to '{BACKEND}'."
    )

import celestial_models.runtime  # noqa: E402, F401  # JAX set up before Keras starts it

# Keras imports matplotlib.pyplot eagerly, only for image-gallery helpers this
# package never calls, and that costs about a quarter of Keras's import time in
# every train or evaluate process. Keras tolerates its absence, so it is hidden
# during the import (a None entry makes `import` raise ImportError) and made
# importable again right after. A process that already imported it keeps it.
_hidden = [name for name in ("matplotlib", "matplotlib.pyplot") if name not in sys.modules]
sys.modules.update(dict.fromkeys(_hidden))  # type: ignore[arg-type]  # None: unimportable
try:
    import keras
finally:
    for _name in _hidden:
        if sys.modules.get(_name, ...) is None:
            del sys.modules[_name]

if keras.backend.backend() != BACKEND:
    raise ModelError(
        f"Keras was already imported with the {keras.backend.backend()!r} backend. "
        f"Import celestial_models before keras, or set KERAS_BACKEND={BACKEND} first."
    )


@contextlib.contextmanager
def fast_initializers() -> Iterator[None]:
    """Draw random initial weights with the cheaper-to-compile Threefry lowering.

    JAX compiles a random draw for every new weight shape; with its default
    "partitionable" Threefry lowering each compilation takes about a second of
    CPU, with the classic lowering a quarter of that. Only the values drawn
    change (still fixed by the seed); nothing is sharded during building or
    loading, so partitionability is not needed there.
    """
    import jax

    switch = getattr(jax, "threefry_partitionable", None)
    with switch(False) if switch is not None else contextlib.nullcontext():
        yield
