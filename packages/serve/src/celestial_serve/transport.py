"""Carry requests to the inference workers and answers back, over ZeroMQ sockets.

LitServe 0.2.19 queues every request and every answer through a
``multiprocessing.Manager`` process: four round trips per request, each one
pickled twice and served by a third process, and each answer awaited in a
fresh thread-pool task. For a model that takes a tenth of a millisecond per
image, that costs more than the model. Its ZeroMQ option (``fast_queue``) is not
wired up in this version and, built on PUB/SUB, would drop answers silently
past the high-water mark.

`LeanServer` keeps LitServe's processes, routes and API and swaps what
connects them for ZeroMQ PUSH/PULL sockets over Unix domain sockets, one hop
each way with no process in between:

- requests: each inference worker pulls from its own address; every HTTP
  server pushes to all of them, round-robin;
- answers: each HTTP server pulls from its own address, awaited in its event
  loop; a worker pushes each answer to the server that took the request.

PUSH/PULL never drops a message (no high-water mark is set: what is in flight
is bounded by the open requests), and the HTTP event loop never waits on
another thread. Its lean ``no authentication`` dependency also saves FastAPI a
thread-pool hop per request.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import tempfile
from collections import deque
from pathlib import Path
from queue import Empty
from typing import Any

import litserve as ls
import litserve.server as litserve_server
import zmq
import zmq.asyncio
from litserve.transport.base import MessageTransport

from celestial_serve.errors import ServeError

__all__ = ["AnswerTransport", "LeanServer", "RequestQueue"]

PROTOCOL = pickle.HIGHEST_PROTOCOL
# A Unix socket address holds 107 bytes; the names added to the folder up to 17.
MAX_FOLDER_CHARS = 90


class _Sockets:
    """A socket made on first use, in the process that uses it.

    The queue and transport objects are created in LitServe's main process,
    which never sends or receives, and reach the HTTP servers by ``fork`` and
    the workers by ``spawn``: each process makes its own sockets.
    """

    def __init__(self) -> None:
        self._socket: Any = None

    def get(self, make: Any) -> Any:
        """The socket, made by ``make()`` the first time."""
        if self._socket is None:
            self._socket = make()
        return self._socket


def _socket(context: zmq.Context, kind: int, *, bind: str = "", connect: str = "") -> Any:
    socket = context.socket(kind)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SNDHWM, 0)  # 0: no limit, never drop or block at a mark
    socket.setsockopt(zmq.RCVHWM, 0)
    if bind:
        socket.bind(bind)
    if connect:
        socket.connect(connect)
    return socket


class RequestQueue:
    """The queue LitServe puts requests in and its workers take them from.

    ``put`` is called by the HTTP servers and hands requests out round-robin to
    the workers; ``get``/``get_nowait`` are called by worker ``i``, which reads
    ``addresses[i]`` (LitServe numbers its workers in ``LITSERVE_WORKER_ID``).
    """

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self._push = _Sockets()
        self._pull = _Sockets()

    def __reduce__(self) -> tuple[Any, ...]:
        return (RequestQueue, (self.addresses,))

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Queue a request (never blocks: the socket has no high-water mark)."""
        socket = self._push.get(self._connect_all)
        socket.send(pickle.dumps(item, PROTOCOL))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The next request; `queue.Empty` if none came within ``timeout`` seconds."""
        socket = self._pull.get(
            lambda: _socket(zmq.Context.instance(), zmq.PULL, bind=self._own_address())
        )
        if not block:
            timeout = 0
        if timeout is not None and not socket.poll(max(0, int(timeout * 1000))):
            raise Empty
        return pickle.loads(socket.recv())

    def get_nowait(self) -> Any:
        """The next request if one is waiting, else `queue.Empty`."""
        return self.get(block=False)

    def _connect_all(self) -> Any:
        socket = _socket(zmq.Context.instance(), zmq.PUSH)
        for address in self.addresses:
            socket.connect(address)  # queues for a worker that has not bound yet
        return socket

    def _own_address(self) -> str:
        return self.addresses[int(os.environ.get("LITSERVE_WORKER_ID", "0"))]


class AnswerTransport(MessageTransport):
    """LitServe's answer channel: worker -> the HTTP server that took the request."""

    def __init__(self, addresses: list[str]) -> None:
        """Create the channel; ``addresses[i]`` is HTTP server ``i``'s (its consumer id)."""
        self.addresses = addresses
        self._push = [_Sockets() for _ in addresses]
        self._pull = _Sockets()
        self._received: deque[Any] = deque()
        self._closed = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (AnswerTransport, (self.addresses,))

    def send(self, item: Any, consumer_id: int) -> None:
        """Send an answer to HTTP server ``consumer_id`` (called in a worker)."""
        self.send_many([item], consumer_id)

    def send_many(self, items: list[Any], consumer_id: int) -> None:
        """Send several answers to HTTP server ``consumer_id`` in one message."""
        address = self.addresses[consumer_id]
        socket = self._push[consumer_id].get(
            lambda: _socket(zmq.Context.instance(), zmq.PUSH, connect=address)
        )
        socket.send(pickle.dumps(items, PROTOCOL))

    async def areceive(
        self, consumer_id: int, timeout: float | None = None, block: bool = True
    ) -> Any:
        """The next answer for this HTTP server (awaited in its event loop)."""
        if self._closed:
            raise asyncio.CancelledError("Transport closed")
        if not self._received:
            address = self.addresses[consumer_id]
            socket = self._pull.get(lambda: _socket(zmq.asyncio.Context(), zmq.PULL, bind=address))
            self._received.extend(pickle.loads(await socket.recv()))
        return self._received.popleft()

    def close(self, send_sentinel: bool = True) -> None:
        """Stop receiving (LitServe calls this while shutting down)."""
        self._closed = True


class LeanServer(ls.LitServer):
    """A `litserve.LitServer` whose requests and answers travel over ZeroMQ.

    Everything else (routes, workers, health, shutdown) is LitServe's own.
    Relies on LitServe 0.2.19's internals (``_init_manager``,
    ``_perform_graceful_shutdown``): the package pins that version.
    """

    def _init_manager(self, num_api_servers: int) -> Any:
        manager = super()._init_manager(num_api_servers)
        self._sockets_dir = sockets_dir()
        for n, lit_api in enumerate(self.litapi_connector):
            workers = len(self._inference_workers_config_for_api(lit_api.api_path))
            self.litapi_request_queues[lit_api.api_path] = RequestQueue(
                [f"ipc://{self._sockets_dir}/requests-{n}-{i}" for i in range(workers)]
            )
        self._transport = AnswerTransport(
            [f"ipc://{self._sockets_dir}/answers-{i}" for i in range(num_api_servers)]
        )
        return manager

    def setup_auth(self, lit_api: ls.LitAPI | None = None) -> Any:
        """LitServe's authentication dependency, as a coroutine when there is none.

        LitServe's "no authentication" dependency is a plain function, which
        FastAPI runs in its thread pool for every request.
        """
        auth = super().setup_auth(lit_api)
        return _no_auth if auth is litserve_server.no_auth else auth

    def _perform_graceful_shutdown(self, *args: Any, **kwargs: Any) -> None:
        try:
            super()._perform_graceful_shutdown(*args, **kwargs)
        finally:
            shutil.rmtree(self._sockets_dir, ignore_errors=True)


def sockets_dir() -> Path:
    """A new private folder for the server's Unix domain sockets.

    Raises:
        ServeError: If its path is too long for a socket address.
    """
    folder = Path(tempfile.mkdtemp(prefix="celestial-serve-"))
    if len(str(folder)) > MAX_FOLDER_CHARS:
        shutil.rmtree(folder, ignore_errors=True)
        raise ServeError(
            f"The temporary folder {folder.parent} has too long a path for the server's "
            f"sockets (at most {MAX_FOLDER_CHARS - 25} characters). Set TMPDIR to a "
            "shorter one, e.g. TMPDIR=/tmp."
        )
    return folder


async def _no_auth() -> None:
    """No authentication (LitServe's ``LIT_SERVER_API_KEY`` still applies when set)."""
