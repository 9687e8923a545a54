"""Answer ``POST /predict`` uploads without FastAPI's route (lean transport only).

FastAPI's routing, dependency solving, LitServe's handler and a response class
cost more than a small model. `PredictFastPath`, the outermost middleware,
reads uploads with the route's own dependency, has the `LeanServer` queue them
and sends the JSON FastAPI would. Other content types (415 there), routes and
methods go down the stack, and so does everything while an API key or
``LitAPI.authorize`` is set: this path implements no authentication. Its
answers (a few hundred bytes) are never gzip-compressed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from celestial_serve.request import (
    ANSWER_KEY,
    MULTIPART,
    BodyLimit,
    media_type,
    read_prediction_request,
    takes_body,
)

if TYPE_CHECKING:
    import litserve as ls

    from celestial_serve.litserve_internals import LeanServer

__all__ = ["PredictFastPath"]

logger = logging.getLogger(__name__)


class PredictFastPath(BodyLimit):
    """`BodyLimit` that answers uploads to the predict route itself.

    Args:
        app: The rest of the application (FastAPI's stack).
        max_bytes: The largest request body accepted (413 above it).
        server: The server whose workers answer.
        api: The API served at ``api.api_path``.
        body_timeout: Seconds a request's body may take to arrive (408 after).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        server: LeanServer,
        api: ls.LitAPI,
        body_timeout: float = 30.0,
    ) -> None:
        super().__init__(app, max_bytes, body_timeout)
        self.server = server
        self.path = api.api_path
        self.enabled = server.takes_fast_path(api)

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer an upload to the predict route; pass anything else down the stack."""
        request = Request(scope, receive)
        content_type = request.headers.get("content-type", "")
        if not (
            self.enabled
            and scope["path"] == self.path
            and scope["method"] == "POST"
            and (takes_body(content_type) or media_type(content_type) == MULTIPART)
        ):
            await self.app(scope, receive, send)  # the route answers 415 to other types
            return
        try:
            checked = await read_prediction_request(request)
            content = scope[ANSWER_KEY] = await self.server.answer(scope, checked)
            answer = JSONResponse(content)
        except ClientDisconnect:
            return
        except HTTPException as error:  # FastAPI's, and the form parser's
            answer = JSONResponse({"detail": error.detail}, error.status_code, error.headers)
        except Exception:
            # As LitServe's route does: logged here, a plain 500 for the client.
            logger.exception("Unhandled exception while answering %s", self.path)
            answer = JSONResponse({"detail": "Internal server error"}, 500)
        await answer(scope, receive, send)
