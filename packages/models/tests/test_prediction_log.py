import numpy as np
import pytest

from celestial_models.prediction_log import (
    PredictionRecord,
    RecordError,
    feature_names,
    image_features,
    utc_now,
)


def answer(label="Mars", unknown=False):
    return {
        "label": label,
        "probability": 0.9,
        "unknown": unknown,
        "score": 1.5,
        "threshold": 3.0,
        "top_k": [{"label": "Mars", "probability": 0.9}, {"label": "Moon", "probability": 0.1}],
        "model": {"project": "demo", "model_hash": "abc"},
    }


def test_a_record_round_trips_through_one_json_line():
    record = PredictionRecord.from_answer(
        answer(), [0.1, 0.2, 0.3, 0.4, 0.5], time=utc_now(), digest="d" * 64, latency_ms=2.34567
    )
    line = record.to_json()
    assert "\n" not in line
    again = PredictionRecord.from_json(line)
    assert again == record
    assert (again.project, again.model, again.closest, again.confidence) == (
        "demo",
        "abc",
        "Mars",
        0.9,
    )
    assert again.latency_ms == 2.346


@pytest.mark.parametrize(
    "line, problem",
    [
        ("{not json", "not JSON"),
        ('{"v": 99}', "version 1"),
        ("[1, 2]", "version 1"),
        ('{"v": 1, "project": "x"}', "malformed"),
    ],
)
def test_lines_that_are_not_records_are_refused_with_the_reason(line, problem):
    with pytest.raises(RecordError, match=problem):
        PredictionRecord.from_json(line)


def test_features_are_channel_means_contrast_and_background_share():
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    images[1, :2] = 255  # top half white
    features = image_features(images)
    assert features.shape == (2, len(feature_names(3)))
    np.testing.assert_allclose(features[0], [0, 0, 0, 0, 1])
    np.testing.assert_allclose(features[1], [0.5, 0.5, 0.5, 0.5, 0.5])
    assert feature_names(1) == ("mean", "contrast", "background")


def test_features_refuse_what_is_not_a_uint8_batch():
    with pytest.raises(ValueError, match="uint8 batch"):
        image_features(np.zeros((4, 4, 3), dtype=np.uint8))


def test_a_line_holds_the_version_then_every_field_in_order():
    import dataclasses
    import json

    record = PredictionRecord.from_answer(answer(), [0.1, 0.2, 0.3, 0.4, 0.5], time=utc_now())
    keys = list(json.loads(record.to_json()))
    assert keys == ["v", *(field.name for field in dataclasses.fields(PredictionRecord))]
