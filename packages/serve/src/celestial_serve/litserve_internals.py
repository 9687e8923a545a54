"""The lean transport's seam: every LitServe internal celestial-serve relies on.

The stock transport (``--transport stock``) uses LitServe's public API only.
The lean one (the default) goes under it for speed, here and only here:
`LeanServer` swaps the manager queues that ``LitServer._init_manager`` makes
(a ``multiprocessing`` manager process, four round trips per request) for the
Unix sockets of `celestial_serve.transport`, and queues the uploads of
`celestial_serve.fastpath` as LitServe's route does (its ``response_buffer``
and error translation); `GreedyBatchLoop` is a ``LitLoop`` speaking LitServe's
request and answer tuples. `NEEDED` and `SERVER_ATTRIBUTES` list what they use;
importing this module checks it is there, and otherwise raises `ServeError`
naming what is missing and the fix (``--transport stock``, or `SUPPORTED`).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import itertools
import logging
import os
import pickle
import shutil
import time
from collections import defaultdict
from operator import attrgetter
from queue import Empty
from typing import Any

import litserve as ls
from fastapi import HTTPException
from starlette.types import Scope

from celestial_serve.errors import ServeError
from celestial_serve.request import PredictionRequest
from celestial_serve.transport import HttpEnd, WorkerEnd, sockets_dir

__all__ = [
    "NEEDED",
    "SUPPORTED",
    "WORKER_GONE",
    "GreedyBatchLoop",
    "LeanServer",
    "SocketChannel",
    "missing",
    "worker_gone",
]

logger = logging.getLogger(__name__)

#: The LitServe releases this module is known to fit (the package's requirement).
SUPPORTED = "litserve>=0.2.19,<0.3"
#: Every LitServe name used here beyond ``litserve.__all__``, as ``module:attribute``.
NEEDED = (
    "litserve.loops:LitLoop.run",
    "litserve.server:LitServer._init_manager",
    "litserve.server:LitServer._inference_workers_config_for_api",
    "litserve.server:RegularRequestHandler._handle_error_response",
    "litserve.server:no_auth",
    "litserve.utils:LitAPIStatus.ERROR",
    "litserve.utils:LitAPIStatus.OK",
    "litserve.utils:LoopResponseType.REGULAR",
    "litserve.utils:PickleableHTTPException.from_exception",
    "litserve.utils:ResponseBufferItem",
)
#: What ``LitServer.__init__`` sets and `LeanServer` uses.
SERVER_ATTRIBUTES = (
    "app.response_queue_id",
    "lit_api.api_path",
    "litapi_request_queues",
    "response_buffer",
)


def has(owner: object, dotted: str) -> bool:
    """Whether ``owner`` has the attribute ``dotted`` (``"a.b"``: ``owner.a.b``)."""
    try:
        attrgetter(dotted)(owner)
    except AttributeError:
        return False
    return True


def missing() -> list[str]:
    """The names of `NEEDED` that the installed LitServe lacks."""
    absent = []
    for needed in NEEDED:
        module_name, _, name = needed.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            module = None
        if not has(module, name):
            absent.append(needed)
    return absent


def incompatible(absent: list[str]) -> ServeError:
    """The error for a LitServe that lacks ``absent``."""
    return ServeError(
        f"LitServe {ls.__version__} lacks what celestial-serve's lean transport relies on: "
        f"{', '.join(absent)}. Run with --transport stock (LitServe's own queues and route), "
        f"or install a LitServe the package supports ({SUPPORTED}; uv sync --locked does)."
    )


if absent := missing():  # fail here, naming the fix, rather than at the first request
    raise incompatible(absent)

from litserve.loops import LitLoop  # noqa: E402
from litserve.server import RegularRequestHandler, no_auth  # noqa: E402
from litserve.utils import (  # noqa: E402
    LitAPIStatus,
    LoopResponseType,
    PickleableHTTPException,
    ResponseBufferItem,
)

OK, ERROR = LitAPIStatus.OK, LitAPIStatus.ERROR


#: What a request is answered when its inference worker went away before answering it.
WORKER_GONE = (
    "The inference worker holding this request stopped before answering it (it crashed or "
    "was killed); the server stops with it. Retry on a running server."
)


def worker_gone(uid: str) -> tuple[str, tuple[Any, ...]]:
    """The answer, as a worker sends it, to request ``uid`` whose worker went away: a 503."""
    return uid, (HTTPException(503, WORKER_GONE), ERROR, LoopResponseType.REGULAR, None)


class SocketChannel:
    """LitServe's request queue and answer transport in one, over `celestial_serve.transport`.

    Made in LitServe's main process with the workers' ``addresses``, it reaches
    the HTTP servers by ``fork`` and the workers by ``spawn``; each process
    opens its own end on first use.
    """

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    def __reduce__(self) -> tuple[Any, ...]:
        return (SocketChannel, (self.addresses,))  # without this process's end

    @functools.cached_property
    def http(self) -> HttpEnd:
        """This HTTP server's end."""
        return HttpEnd(self.addresses, lost=worker_gone)

    @functools.cached_property
    def worker(self) -> WorkerEnd:
        """This worker's end (LitServe numbers its workers in ``LITSERVE_WORKER_ID``)."""
        return WorkerEnd(self.addresses[int(os.environ.get("LITSERVE_WORKER_ID", "0"))])

    def put(self, item: Any) -> None:
        """Queue a request for the workers (in an HTTP server; never blocks)."""
        self.http.send(item)

    async def areceive(self, consumer_id: int, timeout: float | None = None) -> Any:
        """The next answer for this HTTP server, ``consumer_id``."""
        return await self.http.next_answer()

    def get(self, timeout: float | None = None) -> Any:
        """The next request (in a worker); `queue.Empty` if none came within ``timeout`` s."""
        return self.worker.get(timeout)

    def send_many(self, items: list[Any], consumer_id: int) -> None:
        """Send answers to HTTP server ``consumer_id`` in one message (in a worker)."""
        self.worker.answer(items, consumer_id)

    def close(self, send_sentinel: bool = True) -> None:
        """Nothing to do: each process's sockets close with it."""


class LeanServer(ls.LitServer):
    """A `litserve.LitServer` whose requests and answers travel over Unix sockets.

    Everything else (routes, workers, health, shutdown) is LitServe's own.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if absent := [f"LitServer().{a}" for a in SERVER_ATTRIBUTES if not has(self, a)]:
            raise incompatible(absent)
        self.uids = itertools.count()

    def _init_manager(self, num_api_servers: int) -> Any:
        manager = super()._init_manager(num_api_servers)
        if not has(self, "_transport"):  # set there, and replaced here
            raise incompatible(["LitServer()._transport"])
        self._sockets_dir = sockets_dir()
        path = self.lit_api.api_path
        workers = range(len(self._inference_workers_config_for_api(path)))
        self.channel = SocketChannel([f"{self._sockets_dir}/worker-{i}" for i in workers])
        self.litapi_request_queues[path] = self.channel
        self._transport = self.channel
        return manager

    def run(self, *args: Any, **kwargs: Any) -> None:
        """`litserve.LitServer.run`, then the sockets' folder removed, however it ended."""
        try:
            super().run(*args, **kwargs)
        finally:
            if folder := getattr(self, "_sockets_dir", None):  # made once the manager is
                shutil.rmtree(folder, ignore_errors=True)

    def takes_fast_path(self, api: ls.LitAPI) -> bool:
        """Whether ``api`` wants no authentication (the fast path implements none)."""
        return self.setup_auth(api) is no_auth

    async def answer(self, scope: Scope, request: PredictionRequest) -> Any:
        """Queue ``request`` (from the HTTP request of ``scope``) and await its answer.

        As LitServe's route does, through its answer buffer.

        Raises:
            HTTPException: The worker's error (4xx as raised, 500 otherwise).
        """
        uid = f"fast-{next(self.uids)}"  # unique in this process, as the buffer needs
        event = asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event)
        try:
            self.channel.put((scope["app"].response_queue_id, uid, time.monotonic(), request))
            await event.wait()
        finally:
            item = self.response_buffer.pop(uid)
        response, status = item.response
        if status == LitAPIStatus.ERROR:
            RegularRequestHandler._handle_error_response(response)  # raises HTTPException
        return response


class GreedyBatchLoop(LitLoop):
    """A batched loop that blocks until a request comes, then takes those already queued.

    Up to ``max_batch_size``, waiting at most ``batch_timeout`` for more. (LitServe
    0.2.19's loop collects for ``batch_timeout`` from when it starts looking, and
    polls or spins while idle.) The answers of a batch go back in one message
    per HTTP server. It runs no LitServe callbacks: the server has none.

    Args:
        idle_timeout: Seconds to block for a first request before looking again.
    """

    def __init__(self, idle_timeout: float = 1.0) -> None:
        super().__init__()
        self.idle_timeout = idle_timeout

    def run(
        self, lit_api: ls.LitAPI, device: str, worker_id: int, queue: Any, transport: Any, *_: Any
    ) -> None:
        """Answer the next batch (LitServe calls this until the worker stops)."""
        batch, expired = self.get_batch_requests(lit_api, queue)
        answers = [
            (server, uid, PickleableHTTPException(504, "Request timed out in the queue."), ERROR)
            for server, uid in expired
        ]
        if batch:
            answers += self.run_batch(lit_api, batch)
        by_server: dict[Any, list[Any]] = defaultdict(list)
        for server, uid, data, status in answers:
            by_server[server].append((uid, (data, status, LoopResponseType.REGULAR, worker_id)))
        for server, items in by_server.items():
            transport.send_many(items, server)

    def get_batch_requests(self, lit_api: ls.LitAPI, queue: Any) -> tuple[list, list]:
        """The next batch ``[(server, uid, payload)]``, and ``[(server, uid)]`` timed out."""
        try:
            items = [queue.get(timeout=self.idle_timeout)]
        except Empty:
            return [], []
        deadline = time.monotonic() + lit_api.batch_timeout
        while len(items) < lit_api.max_batch_size:
            try:
                items.append(queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except Empty:
                break
        timeout = lit_api.request_timeout
        batch, expired = [], []
        for server, uid, queued_at, payload in items:
            if timeout not in (None, -1, False) and time.monotonic() - queued_at > timeout:
                expired.append((server, uid))
            else:
                batch.append((server, uid, payload))
        return batch, expired

    def run_batch(self, lit_api: ls.LitAPI, batch: list[tuple[Any, str, Any]]) -> list[tuple]:
        """Decode, predict and encode a batch: ``(server, uid, answer or error, status)`` each."""
        servers, uids, inputs = zip(*batch, strict=True)
        contexts: list[dict[str, Any]] = [{} for _ in inputs]
        try:
            x = [
                lit_api.decode_request(i, context=c) for i, c in zip(inputs, contexts, strict=True)
            ]
            outputs = lit_api.unbatch(lit_api.predict(lit_api.batch(x)))
            return [
                (s, u, lit_api.encode_response(y, context=c), OK)
                for s, u, y, c in zip(servers, uids, outputs, contexts, strict=True)
            ]
        except HTTPException as error:
            failure: Any = PickleableHTTPException.from_exception(error)
        except Exception as error:  # a predict that lost an answer too: zip is strict
            logger.exception("The model failed on a batch of %d requests.", len(inputs))
            failure = pickle.dumps(error)
        return [(s, u, failure, ERROR) for s, u in zip(servers, uids, strict=True)]
