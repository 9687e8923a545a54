"""The files of the evaluate stage, written from hand-made predictions."""

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from celestial_eval.evaluate import OUTPUTS, write_evaluation


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_writes_every_declared_output(written) -> None:
    out, _ = written
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS.values())


def test_metrics_json_names_the_split_and_reports_the_never_predicted_class(written) -> None:
    out, returned = written
    metrics = json.loads((out / "metrics.json").read_text())

    assert metrics == returned
    assert metrics["split"] == "test"
    assert metrics["images"] == 8
    assert metrics["accuracy"] == 0.5
    assert metrics["classes"]["Gamma"]["precision"] is None
    assert metrics["classes"]["Gamma"]["predicted"] == 0
    assert metrics["never_predicted"] == 1
    assert metrics["dataset"] == {"images": 20, "classes": 3}
    assert metrics["model"] == {"size_bytes": 12345}
    assert any("Gamma" in warning for warning in metrics["warnings"])


def test_confusion_csv_has_one_actual_predicted_row_per_image(written, case) -> None:
    out, _ = written
    rows = read_csv(out / "confusion.csv")

    assert list(rows[0]) == ["actual", "predicted"]
    assert [(r["actual"], r["predicted"]) for r in rows] == [
        (case.classes[a], case.classes[p]) for a, p in zip(case.actual, case.predicted, strict=True)
    ]


def test_history_csv_has_one_row_per_epoch(written) -> None:
    out, _ = written
    rows = read_csv(out / "history.csv")

    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[2] == {
        "epoch": "3",
        "loss": "0.6",
        "accuracy": "0.7",
        "val_loss": "0.95",
        "val_accuracy": "0.5",
    }


def test_misclassified_csv_lists_every_mistake_most_confident_first(written) -> None:
    out, _ = written
    rows = read_csv(out / "misclassified.csv")

    assert len(rows) == 4
    assert rows[0] == {
        "file": "Gamma/img6.jpg",
        "actual": "Gamma",
        "predicted": "Beta",
        "confidence": "0.8500",
        "actual_probability": "0.0500",
    }
    assert [r["file"] for r in rows[1:]] == ["Alpha/img2.jpg", "Gamma/img5.jpg", "Gamma/img7.jpg"]


def test_pngs_are_images_without_a_software_or_date_stamp(written) -> None:
    out, _ = written
    for name in ("confusion.png", "history.png", "preview.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG"
            assert min(image.size) > 200, name
            assert not set(image.info) & {"Software", "Creation Time", "date:create"}, image.info


def test_rerun_gives_byte_identical_outputs(tmp_path, evaluation_inputs, written) -> None:
    first, _ = written
    second = tmp_path / "again"
    write_evaluation(second, **evaluation_inputs)

    for name in OUTPUTS.values():
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_grayscale_images_and_no_mistakes_are_drawn(tmp_path, evaluation_inputs, case) -> None:
    inputs = {
        **evaluation_inputs,
        "probabilities": case.probabilities(case.actual, 3),
        "images": case.images(case.actual, channels=1),
    }
    out = tmp_path / "gray"
    metrics = write_evaluation(out, **inputs)

    assert metrics["accuracy"] == 1.0
    assert len(read_csv(out / "misclassified.csv")) == 0
    with Image.open(out / "preview.png") as image:
        assert image.size[0] > 200


def test_history_without_validation_leaves_those_cells_empty(tmp_path, evaluation_inputs) -> None:
    history = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.75]}
    from celestial_eval.history import read_history

    path = tmp_path / "history.json"
    path.write_text(json.dumps(history))
    out = tmp_path / "out"
    write_evaluation(out, **{**evaluation_inputs, "history": read_history(path)})

    assert read_csv(out / "history.csv")[1] == {
        "epoch": "2",
        "loss": "0.5",
        "accuracy": "0.75",
        "val_loss": "",
        "val_accuracy": "",
    }


def test_preview_shows_mistakes_first_most_confident_leading(case) -> None:
    from celestial_eval.preview import select_preview

    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.55, 0.95, 0.65])
    chosen = select_preview(case.actual, case.predicted, confidence, 6)

    # mistakes: 2 (0.7), 5 (0.55), 6 (0.95), 7 (0.65); then right ones class by class
    assert chosen.tolist() == [6, 2, 7, 5, 0, 3]


def test_the_history_figure_marks_the_epoch_whose_weights_were_kept(tmp_path: Path) -> None:
    from celestial_eval.evaluate import kept_epoch
    from celestial_eval.history import marked_epoch

    # The lowest validation loss is the first epoch's, but early stopping
    # watched only the second half and kept the fourth: that one is marked.
    history = {
        "loss": [1.0, 0.8, 0.6, 0.5],
        "accuracy": [0.5, 0.6, 0.7, 0.8],
        "val_loss": [0.1, 0.9, 0.7, 0.6],
        "val_accuracy": [0.9, 0.5, 0.6, 0.7],
    }
    (tmp_path / "metadata.json").write_text(json.dumps({"best_epoch": 4}))
    assert kept_epoch(tmp_path) == 4
    assert marked_epoch(history, kept_epoch(tmp_path)) == (3, "kept weights (epoch 4)")
    # A model folder that does not say (older, or hand-edited): the lowest validation loss.
    for metadata in ("{}", '{"best_epoch": "4"}', "not json"):
        (tmp_path / "metadata.json").write_text(metadata)
        assert kept_epoch(tmp_path) is None
        assert marked_epoch(history, None) == (0, "lowest val loss (epoch 1)")
    assert marked_epoch(history, 9) == (0, "lowest val loss (epoch 1)")  # not an epoch run
