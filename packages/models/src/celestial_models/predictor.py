"""Class probabilities from a Keras model, compiled once per batch shape."""

from __future__ import annotations

import jax
import numpy as np

from celestial_models.backend import keras

__all__ = ["MAX_CHUNK", "Predictor"]

# Largest batch one compiled call takes; bigger inputs are cut into chunks.
MAX_CHUNK = 512


class Predictor:
    """Run a model's inference pass on uint8 batches with few compilations.

    Keras's ``model.predict`` compiles a new function for every batch size it
    meets and sets up a data pipeline on every call. This calls the model
    statelessly under ``jax.jit`` on batches padded to a power of two (at most
    `MAX_CHUNK`), so a whole evaluation compiles once and a server compiles at
    most a handful of times whatever the request sizes. It reads the model's
    current weights on every call, so it also follows a model being trained
    (the list of its variables is gathered once: walking the layers for it
    costs more than predicting a small batch).

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
        count = len(images)
        chunk = min(MAX_CHUNK, 1 << max(count - 1, 0).bit_length())
        if self._variables is None:
            self._variables = (
                list(self.model.trainable_variables),
                list(self.model.non_trainable_variables),
            )
        trainable = [v.value for v in self._variables[0]]
        non_trainable = [v.value for v in self._variables[1]]
        outputs = []
        for start in range(0, count, chunk):
            batch = np.asarray(images[start : start + chunk])
            padded = np.zeros((chunk, *batch.shape[1:]), dtype=batch.dtype)
            padded[: len(batch)] = batch
            probabilities = self._forward(trainable, non_trainable, padded)
            outputs.append(np.asarray(probabilities, dtype=np.float32)[: len(batch)])
        if not outputs:
            return np.zeros((0, self.model.output_shape[-1]), dtype=np.float32)
        return np.concatenate(outputs)
