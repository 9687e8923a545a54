"""The predict fast path, called as ASGI on a LeanServer with a stand-in worker."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi import HTTPException
from litserve.utils import LitAPIStatus, PickleableHTTPException
from PIL import Image

from celestial_data import ImageFormat
from celestial_serve.api import ClassifierAPI
from celestial_serve.fastpath import PredictFastPath
from celestial_serve.litserve_internals import LeanServer
from celestial_serve.project import ModelCard
from celestial_serve.request import PredictionRequest, UploadRules

RULES = UploadRules(ImageFormat(16, "rgb"), num_classes=4)
LIMIT = 4096
ANSWER = {"label": "Mars", "probability": 0.9}


def png(size: tuple[int, int] = (20, 24)) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


class Worker:
    """Stands in for the channel to an inference worker: answers each request."""

    def __init__(self, buffer: dict, answer: tuple[Any, LitAPIStatus]) -> None:
        self.buffer = buffer
        self.answer = answer
        self.queued: list[tuple] = []

    def put(self, item: tuple) -> None:
        self.queued.append(item)
        _, uid, _, _ = item
        # As LitServe's answer task does, once the worker's answer arrives.
        entry = self.buffer[uid]
        entry.response = self.answer
        asyncio.get_running_loop().call_soon(entry.event.set)


class Server(LeanServer):
    """A LeanServer (never run) whose requests go to a stand-in `Worker`."""

    def __init__(self, answer=(ANSWER, LitAPIStatus.OK), authorize=None) -> None:
        card = ModelCard(
            "demo", Path("model"), ("a", "b", "c", "d"), ImageFormat(16, "rgb"), "cd" * 32
        )
        api = ClassifierAPI(card)
        if authorize is not None:
            api.authorize = authorize
        super().__init__(api, accelerator="cpu")
        self.api = api
        self.worker = self.channel = Worker(self.response_buffer, answer)


class App:
    """The rest of the ASGI stack: records that it was called."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1


def fast_path(server: Server) -> tuple[PredictFastPath, App]:
    rest = App()
    return PredictFastPath(rest, LIMIT, server, server.api), rest


def call(
    app: PredictFastPath,
    body: bytes | list[bytes] | None,
    content_type: str = "image/png",
    method: str = "POST",
    path: str = "/predict",
    query: bytes = b"",
    declare_length: bool = True,
) -> tuple[int | None, dict | None]:
    """Send one request through ``app``; the status and JSON body it answered (None: none)."""
    chunks = body if isinstance(body, list) else [body or b""]
    headers = [(b"content-type", content_type.encode())] if content_type else []
    if declare_length:
        headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    if body is None:
        messages = [{"type": "http.disconnect"}]
    sent: list[dict] = []
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": headers,
        "app": SimpleNamespace(response_queue_id=3, state=SimpleNamespace(upload=RULES)),
    }

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    if not sent:
        return None, None
    start, end = sent
    declared = dict(start["headers"])[b"content-length"]
    assert int(declared) == len(end["body"])
    return start["status"], json.loads(end["body"])


def test_a_raw_upload_is_queued_preprocessed_and_answered_as_json() -> None:
    server = Server()
    app, rest = fast_path(server)
    status, answer = call(app, png(), query=b"k=2&reject=false")
    assert (status, answer, rest.calls) == (200, ANSWER, 0)
    [(consumer, _, _, request)] = server.worker.queued
    assert consumer == 3
    assert isinstance(request, PredictionRequest)
    assert (request.image.shape, request.image.dtype) == ((16, 16, 3), np.uint8)
    assert (request.k, request.reject) == (2, False)
    assert server.response_buffer == {}, "the answer's buffer entry was left behind"


def test_a_json_upload_in_several_chunks_is_read_whole() -> None:
    server = Server()
    app, _ = fast_path(server)
    body = json.dumps({"image": base64.b64encode(png()).decode()}).encode()
    assert len(body) < LIMIT
    status, answer = call(app, [body[:100], body[100:]], "application/json; charset=utf-8")
    assert (status, answer) == (200, ANSWER)
    assert len(server.worker.queued) == 1


def form(fields: dict[str, tuple[str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart body of ``{name: (filename or None, value)}``, and its content type."""
    parts = []
    for name, (filename, value) in fields.items():
        file_part = f'; filename="{filename}"' if filename else ""
        head = f'--B\r\nContent-Disposition: form-data; name="{name}"{file_part}\r\n\r\n'
        parts.append(head.encode() + value + b"\r\n")
    return b"".join(parts) + b"--B--\r\n", "multipart/form-data; boundary=B"


def test_a_multipart_upload_is_read_from_its_file_field() -> None:
    server = Server()
    app, rest = fast_path(server)
    body, content_type = form({"note": (None, b"hi"), "file": ("mars.png", png())})
    status, answer = call(app, [body[:50], body[50:]], content_type, query=b"k=3")
    assert (status, answer, rest.calls) == (200, ANSWER, 0)
    [(_, _, _, request)] = server.worker.queued
    assert (request.image.shape, request.k) == ((16, 16, 3), 3)


def test_a_form_without_a_file_gets_the_routes_400() -> None:
    server = Server()
    app, _ = fast_path(server)
    for fields, words in [
        ({"image": ("mars.png", png())}, "no file in field 'file'"),
        ({"file": (None, b"mars.png")}, "text field, not a file upload"),
        ({"file": ("empty.png", b"")}, "empty"),
    ]:
        status, answer = call(app, *form(fields))
        assert status == 400
        assert words in answer["detail"]
    two, two_type = form({"file": ("a.png", png()), "more": ("b.png", png())})
    for body, content_type, said in [
        (b"garbage", "multipart/form-data; boundary=B", ""),
        (two, two_type, "Too many files"),
        (two, "multipart/form-data", "Missing boundary"),
    ]:
        status, answer = call(app, body, content_type)
        assert status == 400
        assert answer["detail"].startswith(f"The multipart form cannot be read: {said}")
        assert answer["detail"].endswith("form field named 'file', e.g. curl -F file=@image.jpg")
    assert server.worker.queued == []


@pytest.mark.parametrize(
    ("method", "path", "content_type"),
    [
        ("GET", "/predict", "image/png"),
        ("POST", "/info", "image/png"),
        ("POST", "/predict/", "image/png"),
        ("POST", "/predict", "application/x-www-form-urlencoded"),
        ("POST", "/predict", "text/plain"),
        ("POST", "/predict", ""),
    ],
)
def test_everything_else_goes_to_the_route(method: str, path: str, content_type: str) -> None:
    server = Server()
    app, rest = fast_path(server)
    assert call(app, png(), content_type, method, path) == (None, None)
    assert rest.calls == 1
    assert server.worker.queued == []


def test_with_authentication_every_request_goes_to_the_route() -> None:
    async def check_key() -> None:
        raise HTTPException(401, "Invalid API Key")

    server = Server(authorize=check_key)
    app, rest = fast_path(server)
    assert call(app, png()) == (None, None)
    assert rest.calls == 1
    assert server.worker.queued == []


@pytest.mark.parametrize("declare_length", [True, False], ids=["declared", "streamed"])
@pytest.mark.parametrize("content_type", ["image/png", "multipart/form-data; boundary=B"])
def test_a_body_over_the_limit_is_refused_413_before_the_model(
    declare_length: bool, content_type: str
) -> None:
    server = Server()
    app, _ = fast_path(server)
    body, _ = form({"file": ("big.png", b"\0" * 6000)})
    chunks = [body[:3000], body[3000:]]
    status, answer = call(app, chunks, content_type, declare_length=declare_length)
    assert status == 413
    assert "too large" in answer["detail"] and str(LIMIT) in answer["detail"]
    assert server.worker.queued == []


@pytest.mark.parametrize(
    ("body", "content_type", "query", "status", "words"),
    [
        (b"", "image/png", b"", 400, "empty"),
        (b"not an image", "image/jpeg", b"", 400, "not an image"),
        (b'{"image": ', "application/json", b"", 400, "not valid JSON"),
        (b"x", "image/png", b"k=0", 400, "positive integer"),
        (b"x", "image/png", b"reject=maybe", 400, "true or false"),
    ],
)
def test_bad_uploads_get_the_routes_4xx_json_errors(
    body: bytes, content_type: str, query: bytes, status: int, words: str
) -> None:
    server = Server()
    app, _ = fast_path(server)
    answered, answer = call(app, body, content_type, query=query)
    assert answered == status
    assert words in answer["detail"]
    assert server.worker.queued == []


def test_a_worker_error_keeps_its_status_and_other_failures_are_500() -> None:
    refused = PickleableHTTPException.from_exception(HTTPException(504, "Request timed out."))
    crashed = pickle.dumps(RuntimeError("the model broke"))
    for error, status, detail in [
        (refused, 504, "Request timed out."),
        (crashed, 500, "Internal server error"),
    ]:
        app, _ = fast_path(Server(answer=(error, LitAPIStatus.ERROR)))
        assert call(app, png()) == (status, {"detail": detail})


@pytest.mark.parametrize("content_type", ["image/png", "multipart/form-data; boundary=B"])
def test_a_client_that_leaves_mid_upload_gets_nothing_queued(content_type: str) -> None:
    server = Server()
    app, rest = fast_path(server)
    assert call(app, None, content_type) == (None, None)
    assert (server.worker.queued, rest.calls) == ([], 0)
