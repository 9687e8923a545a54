"""The HTTP protocol's cap on connections, on uvicorn's own protocol code (no sockets).

`celestial_serve.connection` subclasses uvicorn's ``HttpToolsProtocol``; these
tests drive it as uvicorn's server does (``connection_made``, then the bytes
of a request), so they fail if an uvicorn release changes what it relies on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from celestial_serve.connection import header_deadline_protocol

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


class Transport(asyncio.Transport):
    """A connection's transport that keeps what the server writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Server:
    """One HTTP process's uvicorn state, with the protocol capped at ``cap`` connections."""

    def __init__(self, cap: int | None) -> None:
        self.refused: list[str] = []
        protocol = header_deadline_protocol(10.0, cap, self.refused.append)
        self.config = uvicorn.Config(hello, http=protocol, lifespan="off", log_level="error")
        self.config.load()
        self.state = ServerState()

    def connect(self) -> tuple[Any, Transport]:
        protocol = self.config.http_protocol_class(
            config=self.config,
            server_state=self.state,
            app_state={},
            _loop=asyncio.get_running_loop(),
        )
        transport = Transport()
        protocol.connection_made(transport)
        return protocol, transport


def status(transport: Transport) -> int:
    return int(bytes(transport.written).split(b" ", 2)[1])


async def burst(server: Server, clients: int) -> list[tuple[Any, Transport]]:
    """``clients`` connections opened at once, then a request on each."""
    connections = [server.connect() for _ in range(clients)]
    for protocol, _ in connections:
        protocol.data_received(REQUEST)
    await asyncio.sleep(0.05)
    return connections


def test_a_burst_beyond_the_cap_is_served_up_to_the_cap_and_the_rest_refused() -> None:
    async def run() -> None:
        server = Server(cap=4)
        connections = await burst(server, 10)
        assert [status(transport) for _, transport in connections] == [200] * 4 + [503] * 6
        assert [transport.closed for _, transport in connections] == [False] * 4 + [True] * 6
        assert server.refused == ["/"] * 6  # counted, though the app never saw them

    asyncio.run(run())


def test_a_slot_freed_by_a_closed_connection_goes_to_the_next_request() -> None:
    async def run() -> None:
        server = Server(cap=2)
        (first, _), (second, _), (third, waiting) = [server.connect() for _ in range(3)]
        first.connection_lost(None)  # before the third's request comes
        third.data_received(REQUEST)
        await asyncio.sleep(0.05)
        assert status(waiting) == 200
        fourth, late = server.connect()
        fourth.data_received(REQUEST)
        await asyncio.sleep(0.05)
        assert status(late) == 503  # the second and the third hold both slots
        second.connection_lost(None)

    asyncio.run(run())


def test_without_a_cap_every_connection_is_served() -> None:
    async def run() -> None:
        connections = await burst(Server(cap=None), 10)
        assert {status(transport) for _, transport in connections} == {200}

    asyncio.run(run())
