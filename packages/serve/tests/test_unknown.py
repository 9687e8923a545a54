"""A real server answers "unknown" for images unlike every class, unless told not to."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.slow


def encoded(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


NOISE = encoded(np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8))
BLANK = encoded(np.full((64, 64, 3), 255, dtype=np.uint8))


def post(server, data: bytes, **params) -> requests.Response:
    return requests.post(
        f"{server.url}/predict",
        params=params,
        data=data,
        headers={"Content-Type": "image/png"},
        timeout=30,
    )


@pytest.mark.parametrize("data", [NOISE, BLANK], ids=["noise", "blank"])
def test_an_image_of_no_class_is_unknown_with_its_closest_classes(server, classifier, data) -> None:
    answer = post(server, data, k=3).json()
    assert answer["label"] == "unknown"
    assert answer["unknown"] is True
    assert answer["score"] > answer["threshold"]
    assert answer["threshold"] == pytest.approx(classifier.detector.threshold, rel=1e-6)
    assert len(answer["top_k"]) == 3
    assert answer["probability"] == answer["top_k"][0]["probability"]
    assert answer["top_k"][0]["label"] in classifier.classes


def test_reject_false_names_the_closest_class_and_keeps_the_score(server) -> None:
    rejected = post(server, NOISE).json()
    labelled = post(server, NOISE, reject="false").json()
    assert labelled["label"] == rejected["top_k"][0]["label"]
    assert labelled["unknown"] is False
    assert labelled["score"] == rejected["score"]
    assert labelled["top_k"] == rejected["top_k"]


def test_a_known_body_is_labelled(server, reference) -> None:
    answer = post(server, reference["Saturn"][0].read_bytes()).json()
    assert answer["unknown"] is False
    assert answer["label"] == answer["top_k"][0]["label"]
    assert answer["score"] <= answer["threshold"]


def test_a_bad_reject_value_is_a_400_naming_it(server) -> None:
    response = post(server, NOISE, reject="perhaps")
    assert response.status_code == 400
    assert "reject must be true or false" in response.json()["detail"]
