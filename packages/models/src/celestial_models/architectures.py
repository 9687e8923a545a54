"""The model architectures, chosen by name in ``params.yaml`` (``train.architecture``).

Every model is a functional Keras model that takes raw uint8 images of the
prepared shape and returns class probabilities. Preprocessing (rescaling to
[0, 1]) and the training-only augmentation are layers of the model itself, so
what serving feeds it is exactly what training fed it. Every layer is named.
"""

from __future__ import annotations

from collections.abc import Callable

from celestial_models.backend import fast_initializers, keras
from celestial_models.errors import ParamsError
from celestial_models.params import NO_AUGMENT, AugmentParams, TrainParams

__all__ = ["ARCHITECTURES", "RandomTurn", "build_model", "compact_cnn", "simple_cnn"]

layers = keras.layers
ops = keras.ops


@keras.saving.register_keras_serializable(package="celestial")
class RandomTurn(keras.layers.Layer):
    """Turn a share of the training images by a quarter, a half or three quarters.

    What a body looks like does not depend on which way is up. Exact quarter
    turns move pixels without resampling, so on two CPU cores this costs
    almost nothing, where `keras.layers.RandomRotation`'s interpolation made
    an 8-epoch training six times slower; the canonical view keeps the body
    centred with black around it, which a turn keeps too. At inference
    (``training=False``) images pass unchanged.

    Args:
        factor: Share of images turned (0 to 1); each turned one gets one of
            the three turns, equally likely.
        seed: Seed of the choice.
    """

    def __init__(self, factor: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training: bool = False):
        """``images`` with the drawn turns while training, unchanged otherwise."""
        if not training or not self.factor:
            return images
        count = ops.shape(images)[0]
        turned = keras.random.uniform((count,), seed=self.generator) < self.factor
        quarters = keras.random.randint((count,), 1, 4, seed=self.generator)
        quarters = ops.where(turned, quarters, ops.zeros_like(quarters))
        # The four turns of every image (a turn is a transpose and a flip), then
        # each image's own: square images only, as every model here takes.
        once = ops.flip(ops.transpose(images, (0, 2, 1, 3)), axis=1)
        twice = ops.flip(ops.flip(images, axis=1), axis=2)
        thrice = ops.flip(ops.transpose(images, (0, 2, 1, 3)), axis=2)
        turns = ops.stack([images, once, twice, thrice], axis=1)
        choice = ops.one_hot(quarters, 4, dtype=images.dtype)
        return ops.einsum("bk,bkhwc->bhwc", choice, turns)

    def compute_output_shape(self, input_shape):
        """The input's shape: turning a square image keeps it."""
        return input_shape

    def get_config(self) -> dict:
        """The layer's arguments, so that a saved model rebuilds it."""
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}


def preprocessing(
    input_shape: tuple[int, int, int], augment: AugmentParams, seed: int
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The model's input and its preprocessed float image.

    Args:
        input_shape: ``(size, size, channels)`` of the uint8 images.
        augment: Which augmentations to apply while training.
        seed: Seed of the augmentation layers.

    Returns:
        ``(inputs, x)``: the uint8 input and the image rescaled to [0, 1],
        augmented when the model is called with ``training=True``.
    """
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    if augment.flip:
        x = layers.RandomFlip("horizontal_and_vertical", seed=seed, name="random_flip")(x)
    if augment.rotation:
        x = layers.RandomRotation(
            augment.rotation, fill_mode="constant", seed=seed + 1, name="random_rotation"
        )(x)
    if augment.zoom:
        x = layers.RandomZoom(
            augment.zoom, fill_mode="constant", seed=seed + 2, name="random_zoom"
        )(x)
    if augment.brightness:
        x = layers.RandomBrightness(
            augment.brightness, value_range=(0.0, 1.0), seed=seed + 3, name="random_brightness"
        )(x)
    if augment.turn:
        x = RandomTurn(augment.turn, seed=seed + 5, name="random_turn")(x)
    if augment.grey and input_shape[-1] == 3:
        x = layers.RandomGrayscale(augment.grey, seed=seed + 4, name="random_grey")(x)
    return inputs, x


def classifier_head(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """Class probabilities from features: a dense layer and a softmax."""
    x = layers.Dense(num_classes, name="logits")(x)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(x)


def simple_cnn(
    input_shape: tuple[int, int, int], num_classes: int, params: TrainParams
) -> keras.Model:
    """The tutorial's model: Conv2D, MaxPooling, Flatten, Dense, Dense.

    Kept as it was (one 3x3 convolution with ``conv_size`` filters, 3x3 max
    pooling, a hidden dense layer of ``dense_size`` units) so that runs can be
    compared with the original; only the rescaling and the softmax are added.
    """
    inputs, x = preprocessing(input_shape, params.augment, params.seed)
    x = layers.Conv2D(params.conv_size, 3, activation="relu", name="conv")(x)
    x = layers.MaxPooling2D(3, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(params.dense_size, activation="relu", name="dense")(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name="simple_cnn")


def compact_cnn(
    input_shape: tuple[int, int, int], num_classes: int, params: TrainParams
) -> keras.Model:
    """A small VGG-style network that learns in a few epochs on two CPU cores.

    Blocks of 3x3 convolution, batch normalisation and ReLU, each halving the
    resolution by average pooling while doubling the width (``conv_size``,
    ``2 * conv_size``, ...), until the feature map is 4x4 or smaller (three
    blocks at 16x16); then global average pooling, a hidden dense layer of
    ``dense_size`` units (0 for none) and the softmax.

    Choices measured on two CPU cores, where compiling the training step costs
    more than the whole training: average rather than max pooling (whose
    gradient alone takes about a second to compile); batch normalisation for
    large learning rates, with a momentum of 0.9 so that its moving statistics
    settle within the first epoch (the default 0.99 needs hundreds of steps,
    more than a short run has, and the model then fails at inference).
    """
    inputs, x = preprocessing(input_shape, params.augment, params.seed)
    size, filters, block = input_shape[0], params.conv_size, 1
    while True:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        if size <= 4:
            break
        x = layers.AveragePooling2D(2, name=f"pool{block}")(x)
        size, filters, block = size // 2, filters * 2, block + 1
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    if params.dense_size:
        x = layers.Dense(params.dense_size, activation="relu", name="dense")(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name="compact_cnn")


#: Each architecture builds its model from the image shape, the number of
#: classes and the ``train`` params, reading the keys it uses itself: a new
#: key an architecture uses is a field of `TrainParams` plus its use here.
#: A new architecture is a function here, its entry below, and its name in
#: `TrainParams.architecture` and the template's prompt (docs/pipeline.md,
#: "Adding an architecture").
ARCHITECTURES: dict[str, Callable[[tuple[int, int, int], int, TrainParams], keras.Model]] = {
    "compact_cnn": compact_cnn,
    "simple_cnn": simple_cnn,
}


def build_model(
    params: TrainParams,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    augment: bool = True,
) -> keras.Model:
    """Build ``params.architecture`` for images of ``input_shape``.

    Args:
        params: The ``train`` params: the architecture, and what it reads
            (``conv_size``, ``dense_size``, ``augment``, ``seed``...).
        input_shape: ``(size, size, channels)`` of the uint8 images.
        num_classes: Number of outputs (from the prepared dataset's classes).
        augment: Whether to include the training-only augmentations of
            ``params.augment``; False builds the model as it is served.

    Raises:
        ParamsError: If the architecture is unknown.
    """
    if params.architecture not in ARCHITECTURES:
        raise ParamsError(
            f"Unknown architecture {params.architecture!r} in params train.architecture. "
            f"Accepted: {', '.join(ARCHITECTURES)}."
        )
    if not augment:
        params = params.model_copy(update={"augment": NO_AUGMENT})
    height, width, channels = input_shape  # a list, when read from JSON
    with fast_initializers():
        return ARCHITECTURES[params.architecture]((height, width, channels), num_classes, params)
