"""Watch what the server answers: count every request, hand every prediction to the log.

`Observer` is the outermost middleware, in front of the API key check and of
both transports' ``POST /predict`` (the lean fast path and LitServe's route),
so it sees every request and every answer in the same way on both: it counts
each request by route and status with its latency (`celestial_serve.metrics`)
and passes each ``200`` answer of the predict route, with the upload that
`celestial_serve.request.read_prediction_request` left in the request's
scope, to the `PredictionLog`: the answer object that the lean transport's
fast path left there too (``ANSWER_KEY``), else the JSON body it saw sent. It
also closes the log when its HTTP process shuts down.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from celestial_models.prediction_log import utc_now
from celestial_serve.metrics import HttpMetrics
from celestial_serve.recorder import PredictionLog
from celestial_serve.request import ANSWER_KEY, UPLOAD_KEY

__all__ = ["Observer"]


class Observer:
    """ASGI middleware counting requests and logging the answers of ``path``.

    Args:
        app: The rest of the application.
        metrics: Where to count requests (None: not counted).
        log: Where to record answers (None: not recorded).
        path: The predict route.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: HttpMetrics | None,
        log: PredictionLog | None,
        path: str = "/predict",
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log = log
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0
        latency: float | None = None
        counted = self.metrics is None
        record = self.log is not None and scope["path"] == self.path and scope["method"] == "POST"
        body: list[bytes] = []

        async def observed(message: Message) -> None:
            nonlocal status, latency, counted
            if message["type"] == "http.response.start":
                status = message["status"]
                latency = time.perf_counter() - start
            elif message["type"] == "http.response.body":
                if record:
                    body.append(message.get("body", b""))
                if not counted and not message.get("more_body", False):
                    # Counted before the client has the whole answer: a scrape it
                    # makes next, of any HTTP process, sees this request.
                    counted = True
                    self._count(scope["path"], status, latency)
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            if not counted:  # no answer, or not a whole one
                self._count(scope["path"], status, latency)
            if record and status == 200 and latency is not None:
                upload = scope.get(UPLOAD_KEY)
                if upload is not None and self.log is not None:
                    data, image = upload
                    answer = scope.get(ANSWER_KEY) or b"".join(body)
                    self.log.add(answer, data, image, utc_now(), latency)

    def _count(self, path: str, status: int, latency: float | None) -> None:
        if self.metrics is not None:
            self.metrics.observe(path, status, latency)

    def _closing(self, send: Send) -> Send:
        """``send`` for the lifespan: close the log once the app has shut down."""

        async def sending(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete" and self.log is not None:
                self.log.close()
            await send(message)

        return sending
