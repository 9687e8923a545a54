"""The model's inference pass as a program that runs without Keras.

Training exports the trained network's inference pass with `jax.export`:
one function from a uint8 batch of any size to the embeddings, logits and
probabilities side by side (`celestial_models.scoring.Outputs`), the weights
inside, serialized as StableHLO into ``inference.jax`` beside
``model.keras``, lowered for the CPU and every accelerator JAX supports.
Loading it needs JAX alone: evaluate, predict and the server skip Keras's
import and the rebuilding of the network (about 1.5 s of each such process on
two cores), and every score after training comes from the very program the
unknown-image threshold was calibrated on. ``model.keras`` stays the model of
record: it is what a training resumes from, and what `model_hash` names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np
from jax import export

import celestial_models.runtime  # noqa: F401  # compiled programs kept on disk
from celestial_models.errors import ModelDirError
from celestial_models.model_dir import REBUILD_HINT

if TYPE_CHECKING:
    from celestial_models.backend import keras

__all__ = ["MAX_CHUNK", "PLATFORMS", "Program", "export_program", "in_chunks"]

#: Largest batch one compiled call takes; bigger inputs are cut into chunks.
MAX_CHUNK = 512
#: The platforms the program is lowered for, where JAX can lower it for them.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
#: JAX's flag for how many Python frames a program's debug locations keep.
LOCATIONS = "jax_traceback_in_locations_limit"


def in_chunks(images: np.ndarray, run: Callable[[np.ndarray], jax.Array], width: int) -> np.ndarray:
    """``run`` over ``images`` in batches padded to a power of two, as float32 ``(N, width)``.

    JAX compiles once per batch shape: padded so, a whole evaluation compiles
    once and a server a handful of times whatever the request sizes.
    ``images`` may be memory-mapped: it is read one chunk at a time.
    """
    count = len(images)
    chunk = min(MAX_CHUNK, 1 << max(count - 1, 0).bit_length())
    outputs = []
    for start in range(0, count, chunk):
        batch = np.asarray(images[start : start + chunk])
        padded = np.zeros((chunk, *batch.shape[1:]), dtype=batch.dtype)
        padded[: len(batch)] = batch
        outputs.append(np.asarray(run(padded), dtype=np.float32)[: len(batch)])
    return np.concatenate(outputs) if outputs else np.zeros((0, width), dtype=np.float32)


def export_program(model: keras.Model) -> bytes:
    """Serialize the inference pass of ``model``, a model whose outputs are joined.

    ``model`` maps uint8 images to one float32 row per image (the joined
    model of `celestial_models.scoring.joined_model`). It is lowered for
    every platform of `PLATFORMS` that JAX can lower it for, else for this
    process's own only. The same weights give the same bytes, wherever the
    code runs from.
    """
    trainable = [variable.value for variable in model.trainable_variables]
    non_trainable = [variable.value for variable in model.non_trainable_variables]

    def forward(images: jax.Array) -> jax.Array:
        outputs, _ = model.stateless_call(trainable, non_trainable, images, training=False)
        return outputs

    (batch,) = export.symbolic_shape("batch")
    shape = jax.ShapeDtypeStruct((batch, *model.input_shape[1:]), np.uint8)
    # Without Python's call stack in the program's debug locations: they hold
    # absolute paths and line numbers, so the bytes would change with the
    # folder the repository is cloned to and with any edit of the calling code.
    limit = getattr(jax.config, LOCATIONS)  # a flag JAX's type stubs do not list
    jax.config.update(LOCATIONS, 0)
    try:
        try:
            exported = export.export(jax.jit(forward), platforms=PLATFORMS)(shape)
        except Exception:  # an operation with no lowering for some accelerator
            exported = export.export(jax.jit(forward))(shape)
    finally:
        jax.config.update(LOCATIONS, limit)
    return bytes(exported.serialize())


class Program:
    """A model's exported inference pass, loaded: joined outputs of uint8 batches.

    Args:
        data: The bytes `export_program` gave.
        source: Where they were read from, for error messages.

    Raises:
        ModelDirError: If the bytes are no exported program, or none for this
            platform.
    """

    def __init__(self, data: bytes, source: str = "the program"):
        try:
            self._exported = export.deserialize(bytearray(data))
            ((aval,), (out,)) = self._exported.in_avals, self._exported.out_avals
        except Exception as error:  # flatbuffers' own errors on cut or foreign bytes
            raise ModelDirError(
                f"{source} is not a whole exported program that JAX {jax.__version__} reads "
                f"({type(error).__name__}): cut, corrupt, or not written by celestial-models. "
                + REBUILD_HINT
            ) from None
        here = export.default_export_platform()  # cuda or rocm, not JAX's "gpu"
        if here not in self._exported.platforms:
            raise ModelDirError(
                f"{source} was exported for {', '.join(self._exported.platforms)}, not for this "
                f"machine's {here}. Retrain the model here (dvc repro -f)."
            )
        #: The image shape it takes, ``(size, size, channels)``.
        self.input_shape: tuple[int, ...] = tuple(int(side) for side in aval.shape[1:])
        #: The length of each output row.
        self.width = int(out.shape[-1])
        #: The platforms it was lowered for.
        self.platforms: tuple[str, ...] = tuple(self._exported.platforms)
        self._run = jax.jit(self._exported.call)

    @classmethod
    def load(cls, path: Path) -> Program:
        """The program in the file ``path``."""
        return cls(path.read_bytes(), str(path))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Joined outputs ``(N, width)`` float32 of uint8 images ``(N, *input_shape)``."""
        return in_chunks(images, self._run, self.width)
