"""Read an image upload from an HTTP request, rejecting bad input with a clear 4xx.

Everything here runs in the HTTP server process, before a request is queued
for the model. That is deliberate: in LitServe an exception raised inside
``decode_request`` fails every request of the batch it was collected in, so a
bad upload must never reach the inference worker. What reaches it is always a
well-formed ``(size, size, channels)`` uint8 array.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from celestial_data import ImageTooLarge, decode, to_array

__all__ = [
    "ACCEPTED",
    "DEFAULT_K",
    "INLINE_PIXELS",
    "BodyLimit",
    "PredictionRequest",
    "UploadRules",
    "declared_too_large",
    "decode_image",
    "image_from_body",
    "image_from_json",
    "limited",
    "media_type",
    "nonempty",
    "parse_k",
    "parse_reject",
    "preprocess",
    "read_multipart",
    "read_prediction_request",
    "takes_body",
    "too_large",
]

DEFAULT_K = 5
# Images up to this many pixels are decoded on the event loop, larger ones in a thread.
INLINE_PIXELS = 512 * 512
ACCEPTED = (
    "multipart/form-data with the image in field 'file', a raw body with an image/* "
    'content type, or application/json {"image": "<base64>"}'
)

# ASGI types, as starlette.types spells them.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class PredictionRequest:
    """A checked request, as queued for the model: the preprocessed image and options.

    ``reject`` is whether an image the model does not know is answered
    ``unknown`` (the default) or with its closest class.
    """

    image: np.ndarray
    k: int
    reject: bool = True

    def __repr__(self) -> str:
        # LitServe formats every request into a debug message, logged or not:
        # keep that cheap (numpy's repr of the image would take milliseconds).
        return f"PredictionRequest(image={self.image.shape}, k={self.k}, reject={self.reject})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled for every trip to a worker: the raw pixels pickle in a tenth
        # of the time numpy's own reduction takes, and unpickle in a fifth.
        image = self.image
        return (_restored, (image.tobytes(), image.dtype.str, image.shape, self.k, self.reject))


def _restored(
    pixels: bytes, dtype: str, shape: tuple[int, ...], k: int, reject: bool
) -> PredictionRequest:
    """A `PredictionRequest` from its pickled parts (the image is read-only)."""
    image = np.frombuffer(pixels, dtype=dtype).reshape(shape)
    return PredictionRequest(image=image, k=k, reject=reject)


@dataclass(frozen=True)
class UploadRules:
    """What an upload must be, and how to turn it into the model's input."""

    image_size: int
    color_mode: str
    num_classes: int
    max_pixels: int = 40_000_000


def bad_request(status: int, message: str) -> HTTPException:
    """An HTTP error whose JSON body is ``{"detail": message}``."""
    return HTTPException(status_code=status, detail=message)


def parse_k(query: Mapping[str, str], num_classes: int) -> int:
    """The ``k`` query parameter: how many top classes to return.

    Defaults to ``DEFAULT_K``; values above the number of classes are capped.

    Raises:
        HTTPException: 400 if ``k`` is not a positive integer.
    """
    raw = query.get("k")
    if raw is None:
        return min(DEFAULT_K, num_classes)
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if k < 1:
        raise bad_request(
            400, f"Query parameter k must be a positive integer. Received: k={raw[:40]!r}"
        )
    return min(k, num_classes)


def parse_reject(query: Mapping[str, str]) -> bool:
    """The ``reject`` query parameter: answer ``unknown`` for unknown images (default true).

    Raises:
        HTTPException: 400 if ``reject`` is not true/false (or 1/0, yes/no).
    """
    raw = query.get("reject")
    if raw is None:
        return True
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise bad_request(
        400, f"Query parameter reject must be true or false. Received: reject={raw[:40]!r}"
    )


def image_from_json(body: bytes) -> bytes:
    """The image bytes of a JSON body ``{"image": "<base64>"}``.

    A ``data:image/...;base64,`` prefix and line breaks in the base64 are accepted,
    so both a browser's data URL and the output of ``base64`` work.

    Raises:
        HTTPException: 400 if the body is not JSON, has no string ``image``, or
            ``image`` is not valid base64.
    """
    try:
        payload = json.loads(body)
    except ValueError as error:  # also UnicodeDecodeError
        raise bad_request(400, f"The body is not valid JSON ({error}). Send {ACCEPTED}.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
        keys = sorted(payload)[:10] if isinstance(payload, dict) else type(payload).__name__
        raise bad_request(
            400,
            'A JSON body must be an object {"image": "<base64 of the image file>"}. '
            f"Received: {keys}",
        )
    text = payload["image"]
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise bad_request(
            400, f"The 'image' field is not valid base64 ({error}). Encode the image file's bytes."
        ) from None


def media_type(content_type: str) -> str:
    """The media type of a ``Content-Type`` value, lower case, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


async def read_upload(request: Request) -> bytes:
    """The encoded image a request carries, in any of the accepted forms.

    Raises:
        HTTPException: 415 for an unsupported content type, 400 for a missing
            field, bad JSON/base64 or an empty image.
    """
    content_type = request.headers.get("content-type", "")
    if media_type(content_type) == "multipart/form-data":
        return nonempty(await read_multipart(request))
    if not takes_body(content_type):
        received = f"'{content_type[:80]}'" if content_type else "no Content-Type"
        raise bad_request(415, f"Unsupported content type: {received}. Send {ACCEPTED}.")
    return image_from_body(content_type, await request.body())


def takes_body(content_type: str) -> bool:
    """Whether a request of ``content_type`` carries the image as its whole body.

    True for ``image/*`` (the raw file) and ``application/json`` (base64);
    multipart forms are parsed by the route instead.
    """
    media = media_type(content_type)
    return media.startswith("image/") or media == "application/json"


def image_from_body(content_type: str, body: bytes) -> bytes:
    """The encoded image of a body that `takes_body` accepts.

    Raises:
        HTTPException: 400 for bad JSON/base64 or an empty image.
    """
    if media_type(content_type) == "application/json":
        body = image_from_json(body)
    return nonempty(body)


def nonempty(data: bytes) -> bytes:
    """``data``, unless it is empty.

    Raises:
        HTTPException: 400 for an empty image.
    """
    if not data:
        raise bad_request(400, f"The image is empty (0 bytes). Send {ACCEPTED}.")
    return data


async def read_multipart(request: Request) -> bytes:
    """The bytes of the ``file`` field of a multipart form."""
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if isinstance(upload, str):
            raise bad_request(
                400,
                "Field 'file' of the multipart form is a text field, not a file upload. "
                "Send the image as a file, e.g. curl -F file=@image.jpg",
            )
        if upload is None:
            fields = sorted(form.keys())[:10]
            raise bad_request(
                400,
                "The multipart form has no file in field 'file' "
                f"(fields received: {fields}). Upload the image as 'file', "
                "e.g. curl -F file=@image.jpg",
            )
        return await upload.read()


def decode_image(data: bytes, rules: UploadRules, max_pixels: int | None = None) -> np.ndarray:
    """Decode and preprocess an encoded image exactly as training did.

    Args:
        data: The encoded image.
        rules: The upload rules (model input, pixel limit).
        max_pixels: A lower pixel limit to try first: an image above it but
            within ``rules.max_pixels`` raises `celestial_data.ImageTooLarge`
            instead of a 413, for the caller to decode elsewhere.

    Raises:
        HTTPException: 413 if the image has more pixels than allowed, 400 if it is
            not a readable image (unknown format, truncated, corrupt).
        ImageTooLarge: See ``max_pixels``.
    """
    limit = rules.max_pixels if max_pixels is None else min(max_pixels, rules.max_pixels)
    header: dict[str, Any] = {}  # filled once the format is recognised
    try:
        image = decode(data, rules.image_size, header, max_pixels=limit)
        return to_array(image, rules.image_size, rules.color_mode)  # type: ignore[arg-type]
    except ImageTooLarge as error:
        if error.width * error.height <= rules.max_pixels:
            raise
        pixels = error.width * error.height
        raise bad_request(
            413,
            f"The image is {error.width} x {error.height} pixels ({pixels / 1e6:.0f} "
            f"megapixels); the limit is {rules.max_pixels / 1e6:.0f} megapixels. "
            "Resize it before sending.",
        ) from None
    except Exception:
        # Pillow raises many types on malformed input: OSError, ValueError,
        # SyntaxError, EOFError...
        if not header:
            raise bad_request(400, not_an_image(data)) from None
        raise bad_request(
            400,
            f"The image could not be decoded: it is truncated or corrupt ({len(data)} bytes, "
            f"{header['width']} x {header['height']} pixels announced). Send the complete file.",
        ) from None


def not_an_image(data: bytes) -> str:
    """The message for bytes that no image format recognises."""
    head = data[:16]
    return (
        f"The upload is not an image Pillow can read ({len(data)} bytes starting with "
        f"{head!r}). Send a JPEG, PNG, GIF, BMP, TIFF or WebP file."
    )


async def read_prediction_request(request: Request) -> PredictionRequest:
    """FastAPI dependency of ``POST /predict``: the model input and options of a request.

    Reads the upload rules from ``request.app.state.upload``.

    Returns:
        The uint8 image ``(size, size, channels)``, ``k`` and ``reject``.
    """
    rules: UploadRules = request.app.state.upload
    k = parse_k(request.query_params, rules.num_classes)
    reject = parse_reject(request.query_params)
    data = await read_upload(request)
    return PredictionRequest(image=await preprocess(data, rules), k=k, reject=reject)


async def preprocess(data: bytes, rules: UploadRules) -> np.ndarray:
    """Decode and preprocess an upload; see `decode_image`.

    A small image decodes in a fraction of a millisecond, less than a hop to
    the thread pool and back: it is decoded here, on the event loop. A large
    one would hold up every other request meanwhile, so it goes to a thread.
    """
    try:
        return decode_image(data, rules, max_pixels=INLINE_PIXELS)
    except ImageTooLarge:
        return await run_in_threadpool(decode_image, data, rules)


def too_large(size: str, max_bytes: int) -> str:
    """The 413 message for a request body of ``size`` (in words) over ``max_bytes``."""
    return (
        f"The request body is too large ({size}); the limit is {max_bytes} bytes "
        f"({max_bytes / 2**20:.3g} MiB). Send a smaller image or raise --max-upload-mb."
    )


def declared_too_large(headers: Mapping[bytes, bytes], max_bytes: int) -> str | None:
    """The 413 message if a request's ``Content-Length`` is over ``max_bytes``, else None."""
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > max_bytes:
        return too_large(f"{int(declared)} bytes", max_bytes)
    return None


def limited(receive: Receive, max_bytes: int) -> Receive:
    """``receive``, counting the body as it streams in and cutting it off at ``max_bytes``.

    Raises (from the returned callable):
        HTTPException: 413 once more than ``max_bytes`` have come.
    """
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > max_bytes:
            raise bad_request(413, too_large(f"over {max_bytes} bytes", max_bytes))
        return message

    return counted


class BodyLimit:
    """ASGI middleware answering 413 to request bodies larger than ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before reading; a
    body without one is counted as it streams in and cut off at the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = declared_too_large(dict(scope["headers"]), self.max_bytes)
        if refusal is not None:
            await JSONResponse({"detail": refusal}, 413)(scope, receive, send)
            return
        # Past the limit, reading raises 413 inside the route, where FastAPI
        # turns it into the JSON answer.
        await self.app(scope, limited(receive, self.max_bytes), send)
