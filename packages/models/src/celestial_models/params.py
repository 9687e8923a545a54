"""The ``train`` section of ``params.yaml``: its keys, defaults and ranges.

Kept free of Keras so that a bad param fails in a fraction of a second, before
the command pays for importing Keras.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from celestial_data.params import Params

__all__ = ["NO_AUGMENT", "AugmentParams", "TrainParams"]


class AugmentParams(Params):
    """``train.augment``: random changes to the training images.

    On by default: quarter turns and some grey pictures, what the canonical
    view (``prepare.view``) cannot remove. A body's look does not depend on
    which way is up, nor on whether the camera saw colour.
    """

    flip: bool = Field(False, description="random horizontal and vertical flips while training")
    rotation: float = Field(
        0.0,
        ge=0,
        le=1,
        description="random rotations while training, up to this fraction of a full turn "
        "(0 to 1; 0 is off); any angle, but resampling every image makes training several "
        "times slower on a CPU than `turn`",
    )
    turn: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of training images turned by a quarter, a half or three quarters "
        "(0 to 1; 0 is off): exact turns, nearly free",
    )
    zoom: float = Field(
        0.0,
        ge=0,
        le=1,
        description="random zoom while training, up to this fraction of the size (0 to 1; 0 is "
        "off)",
    )
    brightness: float = Field(
        0.0,
        ge=0,
        le=1,
        description="random brightness changes while training, up to this fraction (0 to 1; 0 "
        "is off)",
    )
    grey: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of training images shown in grey (0 to 1; 0 is off), so that a "
        "colourless picture of a body is still recognised (rgb only)",
    )


NO_AUGMENT = AugmentParams(turn=0.0, grey=0.0)
"""Every augmentation off."""


class TrainParams(Params):
    """The ``train`` section of ``params.yaml``."""

    section = "train"

    # The keys of `architectures.ARCHITECTURES` (a test keeps them equal).
    architecture: Literal["compact_cnn", "simple_cnn"] = Field(
        "compact_cnn",
        description="`compact_cnn`: blocks of 3x3 convolution, batch normalisation and ReLU, "
        "halving the resolution and doubling the width down to 4x4, then global average "
        "pooling; `simple_cnn`: the classic tutorial model (one convolution, max pooling, "
        "flatten, a dense layer), kept for comparison",
    )
    seed: int = Field(
        0,
        ge=0,
        description="seed of the weights' initialisation, the batch order and the augmentation; "
        "the same seed gives a byte-identical model",
    )
    epochs: int = Field(
        8,
        ge=1,
        description="passes over the training split, more when `min_steps` needs them (early "
        "stopping may end sooner)",
    )
    min_steps: int = Field(
        500,
        ge=0,
        description="fewest training steps (batches): a small training split trains for more "
        "epochs than `epochs`, so that the weights and the batch-normalisation statistics "
        "settle (167 images in batches of 32 make 6 steps an epoch: 84 epochs); `0` trains "
        "`epochs` exactly",
    )
    batch_size: int = Field(32, ge=1, description="images per training step")
    learning_rate: float = Field(0.003, gt=0, description="Adam's (initial) learning rate")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine",
        description="`cosine` decays the learning rate to zero over all the epochs' steps; "
        "`constant` keeps it",
    )
    conv_size: int = Field(
        16,
        ge=1,
        description="filters of the first convolution (`compact_cnn` doubles them at each block)",
    )
    dense_size: int = Field(
        0,
        ge=0,
        description="units of the hidden dense layer before the classifier; `0` for none "
        "(`compact_cnn` only; `simple_cnn` needs at least 1)",
    )
    patience: int = Field(
        3,
        ge=1,
        description="epochs without a better validation loss before training stops; the best "
        "epoch's weights are kept. Under `cosine`, only the second half of the epochs is "
        "watched: early on the rate is high and the validation loss jumps, and stopping there "
        "kept a poor epoch",
    )
    augment: AugmentParams = AugmentParams()

    def epochs_for(self, steps_per_epoch: int) -> int:
        """Epochs of ``steps_per_epoch`` batches to train: `epochs`, or enough for `min_steps`."""
        return max(self.epochs, -(-self.min_steps // max(steps_per_epoch, 1)))

    @model_validator(mode="after")
    def _dense_layer_where_needed(self) -> Self:
        if self.architecture == "simple_cnn" and self.dense_size < 1:
            raise ValueError(
                "dense_size must be at least 1 for architecture simple_cnn (its hidden dense "
                f"layer). Received: {self.dense_size}"
            )
        return self
