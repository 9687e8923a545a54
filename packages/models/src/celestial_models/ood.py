"""Out-of-distribution scores: how unlike every known class an image is.

A classifier of ten bodies shown an eleventh still names one of the ten, often
with high confidence. Each prediction therefore comes with a score, higher for
images less like the training data, and a threshold calibrated on validation
images so that a chosen share of in-distribution images (``acceptance``) is
accepted; anything scoring above it is answered as unknown.

Scores (``ood.score`` in ``params.yaml``), all from one forward pass:

- ``mahalanobis`` (default): squared Mahalanobis distance from the image's
  embedding (the features the classifier head reads) to the nearest class
  centroid, with one covariance shared by all classes, fitted on the training
  images (for grey pictures, one per class: `GreyStatistics`). Measured best
  on the reference dataset (``bench/results/ood.json``).
- ``cosine``: one minus the largest cosine similarity to a class centroid.
- ``energy``: minus the log-sum-exp of the logits.
- ``msp``: minus the largest softmax probability (the classic baseline).

This module is plain NumPy (no Keras): the statistics are fitted and saved as
``.npy`` and JSON in the model directory, never pickles, and computed in
float64 in a fixed order, without BLAS, so the same features give the same
bytes on every CPU (BLAS kernels, chosen per CPU, round differently).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import Field

from celestial_data.check import UNKNOWN  # no class may be named so: the check refuses it
from celestial_data.params import Params
from celestial_models.errors import ModelDirError

__all__ = [
    "CENTROIDS_FILE",
    "CLASS_COVARIANCES_LIMIT",
    "GREY_CENTROIDS_FILE",
    "GREY_PRECISION_FILE",
    "OOD_FILE",
    "PRECISION_FILE",
    "SCORES",
    "UNKNOWN",
    "GreyStatistics",
    "OodDetector",
    "OodParams",
    "blended_covariance",
    "calibrate_threshold",
    "class_covariances_fit",
    "class_distances",
    "class_statistics",
    "compute_scores",
    "invert_spd",
]


Score = Literal["mahalanobis", "cosine", "energy", "msp"]
#: Accepted values of ``ood.score``.
SCORES: tuple[str, ...] = get_args(Score)


class OodParams(Params):
    """The ``ood`` section of ``params.yaml``: the unknown-image detector."""

    section = "ood"

    score: Score = Field(
        "mahalanobis",
        description="the unknown-image score: `mahalanobis` (squared distance from the image's "
        "embedding to the nearest class centroid, with one shared covariance), `cosine` (one "
        "minus the largest cosine similarity to a centroid), `energy` (minus the log-sum-exp of "
        "the logits) or `msp` (minus the largest softmax probability)",
    )
    acceptance: float = Field(
        0.95,
        gt=0,
        le=1,
        description="share of the validation images (all of known classes), with their varied "
        "copies when `prepare.varied` makes some, whose score the threshold accepts; a higher "
        "share rejects fewer known images and fewer unknown ones",
    )


OOD_FILE = "ood.json"
CENTROIDS_FILE = "ood_centroids.npy"
PRECISION_FILE = "ood_precision.npy"
GREY_CENTROIDS_FILE = "ood_grey_centroids.npy"
GREY_PRECISION_FILE = "ood_grey_precision.npy"

# Ridge added to the shared covariance, relative to its mean variance: keeps it
# invertible when features are fewer than dimensions or some are always zero.
RIDGE = 1e-3

#: The most numbers a covariance per class may take (classes x dimensions x
#: dimensions: 16 MiB of float64): beyond it, grey pictures keep the shared
#: covariance too. Each class's adds D x D numbers to the model folder and as
#: many products to each grey picture's score; 100 classes of a 256-wide
#: embedding would take 50 MiB and seconds to score a few thousand pictures.
CLASS_COVARIANCES_LIMIT = 2**21


def class_covariances_fit(classes: int, dims: int) -> bool:
    """Whether a covariance per class stays within `CLASS_COVARIANCES_LIMIT`."""
    return classes * dims * dims <= CLASS_COVARIANCES_LIMIT


def class_statistics(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, per_class: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Class centroids and the precision (inverse) of their covariance.

    Args:
        features: float ``(N, D)`` embeddings of training images.
        labels: int ``(N,)`` their classes.
        num_classes: Number of classes K.
        per_class: One covariance per class instead of one shared by all
            (see `blended_covariance`).

    Returns:
        ``(centroids (K, D), precision)``, float64: the precision is
        ``(D, D)``, or ``(K, D, D)`` with ``per_class``. A class without
        images gets a centroid of NaN (never nearest).
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    dims = features.shape[1]
    centroids = np.full((num_classes, dims), np.nan)
    centred = np.empty_like(features)
    for k in range(num_classes):
        members = labels == k
        if members.any():
            centroids[k] = features[members].mean(axis=0)
            centred[members] = features[members] - centroids[k]
    covariance = np.einsum("nd,ne->de", centred, centred) / max(len(features), 1)
    scale = float(np.trace(covariance)) / dims if dims else 1.0
    covariance += np.eye(dims) * RIDGE * (scale if scale > 0 else 1.0)
    if not per_class:
        return centroids, symmetric_inverse(covariance)
    precisions = np.empty((num_classes, dims, dims))
    for k in range(num_classes):
        own = centred[labels == k]
        precisions[k] = symmetric_inverse(blended_covariance(own, covariance))
    return centroids, precisions


def blended_covariance(centred: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """One class's covariance, its own scatter blended with the shared covariance.

    As if the class had ``D`` more images (the embedding's dimensions) spread
    as all classes are: ``(scatter + D * shared) / (n + D)``. A class of
    many images keeps mostly its own shape, one of few (fewer than ``D``:
    its own scatter cannot be inverted) mostly the shared one, and a class
    without images has the shared one.
    """
    dims = len(shared)
    scatter = np.einsum("nd,ne->de", centred, centred)
    return (scatter + dims * shared) / (len(centred) + dims)


def symmetric_inverse(matrix: np.ndarray) -> np.ndarray:
    """`invert_spd`, made exactly symmetric."""
    inverse = invert_spd(matrix)
    return (inverse + inverse.T) / 2


def invert_spd(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive-definite matrix, the same bytes on every CPU.

    Gauss-Jordan elimination in NumPy's elementwise operations, which round
    the same everywhere, instead of LAPACK's ``inv``, whose BLAS kernels
    (chosen per CPU, or by ``OPENBLAS_CORETYPE``) round differently: the
    precision matrix is saved in the model folder, and DVC hashes it. A
    positive-definite matrix (the ridge makes the covariance one) needs no
    pivoting; a few milliseconds for 128 dimensions.
    """
    n = len(matrix)
    work = np.concatenate([np.asarray(matrix, dtype=np.float64), np.eye(n)], axis=1)
    for j in range(n):
        work[j] = work[j] / work[j, j]
        column = work[:, j].copy()
        column[j] = 0.0
        work -= column[:, None] * work[j][None, :]
    return work[:, n:]


def compute_scores(
    method: str,
    features: np.ndarray,
    logits: np.ndarray,
    probabilities: np.ndarray,
    centroids: np.ndarray | None = None,
    precision: np.ndarray | None = None,
) -> np.ndarray:
    """OOD scores of a batch (higher: less like the known classes).

    Args:
        method: One of `SCORES`.
        features: float ``(N, D)`` embeddings (for the distance scores).
        logits: float ``(N, K)`` pre-softmax outputs.
        probabilities: float ``(N, K)`` softmax outputs.
        centroids: ``(K, D)`` class centroids (distance scores only).
        precision: ``(D, D)`` shared precision matrix, or ``(K, D, D)`` one per
            class (``mahalanobis`` only).

    Returns:
        float64 ``(N,)`` scores.
    """
    if method == "msp":
        return -np.asarray(probabilities, dtype=np.float64).max(axis=1)
    if method == "energy":
        z = np.asarray(logits, dtype=np.float64)
        top = z.max(axis=1, keepdims=True)
        return -(top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))
    if centroids is None:
        raise ValueError(f"The {method} score needs class centroids.")
    f = np.asarray(features, dtype=np.float64)
    if method == "cosine":
        mu = known_centroids(centroids)
        norms = np.linalg.norm(f, axis=1, keepdims=True) * np.linalg.norm(mu, axis=1)
        similarity = np.einsum("nd,kd->nk", f, mu) / np.maximum(norms, 1e-12)
        return 1.0 - similarity.max(axis=1)
    if method == "mahalanobis":
        if precision is None:
            raise ValueError("The mahalanobis score needs the precision matrix.")
        return mahalanobis(f, *mahalanobis_terms(centroids, precision))
    raise ValueError(f"Unknown OOD score {method!r}; expected one of {', '.join(SCORES)}.")


def known_centroids(centroids: np.ndarray) -> np.ndarray:
    """The centroids of the classes that had training images (the others are NaN)."""
    return centroids[~np.isnan(centroids).any(axis=1)]


def mahalanobis_terms(
    centroids: np.ndarray, precision: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What `mahalanobis` needs: the known centroids, their precision, and mu^T P mu of each.

    ``precision`` is shared ``(D, D)``, or one per class ``(K, D, D)`` (then
    only the known classes' are kept).
    """
    known = ~np.isnan(centroids).any(axis=1)
    mu = centroids[known]
    if precision.ndim == 3:
        precision = precision[known]
        return mu, precision, np.einsum("kd,kde,ke->k", mu, precision, mu)
    return mu, precision, (np.einsum("kd,de->ke", mu, precision) * mu).sum(axis=1)


def class_distances(
    features: np.ndarray, centroids: np.ndarray, precision: np.ndarray
) -> np.ndarray:
    """Squared Mahalanobis distance of each embedding to each class centroid: float64 ``(N, K)``.

    Infinite for a class without training images (a NaN centroid).
    """
    distances = np.full((len(features), len(centroids)), np.inf)
    known = ~np.isnan(centroids).any(axis=1)
    distances[:, known] = _distances(features, *mahalanobis_terms(centroids, precision))
    return np.maximum(distances, 0.0)


def mahalanobis(
    features: np.ndarray, mu: np.ndarray, precision: np.ndarray, mu_terms: np.ndarray
) -> np.ndarray:
    """The Mahalanobis distance of each embedding to its nearest centroid (float64 ``(N,)``).

    ``mu``, ``precision`` and ``mu_terms`` come from `mahalanobis_terms`.
    """
    return np.maximum(_distances(features, mu, precision, mu_terms).min(axis=1), 0.0)


def _distances(
    features: np.ndarray, mu: np.ndarray, precision: np.ndarray, mu_terms: np.ndarray
) -> np.ndarray:
    """``(f - mu)^T P (f - mu)`` of every embedding and centroid ``mu``: float64 ``(N, K)``.

    Without an (N, K, D) array. The products are einsum's own loops, not BLAS:
    the calibrated threshold is saved in the model folder, so it must not
    depend on the CPU's kernels.
    """
    f = np.asarray(features, dtype=np.float64)
    if precision.ndim == 3:  # one precision per class: a class at a time
        quadratic = np.empty((len(f), len(mu)))
        cross = np.empty_like(quadratic)
        for k, (centre, own) in enumerate(zip(mu, precision, strict=True)):
            projected = np.einsum("nd,de->ne", f, own)
            quadratic[:, k] = (projected * f).sum(axis=1)
            cross[:, k] = np.einsum("ne,e->n", projected, centre)
    else:
        projected = np.einsum("nd,de->ne", f, precision)
        quadratic = (projected * f).sum(axis=1, keepdims=True)
        cross = np.einsum("ne,ke->nk", projected, mu)
    return quadratic - 2.0 * cross + mu_terms


def calibrate_threshold(scores: np.ndarray, acceptance: float) -> float:
    """The threshold that accepts ``acceptance`` of ``scores`` (accepted: score <= threshold).

    The ``ceil(acceptance * N)``-th smallest score: at least that share is
    accepted, exactly that share when ``acceptance * N`` is whole and the
    scores have no ties.

    Raises:
        ValueError: If ``scores`` is empty or has non-finite values.
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    if not len(scores) or not np.isfinite(scores).all():
        raise ValueError("Calibrating a threshold needs finite validation scores.")
    # Rounded before ceil, so 0.95 * 20 (19.000000000000004 in floats) is 19.
    accepted = max(1, math.ceil(round(acceptance * len(scores), 9)))
    return float(scores[min(accepted, len(scores)) - 1])


@dataclass(frozen=True)
class GreyStatistics:
    """The detector's statistics for colourless pictures of an RGB model.

    A grey picture of a known body lies far from its class's colour
    centroid, so scored against the colour statistics most were answered
    unknown, and an unseen body in grey was not told from known ones either.
    So colourless images (every pixel's channels equal) are scored against
    statistics fitted and calibrated as the colour ones are, on grey copies
    of the same images (`celestial_models.scoring.grey_statistics`). Their
    scores are shifted by the difference of the thresholds, so that one
    threshold (`OodDetector.threshold`) decides for every image. The same
    statistics also give those pictures' class probabilities
    (`probabilities`).

    Each class has its own covariance (`blended_covariance`), where the
    colour statistics share one (and the grey ones too beyond
    `CLASS_COVARIANCES_LIMIT`). Without colour, the smooth bodies' grey
    discs differ less by where their embeddings lie than by how they
    spread; measured on the reference data (three training seeds), unseen
    bodies in grey were told from known ones at a mean leave-one-class-out
    AUROC of 0.981 instead of 0.936 with the shared covariance. For colour
    pictures the shared covariance stays: one per class accepted fewer
    known bodies shifted off-centre (0.80 instead of 0.95).
    """

    centroids: np.ndarray
    """``(K, D)`` class centroids of the grey training embeddings."""
    precision: np.ndarray
    """``(K, D, D)`` precision of each class's covariance (``(D, D)``, shared,
    beyond `CLASS_COVARIANCES_LIMIT` and in model folders written before)."""
    threshold: float
    """Grey scores above it are unknown (before the shift)."""
    val_acceptance: float
    """The share of the grey validation copies accepted."""

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities of grey pictures from their embeddings: float64 ``(N, K)``.

        A softmax of minus half the squared Mahalanobis distances to the
        class centroids (with `precision`, equal priors). On grey pictures it
        reads the reference project's test images at 1.00, where the model's
        own head, trained mostly on colour, reads them at 0.95.
        """
        distances = class_distances(features, self.centroids, self.precision)
        logits = -(distances - distances.min(axis=1, keepdims=True)) / 2
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class OodDetector:
    """A fitted score and its threshold, as saved in a model directory.

    Attributes:
        method: One of `SCORES`.
        threshold: Scores above it are unknown.
        acceptance: The target share of validation images accepted.
        val_acceptance: The share of validation images actually accepted.
        centroids: ``(K, D)`` class centroids of the training embeddings.
        precision: ``(D, D)`` precision of their shared covariance.
        varied_images: Varied copies of validation pictures the threshold was
            also calibrated on (the prepared ``varied`` split; 0: none).
        grey: The statistics and threshold of grey pictures, or None (see
            `GreyStatistics`).
    """

    method: str
    threshold: float
    acceptance: float
    val_acceptance: float
    centroids: np.ndarray
    precision: np.ndarray
    varied_images: int = 0
    grey: GreyStatistics | None = None

    def scores(
        self,
        features: np.ndarray,
        logits: np.ndarray,
        probabilities: np.ndarray,
        grey: np.ndarray | None = None,
    ) -> np.ndarray:
        """Scores of a batch with this detector's method (see `compute_scores`).

        Args:
            features: ``(N, D)`` embeddings (a `Scoring` output, as the next two).
            logits: ``(N, K)`` pre-softmax outputs.
            probabilities: ``(N, K)`` class probabilities.
            grey: Boolean ``(N,)``, which images are colourless
                (`celestial_data.colourless`): those are scored against the
                grey statistics, when the detector has them, on the scale of
                `threshold`.
        """
        scores = self._scores(features, logits, probabilities)
        if self.grey is None or grey is None or not np.any(grey):
            return scores
        rows = np.flatnonzero(grey)
        picked = [np.asarray(values)[rows] for values in (features, logits, probabilities)]
        grey_scores = self._scores(picked[0], picked[1], picked[2], grey=True)
        scores[rows] = grey_scores + (self.threshold - self.grey.threshold)
        return scores

    def _scores(
        self,
        features: np.ndarray,
        logits: np.ndarray,
        probabilities: np.ndarray,
        grey: bool = False,
    ) -> np.ndarray:
        """Scores against the colour statistics, or the grey ones (unshifted)."""
        if grey and self.grey is not None:
            centroids, precision = self.grey.centroids, self.grey.precision
            terms = self._grey_mahalanobis_terms
        else:
            centroids, precision = self.centroids, self.precision
            terms = self._mahalanobis_terms
        if self.method == "mahalanobis":  # the centroids' terms computed once, not per batch
            return mahalanobis(features, *terms)
        return compute_scores(self.method, features, logits, probabilities, centroids, precision)

    @cached_property
    def _mahalanobis_terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return mahalanobis_terms(self.centroids, self.precision)

    @cached_property
    def _grey_mahalanobis_terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self.grey is not None
        return mahalanobis_terms(self.grey.centroids, self.grey.precision)

    def unknown(self, scores: np.ndarray) -> np.ndarray:
        """Boolean ``(N,)``: which scores lie above the threshold."""
        return np.asarray(scores, dtype=np.float64) > self.threshold

    def summary(self) -> dict[str, Any]:
        """What ``ood.json`` records (and the model metadata repeats)."""
        grey = self.grey
        return {
            "score": self.method,
            "threshold": self.threshold,
            "acceptance": self.acceptance,
            "val_acceptance": self.val_acceptance,
            "varied_images": self.varied_images,
            "features": int(self.centroids.shape[1]),
            "grey": None if grey is None else {
                "threshold": grey.threshold,
                "val_acceptance": grey.val_acceptance,
            },
        }  # fmt: skip

    def save(self, model_dir: str | Path) -> None:
        """Write ``ood.json`` and the statistics' ``.npy`` files into ``model_dir``."""
        model_dir = Path(model_dir)
        arrays = {CENTROIDS_FILE: self.centroids, PRECISION_FILE: self.precision}
        if self.grey is not None:
            arrays |= {GREY_CENTROIDS_FILE: self.grey.centroids}
            arrays |= {GREY_PRECISION_FILE: self.grey.precision}
        for name, values in arrays.items():
            np.save(model_dir / name, np.ascontiguousarray(values, np.float64))
        text = json.dumps(self.summary(), indent=2, sort_keys=True) + "\n"
        (model_dir / OOD_FILE).write_text(text)

    @classmethod
    def load(cls, model_dir: str | Path) -> OodDetector | None:
        """Read a detector from ``model_dir``; None when the model has none.

        Raises:
            ModelDirError: If the files are there but unreadable.
        """
        model_dir = Path(model_dir)
        if not (model_dir / OOD_FILE).is_file():
            return None
        try:
            info = json.loads((model_dir / OOD_FILE).read_text())
            centroids = np.load(model_dir / CENTROIDS_FILE, allow_pickle=False)
            precision = np.load(model_dir / PRECISION_FILE, allow_pickle=False)
            grey = None
            if info.get("grey"):  # absent before, None for a grayscale model
                grey = GreyStatistics(
                    centroids=np.load(model_dir / GREY_CENTROIDS_FILE, allow_pickle=False),
                    precision=np.load(model_dir / GREY_PRECISION_FILE, allow_pickle=False),
                    threshold=float(info["grey"]["threshold"]),
                    val_acceptance=float(info["grey"]["val_acceptance"]),
                )
            return cls(
                method=info["score"],
                threshold=float(info["threshold"]),
                acceptance=float(info["acceptance"]),
                val_acceptance=float(info["val_acceptance"]),
                centroids=centroids,
                precision=precision,
                varied_images=int(info.get("varied_images", 0)),  # absent before: none
                grey=grey,
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelDirError(
                f"Cannot read the unknown-image calibration in {model_dir} ({OOD_FILE} and its "
                f".npy files): {error}. Retrain the model (dvc repro)."
            ) from error
