"""What connections may hold in an HTTP process: a deadline for headers, a cap on connections.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``), but waits
for ever for a connection that sends nothing, or a request's headers a byte at
a time (slowloris), and gathers headers without a limit.
`header_deadline_protocol` makes uvicorn's HTTP protocol drop a connection
whose next request's headers are not complete ``seconds`` after it opened or
after its previous answer, or that sends more than `MAX_HEADER_BYTES` before
they are. (The body has its own deadline: `celestial_serve.request.BodyLimit`.)

It also caps the connections an HTTP process serves at once. uvicorn's own cap
(``limit_concurrency``) answers 503 to a request whenever as many connections
are open, its own included, so a burst of more clients than the cap got
nearly every request refused (120 clients at once, a cap of 32 in each of two
processes: 2 answered). Here the first connections, in the order they open,
hold the slots until they close; a request on a connection beyond them is
answered 503 (and the connection closed) unless a slot has freed by the time
its headers are complete. So a burst is served up to the cap and only the
rest is refused. A connection holds its slot while it waits for headers, so
stalled connections count until their deadline drops them. The app never sees
a refused request: ``refused`` counts it in the metrics.

It subclasses uvicorn's ``HttpToolsProtocol`` (what uvicorn runs with the
``httptools`` parser that ``uvicorn[standard]`` installs, as LitServe requires),
using its ``cycle`` (the request under way, replaced once the next one's
headers are parsed), ``connection_made``, ``data_received``,
``on_headers_complete`` (which answers 503 once as many connections are
open as ``limit_concurrency``: always at 0), ``on_response_complete``,
``connection_lost``, ``server_state``, ``scope``, ``loop`` and ``transport``;
``tests/test_connection.py`` fails if an uvicorn release changes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast
from weakref import WeakKeyDictionary

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEADER_BYTES", "header_deadline_protocol"]

#: The most bytes a request may send before its headers are complete.
MAX_HEADER_BYTES = 64 * 1024

# The connections holding a slot, per uvicorn server (one per HTTP process).
_holders: WeakKeyDictionary[Any, set[Any]] = WeakKeyDictionary()


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's protocol: a deadline and a size cap for headers, a cap on connections."""

    header_timeout = 10.0
    max_connections: int | None = None
    #: Told the path of each request answered 503 for want of a slot (for the metrics).
    refused: Callable[[str], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Take a slot if one is free, and start the first request's deadline."""
        super().connection_made(cast(asyncio.Transport, transport))  # a TCP one
        self.holders = _holders.setdefault(self.server_state, set())
        self.take_slot()
        self.deadline: asyncio.TimerHandle | None = None
        self.await_headers()

    def take_slot(self) -> bool:
        """Hold one of the process's `max_connections` slots, if one is free; return if held."""
        if self.max_connections is None or self in self.holders:
            return True
        if len(self.holders) >= self.max_connections:
            return False
        self.holders.add(self)
        return True

    def on_headers_complete(self) -> None:
        """Run the request, or have uvicorn answer 503 if this connection holds no slot."""
        held = self.take_slot()
        if not held:
            self.limit_concurrency = 0  # uvicorn's 503, which closes the connection
        super().on_headers_complete()  # reads the path into the scope
        if not held and self.refused is not None:  # the app never sees the request
            self.refused(self.scope["path"])

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; close the connection if headers run over `MAX_HEADER_BYTES`."""
        waited = self.cycle
        super().data_received(data)
        if self.cycle is not waited or not self.waiting():
            self.header_bytes = 0
            return
        self.header_bytes += len(data)
        if self.header_bytes > MAX_HEADER_BYTES:
            self.transport.close()

    def on_response_complete(self) -> None:
        """Answered: start the next request's deadline."""
        super().on_response_complete()
        self.await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        """Closed: no deadline left to keep, and the slot is free."""
        if self.deadline is not None:
            self.deadline.cancel()
        self.holders.discard(self)
        super().connection_lost(exc)

    def waiting(self) -> bool:
        """Whether the connection waits for a request's headers (none is under way).

        A request answered before its whole body came (a 401, or a 413 from its
        declared length) is still arriving: its bytes are not headers.
        """
        return self.cycle is None or (self.cycle.response_complete and not self.cycle.more_body)

    def await_headers(self) -> None:
        """Give the next request's headers `header_timeout` seconds from now."""
        if self.deadline is not None:
            self.deadline.cancel()
        self.header_bytes = 0
        if not self.transport.is_closing():
            self.deadline = self.loop.call_later(self.header_timeout, self.expire, self.cycle)

    def expire(self, cycle: Any) -> None:
        """Close the connection if no request's headers came since the deadline started.

        Also if an answered request's body is still arriving: it is of no use.
        """
        answered = cycle is None or cycle.response_complete
        if self.cycle is cycle and answered and not self.transport.is_closing():
            self.transport.close()


def header_deadline_protocol(
    seconds: float,
    max_connections: int | None = None,
    refused: Callable[[str], None] | None = None,
) -> type[HeaderDeadlineProtocol]:
    """The HTTP protocol for uvicorn (its ``http`` option).

    Args:
        seconds: The time a connection has to send each request's headers.
        max_connections: The connections each HTTP process serves at once
            (None: no cap). Leave uvicorn's ``limit_concurrency`` unset.
        refused: Called with the path of each request refused for want of a slot.
    """
    attributes = {
        "header_timeout": seconds,
        "max_connections": max_connections,
        "refused": None if refused is None else staticmethod(refused),
    }
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), attributes)
