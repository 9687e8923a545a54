"""Read an image upload from an HTTP request, rejecting bad input with a clear 4xx.

This runs in the HTTP server, before a request is queued: in LitServe an
exception in ``decode_request`` fails every request of its batch, so only a
well-formed ``(size, size, channels)`` uint8 array may reach a worker.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from celestial_data import ImageFormat, ImageTooLarge, UnsupportedPixels, decode, to_array
from celestial_serve.review import SIGNATURES

__all__ = [
    "ANSWER_KEY",
    "QUERY_PARAMETERS",
    "UPLOAD_KEY",
    "BodyLimit",
    "PredictionRequest",
    "UploadRules",
    "check_query",
    "read_prediction_request",
]

DEFAULT_K = 5
# Images up to this many pixels are decoded on the event loop, larger ones in a thread.
INLINE_PIXELS = 512 * 512
#: The default limit on the pixels an upload may decode to (its full size, whatever its format).
MAX_PIXELS = 16_000_000
MULTIPART = "multipart/form-data"
#: The content type of bytes of no declared kind, which many HTTP clients send a file as.
RAW = "application/octet-stream"
#: Where `read_prediction_request` leaves ``(upload bytes, model input)`` in the request's
#: scope, for `celestial_serve.observer.Observer` to log with the answer.
UPLOAD_KEY = "celestial_serve.upload"
#: Where the lean transport's fast path (`celestial_serve.fastpath`) leaves the answer
#: it sends, so that the log need not parse the JSON it was sent as.
ANSWER_KEY = "celestial_serve.answer"
ACCEPTED = (
    f"{MULTIPART} with the image in field 'file', a raw body with an image/* or {RAW} "
    'content type, or application/json {"image": "<base64>"}'
)


#: The file-type box of a HEIC/HEIF photo (an iPhone's), at byte 4: Pillow reads none.
HEIF_BRANDS = frozenset(
    b"ftyp" + brand for brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1")
)


@dataclass(frozen=True)
class PredictionRequest:
    """A checked request, as queued: the preprocessed image, ``k`` and ``reject``."""

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
    image = np.frombuffer(pixels, dtype=dtype).reshape(shape)  # read-only
    return PredictionRequest(image=image, k=k, reject=reject)


@dataclass(frozen=True)
class UploadRules:
    """What an upload must be, and how to turn it into the model's input.

    Decoding an image takes up to about 13 bytes per pixel at once (a palette
    or transparent PNG: the pixels, their RGBA copy and the composite), so
    ``max_pixels`` and ``max_decodes``, how many images over `INLINE_PIXELS`
    one HTTP process decodes at once (the others wait), bound its memory.
    """

    image_format: ImageFormat
    """What an upload becomes: the model's size, colour mode and canonical view."""
    num_classes: int
    max_pixels: int = MAX_PIXELS
    max_decodes: int = 1
    decodes: asyncio.Semaphore = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Bound to an event loop when first waited on: each HTTP process gets its own.
        object.__setattr__(self, "decodes", asyncio.Semaphore(self.max_decodes))


#: The query parameters of ``POST /predict``, and what each is for.
QUERY_PARAMETERS = {
    "k": f"how many of the closest classes to list in top_k (default {DEFAULT_K})",
    "reject": "whether to answer unknown for an image unlike every class (default true)",
}


def check_query(query: QueryParams) -> None:
    """Refuse query parameters ``POST /predict`` does not take, and any given twice.

    A misspelt option (``top_k=3``, the answer's field, for ``k=3``) would
    otherwise be ignored without a word, and the answer would not be the one
    asked for.

    Raises:
        HTTPException: 400 naming the parameter and those taken.
    """
    unknown = [name for name in query if name not in QUERY_PARAMETERS]
    if unknown:
        named = ", ".join(repr(name[:40]) for name in unknown[:5])
        hint = " (top_k, the answer's field, is asked for with k)" if "top_k" in unknown else ""
        taken = "; ".join(f"{name}: {what}" for name, what in QUERY_PARAMETERS.items())
        raise HTTPException(
            400, f"Unknown query parameter {named}{hint}. POST /predict takes {taken}."
        )
    for name in QUERY_PARAMETERS:
        values = query.getlist(name)
        if len(values) > 1:
            raise HTTPException(
                400,
                f"Query parameter {name} is given {len(values)} times "
                f"({', '.join(v[:20] for v in values[:5])}). Give it once.",
            )


def parse_k(query: Mapping[str, str], num_classes: int) -> int:
    """The ``k`` query parameter (how many top classes), capped at the number of classes.

    Raises:
        HTTPException: 400 if ``k`` is not a positive integer.
    """
    raw = query.get("k", str(DEFAULT_K))
    with contextlib.suppress(ValueError):
        if int(raw) >= 1:
            return min(int(raw), num_classes)
    raise HTTPException(
        400, f"Query parameter k must be a positive integer. Received: k={raw[:40]!r}"
    )


def parse_reject(query: Mapping[str, str]) -> bool:
    """The ``reject`` query parameter: answer ``unknown`` for unknown images (default true).

    Raises:
        HTTPException: 400 if ``reject`` is not true/false (or 1/0, yes/no).
    """
    value = query.get("reject", "true").strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise HTTPException(
        400,
        f"Query parameter reject must be true or false. Received: reject={query['reject'][:40]!r}",
    )


def image_from_json(body: bytes) -> bytes:
    """The image bytes of a JSON body ``{"image": "<base64>"}`` (a data URL works too).

    Raises:
        HTTPException: 400 if the body is not JSON, is nested too deeply to
            parse, has no string ``image``, or ``image`` is not valid base64.
    """
    try:
        payload = json.loads(body)
    except ValueError as error:  # also UnicodeDecodeError
        raise HTTPException(
            400, f"The body is not valid JSON ({error}). Send {ACCEPTED}."
        ) from None
    except RecursionError:  # the parser recurses once per level of arrays and objects
        raise HTTPException(
            400,
            f"The JSON body is nested too deeply to parse ({len(body)} bytes). Send {ACCEPTED}.",
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
        received: object = type(payload).__name__
        if isinstance(payload, dict):
            received = sorted(payload)[:10]
            if "image" in payload:
                received = f"'image' as {type(payload['image']).__name__}, not a string"
        raise HTTPException(
            400,
            'A JSON body must be an object {"image": "<base64 of the image file>"}. '
            f"Received: {received}",
        )
    text = payload["image"]
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    if text.startswith(("http://", "https://", "ftp://", "file:")):
        raise HTTPException(
            400,
            f"The 'image' field is a URL ({text[:60]!r}); the server fetches nothing. Download "
            "the image and send its bytes, base64-encoded.",
        )
    text = "".join(text.split())  # line breaks, as base64 tools wrap their output
    # The URL-safe alphabet (- and _ for + and /) is accepted too: the two never mix.
    altchars = b"-_" if "-" in text or "_" in text else None
    try:
        return base64.b64decode(text, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as error:
        raise HTTPException(
            400,
            f"The 'image' field is not valid base64 ({error}): expected the characters "
            "A-Z a-z 0-9 + / (or - _) and = padding. Encode the image file's bytes.",
        ) from None


def media_type(content_type: str) -> str:
    """The media type of a ``Content-Type`` value, lower case, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def takes_body(content_type: str) -> bool:
    """Whether ``content_type`` carries the image as the whole body: ``image/*``, raw or JSON.

    The format is read from the bytes, never from the content type, so any
    ``image/*`` and plain ``application/octet-stream`` are one and the same.
    """
    media = media_type(content_type)
    return media.startswith("image/") or media in (RAW, "application/json")


async def read_upload(request: Request) -> bytes:
    """The encoded image a request carries, in any of the accepted forms.

    Raises:
        HTTPException: 415 for an unsupported content type, 400 for a missing
            field, bad JSON/base64 or an empty image.
    """
    content_type = request.headers.get("content-type", "")
    if media_type(content_type) == MULTIPART:
        data = await read_multipart(request)
    elif takes_body(content_type):
        data = await request.body()
        if media_type(content_type) == "application/json":
            data = image_from_json(data)
    else:
        received = f"'{content_type[:80]}'" if content_type else "no Content-Type"
        raise HTTPException(415, f"Unsupported content type: {received}. Send {ACCEPTED}.")
    if not data:
        raise HTTPException(400, f"The image is empty (0 bytes). Send {ACCEPTED}.")
    return data


async def read_multipart(request: Request) -> bytes:
    """The bytes of the ``file`` field of a multipart form."""
    try:
        form = await request.form(max_files=1, max_fields=10)
    except StarletteHTTPException as error:
        if error.status_code != 400:  # a body over the limit, or too slow (BodyLimit)
            raise
        raise HTTPException(  # Starlette's words alone name no fix
            400,
            f"The multipart form cannot be read: {str(error.detail).rstrip('.')}. Send one "
            "image in a form field named 'file', e.g. curl -F file=@image.jpg",
        ) from None
    try:
        upload = form.get("file")
        if isinstance(upload, str):
            raise HTTPException(
                400,
                "Field 'file' of the multipart form is a text field, not a file upload. "
                "Send the image as a file, e.g. curl -F file=@image.jpg",
            )
        if upload is None:
            raise HTTPException(
                400,
                "The multipart form has no file in field 'file' "
                f"(fields received: {sorted(form.keys())[:10]}). Upload the image as 'file', "
                "e.g. curl -F file=@image.jpg",
            )
        return await upload.read()
    finally:
        await form.close()


def decode_image(data: bytes, rules: UploadRules, max_pixels: int | None = None) -> np.ndarray:
    """Decode and preprocess an encoded image exactly as training did.

    Raises:
        HTTPException: 413 if the image has more pixels than ``rules`` allow, 415
            if its pixels are 32-bit (`UnsupportedPixels`), 400 if it is not a
            readable image (unknown format, truncated, corrupt).
        ImageTooLarge: If it is within ``rules`` but over ``max_pixels``.
    """
    limit = rules.max_pixels if max_pixels is None else min(max_pixels, rules.max_pixels)
    header: dict[str, Any] = {}  # filled once the format is recognised
    try:
        image = decode(data, header, max_pixels=limit)
        return to_array(image, rules.image_format)
    except ImageTooLarge as error:
        if error.pixels <= rules.max_pixels:
            raise
        raise HTTPException(413, too_many_pixels(error, rules.max_pixels)) from None
    except UnsupportedPixels as error:
        raise HTTPException(415, f"The image cannot be used: {error}.") from None
    except Exception:
        # Pillow raises OSError, ValueError, SyntaxError, EOFError... on bad input.
        if not header:
            started = next((name for magic, name in SIGNATURES if data.startswith(magic)), None)
            if started:
                raise HTTPException(
                    400,
                    f"The upload starts as a {started.upper()} file but cannot be read: it is "
                    f"truncated or corrupt ({len(data)} bytes). Send the complete file.",
                ) from None
            if data[4:12] in HEIF_BRANDS:
                raise HTTPException(
                    400,
                    "The upload is a HEIC/HEIF photo, which is not read. Convert it to JPEG or "
                    "PNG (on an iPhone, Settings > Camera > Formats > Most Compatible).",
                ) from None
            raise HTTPException(
                400,
                f"The upload is not an image Pillow can read ({len(data)} bytes starting with "
                f"{data[:16]!r}). Send a JPEG, PNG, GIF, BMP, TIFF or WebP file.",
            ) from None
        raise HTTPException(
            400,
            f"The image could not be decoded: it is truncated or corrupt ({len(data)} bytes, "
            f"{header['width']} x {header['height']} pixels announced). Send the complete file.",
        ) from None


def too_many_pixels(error: ImageTooLarge, max_pixels: int) -> str:
    """The 413 message for an image that would decode to more than ``max_pixels`` pixels."""
    size = f"{error.pixels:,} pixels"
    if error.width is not None:
        size = f"{error.width} x {error.height}, {size}"
    return (
        f"The image is too large to decode ({size}); the limit is {max_pixels:,} pixels "
        f"(--max-megapixels {max_pixels / 1e6:g}). Resize it before sending."
    )


async def read_prediction_request(request: Request) -> PredictionRequest:
    """The checked input of ``POST /predict``, by the rules in ``request.app.state.upload``.

    The route's FastAPI dependency, and what the fast path calls. A small
    image decodes faster than a hop to the thread pool and back, so it is
    decoded on the event loop; a large one, which would hold up the other
    requests, in a thread.

    It leaves the upload and the model's input in the scope, under `UPLOAD_KEY`.

    Raises:
        HTTPException: 4xx for bad options, a bad upload or a bad image.
    """
    rules: UploadRules = request.app.state.upload
    check_query(request.query_params)
    k = parse_k(request.query_params, rules.num_classes)
    reject = parse_reject(request.query_params)
    data = await read_upload(request)
    try:
        image = decode_image(data, rules, max_pixels=INLINE_PIXELS)
    except ImageTooLarge:
        async with rules.decodes:
            image = await run_in_threadpool(decode_image, data, rules)
    request.scope[UPLOAD_KEY] = (data, image)
    return PredictionRequest(image=image, k=k, reject=reject)


def too_large(size: str, max_bytes: int) -> str:
    """The 413 message for a request body of ``size`` (in words) over ``max_bytes``."""
    return (
        f"The request body is too large ({size}); the limit is {max_bytes} bytes "
        f"({max_bytes / 2**20:.3g} MiB). Send a smaller image or raise --max-upload-mb."
    )


def too_slow(seconds: float, received: int) -> str:
    """The 408 message for a request body not complete within ``seconds``."""
    return (
        f"The request body did not arrive within {seconds:g} s ({received} bytes received). "
        "Send the whole body at once; for a slow link, raise --body-timeout."
    )


class BodyLimit:
    """ASGI middleware answering 413 to request bodies larger than ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before reading; a
    streamed body is cut off at the limit, and a body still incomplete
    ``body_timeout`` seconds after its request began is given up (408, and
    the connection closed), by an `HTTPException` that its reader (the route,
    or `celestial_serve.fastpath`) answers.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            refusal = too_large(f"{int(declared)} bytes", self.max_bytes)
            await JSONResponse({"detail": refusal}, 413)(scope, receive, send)
            return
        received = 0
        more_body = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout

        async def counted() -> Message:
            nonlocal received, more_body
            if not more_body:  # the body is in: only the disconnect is left to wait for
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408, too_slow(self.body_timeout, received), headers={"Connection": "close"}
                ) from None
            received += len(message.get("body", b""))
            more_body = message.get("more_body", False) and message["type"] == "http.request"
            if received > self.max_bytes:
                raise HTTPException(413, too_large(f"over {self.max_bytes} bytes", self.max_bytes))
            return message

        await self.forward(scope, counted, send)

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request, its body limited, down the stack."""
        await self.app(scope, receive, send)
