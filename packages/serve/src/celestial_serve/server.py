"""Assemble the server: the API on a transport, the upload rules, the page and clear errors."""

from __future__ import annotations

import errno
import functools
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, get_args

import litserve as ls
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException

from celestial_serve.api import ClassifierAPI
from celestial_serve.auth import API_KEY_ENV, ApiKeyGuard
from celestial_serve.connection import header_deadline_protocol
from celestial_serve.errors import ServeError
from celestial_serve.fastpath import PredictFastPath
from celestial_serve.lifetime import stop_on_signals
from celestial_serve.metrics import (
    CONTENT_TYPE,
    MULTIPROC_ENV,
    HttpMetrics,
    exposition,
    use_shared_folder,
)
from celestial_serve.observer import Observer
from celestial_serve.project import ModelCard
from celestial_serve.recorder import LogOptions, PredictionLog, prepare_log_dir
from celestial_serve.request import MAX_PIXELS, BodyLimit, UploadRules

__all__ = ["TRANSPORTS", "LogOptions", "ServerOptions", "build_server", "check_port", "serve"]

ROUTES = "GET / (page), POST /predict, GET /health, GET /info"
METRICS_ROUTE = "/metrics"
Transport = Literal["lean", "stock"]
#: How requests reach the workers: celestial_serve.litserve_internals, or LitServe's own way.
TRANSPORTS: tuple[Transport, ...] = get_args(Transport)


@dataclass(frozen=True)
class ServerOptions:
    """How to run the server (the command's options)."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    api_servers: int | None = None
    max_batch_size: int = 16
    batch_timeout: float = 0.0
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    max_decodes: int = 1
    max_connections: int = 32
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    log_level: str = "info"
    transport: Transport = "lean"
    #: Record every answer (and keep uncertain uploads) there; None: no log.
    log: LogOptions | None = None
    #: Count requests and answers, and serve them at GET /metrics.
    metrics: bool = True
    #: Required on every route but the page when set; by default LitServe's variable.
    api_key: str | None = field(
        default_factory=lambda: os.environ.get(API_KEY_ENV) or None, repr=False
    )


def build_server(card: ModelCard, options: ServerOptions) -> ls.LitServer:
    """A LitServer for ``card``'s model on ``options.transport``, with the page and JSON errors.

    Raises:
        ServeError: If the lean transport does not fit the installed LitServe, or
            the log folder cannot be written to.
    """
    if options.log is not None:
        prepare_log_dir(options.log.folder)
    stock = options.transport == "stock"
    if stock:
        loop: Any = "auto"
        server_class = ls.LitServer
    else:
        # Imported here: on a LitServe without the internals it needs, the import
        # raises ServeError naming the fix, and the stock transport must still work.
        from celestial_serve.litserve_internals import GreedyBatchLoop, LeanServer

        loop, server_class = GreedyBatchLoop(), LeanServer
    api = ClassifierAPI(
        card, options.max_batch_size, options.batch_timeout, loop, metrics=options.metrics
    )
    server = server_class(
        api, accelerator="cpu", workers_per_device=options.workers, model_metadata=card.info()
    )
    app = server.app
    app.state.upload = UploadRules(
        card.image_format,
        len(card.classes),
        max_pixels=options.max_pixels,
        max_decodes=options.max_decodes,
    )
    limits = {"max_bytes": options.max_upload_bytes, "body_timeout": options.body_timeout}
    # Added last, so outermost: in front of FastAPI's stack and LitServe's middlewares.
    if stock:
        app.add_middleware(BodyLimit, **limits)
    else:
        app.add_middleware(PredictFastPath, server=server, api=api, **limits)
    if options.api_key:  # before anything reads the request
        app.add_middleware(ApiKeyGuard, api_key=options.api_key)
    registry = CollectorRegistry()
    metrics = HttpMetrics(registry) if options.metrics else None
    log = None
    if options.log is not None:
        log = PredictionLog(options.log, dropped=None if metrics is None else metrics.dropped.inc)
    if metrics is not None or log is not None:  # outermost: sees every request, 401s too
        app.add_middleware(Observer, metrics=metrics, log=log, path=api.api_path)
    app.state.routes = ROUTES
    app.state.refused = None  # see connection_limits
    if metrics is not None:
        app.state.refused = functools.partial(metrics.observe, status=503, seconds=None)
        add_metrics(app, registry)
        app.state.routes = f"{ROUTES}, GET {METRICS_ROUTE}"
    add_page(app)
    # A 307 to /predict answers POST /predict/ with an empty body, which a
    # client that does not follow redirects (curl without -L) shows as nothing.
    app.router.redirect_slashes = False
    app.add_exception_handler(404, route_error)
    app.add_exception_handler(405, route_error)
    app.add_exception_handler(Exception, internal_error)
    return server


def add_page(app: FastAPI) -> None:
    """Serve the web page at ``GET /``, in place of LitServe's plain-text greeting."""
    app.router.routes = [
        route for route in app.router.routes if getattr(route, "path", None) != "/"
    ]
    html = files("celestial_serve").joinpath("page.html").read_text(encoding="utf-8")

    async def page() -> HTMLResponse:
        return HTMLResponse(html)

    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)


def add_metrics(app: FastAPI, registry: CollectorRegistry) -> None:
    """Serve the metrics at ``GET /metrics``, in Prometheus' text format."""

    def metrics() -> Response:  # a thread: reading every process's files takes a while
        return Response(exposition(registry), media_type=CONTENT_TYPE)

    app.add_api_route(METRICS_ROUTE, metrics, methods=["GET"], include_in_schema=False)


async def route_error(request: Request, exc: HTTPException) -> JSONResponse:
    """404 (no such route) or 405 (wrong method), listing the routes."""
    path = request.url.path[:200]
    routes = getattr(request.app.state, "routes", ROUTES)
    if exc.status_code == 404:
        detail = f"No route {request.method} {path}. Routes: {routes}."
    else:
        detail = f"{request.method} is not allowed on {path}. Routes: {routes}."
    return JSONResponse({"detail": detail}, exc.status_code, exc.headers)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A JSON 500 for a bug, as every other error is JSON (Starlette logs the traceback)."""
    return JSONResponse({"detail": "Internal server error"}, 500)


def check_port(host: str, port: int) -> None:
    """Fail early, and clearly, when ``host:port`` cannot be listened on.

    Raises:
        ServeError: If the port is taken or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ServeError(
                    f"Port {port} on {host} is already in use (another server is running "
                    "there?). Stop it, or choose a free port with --port."
                ) from None
            raise ServeError(f"Cannot listen on {host}:{port} ({error.strerror}).") from None


def connection_limits(
    options: ServerOptions, refused: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The options of uvicorn that bound what connections may hold in each HTTP process.

    ``refused`` is told the path of each request refused for want of a slot.
    """
    return {
        # Not uvicorn's limit_concurrency: see celestial_serve.connection.
        "http": header_deadline_protocol(options.header_timeout, options.max_connections, refused),
        "timeout_keep_alive": options.keep_alive_timeout,
    }


def serve(card: ModelCard, options: ServerOptions) -> None:
    """Run the server until interrupted (Ctrl+C or SIGTERM), saying where on stderr.

    Raises:
        ServeError: If the port is taken, the lean transport does not fit the
            installed LitServe, or the model fails to load in a worker.
    """
    check_port(options.host, options.port)
    with shared_metrics(options.metrics):
        run_server(card, options)


@contextmanager
def shared_metrics(enabled: bool) -> Iterator[None]:
    """While the server runs, have every process count into one private temporary folder.

    See `celestial_serve.metrics`. The folder and the variable naming it are
    removed afterwards.
    """
    if not enabled:
        yield
        return
    folder = tempfile.mkdtemp(prefix="celestial-metrics-")
    before = os.environ.get(MULTIPROC_ENV)
    use_shared_folder(Path(folder))
    try:
        yield
    finally:
        use_shared_folder(None if before is None else Path(before))
        shutil.rmtree(folder, ignore_errors=True)


def run_server(card: ModelCard, options: ServerOptions) -> None:
    """Build the server and run it until interrupted (see `serve`)."""
    server = build_server(card, options)
    print(
        f"celestial-serve: serving project '{card.project}' (model {card.model_hash[:12]}, "
        f"{len(card.classes)} classes) on http://{options.host}:{options.port}/ with the "
        f"{options.transport} transport, once the model is loaded (GET /health is 200 then)",
        file=sys.stderr,
        flush=True,
    )
    stop_on_signals()
    try:
        server.run(
            host=options.host,
            port=options.port,
            log_level=options.log_level,
            generate_client_file=False,
            num_api_servers=options.api_servers,
            # Else uvicorn formats every request's log line, only to drop it.
            access_log=options.log_level.lower() in ("trace", "debug", "info"),
            **connection_limits(options, server.app.state.refused),
        )
    except (EOFError, ConnectionError):
        # LitServe stops the server from another thread once a worker has died,
        # closing under the main thread what it waits on.
        raise ServeError(
            f"An inference worker stopped ({worker_death(server)}), and the server with it. "
            "Start the server again; under a supervisor, have it restart the server on "
            "failure (see docs/serving.md)."
        ) from None
    except RuntimeError as error:
        if "workers failed to start" not in str(error):
            raise
        raise ServeError(
            f"The model in {card.model_dir} could not be loaded (the worker's error is "
            "logged above). Run 'dvc repro' in the project to rebuild it, or 'dvc pull' to "
            "fetch it again."
        ) from None


def worker_death(server: Any) -> str:
    """How the first inference worker of ``server`` that died on its own ended."""
    for worker in getattr(server, "inference_workers", []):
        code = worker.exitcode
        if code is None or code in (0, -signal.SIGTERM):  # running, or stopped by the server
            continue
        if code > 0:
            return f"exit status {code}; its error is logged above"
        name = signal.Signals(-code).name
        if name == "SIGKILL":
            return "killed by SIGKILL, which the kernel's out-of-memory killer sends"
        return f"killed by {name}"
    return "it died"
