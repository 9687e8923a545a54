"""A model's reference (celestial_models.reference) answers exactly as the server does.

Drift compares served answers with the reference, so the two must label,
reject and rank alike: the reference is written by training, without the
server, and a change to either side's rule fails here.
"""

from __future__ import annotations

import numpy as np

from celestial_models.ood import OodDetector
from celestial_models.prediction_log import PredictionRecord
from celestial_models.reference import TOP_K, reference_records
from celestial_serve.request import DEFAULT_K
from celestial_serve.response import UNKNOWN, prediction


def test_reference_records_are_the_servers_answers() -> None:
    rng = np.random.default_rng(0)
    classes = [f"c{i}" for i in range(7)]
    probabilities = rng.dirichlet(np.ones(7), size=200)
    probabilities[:20, :2] = 0.3  # ties: class order decides
    scores = rng.gamma(3, 2, size=200)
    threshold = float(np.quantile(scores, 0.9))
    scores[0] = threshold  # at the threshold: accepted by both
    detector = OodDetector("mahalanobis", threshold, 0.9, 0.9, np.zeros((7, 2)), np.eye(2))
    features = np.zeros((200, 5))
    records = reference_records(probabilities, scores, detector, classes, features, "hash")
    assert TOP_K == DEFAULT_K and UNKNOWN == "unknown"
    for row, score, record in zip(probabilities, scores, records, strict=True):
        answer = prediction(row, classes, DEFAULT_K, {"model_hash": "hash"}, score, threshold)
        served = PredictionRecord.from_answer(answer, features[0])
        assert (record.label, record.unknown, record.top_k) == (
            served.label,
            served.unknown,
            served.top_k,
        )
        assert record.score == served.score
    assert 0 < sum(r.unknown for r in records) < len(records)
