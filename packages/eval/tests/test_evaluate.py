"""`celestial-eval evaluate` end to end on a tiny trained model."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from celestial_data import write_prepared
from celestial_eval.cli import main
from celestial_eval.evaluate import OUTPUTS

CLASSES = ["Alpha", "Beta", "Gamma"]
SIZES = {"train": 8, "val": 3, "test": 4}  # images per class


def images_of(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Flat colours per class plus noise: learnable in a couple of epochs."""
    rng = np.random.default_rng(seed)
    colours = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220]])
    noise = rng.integers(-30, 30, size=(len(labels), size, size, 3))
    return np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


def splits(size: int = 16, splits_wanted=("train", "val", "test"), relabel=None) -> dict:
    arrays = {}
    for seed, split in enumerate(splits_wanted):
        labels = np.repeat(np.arange(3), SIZES[split])
        files = [f"{CLASSES[k]}/{split}{i}.png" for i, k in enumerate(labels)]
        images = images_of(labels, size, seed)
        arrays[split] = (images, labels if relabel is None else relabel[labels], files)
    return arrays


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model trained for two epochs on a tiny prepared dataset, and that dataset."""
    from celestial_models import TrainParams, train_model

    root = tmp_path_factory.mktemp("trained")
    prepared = root / "prepared"
    write_prepared(prepared, CLASSES, "rgb", splits())
    train_model(
        prepared, root / "model", TrainParams(epochs=2, min_steps=0, batch_size=8, conv_size=4)
    )
    return root / "model", prepared


def evaluate(*args: object) -> int:
    return main(["evaluate", *map(str, args)])


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    error = capsys.readouterr().err
    assert error.startswith("celestial-eval: error: "), error
    assert error.count("\n") == 1, error
    return error


@pytest.mark.slow
def test_evaluates_the_test_split_and_writes_every_output(trained, tmp_path: Path, capsys) -> None:
    model_dir, prepared = trained
    out = tmp_path / "evaluation"

    assert evaluate(model_dir, prepared, out) == 0

    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS.values())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test"
    assert metrics["images"] == 12
    assert metrics["dataset"] == {"images": 45, "classes": 3}
    assert metrics["model"]["parameters"] > 0
    assert metrics["model"]["size_bytes"] == (model_dir / "model.keras").stat().st_size
    assert sum(c["support"] for c in metrics["classes"].values()) == 12
    assert capsys.readouterr().out.startswith("test split: accuracy ")
    confusion = (out / "confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 13
    assert confusion[1].startswith("Alpha,")
    history = (out / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy"
    assert len(history) == 1 + len(json.loads((model_dir / "history.json").read_text()))
    for row in (out / "misclassified.csv").read_text().splitlines()[1:]:
        assert row.split(",")[0].split("/")[1].startswith("test")  # files of the test split
    assert "varied" not in metrics  # no varied copies of the test pictures were prepared


@pytest.mark.slow
def test_varied_copies_of_the_test_pictures_are_read_and_accepted(
    trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from celestial_data import TEST_VARIED

    model_dir, _ = trained
    arrays = splits()
    images, labels, files = arrays["test"]
    # Two copies of each test picture: the picture itself, and one said to be of the next class.
    arrays[TEST_VARIED] = (
        np.concatenate([images, images]),
        np.concatenate([labels, (labels + 1) % 3]),
        files * 2,
    )
    prepared = tmp_path / "prepared"
    write_prepared(prepared, CLASSES, "rgb", arrays)

    assert evaluate(model_dir, prepared, tmp_path / "out") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    said = capsys.readouterr().out.splitlines()
    assert said[1] == (
        f"24 varied copies of its pictures: accuracy {metrics['varied']['accuracy']:.4f}, "
        f"{metrics['varied']['accepted']:.4f} accepted"
    )
    assert metrics["images"] == 12  # the test split alone is measured
    # Each copy is read as its picture is: right as itself, and as the next class where
    # the picture is misread as that class.
    misread = list(csv.DictReader((tmp_path / "out" / "misclassified.csv").open()))
    as_next = sum(
        CLASSES.index(row["predicted"]) == (CLASSES.index(row["actual"]) + 1) % 3 for row in misread
    )
    assert metrics["varied"]["images"] == 24
    assert metrics["varied"]["accuracy"] == pytest.approx((12 - len(misread) + as_next) / 24)
    assert metrics["varied"]["accepted"] == metrics["unknown"]["accepted"]
    assert "varied_accepted" not in metrics["unknown"]


@pytest.mark.slow
def test_far_fewer_known_images_accepted_than_the_target_is_a_warning() -> None:
    from celestial_eval.evaluate import acceptance_warnings

    figures = {"accepted": 0.6875, "acceptance_target": 0.95}  # two classes, few pictures
    [warning] = acceptance_warnings(figures, "test", 24)
    assert warning.startswith("Only 69% of the test images (known classes) were accepted, ")
    assert "set to accept 95%: it was calibrated on 24 validation images" in warning
    assert "larger prepare.val_fraction" in warning
    for accepted in (0.86, 0.99, None):  # within the slack, or nothing measured
        figures["accepted"] = accepted
        assert acceptance_warnings(figures, "test", 24) == []


def test_rerun_in_a_new_process_is_byte_identical(trained, tmp_path: Path) -> None:
    model_dir, prepared = trained
    assert evaluate(model_dir, prepared, tmp_path / "first") == 0
    subprocess.run(
        [Path(sys.executable).with_name("celestial-eval"), "evaluate", model_dir, prepared,
         tmp_path / "second"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    for name in OUTPUTS.values():
        first, second = (tmp_path / d / name for d in ("first", "second"))
        assert first.read_bytes() == second.read_bytes(), name


@pytest.mark.slow
def test_without_a_test_split_the_validation_split_is_measured(trained, tmp_path: Path) -> None:
    model_dir, _ = trained
    prepared = tmp_path / "prepared"
    write_prepared(prepared, CLASSES, "rgb", splits(splits_wanted=("train", "val")))

    assert evaluate(model_dir, prepared, tmp_path / "out") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (metrics["split"], metrics["images"]) == ("val", 9)
    # other data than the model trained on: said in the warnings
    assert any("trained on prepared data" in w for w in metrics["warnings"])


@pytest.mark.slow
def test_classes_listed_in_another_order_are_matched_by_name(trained, tmp_path: Path) -> None:
    model_dir, prepared = trained
    reordered = tmp_path / "reordered"
    write_prepared(reordered, CLASSES[::-1], "rgb", splits(relabel=np.array([2, 1, 0])))

    assert evaluate(model_dir, prepared, tmp_path / "a") == 0
    assert evaluate(model_dir, reordered, tmp_path / "b") == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert a["accuracy"] == b["accuracy"]
    assert a["classes"] == b["classes"]
    assert (tmp_path / "a" / "confusion.csv").read_text() != ""


@pytest.mark.slow
def test_other_classes_are_a_clear_error(trained, tmp_path: Path, capsys) -> None:
    model_dir, _ = trained
    prepared = tmp_path / "prepared"
    write_prepared(prepared, ["Alpha", "Beta", "Delta"], "rgb", splits())

    assert evaluate(model_dir, prepared, tmp_path / "out") == 1
    error = one_error_line(capsys)
    assert "only in the data: Delta; only in the model: Gamma" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_other_image_shape_is_a_clear_error(trained, tmp_path: Path, capsys) -> None:
    model_dir, _ = trained
    prepared = tmp_path / "prepared"
    write_prepared(prepared, CLASSES, "rgb", splits(size=8))

    assert evaluate(model_dir, prepared, tmp_path / "out") == 1
    error = one_error_line(capsys)
    assert "expects images of shape (16, 16, 3)" in error
    assert "holds (8, 8, 3)" in error


def test_missing_model_files_are_named(tmp_path: Path, capsys) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.keras").write_bytes(b"")

    assert evaluate(model_dir, tmp_path / "prepared", tmp_path / "out") == 1
    error = one_error_line(capsys)
    assert "lacks metadata.json, history.json" in error


def test_missing_prepared_data_is_a_clear_error(tmp_path: Path, capsys) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("model.keras", "metadata.json", "history.json"):
        (model_dir / name).write_text("{}")

    assert evaluate(model_dir, tmp_path / "prepared", tmp_path / "out") == 1
    assert "No prepared dataset at" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("evaluate:\n  splitt: test\n", "Unknown key 'splitt'"),
        (
            "evaluate:\n  split: train\n",
            "evaluate.split: Input should be 'auto', 'test' or 'val'. Received: 'train'",
        ),
        (
            "evaluate:\n  preview_images: -1\n",
            "evaluate.preview_images: Input should be greater than or equal to 0",
        ),
    ],
)
def test_bad_params_exit_2(tmp_path: Path, capsys, section: str, message: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(section)

    assert evaluate(tmp_path, tmp_path, tmp_path / "out", "--params", params) == 2
    assert message in one_error_line(capsys)


@pytest.mark.slow
def test_help_imports_neither_keras_nor_matplotlib() -> None:
    code = (
        "import sys\nfrom celestial_eval.cli import main\n"
        "try:\n    main(['evaluate', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({'keras', 'jax', 'matplotlib'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    assert result.stdout.strip().endswith("[]")


def test_missing_model_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert evaluate(tmp_path / "model", tmp_path / "prepared", tmp_path / "out") == 1
    said = one_error_line(capsys)
    assert f"Model folder {tmp_path / 'model'} not found" in said
    assert "'dvc checkout dvc.yaml'" in said  # after a failed train stage
