"""The API key guard, called directly as ASGI middleware."""

from __future__ import annotations

import asyncio
import hmac
import json

import pytest

from celestial_serve import auth
from celestial_serve.auth import ApiKeyGuard


async def passed(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def status(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(ApiKeyGuard(passed, "s3cret")(scope, receive, send))
    body = sent[1]["body"]
    return sent[0]["status"], json.loads(body) if body else {}


@pytest.mark.parametrize(
    "given", [None, b"", b"s3cre", b"s3cret!", b"S3CRET", b"\xff\xfe", b"s3cret "]
)
def test_anything_but_the_exact_key_is_401_on_every_route(given: bytes | None) -> None:
    headers = [] if given is None else [(b"x-api-key", given)]
    for method, path in [("GET", "/health"), ("GET", "/docs"), ("POST", "/predict")]:
        code, body = status(method, path, headers)
        assert code == 401
        assert "X-API-Key" in body["detail"]


def test_the_key_passes_and_the_page_is_open(monkeypatch: pytest.MonkeyPatch) -> None:
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(
        auth.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b)
    )
    assert status("GET", "/openapi.json", [(b"x-api-key", b"s3cret")])[0] == 204
    assert compared == [(b"s3cret", b"s3cret")]  # in constant time
    assert status("GET", "/", [])[0] == 204
    assert status("POST", "/", [])[0] == 401
