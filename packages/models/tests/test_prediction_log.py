import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from celestial_models.prediction_log import (
    PredictionRecord,
    RecordError,
    answer_line,
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


@pytest.mark.parametrize("shape", [(3, 9, 9, 3), (2, 5, 5, 1)])
def test_features_match_their_definition_on_any_image(shape, monkeypatch):
    rng = np.random.default_rng(sum(shape))
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    images[0, :3] = rng.integers(0, 20, images[0, :3].shape)  # some background
    scaled = images.reshape(len(images), -1, shape[-1]) / 255.0
    expected = np.column_stack(
        [
            scaled.mean(axis=1),
            scaled.reshape(len(images), -1).std(axis=1),
            (images.reshape(len(images), -1, shape[-1]) <= 16).all(axis=2).mean(axis=1),
        ]
    )
    np.testing.assert_allclose(image_features(images), expected, rtol=0, atol=1e-12)
    # Images too large for exact int64 sums take Python integers, with the same result.
    monkeypatch.setattr("celestial_models.prediction_log._EXACT_COUNT", 10)
    np.testing.assert_allclose(image_features(images), expected, rtol=0, atol=1e-12)


def test_features_refuse_what_is_not_a_uint8_batch():
    with pytest.raises(ValueError, match="uint8 batch"):
        image_features(np.zeros((4, 4, 3), dtype=np.uint8))


def test_a_line_holds_the_version_then_every_field_in_order():
    import dataclasses
    import json

    record = PredictionRecord.from_answer(answer(), [0.1, 0.2, 0.3, 0.4, 0.5], time=utc_now())
    keys = list(json.loads(record.to_json()))
    assert keys == ["v", *(field.name for field in dataclasses.fields(PredictionRecord))]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"label": "unknown", "unknown": True},
        {"score": None, "threshold": None},
        {"top_k": [{"label": "Moon", "probability": 1}]},
    ],
)
def test_an_answer_line_is_the_line_of_its_record(fields):
    given = {**answer(), **fields}
    features = np.array([0.1234567, 0.5, 1 / 3, 0.0, 1.0])
    stamp = {"time": "2026-01-02T03:04:05.000006Z", "digest": "d" * 64, "latency_ms": 2.34567}
    line = answer_line(given, features, **stamp)
    record = PredictionRecord.from_answer(given, features, **stamp)
    assert line == record.to_json()
    assert PredictionRecord.from_json(line).to_json() == line


def test_the_time_is_utc_to_the_microsecond():
    before = datetime.now(UTC)
    stamp = utc_now()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before - timedelta(microseconds=1) <= parsed <= after
