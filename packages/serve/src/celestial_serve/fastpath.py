"""Answer ``POST /predict`` uploads without FastAPI's route.

A request through LitServe's route crosses FastAPI's routing, dependency
solving, LitServe's request handler and a response class: with a model that
takes a tenth of a millisecond per image, that costs more than the model
(``bench/bench_serve.py`` measures it). `PredictFastPath`, the outermost of the
app's own middlewares, takes uploads in the three accepted forms (the raw
file, JSON base64, a multipart form) and does what the route would do: the
same upload checks, limits and errors (`celestial_serve.request`), the same
queue and answer buffer as LitServe's handler, the same translation of a
worker's error, the answer encoded as FastAPI encodes it.

Everything else goes down the stack unchanged: other content types (answered
415 there), other routes and methods, and every request while authentication
(``LIT_SERVER_API_KEY``, ``LitAPI.authorize``) or LitServe callbacks are
configured, which this path does not implement. Its answers are never
gzip-compressed (LitServe compresses bodies over 1,000 bytes; a prediction
takes a few hundred).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from litserve.server import RegularRequestHandler
from litserve.utils import LitAPIStatus, ResponseBufferItem
from starlette.exceptions import HTTPException as StarletteHTTPException

from celestial_serve.request import (
    ASGIApp,
    Message,
    PredictionRequest,
    Receive,
    Scope,
    Send,
    UploadRules,
    declared_too_large,
    image_from_body,
    limited,
    media_type,
    nonempty,
    parse_k,
    parse_reject,
    preprocess,
    read_multipart,
    takes_body,
)
from celestial_serve.transport import no_auth_async

if TYPE_CHECKING:
    import litserve as ls

__all__ = ["PredictFastPath"]

logger = logging.getLogger(__name__)

JSON_HEADERS = [(b"content-type", b"application/json")]


class PredictFastPath:
    """ASGI middleware answering uploads to the predict route.

    Args:
        app: The rest of the application (FastAPI's stack).
        server: The LitServer whose queues carry the requests.
        api: The API served at ``api.api_path``.
        rules: What an upload must be.
        max_bytes: The largest request body accepted (413 above it).
    """

    def __init__(
        self,
        app: ASGIApp,
        server: ls.LitServer,
        api: ls.LitAPI,
        rules: UploadRules,
        max_bytes: int,
    ) -> None:
        self.app = app
        self.server = server
        self.path = api.api_path
        self.rules = rules
        self.max_bytes = max_bytes
        self.uids = itertools.count()
        # What LitServe's route would check or call and this path does not.
        self.enabled = not server._callback_runner._callbacks and is_open(server, api)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if not (
            self.enabled
            and scope["type"] == "http"
            and scope["path"] == self.path
            and scope["method"] == "POST"
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if not takes_upload(content_type):
            await self.app(scope, receive, send)  # the route answers 415
            return
        try:
            request = await self.read(scope, receive, headers, content_type)
            answer = await self.predict(scope["app"].response_queue_id, request)
        except ClientGone:
            return
        except StarletteHTTPException as error:  # FastAPI's, and the form parser's
            await respond(send, error.status_code, {"detail": error.detail}, error.headers)
            return
        except Exception:
            # As LitServe's route does: logged here, a plain 500 for the client.
            logger.exception("Unhandled exception while answering %s", self.path)
            await respond(send, 500, {"detail": "Internal server error"})
            return
        await respond(send, 200, answer)

    async def read(
        self, scope: Scope, receive: Receive, headers: dict[bytes, bytes], content_type: str
    ) -> PredictionRequest:
        """The checked request, as the route's dependency would make it.

        Raises:
            HTTPException: 4xx for bad options, too large a body or a bad image.
            ClientGone: If the client disconnected while sending it.
        """
        # As Starlette reads a query string: the last of repeated names wins.
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        k = parse_k(query, self.rules.num_classes)
        reject = parse_reject(query)
        refusal = declared_too_large(headers, self.max_bytes)
        if refusal is not None:
            raise HTTPException(413, refusal)
        receive = until_disconnect(limited(receive, self.max_bytes))
        if media_type(content_type) == "multipart/form-data":
            data = nonempty(await read_multipart(Request(scope, receive)))
        else:
            data = image_from_body(content_type, await read_body(receive))
        return PredictionRequest(image=await preprocess(data, self.rules), k=k, reject=reject)

    async def predict(self, consumer_id: int, request: PredictionRequest) -> Any:
        """Queue ``request`` for the workers and wait for its answer, as LitServe does.

        Raises:
            HTTPException: The worker's error (4xx as raised, 500 otherwise).
        """
        uid = f"fast-{next(self.uids)}"  # unique in this process, as the buffer needs
        event = asyncio.Event()
        buffer = self.server.response_buffer
        buffer[uid] = ResponseBufferItem(event)
        try:
            queue = self.server._get_request_queue(self.path)
            queue.put((consumer_id, uid, time.monotonic(), request))
            await event.wait()
        finally:
            item = buffer.pop(uid)
        response, status = item.response
        if status == LitAPIStatus.ERROR:
            RegularRequestHandler._handle_error_response(response)  # raises HTTPException
        return response


class ClientGone(Exception):
    """The client closed the connection before its request was read."""


def until_disconnect(receive: Receive) -> Receive:
    """``receive``, raising `ClientGone` when the client disconnects."""

    async def checked() -> Message:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        return message

    return checked


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def takes_upload(content_type: str) -> bool:
    """Whether a request of ``content_type`` can carry an image in an accepted form."""
    return takes_body(content_type) or media_type(content_type) == "multipart/form-data"


def is_open(server: ls.LitServer, api: ls.LitAPI) -> bool:
    """Whether ``api``'s route takes requests without authentication."""
    return server.setup_auth(api) is no_auth_async


async def respond(
    send: Send, status: int, content: Any, headers: Mapping[str, str] | None = None
) -> None:
    """Send ``content`` as a JSON answer, encoded as Starlette's `JSONResponse` does."""
    body = json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
    extra = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in (headers or {}).items()
    ]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *JSON_HEADERS,
                (b"content-length", str(len(body)).encode("latin-1")),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
