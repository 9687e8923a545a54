"""The LitAPI methods, called directly as LitServe's batched loop calls them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from celestial_data import ImageFormat
from celestial_serve.api import ClassifierAPI, warmup_sizes
from celestial_serve.project import ModelCard
from celestial_serve.request import PredictionRequest

CLASSES = ("Earth", "Mars", "Moon")


class FakeClassifier:
    """Probabilities from the mean of each channel, recording the batch sizes it saw."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.sizes.append(len(images))
        logits = images.reshape(len(images), -1, 3).mean(axis=1) / 255.0
        exp = np.exp(4 * logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def api() -> ClassifierAPI:
    card = ModelCard("demo", Path("model"), CLASSES, ImageFormat(4, "rgb"), "cd" * 32)
    api = ClassifierAPI(card, max_batch_size=8)
    api.pre_setup()  # what LitServer does before starting workers
    api.classifier = FakeClassifier()
    return api


def image(channel: int) -> np.ndarray:
    array = np.zeros((4, 4, 3), dtype=np.uint8)
    array[..., channel] = 200
    return array


def test_warm_up_covers_every_padded_batch_size() -> None:
    assert warmup_sizes(1) == [1]
    assert warmup_sizes(8) == [1, 2, 4, 8]
    assert warmup_sizes(12) == [1, 2, 4, 8, 16]


def test_a_batch_of_requests_gets_one_answer_each_in_order(api: ClassifierAPI) -> None:
    requests = [PredictionRequest(image(c), k) for c, k in [(1, 1), (0, 2), (2, 3)]]
    contexts = [{} for _ in requests]
    inputs = [api.decode_request(r, context=c) for r, c in zip(requests, contexts, strict=True)]
    outputs = api.unbatch(api.predict(api.batch(inputs)))
    answers = [api.encode_response(o, context=c) for o, c in zip(outputs, contexts, strict=True)]
    assert [a["label"] for a in answers] == ["Mars", "Earth", "Moon"]
    assert [len(a["top_k"]) for a in answers] == [1, 2, 3]
    assert all(a["model"] == {"project": "demo", "model_hash": "cd" * 32} for a in answers)
    assert api.classifier.sizes == [3]


def test_batched_and_single_predictions_agree(api: ClassifierAPI) -> None:
    images = np.stack([image(c) for c in (0, 1, 2, 1, 0)])
    batched = api.predict(images)
    singles = np.concatenate([api.predict(one[None]) for one in images])  # batches of one
    np.testing.assert_allclose(batched, singles, rtol=1e-6)
    # Three probabilities and the unknown-image score (NaN: the fake has no detector).
    assert batched.shape == (5, 4)
    assert np.isnan(batched[:, -1]).all()


def test_an_image_of_the_wrong_shape_never_reaches_the_model(api: ClassifierAPI) -> None:
    with pytest.raises(ValueError, match=r"Expected a uint8 image of shape \(4, 4, 3\)"):
        api.decode_request(PredictionRequest(np.zeros((5, 5, 3), np.uint8), 1), context={})


def test_without_batching_one_image_gets_the_same_answer() -> None:
    card = ModelCard("demo", Path("model"), CLASSES, ImageFormat(4, "rgb"), "cd" * 32)
    single = ClassifierAPI(card, max_batch_size=1)
    single.pre_setup()
    single.classifier = FakeClassifier()
    context: dict = {}
    x = single.decode_request(PredictionRequest(image(2), 2), context=context)
    (output,) = single.unbatch(single.predict(single.batch([x])))
    answer = single.encode_response(output, context=context)
    assert answer["label"] == "Moon"
    assert len(answer["top_k"]) == 2


@pytest.mark.slow
def test_setup_loads_the_project_model_and_answers_like_it(
    trained_project: Path, classifier, reference
) -> None:
    from celestial_serve.project import load_card
    from celestial_serve.request import UploadRules, decode_image

    card = load_card(trained_project)
    real = ClassifierAPI(card, max_batch_size=4)
    real.pre_setup()
    real.setup("cpu")
    rules = UploadRules(card.image_format, len(card.classes))
    files = [paths[0].read_bytes() for paths in reference.values()][:3]
    contexts = [{} for _ in files]
    inputs = [
        real.decode_request(PredictionRequest(decode_image(data, rules), 10), context=context)
        for data, context in zip(files, contexts, strict=True)
    ]
    outputs = real.unbatch(real.predict(real.batch(inputs)))
    answers = [real.encode_response(o, context=c) for o, c in zip(outputs, contexts, strict=True)]
    for data, answer in zip(files, answers, strict=True):
        expected = classifier.predict(classifier.prepare(data)[None])[0]
        served = {item["label"]: item["probability"] for item in answer["top_k"]}
        probabilities = dict(zip(classifier.classes, expected.tolist(), strict=True))
        assert served == pytest.approx(probabilities, abs=1e-5)
        assert answer["model"] == {"project": "tiny-bodies", "model_hash": classifier.model_hash}
