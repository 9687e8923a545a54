"""The JSON answer of /predict."""

from __future__ import annotations

import numpy as np
import pytest

from celestial_serve.response import prediction

CLASSES = ("Earth", "Mars", "Moon", "Pluto")
MODEL = {"project": "demo", "model_hash": "ab" * 32}


def test_answer_names_the_best_class_the_top_k_and_the_model() -> None:
    answer = prediction(np.array([0.1, 0.6, 0.25, 0.05]), CLASSES, 3, MODEL)
    assert answer == {
        "label": "Mars",
        "probability": 0.6,
        "unknown": False,
        "score": None,
        "threshold": None,
        "top_k": [
            {"label": "Mars", "probability": 0.6},
            {"label": "Moon", "probability": 0.25},
            {"label": "Earth", "probability": 0.1},
        ],
        "model": MODEL,
    }


def test_ties_keep_class_order_and_k_is_capped() -> None:
    answer = prediction(np.full(4, 0.25, dtype=np.float32), CLASSES, 10, MODEL)
    assert [item["label"] for item in answer["top_k"]] == list(CLASSES)
    assert answer["label"] == "Earth"


def test_probabilities_must_match_the_classes() -> None:
    with pytest.raises(ValueError, match="Expected 4 probabilities"):
        prediction(np.ones(3) / 3, CLASSES, 1, MODEL)


def test_a_score_above_the_threshold_answers_unknown_with_the_closest_classes() -> None:
    probabilities = np.array([0.1, 0.6, 0.25, 0.05])
    answer = prediction(probabilities, CLASSES, 2, MODEL, score=12.5, threshold=10.0)
    assert answer["label"] == "unknown"
    assert answer["unknown"] is True
    assert (answer["score"], answer["threshold"]) == (12.5, 10.0)
    assert answer["probability"] == 0.6
    assert [item["label"] for item in answer["top_k"]] == ["Mars", "Moon"]


def test_a_score_at_or_below_the_threshold_keeps_the_label() -> None:
    for score in (10.0, 3.0):
        answer = prediction(np.array([0.1, 0.6, 0.25, 0.05]), CLASSES, 1, MODEL, score, 10.0)
        assert (answer["label"], answer["unknown"], answer["score"]) == ("Mars", False, score)


def test_rejection_off_labels_an_unknown_image_with_its_closest_class() -> None:
    answer = prediction(
        np.array([0.1, 0.6, 0.25, 0.05]), CLASSES, 1, MODEL, 99.0, 10.0, reject=False
    )
    assert (answer["label"], answer["unknown"], answer["score"]) == ("Mars", False, 99.0)
