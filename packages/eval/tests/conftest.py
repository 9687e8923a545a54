"""Shared fixtures: tiny hand-made evaluations that need no trained model."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from celestial_models.prediction_log import PredictionRecord

CLASSES = ("Alpha", "Beta", "Gamma")
# Class Gamma is never predicted: 4 of 8 right.
ACTUAL = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PREDICTED = np.array([0, 0, 1, 1, 1, 0, 1, 0])


def hand_probabilities(predicted: np.ndarray, n_classes: int, top: float = 0.6) -> np.ndarray:
    """Rows giving ``top`` to the predicted class and the rest shared equally."""
    rest = (1 - top) / (n_classes - 1)
    probabilities = np.full((len(predicted), n_classes), rest)
    probabilities[np.arange(len(predicted)), predicted] = top
    return probabilities


def tiny_images(labels: np.ndarray, size: int = 16, channels: int = 3) -> np.ndarray:
    """Deterministic images whose colour depends on the label."""
    rng = np.random.default_rng(0)
    base = (np.asarray(labels)[:, None, None, None] * 90 + 30).astype(np.int16)
    noise = rng.integers(-20, 20, size=(len(labels), size, size, channels))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


HISTORY = {
    "loss": [1.2, 0.8, 0.6],
    "accuracy": [0.4, 0.6, 0.7],
    "val_loss": [1.1, 0.9, 0.95],
    "val_accuracy": [0.45, 0.55, 0.5],
}


@pytest.fixture
def case() -> SimpleNamespace:
    """The hand-made case: classes, labels, predictions and helpers."""
    return SimpleNamespace(
        classes=CLASSES,
        actual=ACTUAL.copy(),
        predicted=PREDICTED.copy(),
        probabilities=hand_probabilities,
        images=tiny_images,
        history=HISTORY,
    )


@pytest.fixture(scope="session")
def evaluation_inputs() -> dict:
    """Keyword arguments of `write_evaluation` for the hand-made case."""
    probabilities = hand_probabilities(PREDICTED, len(CLASSES))
    probabilities[6] = [0.1, 0.85, 0.05]  # the most confident mistake
    return {
        "classes": CLASSES,
        "split": "test",
        "probabilities": probabilities,
        "actual": ACTUAL,
        "files": [f"{CLASSES[a]}/img{i}.jpg" for i, a in enumerate(ACTUAL)],
        "images": tiny_images(ACTUAL),
        "history": HISTORY,
        "extra": {"dataset": {"images": 20, "classes": 3}, "model": {"size_bytes": 12345}},
    }


@pytest.fixture
def written(tmp_path: Path, evaluation_inputs: dict) -> tuple[Path, dict]:
    """An evaluation folder written from the hand-made case, and its metrics."""
    from celestial_eval.evaluate import write_evaluation

    out = tmp_path / "evaluation"
    return out, write_evaluation(out, **evaluation_inputs)


# A review folder as `celestial-serve --log-dir` writes it, and Label Studio annotations.


def image_bytes(seed: int, fmt: str = "PNG") -> bytes:
    """A 16 x 16 image of random pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format=fmt)
    return stream.getvalue()


def add_review_image(
    review: Path, seed: int, label: str, fmt: str = "PNG", ext: str = "png"
) -> str:
    """Write ``<digest>.<ext>`` and its record ``<digest>.json``; return the digest."""
    review.mkdir(parents=True, exist_ok=True)
    data = image_bytes(seed, fmt)
    digest = hashlib.sha256(data).hexdigest()
    (review / f"{digest}.{ext}").write_bytes(data)
    unknown = label == "unknown"
    record = PredictionRecord(
        project="demo",
        model="f" * 64,
        label=label,
        unknown=unknown,
        score=0.9 if unknown else 0.1,
        top_k=(("Moon", 0.55), ("Mars", 0.45)) if unknown else ((label, 0.8), ("Venus", 0.2)),
        features=(0.1, 0.2, 0.3, 0.4, 0.5),
        time="2026-12-02T17:50:01.123456Z",
        digest=digest,
        latency_ms=2.0,
    )
    (review / f"{digest}.json").write_text(record.to_json() + "\n")
    return digest


def choice(label: str, new_class: str | None = None) -> list[dict[str, Any]]:
    """An annotation's result as Label Studio writes it: a choice, and the typed name."""
    result: list[dict[str, Any]] = [
        {
            "id": "a1",
            "from_name": "label",
            "to_name": "image",
            "type": "choices",
            "origin": "manual",
            "value": {"choices": [label]},
        }
    ]
    if new_class is not None:
        result.append(
            {
                "id": "a2",
                "from_name": "new_class",
                "to_name": "image",
                "type": "textarea",
                "origin": "manual",
                "value": {"text": [new_class]},
            }
        )
    return result


@pytest.fixture
def review_image() -> Callable[..., str]:
    """The `add_review_image` helper."""
    return add_review_image


@pytest.fixture
def annotate() -> Callable[..., list[dict[str, Any]]]:
    """The `choice` helper: an annotation's result as Label Studio writes it."""
    return choice
