"""The API key: with one set, every route but the page wants it, compared in constant time.

LitServe checks ``LIT_SERVER_API_KEY`` on its own routes only (``/predict``,
``/health``, ``/info``; not FastAPI's ``/docs`` and ``/openapi.json``), and
with ``!=``. `ApiKeyGuard`, the outermost middleware, checks every request
before anything reads it, with `hmac.compare_digest`. ``GET /`` stays open: a
browser cannot send a header when it opens a page, and the page holds nothing
but its own code; it asks for the key and sends it with each request.
"""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["API_KEY_ENV", "API_KEY_HEADER", "OPEN_ROUTES", "ApiKeyGuard"]

#: The variable LitServe reads the key from (the server reads the same one).
API_KEY_ENV = "LIT_SERVER_API_KEY"
#: The header LitServe expects the key in.
API_KEY_HEADER = "X-API-Key"
#: The requests answered without the key: the page.
OPEN_ROUTES = frozenset({("GET", "/"), ("HEAD", "/")})
REFUSAL = (
    f"Invalid API Key. This server wants its key in an '{API_KEY_HEADER}' header, e.g. "
    f"curl -H '{API_KEY_HEADER}: <key>' ...; the key is the server's {API_KEY_ENV}."
)


class ApiKeyGuard:
    """ASGI middleware answering 401 to requests without the right ``X-API-Key`` header."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] == "http" and (scope["method"], scope["path"]) not in OPEN_ROUTES:
            given = dict(scope["headers"]).get(API_KEY_HEADER.lower().encode(), b"")
            if not hmac.compare_digest(given, self.key):
                await JSONResponse({"detail": REFUSAL}, 401)(scope, receive, send)
                return
        await self.app(scope, receive, send)
