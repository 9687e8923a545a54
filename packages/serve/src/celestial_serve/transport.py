"""Carry requests to the inference workers and answers back, over Unix domain sockets.

A Unix stream socket joins each HTTP server to each worker and carries
length-prefixed pickles both ways: each worker listens on its own address,
each HTTP server connects to all and hands requests out in turn, and a worker
answers on the connection that brought the request. A request is a tuple
``(server, id, ...)`` and an answer ``(id, ...)``: an HTTP server keeps the
ids each worker holds, so that when a worker goes away (it crashed, or was
killed) its requests get an answer at once, from ``lost(id)``, and the next
requests go to the workers left. The HTTP side runs in its event loop (no
thread), the worker side on a selector. LitServe plugs in through
`celestial_serve.litserve_internals`.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import selectors
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from queue import Empty
from typing import Any, cast

from celestial_serve.errors import ServeError

__all__ = ["HttpEnd", "WorkerEnd", "frame", "sockets_dir", "unframe"]

logger = logging.getLogger(__name__)

HEADER = 4  # bytes of the big-endian length before each pickle
# A Unix socket address holds 107 bytes; the names added to the folder up to 17.
MAX_FOLDER_CHARS = 90
CONNECT_TIMEOUT = 120.0  # seconds an HTTP server keeps trying to reach a worker


def frame(item: Any) -> bytes:
    """``item`` pickled, behind its length."""
    data = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(HEADER, "big") + data


def unframe(buffer: bytearray) -> list[Any]:
    """Take every complete frame off the front of ``buffer``; return their items."""
    items, start = [], 0
    while len(buffer) - start >= HEADER:
        end = start + HEADER + int.from_bytes(buffer[start : start + HEADER], "big")
        if len(buffer) < end:
            break
        items.append(pickle.loads(buffer[start + HEADER : end]))
        start = end
    del buffer[:start]
    return items


class _Link(asyncio.Protocol):
    """One connection to a worker: its answers go to the HTTP server's end."""

    def __init__(self, end: HttpEnd, worker: int) -> None:
        self.end, self.worker = end, worker
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for batch in unframe(self.buffer):
            for answer in batch:
                self.end.answered(self.worker, answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.end.gone(self.worker)


class HttpEnd:
    """An HTTP server's side: connections to the workers at ``addresses``, opened at once.

    Args:
        addresses: The workers' socket addresses.
        lost: The answer to request ``id`` when its worker went away first.
    """

    def __init__(self, addresses: list[str], lost: Callable[[Any], Any]) -> None:
        self.lost = lost
        self.links: dict[int, asyncio.Transport] = {}  # the workers reached and still there
        self.order: list[int] = []  # their numbers, to hand requests out in turn
        self.held: dict[int, set[Any]] = {}  # the ids of the requests each one holds
        self.pending: list[tuple[Any, bytes]] = []  # sent before the workers were reached
        self.connected = False
        self.turn = 0
        self.answers: asyncio.Queue = asyncio.Queue()
        # Held here: the event loop holds its tasks only weakly.
        self.connecting = asyncio.ensure_future(self.connect(addresses))

    def send(self, item: Any) -> None:
        """Send a request to the next worker, in turn (never blocks)."""
        if self.connected:
            self._write(item[1], frame(item))
        else:
            self.pending.append((item[1], frame(item)))

    def _write(self, uid: Any, data: bytes) -> None:
        if not self.links:  # every worker went away: the server is stopping
            self.answers.put_nowait(self.lost(uid))
            return
        worker = self.order[self.turn % len(self.order)]
        self.turn += 1
        self.links[worker].write(data)
        self.held[worker].add(uid)

    def answered(self, worker: int, answer: Any) -> None:
        """Pass on an answer that came from ``worker``."""
        self.held[worker].discard(answer[0])
        self.answers.put_nowait(answer)

    def gone(self, worker: int) -> None:
        """``worker`` went away: answer what it held, and send it nothing more."""
        if self.links.pop(worker, None) is not None:
            self.order.remove(worker)
        for uid in self.held.pop(worker, ()):
            self.answers.put_nowait(self.lost(uid))

    async def connect(self, addresses: list[str]) -> None:
        """Connect to every worker, then send the requests that waited."""
        deadline = time.monotonic() + CONNECT_TIMEOUT
        for worker, address in enumerate(addresses):
            try:
                await self._reach(worker, address, deadline)
            except OSError as error:  # the others may still answer
                logger.error("Cannot reach the inference worker at %s: %s", address, error)
        self.connected = True
        for uid, data in self.pending:
            self._write(uid, data)
        self.pending.clear()

    async def _reach(self, worker: int, address: str, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        self.held[worker] = set()
        while True:  # a worker listens once its model is loaded
            try:
                link, _ = await loop.create_unix_connection(lambda: _Link(self, worker), address)
                self.links[worker] = link
                self.order.append(worker)
                return
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.005)

    async def next_answer(self) -> Any:
        """The next answer, in arrival order (a lost request's too)."""
        return await self.answers.get()


class WorkerEnd:
    """A worker's side: its listening socket, and a connection from each HTTP server.

    A request is a tuple whose first item names the HTTP server to answer.
    """

    def __init__(self, address: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(address)
        self.listener.listen(64)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.buffers: dict[socket.socket, bytearray] = {}
        self.servers: dict[Any, socket.socket] = {}  # server -> its connection
        self.requests: deque[Any] = deque()

    def get(self, timeout: float | None) -> Any:
        """The next request; `queue.Empty` if none came within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.requests:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = self.selector.select(remaining)
            if not events and remaining == 0.0:
                raise Empty
            for key, _ in events:
                if key.fileobj is self.listener:
                    connection, _ = self.listener.accept()
                    self.buffers[connection] = bytearray()
                    self.selector.register(connection, selectors.EVENT_READ)
                else:
                    self._read(
                        cast(socket.socket, key.fileobj)
                    )  # connections only, after the listener
        return self.requests.popleft()

    def _read(self, connection: socket.socket) -> None:
        data = connection.recv(1 << 20)
        if not data:  # the HTTP server went away
            self.selector.unregister(connection)
            del self.buffers[connection]
            connection.close()
            return
        buffer = self.buffers[connection]
        buffer += data
        for request in unframe(buffer):
            self.servers[request[0]] = connection
            self.requests.append(request)

    def answer(self, answers: list[Any], server: Any) -> None:
        """Send answers to HTTP server ``server``, in one message."""
        self.servers[server].sendall(frame(answers))


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
