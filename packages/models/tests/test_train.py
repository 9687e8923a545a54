"""Training: reproducible files, real learning, classes from the data, clear errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from celestial_data import ParamsError
from celestial_models import (
    TrainingDataError,
    TrainingDivergedError,
    load_classifier,
    train_model,
)
from celestial_models.batches import TrainingBatches
from celestial_models.params import TrainParams
from celestial_models.train import JUDGED_STEPS, DivergenceGuard, Trainer

OUTPUTS = ("model.keras", "metadata.json", "history.json", "reference.jsonl")


def test_same_seed_gives_identical_files_and_another_seed_differs(
    make_prepared: Callable, tmp_path: Path, fast: dict
) -> None:
    prepared = make_prepared().path
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_model(
            prepared,
            tmp_path / name,
            TrainParams(**fast, seed=seed),
            live_dir=tmp_path / f"live-{name}",
        )
    for output in OUTPUTS:
        assert (tmp_path / "a" / output).read_bytes() == (tmp_path / "b" / output).read_bytes()
    for tsv in (tmp_path / "live-a").rglob("*.tsv"):
        assert (
            tsv.read_bytes()
            == (tmp_path / "live-b" / tsv.relative_to(tmp_path / "live-a")).read_bytes()
        )
    assert (tmp_path / "a" / "model.keras").read_bytes() != (
        tmp_path / "c" / "model.keras"
    ).read_bytes()


def test_learns_far_beyond_chance(make_prepared: Callable, tmp_path: Path, fast: dict) -> None:
    dataset = make_prepared(classes=3, train=16, val=10, seed=3)
    train_model(dataset, tmp_path / "model", TrainParams(**{**fast, "epochs": 6}))
    classifier = load_classifier(tmp_path / "model")
    predicted = classifier.predict(dataset.images("val")).argmax(axis=1)
    # 30 unseen images of 3 classes: chance is 1/3.
    assert np.mean(predicted == dataset.labels("val")) >= 0.9


def test_class_count_follows_the_data(
    make_prepared: Callable, trained: Path, tmp_path: Path, fast: dict
) -> None:
    three = load_classifier(trained / "model")
    assert three.classes == ("Mars", "Moon", "Neptune")
    four_classes = make_prepared(classes=4)
    train_model(four_classes, tmp_path / "model", TrainParams(**{**fast, "epochs": 1}))
    four = load_classifier(tmp_path / "model")
    assert four.classes == ("Mars", "Moon", "Neptune", "Sun")
    assert four.predict(four_classes.images("val")).shape == (16, 4)


def test_history_and_metadata_describe_the_run(trained: Path, fast: dict) -> None:
    history = json.loads((trained / "model" / "history.json").read_text())
    metadata = json.loads((trained / "model" / "metadata.json").read_text())
    assert [record["epoch"] for record in history] == list(range(1, len(history) + 1))
    assert all(
        set(record) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
        for record in history
    )
    # Under the cosine schedule early stopping watches the second half: the
    # lowest validation loss there is the epoch whose weights were kept.
    watched = history[metadata["params"]["epochs"] // 2 :]
    best = min(watched, key=lambda record: record["val_loss"])
    assert metadata["best_epoch"] == best["epoch"]
    assert metadata["val_loss"] == best["val_loss"]
    assert metadata["epochs_run"] == len(history)
    assert metadata["params"] == TrainParams(**fast).dump()
    assert metadata["image_size"] == 16 and metadata["color_mode"] == "rgb"
    assert (
        metadata["data_hash"]
        == json.loads((trained / "prepared" / "dataset.json").read_text())["hash"]
    )


def test_the_best_epoch_is_the_saved_model(trained: Path) -> None:
    from celestial_data import load_prepared

    dataset = load_prepared(trained / "prepared")
    classifier = load_classifier(trained / "model")
    accuracy = np.mean(
        classifier.predict(dataset.images("val")).argmax(axis=1) == dataset.labels("val")
    )
    assert accuracy == classifier.metadata["val_accuracy"]


def test_an_unwatched_epoch_is_never_reported_as_the_kept_one(
    make_prepared: Callable, tmp_path: Path, fast: dict
) -> None:
    # Early stopping watches the second half of a cosine schedule. An epoch of
    # the first half with the lowest validation loss of all (forced here, after
    # early stopping has read the loss) is not the one kept, so the metadata
    # must name the kept epoch, whose figures the saved model gives.
    from celestial_models.backend import keras

    class LowestFirst(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 0 and logs is not None:
                logs["val_loss"] = 0.0

    dataset = make_prepared()
    params = TrainParams(**{**fast, "epochs": 4})
    metadata = train_model(dataset, tmp_path / "model", params, callbacks=[LowestFirst()])
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert history[0]["val_loss"] == 0.0  # the lowest of the history...
    assert metadata["best_epoch"] in (3, 4)  # ...but not watched, so not kept
    kept = history[metadata["best_epoch"] - 1]
    assert (metadata["val_loss"], metadata["val_accuracy"]) == (
        kept["val_loss"],
        kept["val_accuracy"],
    )
    classifier = load_classifier(tmp_path / "model")
    accuracy = np.mean(
        classifier.predict(dataset.images("val")).argmax(axis=1) == dataset.labels("val")
    )
    assert accuracy == metadata["val_accuracy"]


def test_dvclive_logs_one_step_per_epoch(trained: Path) -> None:
    epochs = json.loads((trained / "model" / "metadata.json").read_text())["epochs_run"]
    for name in ("train/loss", "train/accuracy", "eval/loss", "eval/accuracy"):
        rows = (trained / "live" / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
        assert rows[0] == f"step\t{name.split('/')[1]}"
        assert len(rows) == 1 + epochs
    assert set(json.loads((trained / "live" / "metrics.json").read_text())) >= {"train", "eval"}


def test_batches_have_one_shape_and_cover_every_image_each_epoch() -> None:
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(2, axis=1).repeat(2, axis=2)
    batches = TrainingBatches(images, np.arange(10, dtype=np.int32), batch_size=4, seed=0)
    orders = []
    for _ in range(2):
        seen = [batches[i] for i in range(len(batches))]
        assert len(batches) == 3
        assert all(x.shape == (4, 2, 2, 1) and y.shape == (4,) for x, y in seen)
        assert all((x[:, 0, 0, 0] == y).all() for x, y in seen)  # images stay with their labels
        labels = np.concatenate([y for _, y in seen])
        assert set(labels) == set(range(10))
        orders.append(labels.tolist())
        batches.on_epoch_end()
    assert orders[0] != orders[1]


def test_batches_read_several_arrays_as_one() -> None:
    # A split and its varied copies: 6 + 4 images, each part read where it lies.
    first = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1)
    second = np.arange(6, 10, dtype=np.uint8).reshape(4, 1, 1, 1)
    batches = TrainingBatches([first, second], np.arange(10, dtype=np.int32), batch_size=4, seed=0)
    assert len(batches) == 3
    seen = [batches[i] for i in range(len(batches))]
    assert all((x[:, 0, 0, 0] == y).all() for x, y in seen)
    assert set(np.concatenate([y for _, y in seen])) == set(range(10))
    with pytest.raises(ValueError, match="10 images and 9 labels"):
        TrainingBatches([first, second], np.arange(9, dtype=np.int32), batch_size=4, seed=0)


def test_training_fits_on_the_varied_copies_of_the_training_pictures_too(
    make_prepared: Callable, tmp_path: Path, fast: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    from celestial_data import TRAIN_VARIED, load_prepared, write_prepared
    from celestial_models.saving import load_model
    from celestial_models.scoring import Scoring, calibrate

    plain = make_prepared()
    arrays = {
        split: (np.asarray(plain.images(split)), plain.labels(split), plain.files(split))
        for split in ("train", "val")
    }
    images, labels, files = arrays["train"]
    arrays[TRAIN_VARIED] = (images[:, ::-1].copy(), labels, files)  # each picture upside down
    copied = write_prepared(tmp_path / "copied", list(plain.classes), "rgb", arrays)
    params = TrainParams(**{**fast, "epochs": 2, "min_steps": 12})
    train_model(copied, tmp_path / "model", params, verbose=True)
    # 24 pictures and their 24 copies, in batches of 8: 6 steps an epoch, so
    # min_steps 12 is reached in the 2 epochs asked for.
    assert "epochs instead of" not in capsys.readouterr().out  # (24 alone would take 4)
    assert json.loads((tmp_path / "model" / "metadata.json").read_text())["epochs_run"] == 2
    # The unknown-image statistics are those of everything the model was fitted on.
    model = load_model(tmp_path / "model" / "model.keras")
    detector = calibrate(model, load_prepared(tmp_path / "copied")).detector
    features = Scoring.of_model(model)(np.concatenate([images, arrays[TRAIN_VARIED][0]])).features
    both = np.concatenate([labels, labels])
    for label in range(len(plain.classes)):
        np.testing.assert_allclose(
            detector.centroids[label], features[both == label].mean(axis=0), rtol=1e-4, atol=1e-5
        )


def test_a_split_smaller_than_a_batch_is_repeated() -> None:
    images = np.zeros((3, 2, 2, 1), dtype=np.uint8)
    batches = TrainingBatches(images, np.array([0, 1, 2], dtype=np.int32), batch_size=8, seed=0)
    x, y = batches[0]
    assert len(batches) == 1 and x.shape == (8, 2, 2, 1) and set(y) == {0, 1, 2}


def test_missing_prepared_data_says_how_to_make_it(tmp_path: Path, fast: dict) -> None:
    with pytest.raises(TrainingDataError, match="celestial-data prepare"):
        train_model(tmp_path / "nowhere", tmp_path / "model", TrainParams(**fast))


def test_an_empty_validation_split_is_refused(
    make_prepared: Callable, tmp_path: Path, fast: dict
) -> None:
    with pytest.raises(TrainingDataError, match=r"no 'val' images.*val_fraction"):
        train_model(make_prepared(val=0), tmp_path / "model", TrainParams(**fast))
    assert not (tmp_path / "model" / "model.keras").exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"epoch": 3},
            r"Unknown key 'epoch'.*Did you mean 'epochs'\?.*Accepted keys: architecture",
        ),
        ({"augment": {"flips": True}}, r"Unknown key 'flips'.*Did you mean 'flip'"),
        (
            {"batch_size": 0},
            r"train.batch_size: Input should be greater than or equal to 1\. Received: 0",
        ),
        ({"epochs": True}, r"train.epochs: Input should be a valid integer\. Received: True"),
        ({"learning_rate": "fast"}, r"train.learning_rate: Input should be a valid number"),
        ({"learning_rate": float("inf")}, r"train.learning_rate: Input should be a finite number"),
        ({"lr_schedule": "step"}, r"train.lr_schedule: Input should be 'constant' or 'cosine'"),
        (
            {"augment": {"zoom": 1.5}},
            r"train.augment.zoom: Input should be less than or equal to 1",
        ),
        ({"augment": 3}, r"train.augment must be a mapping of keys to values\. Received: 3"),
        (
            {"architecture": "simple_cnn", "dense_size": 0},
            r"params train: dense_size must be at least 1 for architecture simple_cnn",
        ),
    ],
)
def test_bad_params_name_the_key_and_the_fix(params: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        TrainParams.parse(params)


def test_a_section_loads_from_params_yaml_once_typed(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 3\n  augment:\n    flip: true\nprepare:\n  seed: 1\n")
    params = TrainParams.load(path)
    assert (params.epochs, params.augment.flip, params.batch_size) == (3, True, 32)
    with pytest.raises(ValidationError):  # frozen: read once, passed down as it is
        params.epochs = 4  # type: ignore[misc]
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ParamsError, match=rf"Unknown key 'epoch' in {path}: train\. Did you"):
        TrainParams.load(path)


def test_logging_in_a_repository_without_commits_names_the_fix(
    make_prepared: Callable, tmp_path: Path, fast: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from celestial_models import ModelError

    prepared = make_prepared().path
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    monkeypatch.chdir(repo)
    with pytest.raises(ModelError, match=r"no commit yet .*git commit"):
        train_model(
            prepared, repo / "model", TrainParams(**{**fast, "epochs": 1}), live_dir=repo / "live"
        )


def test_a_diverging_training_fails_naming_the_epoch_the_loss_and_the_fix(
    make_prepared: Callable, tmp_path: Path, fast: dict
) -> None:
    params = TrainParams(**{**fast, "epochs": 3, "learning_rate": 1e9})
    with pytest.raises(TrainingDivergedError) as caught:
        train_model(make_prepared(), tmp_path / "model", params)
    message = str(caught.value)
    # Its epochs are shorter than the steps a loss is judged over: judged at the end.
    assert message.startswith("Training diverged at epoch 3: training loss ")
    assert "learning rate is most likely too high (train.learning_rate: 1e+09)" in message
    assert "the default is 0.003" in message
    assert message.endswith("No model was written.")
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(("schedule", "epochs_run"), [("cosine", 5), ("constant", 2)])
def test_early_stopping_waits_for_the_second_half_of_a_cosine_schedule(
    make_prepared: Callable,
    tmp_path: Path,
    fast: dict,
    monkeypatch: pytest.MonkeyPatch,
    schedule: str,
    epochs_run: int,
) -> None:
    # A validation loss that only gets worse: stopping at the first chance would
    # keep the first epoch's weights, taken at the schedule's highest rate.
    import celestial_models.train as train_module

    def worsening(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs.update(val_loss=float(epoch), val_accuracy=0.5)

    monkeypatch.setattr(train_module.ValidationMetrics, "on_epoch_end", worsening)
    params = TrainParams(**{**fast, "epochs": 6, "patience": 1, "lr_schedule": schedule})
    train_model(make_prepared(), tmp_path / "model", params)
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    # Cosine: epochs 1-3 are not watched; the 4th is the best, the 5th stops.
    assert len(history) == epochs_run


@pytest.mark.parametrize(
    ("epochs", "min_steps", "steps_per_epoch", "expected"),
    [(8, 200, 33, 8), (8, 200, 6, 34), (8, 200, 25, 8), (8, 0, 1, 8), (3, 200, 0, 200)],
)
def test_epochs_reach_min_steps(
    epochs: int, min_steps: int, steps_per_epoch: int, expected: int
) -> None:
    params = TrainParams(epochs=epochs, min_steps=min_steps)
    assert params.epochs_for(steps_per_epoch) == expected


def test_a_small_training_split_trains_more_epochs_and_says_so(
    make_prepared: Callable, tmp_path: Path, fast: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    # 3 classes of 8 training images in batches of 8: 3 steps an epoch, so
    # min_steps 12 needs 4 epochs where 2 were asked for.
    dataset = make_prepared()
    params = TrainParams(**{**fast, "epochs": 2, "min_steps": 12, "patience": 10})
    metadata = train_model(dataset, tmp_path / "model", params, verbose=True)
    assert metadata["epochs_run"] == 4
    printed = capsys.readouterr().out
    assert "24 training images make 3 steps an epoch: 4 epochs instead of 2" in printed
    assert "epoch 4/4 " in printed
    exact = train_model(dataset, tmp_path / "exact", TrainParams(**{**fast, "epochs": 2}))
    assert exact["epochs_run"] == 2


def guard_verdicts(classes: int, losses: list[float], steps: int = JUDGED_STEPS) -> int | None:
    """The epoch (from 1) at which the guard stops a training of ``losses``, if it does."""
    guard = DivergenceGuard(classes, steps)
    guard.set_model(type("Model", (), {"stop_training": False})())
    for epoch, loss in enumerate(losses):
        guard.on_epoch_end(epoch, {"loss": loss})
        if guard.diverged:
            return guard.diverged[0]
    guard.on_train_end()
    return guard.diverged[0] if guard.diverged else None


def test_the_divergence_rule() -> None:
    chance = float(np.log(10))
    assert guard_verdicts(10, [2.5, 2.0, 1.2, 0.8, 0.9, 0.7]) is None  # healthy, with a bump
    assert guard_verdicts(10, [chance + 0.9, chance, chance - 0.2]) is None  # slow start
    assert guard_verdicts(10, [2.0, float("nan")]) == 2
    assert guard_verdicts(10, [float("inf")]) == 1
    assert guard_verdicts(10, [16.1, 16.1]) == 1  # confidently wrong: far above chance
    assert guard_verdicts(10, [2.0, 1.5, chance]) == 3  # learned, then back to chance


def test_short_epochs_are_judged_over_enough_steps() -> None:
    chance = float(np.log(3))
    # A healthy training of 2 steps an epoch (a held-out model of 80 images)
    # whose second epoch jumped to twice chance: the rule per epoch stopped it.
    healthy = [0.723, 2.212, 0.77, 0.33, 0.386, 0.251, 0.256, 0.19, 0.15, 0.12, 0.1, 0.09]
    assert guard_verdicts(3, healthy, steps=2) is None
    assert guard_verdicts(3, healthy[:2], steps=1_000) == 2  # what the rule per epoch did
    # Ten epochs of 2 steps make the 20 judged: a run far above chance stops there.
    assert guard_verdicts(3, [chance + 1.5] * 15, steps=2) == 10
    # Learned, then lost: back above chance once the last ten epochs average it.
    assert guard_verdicts(3, [0.3] * 10 + [chance + 0.5] * 10, steps=2) == 17
    assert guard_verdicts(3, [1.0, float("nan")], steps=2) == 2  # not finite: at once
    # A training shorter than the steps judged is judged whole at its end.
    assert guard_verdicts(3, [chance + 1.5] * 3, steps=2) == 3
    assert guard_verdicts(3, [chance + 1.5, chance - 1.0], steps=2) is None


def test_a_reused_trainer_trains_as_a_fresh_one(make_prepared: Callable, fast: dict) -> None:
    # Flip augmentation: its seed state must start over too.
    params = TrainParams(**fast, augment={"flip": True})
    first, second = make_prepared(name="first", seed=1), make_prepared(name="second", seed=2)
    trainer = Trainer(params, Trainer.shape_of(first))
    # 3 batches per epoch, then 2 (compiled again), then 3 again.
    trainer.fit(first)
    trainer.fit(make_prepared(name="smaller", train=5))
    history = trainer.fit(second)
    weights = [np.array(variable.value) for variable in trainer.model.variables]
    fresh = Trainer(params, Trainer.shape_of(second))
    assert fresh.fit(second) == history
    for reused, new in zip(weights, fresh.model.variables, strict=True):
        np.testing.assert_array_equal(reused, np.array(new.value))
    with pytest.raises(TrainingDataError, match="images and classes"):
        trainer.fit(make_prepared(name="four", classes=4))


def test_the_saved_model_holds_built_in_layers_only_and_no_addresses(trained: Path) -> None:
    import zipfile

    with zipfile.ZipFile(trained / "model" / "model.keras") as archive:
        config = json.loads(archive.read("config.json"))
    layers = config["config"]["layers"]
    assert all(layer["module"].startswith("keras") for layer in layers)
    # A memory address, which would make model.keras differ from process to process.
    assert "shared_object_id" not in json.dumps(config)
    assert not [layer["name"] for layer in layers if layer["name"].startswith("random_")]
    # Trained with augmentation all the same.
    metadata = json.loads((trained / "model" / "metadata.json").read_text())
    assert metadata["params"]["augment"]["turn"] > 0 and metadata["params"]["augment"]["grey"] > 0
