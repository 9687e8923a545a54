"""One record per answered image: the line format of prediction logs and model references.

A served model appends one JSON line per answer to its prediction log
(``celestial-serve --log-dir``); the train stage writes the same records for
the model's validation split to ``reference.jsonl`` in the model folder, so
that drift compares like with like. NumPy only: no Keras on this path.

A line holds::

    {"v": 1, "time": "2026-12-02T17:50:01.123456Z", "project": "planets-moons",
     "model": "<sha256 of model.keras>", "label": "Mars", "unknown": false,
     "score": 0.41, "top_k": [{"label": "Mars", "probability": 0.97}, ...],
     "digest": "<sha256 of the uploaded bytes>", "latency_ms": 2.4,
     "features": [0.21, 0.12, 0.08, 0.18, 0.71]}

``label`` is the answer (``"unknown"`` when the image was rejected),
``top_k[0]`` the closest class and its probability (the confidence),
``score`` the unknown-image score (null for a model without a detector) and
``features`` the `image_features` of the model's input, named by
`feature_names`. Reference records have ``time``, ``digest`` and
``latency_ms`` null.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LOG_VERSION",
    "REFERENCE_FILE",
    "PredictionRecord",
    "RecordError",
    "answer_line",
    "feature_names",
    "image_features",
    "utc_now",
]

#: Version of the record format, the ``v`` of every line.
LOG_VERSION = 1
#: The model folder's reference records (its validation split), one JSON line each.
REFERENCE_FILE = "reference.jsonl"
# A pixel at or below this value (of 255) is background: every dataset here
# shows bodies on a dark sky.
_BACKGROUND = 16
# The most values per image whose sums of squares times their count fit in int64.
_EXACT_COUNT = 10_000_000
# Encodes every line: json.dumps would make an encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
# The last second `utc_now` formatted, and its text up to the seconds.
_SECOND: tuple[int, str] = (-1, "")


class RecordError(ValueError):
    """A line that is not a prediction record of this format."""


def feature_names(channels: int) -> tuple[str, ...]:
    """Names of the `image_features` of images with ``channels`` channels (1 or 3)."""
    means = ("mean",) if channels == 1 else ("mean_red", "mean_green", "mean_blue")
    return (*means, "contrast", "background")


def image_features(images: np.ndarray) -> np.ndarray:
    """Cheap statistics of a batch of model inputs, for drift.

    Args:
        images: uint8 array ``(N, S, S, C)``, as the model takes them.

    Returns:
        float64 array ``(N, C + 2)``: the mean of each channel and the standard
        deviation of all pixels (both scaled to 0-1), and the share of
        background pixels (every channel at most 16), in `feature_names` order.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"Expected a uint8 batch (N, S, S, C). Received: {images.dtype} {images.shape}."
        )
    # Exact integer sums, then one division each. A server computes the features
    # of every answer it logs: numpy reduces along a short axis (the channels)
    # many times slower than along a long one (the pixels, a channel at a time).
    n, channels = len(images), images.shape[-1]
    pixels = images.reshape(n, -1, channels)
    size = pixels.shape[1]
    sums = np.stack([pixels[:, :, c].sum(axis=1, dtype=np.int64) for c in range(channels)], axis=1)
    values = images.reshape(n, -1).astype(np.uint16)
    values *= values  # 255² fits in 16 bits
    squares: Any = values.sum(axis=1, dtype=np.int64)
    total: Any = sums.sum(axis=1)
    count = size * channels
    if count > _EXACT_COUNT:  # count * squares could overflow int64: Python integers
        squares, total = squares.astype(object), total.astype(object)
    # The variance times count², exactly: count * sum(x²) - sum(x)².
    spread = (count * squares - total * total).astype(np.float64)
    dark = pixels[:, :, 0] <= _BACKGROUND
    for c in range(1, channels):
        dark &= pixels[:, :, c] <= _BACKGROUND
    return np.column_stack(
        [
            sums / (size * 255.0),
            np.sqrt(spread) / (count * 255.0),
            np.count_nonzero(dark, axis=1) / size,
        ]
    )


def utc_now() -> str:
    """The current time as the records write it: ISO 8601, UTC, microseconds."""
    global _SECOND  # a cache: a server stamps every answer
    micros = time.time_ns() // 1000
    second, fraction = divmod(micros, 1_000_000)
    cached = _SECOND
    if cached[0] != second:
        cached = _SECOND = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{fraction:06d}Z"


@dataclass(frozen=True)
class PredictionRecord:
    """One answered image. See the module docstring for the meaning of each field."""

    project: str
    model: str
    label: str
    unknown: bool
    score: float | None
    top_k: tuple[tuple[str, float], ...]
    features: tuple[float, ...]
    time: str | None = None
    digest: str | None = None
    latency_ms: float | None = None

    @property
    def confidence(self) -> float:
        """Probability of the closest class."""
        return self.top_k[0][1]

    @property
    def closest(self) -> str:
        """The closest class, whether or not the image was rejected."""
        return self.top_k[0][0]

    def to_json(self) -> str:
        """The record as one line of JSON (no newline)."""
        return _line(
            self.project,
            self.model,
            self.label,
            self.unknown,
            self.score,
            [{"label": label, "probability": p} for label, p in self.top_k],
            self.features,
            self.time,
            self.digest,
            self.latency_ms,
        )

    @classmethod
    def from_json(cls, line: str | bytes) -> PredictionRecord:
        """Parse one line written by `to_json`.

        Raises:
            RecordError: If the line is not JSON, not of this version or lacks a field.
        """
        try:
            data = json.loads(line)
        except ValueError as error:
            raise RecordError(f"not JSON ({error})") from None
        if not isinstance(data, dict) or data.get("v") != LOG_VERSION:
            received = data.get("v") if isinstance(data, dict) else type(data).__name__
            raise RecordError(f"expected a record of version {LOG_VERSION}, received {received!r}")
        try:
            top_k = tuple((str(e["label"]), float(e["probability"])) for e in data["top_k"])
            score = data["score"]
            record = cls(
                project=str(data["project"]),
                model=str(data["model"]),
                label=str(data["label"]),
                unknown=bool(data["unknown"]),
                score=None if score is None else float(score),
                top_k=top_k,
                features=tuple(float(value) for value in data["features"]),
                time=data.get("time"),
                digest=data.get("digest"),
                latency_ms=data.get("latency_ms"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise RecordError(f"malformed record ({type(error).__name__}: {error})") from None
        if not record.top_k:
            raise RecordError("malformed record (top_k is empty)")
        return record

    @classmethod
    def from_answer(
        cls,
        answer: dict[str, Any],
        features: Sequence[float],
        time: str | None = None,
        digest: str | None = None,
        latency_ms: float | None = None,
    ) -> PredictionRecord:
        """The record of one ``POST /predict`` answer (``celestial_serve.response``'s shape)."""
        return cls(
            project=str(answer["model"].get("project", "")),
            model=str(answer["model"].get("model_hash", "")),
            label=str(answer["label"]),
            unknown=bool(answer["unknown"]),
            score=answer["score"],
            top_k=tuple((e["label"], float(e["probability"])) for e in answer["top_k"]),
            features=tuple(float(value) for value in features),
            time=time,
            digest=digest,
            latency_ms=None if latency_ms is None else round(latency_ms, 3),
        )


def answer_line(
    answer: dict[str, Any],
    features: Sequence[float],
    time: str | None = None,
    digest: str | None = None,
    latency_ms: float | None = None,
) -> str:
    """``PredictionRecord.from_answer(...).to_json()``, without the record: the same line.

    A server writes one line per answer; this takes half the time.
    """
    model = answer["model"]
    return _line(
        str(model.get("project", "")),
        str(model.get("model_hash", "")),
        str(answer["label"]),
        bool(answer["unknown"]),
        answer["score"],
        [{"label": e["label"], "probability": float(e["probability"])} for e in answer["top_k"]],
        [float(value) for value in features],
        time,
        digest,
        None if latency_ms is None else round(latency_ms, 3),
    )


def _line(
    project: str,
    model: str,
    label: str,
    unknown: bool,
    score: float | None,
    top_k: list[dict[str, Any]],
    features: Sequence[float],
    time: str | None,
    digest: str | None,
    latency_ms: float | None,
) -> str:
    """The one place that lays out a line: the version, then every field in order."""
    # Spelled out rather than dataclasses.asdict, which deep-copies every field.
    return _ENCODER.encode(
        {
            "v": LOG_VERSION,
            "project": project,
            "model": model,
            "label": label,
            "unknown": unknown,
            "score": score,
            "top_k": top_k,
            "features": [round(value, 6) for value in features],
            "time": time,
            "digest": digest,
            "latency_ms": latency_ms,
        }
    )
