"""What one connection may hold in an HTTP process: a deadline for its request's headers.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``), but waits
for ever for a connection that sends nothing, or a request's headers a byte at
a time (slowloris), and gathers headers without a limit.
`header_deadline_protocol` makes uvicorn's HTTP protocol drop a connection
whose next request's headers are not complete ``seconds`` after it opened or
after its previous answer, or that sends more than `MAX_HEADER_BYTES` before
they are. (The body has its own deadline: `celestial_serve.request.BodyLimit`.)

It subclasses uvicorn's ``HttpToolsProtocol`` (what uvicorn runs with the
``httptools`` parser that ``uvicorn[standard]`` installs, as LitServe requires),
using its ``cycle`` (the request under way, replaced once the next one's
headers are parsed), ``connection_made``, ``data_received``,
``on_response_complete``, ``connection_lost``, ``loop`` and ``transport``;
``tests/test_connection.py`` fails if an uvicorn release changes them.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEADER_BYTES", "header_deadline_protocol"]

#: The most bytes a request may send before its headers are complete.
MAX_HEADER_BYTES = 64 * 1024


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's protocol, closing connections whose headers come too slowly or too long."""

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the first request's deadline."""
        super().connection_made(cast(asyncio.Transport, transport))  # a TCP one
        self.deadline: asyncio.TimerHandle | None = None
        self.await_headers()

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
        """Closed: no deadline left to keep."""
        if self.deadline is not None:
            self.deadline.cancel()
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


def header_deadline_protocol(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The HTTP protocol for uvicorn (its ``http`` option), giving headers ``seconds``."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": seconds})
