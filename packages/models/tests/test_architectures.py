"""The architectures: named layers, uint8 in, probabilities out, faithful serialisation."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import jax
import numpy as np
import pytest

from celestial_models import ParamsError, build_model
from celestial_models.architectures import ARCHITECTURES
from celestial_models.backend import fast_initializers, keras
from celestial_models.params import NO_AUGMENT, AugmentParams, TrainParams
from celestial_models.predictor import Predictor

AUGMENT_ALL = AugmentParams(flip=True, rotation=0.1, zoom=0.1, brightness=0.1, turn=0.5, grey=0.5)


def tiny(architecture: str, augment: AugmentParams = NO_AUGMENT) -> keras.Model:
    params = TrainParams(conv_size=4, dense_size=8, seed=0, augment=augment)
    # Unvalidated, so that a name no architecture has reaches build_model.
    return build_model(params.model_copy(update={"architecture": architecture}), (16, 16, 3), 3)


def images(count: int = 5) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)


def infer(model: keras.Model) -> np.ndarray:
    """The model's inference outputs on `images` (compiled once; eager calls compile per op)."""
    return Predictor(model)(images())


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_takes_uint8_and_returns_probabilities(architecture: str) -> None:
    model = tiny(architecture)
    assert model.inputs[0].dtype == "uint8"
    probabilities = infer(model)
    assert probabilities.shape == (5, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_layer_is_named(architecture: str) -> None:
    # Keras numbers the automatic names of unnamed layers ("conv2d", "conv2d_1", ...),
    # so only named layers keep their names from one build to the next.
    first, second = (
        [layer.name for layer in tiny(architecture, AUGMENT_ALL).layers] for _ in range(2)
    )
    assert first == second
    assert len(set(first)) == len(first)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_config_round_trip_and_keras_file_give_equal_outputs(
    architecture: str, tmp_path: Path
) -> None:
    model = tiny(architecture, AUGMENT_ALL)
    expected = infer(model)

    with fast_initializers():  # only quicker to compile: the weights are replaced
        rebuilt = keras.Model.from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config()
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(infer(rebuilt), expected)

    model.save(tmp_path / "model.keras")
    with fast_initializers():
        loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(infer(loaded), expected)


def test_augmentation_acts_only_while_training() -> None:
    model = tiny("compact_cnn", AugmentParams(flip=True, brightness=0.5))
    variables = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
    )

    @jax.jit
    def forward(trainable: list, non_trainable: list, batch: jax.Array) -> tuple:
        training, _ = model.stateless_call(trainable, non_trainable, batch, training=True)
        inference, _ = model.stateless_call(trainable, non_trainable, batch, training=False)
        return training, inference

    training, inference = forward(*variables, images())
    # Two programs (one of them also training) may round the last bit apart.
    np.testing.assert_allclose(np.asarray(inference), infer(model), rtol=1e-6)
    assert not np.allclose(np.asarray(training), np.asarray(inference))


def test_the_tutorial_model_keeps_its_shape() -> None:
    layers = [type(layer).__name__ for layer in tiny("simple_cnn").layers]
    assert layers == [
        "InputLayer",
        "Rescaling",
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Dense",
        "Activation",
    ]


def test_unknown_architecture_names_the_accepted_ones() -> None:
    with pytest.raises(
        ParamsError, match=r"Unknown architecture 'resnet'.*compact_cnn, simple_cnn"
    ):
        tiny("resnet")


def test_an_architecture_reads_the_train_params_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    # The seam a new key goes through: a field of TrainParams, read where it is used.
    given: list[TrainParams] = []

    def probe(shape: tuple[int, int, int], classes: int, params: TrainParams) -> keras.Model:
        given.append(params)
        return ARCHITECTURES["simple_cnn"](shape, classes, params)

    monkeypatch.setitem(ARCHITECTURES, "probe", probe)
    params = TrainParams(conv_size=4, dense_size=8, augment=AUGMENT_ALL)
    build_model(params.model_copy(update={"architecture": "probe"}), (16, 16, 3), 3)
    build_model(params.model_copy(update={"architecture": "probe"}), (16, 16, 3), 3, augment=False)

    assert [(p.conv_size, p.dense_size) for p in given] == [(4, 8), (4, 8)]
    assert [p.augment for p in given] == [AUGMENT_ALL, NO_AUGMENT]  # served: no augmentation


def test_a_predictor_follows_weights_set_after_its_first_call() -> None:
    model = tiny("compact_cnn")
    predictor = Predictor(model)
    before = predictor(images())
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    after = predictor(images())
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, 1 / 3, rtol=1e-5)  # zero weights: uniform


def test_train_params_accept_exactly_the_architectures() -> None:
    accepted = get_args(TrainParams.model_fields["architecture"].annotation)
    assert set(accepted) == set(ARCHITECTURES)
