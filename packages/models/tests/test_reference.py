"""The model's reference: its validation split answered as served, written by training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from celestial_data import load_prepared
from celestial_models import load_classifier
from celestial_models.model_dir import file_sha256
from celestial_models.ood import OodDetector
from celestial_models.prediction_log import REFERENCE_FILE, PredictionRecord, image_features
from celestial_models.reference import reference_records


def detector(threshold: float) -> OodDetector:
    return OodDetector("mahalanobis", threshold, 0.95, 0.95, np.zeros((3, 2)), np.eye(2))


def test_training_writes_one_served_answer_per_validation_image(trained: Path) -> None:
    dataset = load_prepared(trained / "prepared")
    model_dir = trained / "model"
    lines = (model_dir / REFERENCE_FILE).read_text().splitlines()
    records = [PredictionRecord.from_json(line) for line in lines]
    assert len(records) == len(dataset.labels("val")) == 18

    assert {r.model for r in records} == {file_sha256(model_dir / "model.keras")}
    assert all(r.time is None and r.digest is None and r.latency_ms is None for r in records)
    features = image_features(np.asarray(dataset.images("val")))
    np.testing.assert_allclose([r.features for r in records], features, atol=1e-6)

    # The probabilities and scores are the model's own, as a loaded classifier gives them.
    classifier = load_classifier(model_dir)
    probabilities, scores = classifier.predict_with_score(dataset.images("val"))
    assert [r.closest for r in records] == [classifier.classes[i] for i in probabilities.argmax(1)]
    np.testing.assert_allclose([r.confidence for r in records], probabilities.max(1), atol=1e-5)
    np.testing.assert_allclose([r.score for r in records], scores, rtol=1e-4, atol=1e-4)
    assert all(len(r.top_k) == 3 for r in records)  # every class, when fewer than 5

    # Served with rejection on: the calibration rejects 1 - val_acceptance of them.
    ood = json.loads((model_dir / "ood.json").read_text())
    rejected = [r for r in records if r.unknown]
    assert len(rejected) == round((1 - ood["val_acceptance"]) * len(records))
    assert all(r.label == "unknown" for r in rejected)
    assert all(r.label == r.closest for r in records if not r.unknown)


def test_answers_follow_the_serving_rule_unknown_above_the_threshold() -> None:
    probabilities = np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8]])
    records = reference_records(
        probabilities,
        np.array([1.0, 2.0, 2.5]),
        detector(2.0),
        ("Mars", "Moon", "Sun"),
        np.zeros((3, 5)),
        model="abc",
    )
    assert [(r.label, r.unknown) for r in records] == [
        ("Moon", False),
        ("Mars", False),  # at the threshold: accepted; a tie goes to the first class
        ("unknown", True),
    ]
    assert records[1].top_k == (("Mars", 0.4), ("Moon", 0.4), ("Sun", 0.2))
    assert records[2].closest == "Sun" and records[2].confidence == 0.8
    assert all(r.model == "abc" and r.project == "" for r in records)


def test_top_k_lists_five_classes_as_the_server_does_by_default() -> None:
    probabilities = np.full((1, 8), 0.125)
    (record,) = reference_records(
        probabilities, np.zeros(1), detector(1.0), list("abcdefgh"), np.zeros((1, 5)), "m"
    )
    assert [label for label, _ in record.top_k] == list("abcde")
