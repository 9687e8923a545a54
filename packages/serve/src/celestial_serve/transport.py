"""Carry requests to the inference workers and answers back, over Unix domain sockets.

LitServe 0.2.19 queues every request and every answer through a
``multiprocessing.Manager`` process: four round trips per request, each one
pickled twice and served by a third process, and each answer awaited in a
fresh thread-pool task. For a model that takes a tenth of a millisecond per
image, that costs more than the model. (Its ZeroMQ option, ``fast_queue``, is
not wired up in this version, and would add a broker and I/O threads.)

`LeanServer` keeps LitServe's processes, routes and API and swaps what
connects them for one Unix stream socket between each HTTP server and each
inference worker, carrying length-prefixed pickles both ways:

- each worker listens on its own address; every HTTP server connects to every
  worker when it starts and hands requests out to them in turn;
- a worker answers on the connection of the HTTP server that sent the request.

The HTTP side is plain asyncio (reads and writes happen in its event loop, no
thread), the worker side a blocking socket watched by a selector. Nothing is
dropped: a full socket makes the writer wait (the event loop buffers), and
each side always reads. LeanServer's ``no authentication`` dependency also
saves FastAPI a thread-pool hop per request.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import selectors
import shutil
import socket
import tempfile
import time
from collections import deque
from pathlib import Path
from queue import Empty
from typing import Any

import litserve as ls
import litserve.server as litserve_server
from litserve.transport.base import MessageTransport

from celestial_serve.errors import ServeError

__all__ = ["AnswerTransport", "LeanServer", "RequestQueue", "Wiring", "sockets_dir"]

PROTOCOL = pickle.HIGHEST_PROTOCOL
HEADER = 4  # bytes of the big-endian length before each pickle
# A Unix socket address holds 107 bytes; the names added to the folder up to 17.
MAX_FOLDER_CHARS = 90
CONNECT_TIMEOUT = 120.0  # seconds an HTTP server keeps trying to reach a worker


def frame(item: Any) -> bytes:
    """``item`` pickled, behind its length."""
    data = pickle.dumps(item, PROTOCOL)
    return len(data).to_bytes(HEADER, "big") + data


def unframe(buffer: bytearray) -> list[Any]:
    """Take every complete frame off the front of ``buffer``; return their items."""
    items, start = [], 0
    while len(buffer) - start >= HEADER:
        size = int.from_bytes(buffer[start : start + HEADER], "big")
        end = start + HEADER + size
        if len(buffer) < end:
            break
        items.append(pickle.loads(buffer[start + HEADER : end]))
        start = end
    del buffer[:start]
    return items


class Wiring:
    """Who talks to whom: the workers' addresses, and each process's own end.

    Created in LitServe's main process, which never sends or receives; it
    reaches the HTTP servers by ``fork`` and the workers by ``spawn`` (pickled
    once with both `RequestQueue` and `AnswerTransport`, which share it), and
    each process makes its own connections on first use.

    Args:
        workers: The listening address of each worker, by API path.
    """

    def __init__(self, workers: dict[str, list[str]]) -> None:
        self.workers = workers
        self._http: _HttpEnd | None = None
        self._worker: _WorkerEnd | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (Wiring, (self.workers,))

    def http_end(self) -> _HttpEnd:
        """This HTTP server's connections to the workers."""
        if self._http is None:
            self._http = _HttpEnd(self.workers)
        return self._http

    def worker_end(self, path: str | None = None) -> _WorkerEnd:
        """This worker's listening socket and connections (``path``: its API path)."""
        if self._worker is None:
            if path is None:
                raise ServeError("A worker answered before it took any request.")
            worker_id = int(os.environ.get("LITSERVE_WORKER_ID", "0"))
            self._worker = _WorkerEnd(self.workers[path][worker_id])
        return self._worker


class _Link(asyncio.Protocol):
    """One HTTP server's connection to one worker (asyncio side)."""

    def __init__(self, end: _HttpEnd) -> None:
        self.end = end
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for answers in unframe(self.buffer):
            self.end.received.extend(answers)
        self.end.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.end.lost = True
        self.end.wake()


class _HttpEnd:
    """An HTTP server's side: a connection to every worker, answers in arrival order."""

    def __init__(self, workers: dict[str, list[str]]) -> None:
        self.workers = workers
        self.links: dict[str, list[_Link]] = {}
        self.pending: dict[str, list[bytes]] = {path: [] for path in workers}
        self.turn: dict[str, int] = dict.fromkeys(workers, 0)
        self.received: deque[Any] = deque()
        self.waiter: asyncio.Future | None = None
        self.connecting: asyncio.Task | None = None
        self.lost = False

    def send(self, path: str, item: Any) -> None:
        """Queue a request for the next worker of ``path`` (never blocks)."""
        data = frame(item)
        if path in self.links:
            self._write(path, data)
        else:  # still connecting: sent once connected
            self.pending[path].append(data)

    def _write(self, path: str, data: bytes) -> None:
        """Write a framed request to the next worker of ``path``, in turn."""
        links, turn = self.links[path], self.turn[path]
        self.turn[path] = turn + 1
        links[turn % len(links)].transport.write(data)  # type: ignore[union-attr]

    async def connect(self, consumer_id: int) -> None:
        """Connect to every worker, introduce this server, then send what waited."""
        loop = asyncio.get_running_loop()
        for path, addresses in self.workers.items():
            links = []
            for address in addresses:
                _, link = await self._connect(loop, address)
                link.transport.write(frame(consumer_id))  # type: ignore[union-attr]
                links.append(link)
            self.links[path] = links
            for data in self.pending.pop(path):
                self._write(path, data)

    async def _connect(self, loop: asyncio.AbstractEventLoop, address: str) -> Any:
        # A worker listens once its model is loaded, about when LitServe starts
        # this server: retry until it does.
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:
            try:
                return await loop.create_unix_connection(lambda: _Link(self), address)
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.005)

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next_answer(self, consumer_id: int) -> Any:
        """The next answer for this server; connects to the workers on the first call."""
        if self.connecting is None:
            self.connecting = asyncio.ensure_future(self.connect(consumer_id))
            self.connecting.add_done_callback(lambda _: self.wake())
        while not self.received:
            if self.connecting.done() and self.connecting.exception() is not None:
                raise self.connecting.exception()  # type: ignore[misc]
            if self.lost:
                raise asyncio.CancelledError("A worker closed its connection")
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.received.popleft()


class _WorkerEnd:
    """A worker's side: its listening socket and a connection from each HTTP server."""

    def __init__(self, address: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(address)
        self.listener.listen(64)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.buffers: dict[socket.socket, bytearray] = {}
        self.servers: dict[int, socket.socket] = {}  # consumer id -> connection
        self.requests: deque[Any] = deque()

    def get(self, timeout: float | None) -> Any:
        """The next request; `queue.Empty` if none came within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.requests:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = self.selector.select(remaining)
            if not events and remaining is not None and remaining <= 0:
                raise Empty
            for key, _ in events:
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]
        return self.requests.popleft()

    def _accept(self) -> None:
        connection, _ = self.listener.accept()
        self.buffers[connection] = bytearray()
        self.selector.register(connection, selectors.EVENT_READ)

    def _read(self, connection: socket.socket) -> None:
        data = connection.recv(1 << 20)
        if not data:  # the HTTP server went away
            self.selector.unregister(connection)
            del self.buffers[connection]
            connection.close()
            return
        buffer = self.buffers[connection]
        buffer += data
        for item in unframe(buffer):
            if isinstance(item, int):  # an HTTP server introducing itself
                self.servers[item] = connection
            else:
                self.requests.append(item)

    def answer(self, items: list[Any], consumer_id: int) -> None:
        """Send answers to HTTP server ``consumer_id``."""
        self.servers[consumer_id].sendall(frame(items))


class RequestQueue:
    """The queue LitServe puts requests in and its workers take them from.

    ``put`` is called by the HTTP servers, ``get``/``get_nowait`` by the
    inference workers of API ``path``.
    """

    def __init__(self, wiring: Wiring, path: str) -> None:
        self.wiring = wiring
        self.path = path

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Queue a request (never blocks the event loop)."""
        self.wiring.http_end().send(self.path, item)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The next request; `queue.Empty` if none came within ``timeout`` seconds."""
        return self.wiring.worker_end(self.path).get(timeout if block else 0.0)

    def get_nowait(self) -> Any:
        """The next request if one is waiting, else `queue.Empty`."""
        return self.get(block=False)


class AnswerTransport(MessageTransport):
    """LitServe's answer channel: worker -> the HTTP server that took the request."""

    def __init__(self, wiring: Wiring) -> None:
        self.wiring = wiring
        self._closed = False

    def send(self, item: Any, consumer_id: int) -> None:
        """Send an answer to HTTP server ``consumer_id`` (called in a worker)."""
        self.send_many([item], consumer_id)

    def send_many(self, items: list[Any], consumer_id: int) -> None:
        """Send several answers to HTTP server ``consumer_id`` at once."""
        self.wiring.worker_end().answer(items, consumer_id)

    async def areceive(
        self, consumer_id: int, timeout: float | None = None, block: bool = True
    ) -> Any:
        """The next answer for this HTTP server (awaited in its event loop)."""
        if self._closed:
            raise asyncio.CancelledError("Transport closed")
        return await self.wiring.http_end().next_answer(consumer_id)

    def close(self, send_sentinel: bool = True) -> None:
        """Stop receiving (LitServe calls this while shutting down)."""
        self._closed = True


class LeanServer(ls.LitServer):
    """A `litserve.LitServer` whose requests and answers travel over Unix sockets.

    Everything else (routes, workers, health, shutdown) is LitServe's own.
    Relies on LitServe 0.2.19's internals (``_init_manager``,
    ``_perform_graceful_shutdown``): the package pins that version.
    """

    def _init_manager(self, num_api_servers: int) -> Any:
        manager = super()._init_manager(num_api_servers)
        self._sockets_dir = sockets_dir()
        workers = {
            lit_api.api_path: [
                f"{self._sockets_dir}/worker-{n}-{i}"
                for i in range(len(self._inference_workers_config_for_api(lit_api.api_path)))
            ]
            for n, lit_api in enumerate(self.litapi_connector)
        }
        wiring = Wiring(workers)
        for path in workers:
            self.litapi_request_queues[path] = RequestQueue(wiring, path)
        self._transport = AnswerTransport(wiring)
        return manager

    def setup_auth(self, lit_api: ls.LitAPI | None = None) -> Any:
        """LitServe's authentication dependency, as a coroutine when there is none.

        LitServe's "no authentication" dependency is a plain function, which
        FastAPI runs in its thread pool for every request.
        """
        auth = super().setup_auth(lit_api)
        return no_auth_async if auth is litserve_server.no_auth else auth

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


async def no_auth_async() -> None:
    """No authentication (LitServe's ``LIT_SERVER_API_KEY`` still applies when set)."""
