"""The LitServe API: load the classifier once per worker, predict batches of images.

Requests reach ``decode_request`` checked and preprocessed (`celestial_serve.request`),
so one bad upload can never fail the batch it would have joined.
"""

# No ``from __future__ import annotations`` here: LitServe reads the annotation of
# ``decode_request``'s ``request`` at run time to build the FastAPI route, and it
# must be the real ``Annotated[..., Depends(...)]`` object, not a string.

from typing import Annotated, Any

import litserve as ls
import numpy as np
from fastapi import Depends

from celestial_serve.errors import ServeError
from celestial_serve.lifetime import die_with_parent, leave_ctrl_c_to_the_main_process
from celestial_serve.metrics import WorkerMetrics
from celestial_serve.project import ModelCard
from celestial_serve.request import PredictionRequest, read_prediction_request
from celestial_serve.response import prediction

__all__ = ["ClassifierAPI", "warmup_sizes"]


def warmup_sizes(max_batch_size: int) -> list[int]:
    """Batch sizes to run at start-up: the powers of two up to ``max_batch_size``.

    The classifier pads batches to a power of two and JAX compiles once per
    shape: these compile every shape a request can meet before ``/health`` is 200.
    """
    sizes = [1]
    while sizes[-1] < max_batch_size:
        sizes.append(sizes[-1] * 2)
    return sizes


class ClassifierAPI(ls.LitAPI):
    """Serve a `celestial_models` classifier: images in, class probabilities out.

    LitServe's default ``batch`` (``np.stack``) and ``unbatch`` (a row each) fit.
    """

    def __init__(
        self,
        card: ModelCard,
        max_batch_size: int = 16,
        batch_timeout: float = 0.0,
        loop: Any = "auto",
        metrics: bool = False,
    ):
        """Create the API for the model ``card`` describes (loaded later, in `setup`).

        Args:
            card: The model to serve.
            max_batch_size: Most requests predicted together.
            batch_timeout: Seconds a worker waits, once a request has come, for
                more to fill the batch (0: take only those already waiting).
            loop: The worker's loop: LitServe's own (``"auto"``) or a ``LitLoop``.
            metrics: Count answers and batch sizes (`celestial_serve.metrics`).
        """
        super().__init__(max_batch_size, batch_timeout, api_path="/predict", loop=loop)
        self.card = card
        self.classifier: Any = None
        self.threshold: float | None = None
        self.warmup_sizes = warmup_sizes(max_batch_size)
        self.metrics = metrics
        self.counts: WorkerMetrics | None = None  # made in the worker, after the warm-up

    def setup(self, device: str) -> None:
        """Load the classifier (in each worker) and compile it for every batch size."""
        from celestial_models import ModelError, load_classifier, synchronous_dispatch

        if not die_with_parent():  # the server's main process: the worker stops with it
            raise ServeError("The server stopped before this inference worker started.")
        leave_ctrl_c_to_the_main_process()
        synchronous_dispatch()  # a worker waits for every batch it predicts
        try:
            classifier = load_classifier(self.card.model_dir)
        except ModelError as error:
            # Keep the worker's log to the message: the cause is the model, not this code.
            raise ServeError(str(error)) from None
        if classifier.model_hash != self.card.model_hash or tuple(classifier.classes) != tuple(
            self.card.classes
        ):
            raise ServeError(
                f"The model in {self.card.model_dir} changed while the server was starting "
                "(its hash or classes differ). Restart the server."
            )
        self.classifier = classifier
        detector = classifier.detector
        self.threshold = None if detector is None else detector.threshold
        blank = np.zeros((max(self.warmup_sizes), *self.card.input_shape), dtype=np.uint8)
        for size in self.warmup_sizes:
            self.predict(blank[:size])
        if self.metrics:
            self.counts = WorkerMetrics()

    def decode_request(
        self,
        request: Annotated[PredictionRequest, Depends(read_prediction_request)],
        context: dict[str, Any],
    ) -> np.ndarray:
        """Take the preprocessed image of a request; keep its ``k`` for the answer."""
        image = request.image
        if image.shape != self.card.input_shape or image.dtype != np.uint8:
            raise ValueError(
                f"Expected a uint8 image of shape {self.card.input_shape}. "
                f"Received {image.dtype} {image.shape}."
            )
        context["k"] = request.k
        context["reject"] = request.reject
        return image

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities and unknown-image score of a batch ``(N, S, S, C)``.

        Returns:
            A row per image: its K probabilities, then its score (NaN without a
            calibrated threshold). One image ``(S, S, C)``, as LitServe's own
            loop passes when batching is off, gets one row.
        """
        batch = x if x.ndim == 4 else x[None]
        if getattr(self.classifier, "detector", None) is None:
            probabilities = self.classifier.predict(batch)
            scores = np.full(len(batch), np.nan)
        else:
            probabilities, scores = self.classifier.predict_with_score(batch)
        rows = np.concatenate([probabilities.astype(np.float64), scores[:, None]], axis=1)
        if self.counts is not None:
            self.counts.batch_size.observe(len(batch))
        return rows if x.ndim == 4 else rows[0]

    def encode_response(self, output: np.ndarray, context: dict[str, Any]) -> dict[str, Any]:
        """The JSON answer for one request."""
        answer = prediction(
            output[:-1],
            self.card.classes,
            context["k"],
            self.card.identity,
            score=float(output[-1]),
            threshold=self.threshold,
            reject=context.get("reject", True),
        )
        if self.counts is not None:
            self.counts.answered(answer["label"])
        return answer
