import math

import numpy as np
import pytest

from celestial_eval.metrics import classification_metrics, confusion_matrix, cross_entropy


def test_confusion_matrix_counts_rows_actual_columns_predicted(case) -> None:
    assert confusion_matrix(case.actual, case.predicted, 3).tolist() == [
        [2, 1, 0],
        [0, 2, 0],
        [2, 1, 0],
    ]


def test_metrics_match_hand_computed_values_with_a_never_predicted_class(case) -> None:
    metrics = classification_metrics(
        case.probabilities(case.predicted, 3), case.actual, case.classes
    )

    assert metrics["images"] == 8
    assert metrics["accuracy"] == 0.5
    assert metrics["loss"] == pytest.approx(-(4 * math.log(0.6) + 4 * math.log(0.2)) / 8, abs=1e-6)
    alpha, beta, gamma = (metrics["classes"][name] for name in case.classes)
    assert alpha == {"precision": 0.5, "recall": pytest.approx(2 / 3, abs=1e-6),
                     "f1": pytest.approx(4 / 7, abs=1e-6), "support": 3}  # fmt: skip
    assert beta == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3, abs=1e-6),
                    "support": 2}  # fmt: skip
    # Never predicted: precision is undefined, not silently 0 or 1.
    assert gamma == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 3}
    assert metrics["macro"]["precision"] is None
    assert metrics["macro"]["recall"] == pytest.approx(5 / 9, abs=1e-6)
    assert metrics["macro"]["f1"] == pytest.approx((4 / 7 + 2 / 3) / 3, abs=1e-6)
    assert any("'Gamma' was never predicted" in w for w in metrics["warnings"])
    assert any("Macro precision" in w for w in metrics["warnings"])


def test_class_absent_from_the_evaluated_images_has_undefined_recall(case) -> None:
    actual = np.array([0, 0, 1])
    predicted = np.array([0, 2, 1])
    metrics = classification_metrics(case.probabilities(predicted, 3), actual, case.classes)

    assert metrics["classes"]["Gamma"] == {
        "precision": 0.0,
        "recall": None,
        "f1": 0.0,
        "support": 0,
    }
    assert metrics["macro"]["recall"] is None
    assert metrics["macro"]["precision"] == pytest.approx((1 + 1 + 0) / 3, abs=1e-6)
    assert any(
        "'Gamma' has no evaluated images but was predicted 1" in w for w in metrics["warnings"]
    )


def test_perfect_predictions_give_no_warnings(case) -> None:
    probabilities = case.probabilities(case.actual, 3, top=0.9)
    metrics = classification_metrics(probabilities, case.actual, case.classes)

    assert metrics["accuracy"] == 1.0
    assert metrics["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert metrics["warnings"] == []


def test_cross_entropy_of_a_certain_mistake_is_large_but_finite() -> None:
    probabilities = np.array([[1.0, 0.0], [0.0, 1.0]])
    loss = cross_entropy(probabilities, np.array([1, 1]))
    assert math.isfinite(loss)
    assert loss == pytest.approx(-(math.log(1e-7) + math.log(1 - 1e-7)) / 2)


def test_shape_mismatch_is_refused(case) -> None:
    with pytest.raises(ValueError, match=r"\(N, K\) = \(8, 3\)"):
        classification_metrics(np.zeros((8, 2)), case.actual, case.classes)
