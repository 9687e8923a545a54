"""Class probabilities from a Keras model, compiled once per batch shape."""

from __future__ import annotations

import jax
import numpy as np

from celestial_models.backend import keras
from celestial_models.program import in_chunks

__all__ = ["Predictor"]


class Predictor:
    """Run a model's inference pass on uint8 batches with few compilations.

    Keras's ``model.predict`` compiles a new function for every batch size it
    meets and sets up a data pipeline on every call. This calls the model
    statelessly under ``jax.jit`` on batches padded to a power of two
    (`celestial_models.program.in_chunks`), so a whole evaluation compiles
    once. It reads the model's current weights on every call, so it follows a
    model being trained (the list of its variables is gathered once: walking
    the layers for it costs more than predicting a small batch).

    Args:
        model: A Keras model that maps uint8 images to probabilities.
    """

    def __init__(self, model: keras.Model):
        self.model = model

        def forward(trainable: list, non_trainable: list, images: jax.Array) -> jax.Array:
            outputs, _ = model.stateless_call(trainable, non_trainable, images, training=False)
            return outputs

        self._forward = jax.jit(forward)
        self._variables: tuple[list, list] | None = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, classes)`` float32 for uint8 images ``(N, S, S, C)``.

        ``images`` may be memory-mapped: it is read one chunk at a time.
        """
        if self._variables is None:
            self._variables = (
                list(self.model.trainable_variables),
                list(self.model.non_trainable_variables),
            )
        trainable = [v.value for v in self._variables[0]]
        non_trainable = [v.value for v in self._variables[1]]
        return in_chunks(
            images,
            lambda batch: self._forward(trainable, non_trainable, batch),
            self.model.output_shape[-1],
        )
