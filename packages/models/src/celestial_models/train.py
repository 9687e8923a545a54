"""Train a classifier on a prepared dataset: ``celestial-models train``.

Takes the ``train`` section of ``params.yaml`` (`TrainParams`), trains
on the ``train`` split with early stopping on the ``val`` split's loss, and
writes ``model.keras``, ``metadata.json``, ``history.json``, the unknown-image
detector and the reference records of the ``val`` split (``reference.jsonl``)
to the model directory, byte for byte the same for the same data and params.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from celestial_data import PreparedDataError, PreparedDataset, load_prepared
from celestial_data.command import counted
from celestial_models import __version__
from celestial_models.architectures import build_model
from celestial_models.backend import fast_initializers, keras
from celestial_models.batches import TrainingBatches
from celestial_models.errors import ParamsError, TrainingDataError, TrainingDivergedError
from celestial_models.live import LiveLogger
from celestial_models.model_dir import (
    FORMAT_VERSION,
    HISTORY_FILE,
    METADATA_FILE,
    MODEL_FILE,
    PROGRAM_FILE,
    file_sha256,
)
from celestial_models.ood import OodParams
from celestial_models.params import TrainParams
from celestial_models.predictor import Predictor
from celestial_models.program import Program, export_program
from celestial_models.reference import write_reference
from celestial_models.saving import write_json, write_model
from celestial_models.scoring import Scoring, calibrate, joined_model

__all__ = ["HISTORY_KEYS", "Trainer", "TrainingShape", "train_model"]

#: What a `Trainer` is built for: the image shape and the number of classes.
TrainingShape = tuple[tuple[int, int, int], int]

#: What ``history.json`` records per epoch, besides the epoch number.
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def open_training_data(prepared: str | Path | PreparedDataset) -> PreparedDataset:
    """Open a prepared dataset and check that it can be trained on.

    Raises:
        TrainingDataError: If it is missing, has fewer than two classes, or
            lacks a non-empty ``train`` or ``val`` split.
    """
    try:
        dataset = prepared if isinstance(prepared, PreparedDataset) else load_prepared(prepared)
    except PreparedDataError as error:
        raise TrainingDataError(str(error)) from error
    if len(dataset.classes) < 2:
        raise TrainingDataError(
            f"Prepared data {dataset.path} has {len(dataset.classes)} class(es); a classifier "
            "needs at least 2. Add class folders to the raw data and rerun prepare."
        )
    for split, fix in (
        ("train", "Add images to the raw data"),
        ("val", "Set prepare.val_fraction above 0 in params.yaml"),
    ):
        if not dataset.has(split):
            raise TrainingDataError(
                f"Prepared data {dataset.path} has no '{split}' images (splits: "
                f"{dataset.splits}); training needs them for fitting and early stopping. "
                f"{fix} and rerun prepare."
            )
    return dataset


@contextlib.contextmanager
def data_parallel(batch_size: int) -> Iterator[int]:
    """Spread each batch over every device JAX sees, for the duration of the block.

    Yields:
        The number of devices (1: no distribution is set).

    Raises:
        ParamsError: If the batch cannot be split evenly over the devices.
    """
    devices = jax.devices()
    if len(devices) == 1:
        yield 1
        return
    if batch_size % len(devices):
        raise ParamsError(
            f"params train.batch_size must be a multiple of the {len(devices)} devices JAX "
            f"sees, to split each batch evenly. Received: {batch_size}."
        )
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        yield len(devices)
    finally:
        keras.distribution.set_distribution(previous)


class ValidationMetrics(keras.callbacks.Callback):
    """Add ``val_loss`` and ``val_accuracy`` to each epoch's logs.

    Keras's own validation compiles again for a last, shorter batch and cannot
    split an odd-sized batch over several devices; this scores the split with
    the same `Predictor` that inference uses (fixed, padded batch shapes), so
    the figures are exact and what evaluation will find.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, predictor: Predictor | None = None):
        super().__init__()
        self.images = images
        self.labels = labels
        self._predictor = predictor

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Score the validation split with the epoch's weights."""
        if self._predictor is None:
            self._predictor = Predictor(self.model)
        probabilities = self._predictor(self.images)
        picked = probabilities[np.arange(len(self.labels)), self.labels]
        # As Keras's cross-entropy on probabilities: clipped away from 0.
        epsilon = keras.config.epsilon()
        loss = -np.mean(np.log(np.clip(picked, epsilon, 1.0 - epsilon)))
        if logs is not None:
            logs["val_loss"] = float(loss)
            logs["val_accuracy"] = float(np.mean(probabilities.argmax(axis=1) == self.labels))


#: How far above chance, in nats, an epoch's training loss must be to count as diverged.
DIVERGED_ABOVE_CHANCE = 1.0
#: How far below chance the loss must have been for a return to chance to count.
LEARNED_BELOW_CHANCE = 0.5
#: Fewest training steps a loss is judged over. The mean loss of a couple of
#: small batches jumps about in a healthy run (one of 2 steps an epoch went
#: 0.72, 2.21, 0.77, 0.33 over its first epochs), so shorter epochs are judged
#: by the mean of the last ones that make this many steps.
JUDGED_STEPS = 20


class DivergenceGuard(keras.callbacks.Callback):
    """Stop training as soon as its training loss shows that it diverged.

    Chance is ``ln(classes)``, the loss of a uniform guess. Training diverged
    when an epoch's mean training loss is not finite (NaN, inf), or when the
    mean loss over the last `JUDGED_STEPS` steps (the last epoch, when it has
    that many) is more than `DIVERGED_ABOVE_CHANCE` nat above chance (the
    model is confidently wrong on the images it trains on), or back at chance
    or above after being `LEARNED_BELOW_CHANCE` nat below it (it learned, then
    lost it). A healthy run starts near chance and goes down, so none of
    these can happen to it; a learning rate far too high does all three. A
    training shorter than `JUDGED_STEPS` is judged on all its epochs at its end.
    """

    def __init__(self, classes: int, steps_per_epoch: int):
        super().__init__()
        self.chance = math.log(classes)
        self.window = max(1, -(-JUDGED_STEPS // max(steps_per_epoch, 1)))
        """Epochs judged together: enough for `JUDGED_STEPS` steps."""
        self.losses: list[float] = []
        self.lowest = math.inf
        self.diverged: tuple[int, float] | None = None
        """The epoch (from 1) and its loss (the mean judged), once diverged."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Stop training if the loss shows divergence."""
        loss = float((logs or {}).get("loss", math.nan))
        self.losses.append(loss)
        if not math.isfinite(loss):
            self._stop(epoch, loss)
        elif len(self.losses) >= self.window:
            self._judge(epoch, sum(self.losses[-self.window :]) / self.window)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Judge a training too short to have been judged on the way."""
        if self.losses and len(self.losses) < self.window and self.diverged is None:
            self._judge(len(self.losses) - 1, sum(self.losses) / len(self.losses))

    def _judge(self, epoch: int, loss: float) -> None:
        if loss > self.chance + DIVERGED_ABOVE_CHANCE or (
            loss >= self.chance and self.lowest < self.chance - LEARNED_BELOW_CHANCE
        ):
            self._stop(epoch, loss)
        self.lowest = min(self.lowest, loss)

    def _stop(self, epoch: int, loss: float) -> None:
        self.diverged = (epoch + 1, loss)
        self.model.stop_training = True

    def error(self, params: TrainParams) -> TrainingDivergedError:
        """The error that explains the divergence and its fix."""
        epoch, loss = self.diverged or (0, math.nan)
        default = TrainParams.model_fields["learning_rate"].default
        lower = (
            f"the default is {default:g}"
            if params.learning_rate > default
            else f"for example to {params.learning_rate / 3:.2g}"
        )
        return TrainingDivergedError(
            f"Training diverged at epoch {epoch}: training loss {loss:.4g}, against "
            f"{self.chance:.4g} for a uniform guess over the classes (ln of their number). "
            f"The learning rate is most likely too high (train.learning_rate: "
            f"{params.learning_rate:g}). Lower it in params.yaml ({lower}) and rerun."
        )


class EpochPrinter(keras.callbacks.Callback):
    """Print one line per epoch (Keras's progress bar would print before validation)."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Print the epoch's metrics."""
        logs = logs or {}
        figures = "  ".join(f"{key} {logs[key]:.4f}" for key in HISTORY_KEYS if key in logs)
        print(f"epoch {epoch + 1}/{self.epochs}  {figures}", file=sys.stdout, flush=True)


class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate of each step, read from optimizer variables set before each training.

    Keras's `keras.optimizers.schedules.CosineDecay` keeps its rate and length
    as Python numbers, which XLA compiles into the training step: another
    ``learning_rate``, number of ``epochs`` or of batches per epoch compiled
    the step again (1.6 s of two CPU cores, more than a training of the
    reference project), and the persistent compilation cache could not reuse
    it. Here both are optimizer variables, so one compiled step trains any of
    them. The cosine is `CosineDecay`'s with ``alpha`` 0: from the rate at
    step 0 down to 0 at the last step.

    Args:
        cosine: Decay along a half cosine (``lr_schedule: cosine``); else constant.
    """

    def __init__(self, cosine: bool):
        super().__init__()
        self.cosine = cosine
        self.rate: keras.Variable | None = None
        self.steps: keras.Variable | None = None

    def attach(self, optimizer: keras.optimizers.Optimizer) -> None:
        """Create the two variables in ``optimizer``, after it is built."""
        self.rate = optimizer.add_variable((), dtype="float32", name="schedule_rate")
        self.steps = optimizer.add_variable((), dtype="float32", name="schedule_steps")

    def set(self, rate: float, steps: int) -> None:
        """Start the next training at ``rate``, decaying over ``steps`` steps."""
        if self.rate is None or self.steps is None:
            raise RuntimeError("LearningRate.attach must be called before set.")
        self.rate.assign(rate)
        self.steps.assign(max(steps, 1))

    def __call__(self, step):
        """The rate at ``step``, from the variables' values in the compiled step."""
        rate = keras.ops.convert_to_tensor(self.rate)
        if not self.cosine:
            return rate
        steps = keras.ops.convert_to_tensor(self.steps)
        done = keras.ops.minimum(keras.ops.cast(step, "float32"), steps) / steps
        return rate * 0.5 * (1.0 + keras.ops.cos(math.pi * done))

    def get_config(self) -> dict[str, Any]:
        """Only the kind: the values are set per training."""
        return {"cosine": self.cosine}


#: Training steps Keras runs between two returns to its loop. Each is still the
#: same compiled step, so nothing changes but the bookkeeping Keras does per
#: return (a tenth of a training on two cores); batch-level callbacks are
#: called once per chunk of this many batches, epoch-level ones as before.
STEPS_PER_EXECUTION = 1024


def compile_model(model: keras.Model, params: TrainParams) -> LearningRate:
    """Compile with Adam, sparse cross-entropy and accuracy, and build the optimizer.

    Returns:
        The learning rate schedule, to `LearningRate.set` before each training.
    """
    schedule = LearningRate(cosine=params.lr_schedule == "cosine")
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    model.optimizer.build(model.trainable_variables)
    schedule.attach(model.optimizer)
    return schedule


def inference_copy(model: keras.Model, params: TrainParams) -> keras.Model:
    """The model as it is served: its weights, without augmentation, optimizer or compile settings.

    The augmentation layers only act in training, so leaving them out changes
    no answer; without them ``model.keras`` holds built-in Keras layers only
    and loads with ``keras.saving.load_model`` alone, no custom objects.
    """
    built = build_model(
        params, tuple(model.input_shape[1:]), int(model.output_shape[-1]), augment=False
    )
    # Rebuilt from its config, each layer gets a dtype policy of its own: a built
    # model's layers share the global one, which Keras saves with its memory
    # address (``shared_object_id``), and model.keras would differ run to run.
    with fast_initializers():
        copy = keras.Model.from_config(built.get_config())
    for layer in copy.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return copy


class Trainer:
    """One built model that trains on datasets of one shape, each time from the same start.

    On two CPU cores, building a model and compiling its training step,
    validation and scoring cost more than training it. A trainer pays that
    once: each `fit` puts back the weights, optimizer and seed states the
    seeded build gave, so each training starts as in a fresh process
    (``keras.utils.set_random_seed``, then `build_model`), and trains with
    the same compiled step. Nothing draws from the global random state:
    `TrainingBatches` shuffles with a generator of its own, and Keras is told
    not to reorder the batches (it would with Python's global random
    numbers, one more draw in a model's first training than in later ones).
    Every training it runs is the one `train_model` runs: same batches,
    schedule, callbacks, early stopping.

    Datasets must share the image shape and the number of classes
    (`shape_of`); any number of images will do, since the learning rate
    schedule is an input of the compiled step (`LearningRate`).

    Args:
        params: The ``train`` params.
        shape: ``(input_shape, classes)``, from `shape_of`.

    Raises:
        ParamsError: If the batch cannot be split evenly over the devices.
    """

    def __init__(self, params: TrainParams, shape: TrainingShape):
        self.params = params
        self.shape = shape
        input_shape, classes = shape
        keras.utils.set_random_seed(params.seed)
        with data_parallel(params.batch_size):
            self.model = build_model(params, input_shape, classes)
            self._learning_rate = compile_model(self.model, params)
        # Copies (the compiled step donates the buffers it is given); the
        # variables include the augmentation layers' seed states.
        self._start = [
            np.array(variable.value)
            for variable in (*self.model.variables, *self.model.optimizer.variables)
        ]
        self._predictor = Predictor(self.model)
        self._scoring: Scoring | None = None
        self.kept: dict[str, float] = {}
        """The record of the epoch whose weights the model holds after `fit`."""

    @staticmethod
    def shape_of(dataset: PreparedDataset) -> TrainingShape:
        """What a trainer is built for: the image shape and the number of classes."""
        return dataset.input_shape, len(dataset.classes)

    @property
    def scoring(self) -> Scoring:
        """Embeddings, logits and probabilities of the model's current weights."""
        if self._scoring is None:
            self._scoring = Scoring.of_model(self.model)
        return self._scoring

    def fit(
        self,
        dataset: PreparedDataset,
        live_dir: str | Path | None = None,
        *,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        verbose: bool = False,
    ) -> list[dict[str, float]]:
        """Train from the starting weights on ``dataset``; keep the best epoch's weights.

        Returns:
            The history: one record per epoch run (``epoch`` and `HISTORY_KEYS`).
            `kept` is then the record of the epoch whose weights the model holds.

        Raises:
            TrainingDataError: If ``dataset`` is not of the trainer's shape.
            TrainingDivergedError: If training diverged (see `DivergenceGuard`).
        """
        params = self.params
        if self.shape_of(dataset) != self.shape:
            raise TrainingDataError(
                f"This trainer was built for images and classes {self.shape}; {dataset.path} "
                f"has {self.shape_of(dataset)}. Build a Trainer for it."
            )
        batches = TrainingBatches(  # the train split, and its varied copies if prepared
            [dataset.images(split) for split in dataset.fitted_splits],
            dataset.fitted_labels(),
            params.batch_size,
            params.seed,
        )
        variables = [*self.model.variables, *self.model.optimizer.variables]
        for variable, value in zip(variables, self._start, strict=True):
            variable.assign(value)
        epochs = params.epochs_for(len(batches))
        self._learning_rate.set(params.learning_rate, epochs * len(batches))
        guard = DivergenceGuard(len(dataset.classes), len(batches))
        stopping = keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=params.patience,
            restore_best_weights=True,
            start_from_epoch=epochs // 2 if params.lr_schedule == "cosine" else 0,
        )
        epoch_callbacks: list[keras.callbacks.Callback] = [
            guard,
            ValidationMetrics(dataset.images("val"), dataset.labels("val"), self._predictor),
            stopping,
            *callbacks,
        ]
        if live_dir is not None:
            epoch_callbacks.append(LiveLogger(live_dir, HISTORY_KEYS))
        if verbose:
            if epochs > params.epochs:
                print(
                    f"{counted(len(batches.labels), 'training image')} make "
                    f"{counted(len(batches), 'step')} an epoch: "
                    f"{epochs} epochs instead of {params.epochs}, to train train.min_steps "
                    f"{params.min_steps} steps.",
                    flush=True,
                )
            epoch_callbacks.append(EpochPrinter(epochs))
        with data_parallel(params.batch_size):
            fit = self.model.fit(
                batches, epochs=epochs, callbacks=epoch_callbacks, verbose=0, shuffle=False
            )
        if guard.diverged:
            raise guard.error(params)
        history = [
            {"epoch": epoch + 1, **{key: float(fit.history[key][epoch]) for key in HISTORY_KEYS}}
            for epoch in range(len(fit.history["loss"]))
        ]
        # The weights early stopping restored: those of the lowest validation
        # loss among the epochs it watched (under `cosine`, the second half),
        # not of the lowest overall; the last epoch's if it watched none.
        watched = stopping.best_weights is not None
        self.kept = history[stopping.best_epoch if watched else -1]
        return history


def train_model(
    prepared: str | Path | PreparedDataset,
    model_dir: str | Path,
    params: TrainParams | Mapping[str, Any] | None = None,
    live_dir: str | Path | None = None,
    *,
    ood: OodParams | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: bool = False,
) -> dict[str, Any]:
    """Train a classifier on a prepared dataset and write its model directory.

    The number of classes is that of the prepared dataset. Training stops when
    the validation loss has not improved for ``patience`` epochs, and the
    weights of the best epoch are the ones saved.

    Args:
        prepared: A prepared dataset folder (or the opened dataset).
        model_dir: Output folder for ``model.keras``, ``metadata.json`` and
            ``history.json`` (created; those files are replaced).
        params: The ``train`` params (default: their defaults).
        live_dir: If given, DVCLive's output folder for per-epoch metrics.
        ood: The ``ood`` params of the unknown-image detector fitted after
            training and saved with the model (see `celestial_models.ood`).
        callbacks: Extra Keras callbacks (e.g. to time epochs).
        verbose: Print one line per epoch.

    Returns:
        The metadata written to ``metadata.json``.

    Raises:
        ParamsError: If the batch cannot be split evenly over the devices.
        TrainingDataError: If the prepared data is missing or unusable.
        TrainingDivergedError: If training diverged (see `DivergenceGuard`);
            nothing is written then.
    """
    params = TrainParams.of(params)
    ood = ood or OodParams()
    dataset = open_training_data(prepared)
    model_dir = Path(model_dir)
    trainer = Trainer(params, Trainer.shape_of(dataset))
    try:
        history = trainer.fit(dataset, live_dir, callbacks=callbacks, verbose=verbose)
    except TrainingDivergedError as error:
        raise TrainingDivergedError(f"{error} No model was written.") from None
    best = trainer.kept
    metadata = {
        "format_version": FORMAT_VERSION,
        "celestial_models_version": __version__,
        "keras_version": keras.__version__,
        "classes": list(dataset.classes),
        "image_size": dataset.image_size,
        "color_mode": dataset.color_mode,
        "view": dataset.view.dump(),
        "input_shape": list(dataset.input_shape),
        "data_hash": dataset.hash,
        "params": params.dump(),
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "val_loss": best["val_loss"],
        "val_accuracy": best["val_accuracy"],
    }
    model_dir.mkdir(parents=True, exist_ok=True)  # only now: a failed run leaves none
    served = inference_copy(trainer.model, params)
    write_model(served, model_dir / MODEL_FILE)
    # The program every later answer comes from: the threshold is calibrated on it.
    exported = export_program(joined_model(served))
    program = Program(exported, PROGRAM_FILE)
    (model_dir / PROGRAM_FILE).write_bytes(exported)
    metadata["parameters"] = served.count_params()
    metadata["program"] = {
        "file": PROGRAM_FILE,
        "model_sha256": file_sha256(model_dir / MODEL_FILE),
        "embedding": program.width - 2 * len(dataset.classes),
        "platforms": list(program.platforms),
        "jax_version": jax.__version__,
    }
    calibration = calibrate(Scoring.of_program(program, len(dataset.classes)), dataset, ood)
    calibration.detector.save(model_dir)
    metadata["ood"] = calibration.detector.summary()
    write_reference(
        model_dir,
        dataset,
        calibration.val.probabilities,
        calibration.val_scores,
        calibration.detector,
    )
    write_json(model_dir / HISTORY_FILE, history)
    write_json(model_dir / METADATA_FILE, metadata)
    return metadata
