"""How a model answers "unknown": AUROC, non-body images, leave-one-class-out, the stage."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from celestial_data import SPLITS, ImageFormat, ParamsError, ViewParams, write_prepared
from celestial_eval.cli import main
from celestial_eval.errors import EvalError
from celestial_eval.leave_one_class_out import WEAK_AUROC, leave_one_class_out, weak_rejection
from celestial_eval.rejection import RejectionParams, rejection_stage
from celestial_eval.scoring import auroc, nonbody_images

CLASSES = ["Red", "Green", "Blue"]
COLOURS = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220]])


def test_auroc_counts_the_pairs_an_unknown_image_wins() -> None:
    assert auroc([1, 2, 3], [4, 5]) == 1.0
    assert auroc([4, 5], [1, 2, 3]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    # Unknown 3 beats known 1 and 2, loses to 4; unknown 2.5 beats 1 and 2: 5 of 6 pairs.
    assert auroc([1, 2, 4], [3, 2.5]) == pytest.approx(4 / 6)
    # A tie counts half: 0.5 + 1 + 1 of 3 pairs.
    assert auroc([2, 1, 0], [2]) == pytest.approx(2.5 / 3)
    with pytest.raises(ValueError, match="both"):
        auroc([], [1.0])


def test_nonbody_images_are_the_same_every_time_and_of_the_model_shape() -> None:
    rgb = ImageFormat(16, "rgb", ViewParams())
    first, again = nonbody_images(rgb), nonbody_images(rgb)
    assert list(first) == ["blank", "noise", "square", "smudge"]
    for kind, images in first.items():
        assert images.dtype == np.uint8 and images.shape == (8, 16, 16, 3), kind
        np.testing.assert_array_equal(images, again[kind])
    assert nonbody_images(ImageFormat(24, "grayscale"))["smudge"].shape == (8, 24, 24, 1)
    assert first["smudge"].max() > 40  # visible, not another blank frame


def test_nonbody_images_are_taken_in_the_models_view_as_uploads_are() -> None:
    # A square on black, cropped to by the view, fills the frame an upload's would.
    viewed = nonbody_images(ImageFormat(16, "rgb", ViewParams()))["square"]
    plain = nonbody_images(ImageFormat(16, "rgb"))["square"]
    assert (viewed.reshape(8, -1, 3).max(axis=2) > 100).mean() > 0.6
    assert (plain.reshape(8, -1, 3).max(axis=2) > 100).mean() < 0.3
    # Noise of a 128-pixel picture, shrunk eight times: grainy grey, not 16-pixel noise.
    assert nonbody_images(ImageFormat(16, "rgb"))["noise"].std() < 20


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rejection:\n  classes: Red\n", "must be 'all' or a non-empty list"),
        ("rejection:\n  classes: []\n", "must be 'all' or a non-empty list"),
        (
            "rejection:\n  epochs: -1\n",
            "rejection.epochs: Input should be greater than or equal to 0",
        ),
        ("rejection:\n  clases: all\n", "clases"),
        (
            "rejection:\n  classes_per_model: 0\n",
            "rejection.classes_per_model: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_rejection_params_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=message):
        RejectionParams.load(path)


def colour_images(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-30, 30, size=(len(labels), 16, 16, 3))
    return np.clip(COLOURS[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny prepared dataset of three colours and a model trained on it."""
    from celestial_models import TrainParams, train_model

    root = tmp_path_factory.mktemp("rejection")
    arrays = {}
    for seed, (split, count) in enumerate((("train", 10), ("val", 4), ("test", 4))):
        labels = np.repeat(np.arange(3), count)
        files = [f"{CLASSES[k]}/{split}{i}.png" for i, k in enumerate(labels)]
        arrays[split] = (colour_images(labels, seed), labels, files)
    write_prepared(root / "prepared", CLASSES, "rgb", arrays)
    train_model(
        root / "prepared",
        root / "model",
        TrainParams(epochs=3, min_steps=0, batch_size=8, conv_size=4),
    )
    return root


@pytest.mark.slow
def test_evaluate_reports_acceptance_and_non_body_rejection(project: Path) -> None:
    assert main(["evaluate", str(project / "model"), str(project / "prepared"),
                 str(project / "evaluation")]) == 0  # fmt: skip
    metrics = json.loads((project / "evaluation" / "metrics.json").read_text())
    unknown = metrics["unknown"]
    ood = json.loads((project / "model" / "ood.json").read_text())
    assert unknown["score"] == "mahalanobis"
    assert unknown["threshold"] == pytest.approx(ood["threshold"], rel=1e-6)
    assert unknown["acceptance_target"] == 0.95
    assert 0.0 <= unknown["accepted"] <= 1.0
    assert set(unknown["nonbody"]) == {"blank", "noise", "square", "smudge"}
    assert unknown["nonbody"]["noise"] == 1.0
    assert unknown["nonbody_rejected"] == pytest.approx(np.mean(list(unknown["nonbody"].values())))


@pytest.mark.slow
def test_the_rejection_stage_holds_out_the_chosen_classes(project: Path, capsys) -> None:
    params = project / "params.yaml"
    params.write_text("rejection:\n  classes: [Blue]\n  epochs: 2\n")
    output = project / "evaluation" / "rejection.json"
    arguments = ["rejection", str(project / "model"), str(project / "prepared"), str(output)]
    assert main([*arguments, "--params", str(params)]) == 0
    figures = json.loads(output.read_text())
    assert (figures["held_out_classes"], list(figures["held_out"])) == (1, ["Blue"])
    assert figures["score"] == "mahalanobis" and figures["known_split"] == "test"
    blue = figures["held_out"]["Blue"]
    assert blue["images"] == 18  # every Blue image, from all three splits
    assert set(figures["by_score"]) == {"mahalanobis", "cosine", "energy", "msp"}
    for method, row in figures["by_score"].items():
        assert 0.0 <= row["auroc"] <= 1.0, method
    assert figures["auroc"] == figures["by_score"]["mahalanobis"]["auroc"] == blue["auroc"]
    assert figures["rejected"] == blue["rejected"] and figures["accepted"] == blue["accepted"]
    assert "detail" not in figures
    # Three saturated colours: blue is unlike red and green to any embedding.
    assert figures["auroc"] > 0.9
    printed = capsys.readouterr()
    assert "1 class held out" in printed.out
    # What is trained, then each class as it is measured: minutes, on many classes.
    assert printed.err.startswith("Training 1 held-out model, one without each class, ")
    assert f"  without Blue: AUROC {blue['auroc']:.4f}\n" in printed.err

    params.write_text("rejection:\n  classes: [Purple]\n")
    assert main([*arguments, "--params", str(params)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("celestial-eval: error: rejection.classes names Purple")
    assert error.count("\n") == 1


def test_classes_held_out_together_are_spread_so_neighbours_go_to_different_models() -> None:
    from celestial_eval.leave_one_class_out import held_out_groups

    names = ["Moon", "Moon2", "Saturn", "Sun", "Venus"]
    assert held_out_groups(names, 1) == [[name] for name in names]
    assert held_out_groups(names, 2) == [["Moon", "Sun"], ["Moon2", "Venus"], ["Saturn"]]
    assert held_out_groups(names, 3) == [["Moon", "Saturn", "Venus"], ["Moon2", "Sun"]]
    assert held_out_groups(names, 5) == [names]


@pytest.mark.slow
def test_classes_held_out_two_a_model_are_each_measured_against_what_their_model_knows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from celestial_models import TrainParams

    colours = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40]])
    names = ["Red", "Green", "Blue", "Yellow"]
    arrays = {}
    for seed, (split, count) in enumerate((("train", 8), ("val", 4), ("test", 4))):
        labels = np.repeat(np.arange(4), count)
        noise = np.random.default_rng(seed).integers(-30, 30, size=(len(labels), 16, 16, 3))
        images = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        files = [f"{names[k]}/{split}{i}.png" for i, k in enumerate(labels)]
        arrays[split] = (images, labels, files)
    prepared = write_prepared(tmp_path / "prepared", names, "rgb", arrays)
    params = TrainParams(epochs=2, min_steps=0, batch_size=8, conv_size=4)
    figures = leave_one_class_out(prepared, params, classes_per_model=2, progress=True)
    # Two models (Red with Blue, Green with Yellow held out), every class measured.
    assert capsys.readouterr().err.startswith("Training 2 held-out models, each without 2 classes")
    assert figures["classes_per_model"] == 2 and figures["held_out_classes"] == 4
    assert list(figures["held_out"]) == names and "warnings" not in figures
    for name in names:
        # Every image of the class, from all three splits, is an unknown one.
        assert figures["held_out"][name]["images"] == 16
    assert figures["auroc"] > 0.9  # saturated colours: unlike each other to any embedding
    # Three classes cannot lose two to a model: each model is trained without one.
    three = write_prepared(
        tmp_path / "three", names[:3], "rgb",
        {split: (images[labels < 3], labels[labels < 3],
                 [f for f, k in zip(files, labels, strict=True) if k < 3])
         for split, (images, labels, files) in arrays.items()},
    )  # fmt: skip
    figures = leave_one_class_out(three, params, classes=["Blue"], classes_per_model=2)
    assert figures["classes_per_model"] == 1
    assert figures["warnings"] == [
        "rejection.classes_per_model 2 would leave fewer than 2 of the 3 classes to train on; "
        "each model was trained without 1."
    ]


def test_figures_that_let_unseen_classes_through_warn_and_name_the_weakest() -> None:
    held_out = {"Circle": {"auroc": 0.61}, "Square": {"auroc": 0.42}, "Star": {"auroc": 0.73}}
    weak = {"auroc": 0.586667, "rejected": 0.21, "held_out": held_out}
    (warning,) = weak_rejection(weak)
    assert "mean leave-one-class-out AUROC 0.59" in warning
    assert "weakest Square, 0.42" in warning and "21% of their images rejected" in warning
    assert "as one of its own instead of unknown" in warning
    assert weak_rejection({**weak, "auroc": WEAK_AUROC}) == []


@pytest.mark.slow
def test_a_held_out_training_that_diverges_names_its_class(project: Path) -> None:
    from celestial_models import TrainParams

    params = TrainParams(epochs=1, min_steps=0, batch_size=8, conv_size=4, learning_rate=1e9)
    with pytest.raises(EvalError) as caught:
        leave_one_class_out(project / "prepared", params, classes=["Green"])
    message = str(caught.value)
    assert message.startswith("The held-out model without class 'Green', trained with the ")
    assert "Training diverged at epoch 1" in message and "learning_rate: 1e+09" in message
    assert message.endswith("The project's model is unchanged.")


@pytest.mark.slow
def test_two_classes_write_a_warning_instead_of_failing_the_pipeline(project, tmp_path, capsys):
    arrays = {
        split: (colour_images(np.repeat([0, 1], 4), seed), np.repeat([0, 1], 4),
                [f"{CLASSES[k]}/{split}{i}.png" for i, k in enumerate(np.repeat([0, 1], 4))])
        for seed, split in enumerate(("train", "val"))
    }  # fmt: skip
    write_prepared(tmp_path / "prepared", CLASSES[:2], "rgb", arrays)
    output = tmp_path / "rejection.json"
    arguments = [str(project / "model"), str(tmp_path / "prepared"), str(output)]
    assert main(["rejection", *arguments]) == 0
    figures = json.loads(output.read_text())
    assert figures["held_out_classes"] == 0
    assert "needs at least 3 classes" in figures["warnings"][0]
    assert "celestial-eval: warning: Leave-one-class-out" in capsys.readouterr().err


def uneven_colours(root: Path) -> Path:
    """Three colours, Blue with more training images: held-out trainings of two lengths."""
    arrays = {}
    for seed, (split, counts) in enumerate((("train", (10, 10, 18)), ("val", (4, 4, 4)))):
        labels = np.repeat(np.arange(3), counts)
        files = [f"{CLASSES[k]}/{split}{i}.png" for i, k in enumerate(labels)]
        arrays[split] = (colour_images(labels, seed), labels, files)
    write_prepared(root / "prepared", CLASSES, "rgb", arrays)
    return root / "prepared"


def test_held_out_detectors_fit_grey_statistics_only_for_data_with_grey_pictures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import celestial_models.scoring as scoring
    from celestial_data import grey_copies, load_prepared
    from celestial_eval.leave_one_class_out import held_out_figures
    from celestial_models import TrainParams
    from celestial_models.ood import OodParams

    fitted = []
    real = scoring.fit_detector

    def recording(*args, grey: bool = True, **kwargs):
        detector = real(*args, grey=grey, **kwargs)
        fitted.append(detector.grey is not None)
        return detector

    monkeypatch.setattr(scoring, "fit_detector", recording)
    params = TrainParams(epochs=1, min_steps=0, batch_size=8, conv_size=4)
    colour = load_prepared(uneven_colours(tmp_path / "colour"))
    held_out_figures(colour, [["Red"]], params, OodParams(), "val")
    # One grey picture among the val images: it is scored as grey, so the
    # held-out detectors need the grey statistics, as the project's has them.
    arrays = {
        split: (np.array(colour.images(split)), colour.labels(split), colour.files(split))
        for split in SPLITS
        if colour.has(split)
    }
    arrays["val"][0][0] = grey_copies(arrays["val"][0][:1])[0]
    greyish = write_prepared(tmp_path / "greyish", CLASSES, "rgb", arrays)
    held_out_figures(greyish, [["Red"]], params, OodParams(), "val")
    assert fitted == [False, True]


@pytest.mark.slow
def test_held_out_models_trained_together_give_the_figures_of_one_at_a_time(
    tmp_path: Path,
) -> None:
    from celestial_eval.leave_one_class_out import leave_one_class_out
    from celestial_models import TrainParams

    prepared = uneven_colours(tmp_path)
    # Batches of 8: 4 per epoch without Red or Green, 3 without Blue, so the
    # cosine schedules differ in length: Green's model is the third trained
    # with the same compiled step, after one of another length.
    params = TrainParams(epochs=2, min_steps=0, batch_size=8, conv_size=4)
    classes = ["Red", "Blue", "Green"]
    together = leave_one_class_out(prepared, params, classes=classes, detail=True, workers=1)
    assert together["known_split"] == "val"
    alone = leave_one_class_out(prepared, params, classes=["Green"], detail=True)
    assert alone["detail"]["Green"] == together["detail"]["Green"]
    # Shared out between two processes (Red and Green here, Blue in the
    # other), the classes give the same figures: Blue's model, first in its
    # process, is the one trained second after Red's, of another length.
    shared = leave_one_class_out(prepared, params, classes=classes, detail=True, workers=2)
    assert shared == together


@pytest.mark.parametrize(
    ("epochs", "batches", "trained"),
    [
        (2, 66, 2),  # the reference data: a quarter of 8 epochs of 66 batches
        (2, 4, 13),  # 4 batches an epoch: the project trains 50 epochs for 200 steps
        (16, 4, 100),  # twice the project's epochs: twice its steps
        (8, 66, 8),  # the project's own epochs: its own training
    ],
)
def test_held_out_models_train_the_share_of_the_project_models_steps_their_epochs_ask(
    epochs: int, batches: int, trained: int
) -> None:
    from celestial_eval.leave_one_class_out import shortened
    from celestial_models.params import TrainParams

    project = TrainParams(epochs=8, min_steps=200)
    assert shortened(project, epochs).epochs_for(batches) == trained


@pytest.mark.parametrize(
    ("classes", "steps", "cores", "expected"),
    [
        (10, 132, 2, 2),  # the reference data: 2 epochs of 66 batches
        (10, 132, 1, 1),  # one core
        (3, 8, 2, 1),  # a tiny project: a new process would cost more than it trains
        (10, 90, 8, 1),  # 900 steps in all: one process's worth
        (3, 5000, 8, 3),  # never more processes than classes
    ],
)
def test_held_out_models_train_in_one_process_per_core_when_each_has_enough_steps(
    classes: int, steps: int, cores: int, expected: int
) -> None:
    from celestial_eval.leave_one_class_out import process_count

    assert process_count(classes, steps, cores) == expected


@pytest.mark.parametrize(
    ("platforms", "expected"), [("cpu", False), ("cuda", True), ("tpu,cpu", True), ("", False)]
)
def test_held_out_models_train_in_one_process_where_jax_may_use_an_accelerator(
    monkeypatch: pytest.MonkeyPatch, platforms: str, expected: bool
) -> None:
    from celestial_eval.leave_one_class_out import may_use_accelerator

    # This environment installs no JAX plugin for a GPU or TPU.
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert may_use_accelerator() is expected


def exit_in_a_new_process(*args: object) -> dict[str, object]:
    """A share that kills the process it runs in if it is a new one, as lack of memory would."""
    if multiprocessing.parent_process() is not None:
        os._exit(9)
    return {}


def test_a_process_that_dies_training_held_out_models_is_named(tmp_path: Path) -> None:
    from celestial_eval.leave_one_class_out import in_processes

    dataset = write_prepared(
        tmp_path / "prepared",
        CLASSES,
        "rgb",
        {"train": (colour_images(np.arange(3), 0), np.arange(3), ["a.png", "b.png", "c.png"])},
    )
    with pytest.raises(EvalError, match=r"killed, most likely for lack of memory.*rejection\."):
        in_processes(exit_in_a_new_process, dataset, [["Red"], ["Green"]], ())


@pytest.mark.slow
def test_a_script_without_a_main_guard_trains_in_one_process_unless_it_asks_for_more(
    tmp_path: Path,
) -> None:
    prepared = uneven_colours(tmp_path)
    script = tmp_path / "unguarded.py"

    def run_script(workers: str) -> subprocess.CompletedProcess:
        script.write_text(
            "from celestial_eval.leave_one_class_out import leave_one_class_out\n"
            "from celestial_models import TrainParams\n"
            "params = TrainParams(epochs=1, min_steps=0, batch_size=8, conv_size=4)\n"
            f"leave_one_class_out({str(prepared)!r}, params, classes=['Red', 'Green']{workers})\n"
        )
        return subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=300
        )

    assert run_script("").returncode == 0  # one process by default: no new one imports it
    done = run_script(", workers=2")
    assert done.returncode != 0
    assert "keep its code under if __name__ == '__main__':" in done.stderr


@pytest.mark.slow
def test_the_rejection_stage_writes_the_same_bytes_every_time(project: Path) -> None:
    params = RejectionParams(classes=["Red", "Blue"], epochs=2)
    outputs = [project / "again" / f"rejection-{run}.json" for run in (1, 2)]
    for output in outputs:
        rejection_stage(project / "model", project / "prepared", output, params)
    assert outputs[0].read_bytes() == outputs[1].read_bytes()


def test_a_held_out_class_leaves_every_split_but_its_varied_copies_are_never_unknowns(
    tmp_path: Path,
) -> None:
    from celestial_data import TRAIN_VARIED, VARIED, ViewParams
    from celestial_eval.leave_one_class_out import held_out_images, without_classes

    arrays = {}
    splits = ("train", "val", "test", VARIED, TRAIN_VARIED)
    for seed, split in enumerate(splits):
        labels = np.repeat(np.arange(3), 2 + seed)
        files = [f"{CLASSES[k]}/{split}{i}.png" for i, k in enumerate(labels)]
        arrays[split] = (colour_images(labels, seed), labels, files)
    view = ViewParams(exposure=True)
    dataset = write_prepared(tmp_path / "prepared", CLASSES, "rgb", arrays, view=view)
    subset = without_classes(dataset, [2], tmp_path / "without-blue")
    # The classes, labels and view are kept; no Blue image is left, the copies included.
    assert subset.classes == dataset.classes and subset.image_format == dataset.image_format
    for split in splits:
        assert list(subset.labels(split)) == [k for k in dataset.labels(split) if k != 2]
    assert subset.fitted_splits == ("train", TRAIN_VARIED)
    # Blue's unknown images are its pictures (2 + 3 + 4), not their varied copies (5, 6).
    assert len(held_out_images(dataset, 2)) == 9
