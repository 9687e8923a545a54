"""Requests and answers between processes over Unix sockets: nothing lost, each to its server."""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty

import pytest

from celestial_serve.errors import ServeError
from celestial_serve.litserve_internals import ERROR, WORKER_GONE, SocketChannel
from celestial_serve.transport import frame, sockets_dir, unframe

# A stand-in inference worker: doubles each request's payload and answers the
# HTTP server named in the request, until it gets a request without a uid.
WORKER = """
import pickle, sys
channel = pickle.loads(sys.stdin.buffer.read())
while (item := channel.get(timeout=30))[1] is not None:
    server, uid, payload = item
    channel.send_many([(uid, 2 * payload)], server)
"""


HOLDER = """
import pickle, sys
channel = pickle.loads(sys.stdin.buffer.read())
while True:
    channel.get(timeout=None)
"""


@pytest.fixture
def folder() -> Iterator[Path]:
    made = sockets_dir()
    yield made
    shutil.rmtree(made, ignore_errors=True)


def channel(folder: Path, workers: int) -> SocketChannel:
    return SocketChannel([f"{folder}/worker-{i}" for i in range(workers)])


def copy(channel: SocketChannel) -> SocketChannel:
    """One process's copy of the channel, as after a fork or a spawn."""
    return pickle.loads(pickle.dumps(channel))


def start_worker(channel: SocketChannel, worker_id: int):
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER],
        stdin=subprocess.PIPE,
        env={**os.environ, "LITSERVE_WORKER_ID": str(worker_id)},
    )
    process.stdin.write(pickle.dumps(channel))
    process.stdin.close()
    return process


async def receive(server: SocketChannel, consumer_id: int, count: int) -> list:
    return [await asyncio.wait_for(server.areceive(consumer_id), 30) for _ in range(count)]


def test_every_request_is_answered_once_to_the_server_that_sent_it(folder: Path) -> None:
    shared = channel(folder, workers=2)
    workers = [start_worker(shared, i) for i in range(2)]
    servers = [copy(shared) for _ in range(2)]

    async def both() -> list[list]:
        for n in range(40):  # sent before connecting: held until connected
            servers[n % 2].put((n % 2, f"r{n}", n))
        return await asyncio.gather(*(receive(server, i, 20) for i, server in enumerate(servers)))

    try:
        to_first, to_second = asyncio.run(both())
    finally:
        for process in workers:
            process.kill()
            process.wait(timeout=30)
    assert sorted(to_first) == sorted((f"r{n}", 2 * n) for n in range(0, 40, 2))
    assert sorted(to_second) == sorted((f"r{n}", 2 * n) for n in range(1, 40, 2))


def test_requests_are_shared_out_and_none_is_lost_or_repeated(folder: Path) -> None:
    shared = channel(folder, workers=2)
    workers = [start_worker(shared, i) for i in range(2)]
    server = copy(shared)

    async def exchange() -> list:
        first = asyncio.ensure_future(server.areceive(0))  # connects
        await asyncio.sleep(0.2)
        for n in range(200):
            server.put((0, f"r{n}", n))
        got = [await asyncio.wait_for(first, 30), *await receive(server, 0, 199)]
        for _ in workers:
            server.put((0, None, None))
        await asyncio.sleep(0.2)  # the event loop writes them
        return got

    try:
        got = asyncio.run(exchange())
    finally:
        for process in workers:
            process.wait(timeout=30)
    assert sorted(got) == sorted((f"r{n}", 2 * n) for n in range(200))
    assert [process.returncode for process in workers] == [0, 0]  # both got a stop


def test_a_worker_that_dies_has_its_requests_answered_and_gets_no_more(folder: Path) -> None:
    shared = channel(folder, workers=2)
    holder = subprocess.Popen(  # takes requests and never answers, until it is killed
        [sys.executable, "-c", HOLDER],
        stdin=subprocess.PIPE,
        env={**os.environ, "LITSERVE_WORKER_ID": "0"},
    )
    holder.stdin.write(pickle.dumps(shared))
    holder.stdin.close()
    worker = start_worker(shared, 1)
    server = copy(shared)

    async def exchange() -> tuple[list, list, list]:
        for n in range(4):  # in turn: r0 and r2 to the holder
            server.put((0, f"r{n}", n))
        answered = await receive(server, 0, 2)
        holder.kill()
        lost = await receive(server, 0, 2)
        for n in range(4, 8):  # to the worker left
            server.put((0, f"r{n}", n))
        after = await receive(server, 0, 4)
        server.put((0, None, None))
        await asyncio.sleep(0.2)  # the event loop writes it
        return answered, lost, after

    try:
        answered, lost, after = asyncio.run(exchange())
    finally:
        holder.kill()
        worker.wait(timeout=30)
    assert sorted(answered) == [("r1", 2), ("r3", 6)]
    assert sorted(uid for uid, _ in lost) == ["r0", "r2"]
    for _, (error, status, *_) in lost:
        assert (error.status_code, status) == (503, ERROR)
        assert error.detail == WORKER_GONE
    assert sorted(after) == [(f"r{n}", 2 * n) for n in range(4, 8)]


def test_an_empty_queue_raises_empty_after_the_timeout(folder: Path) -> None:
    worker = channel(folder, workers=1)
    start = time.monotonic()
    with pytest.raises(Empty):
        worker.get(timeout=0.1)
    assert time.monotonic() - start >= 0.09
    with pytest.raises(Empty):
        worker.get(timeout=0)


def test_frames_split_anywhere_are_put_back_together() -> None:
    stream = frame("a") + frame({"b": [1, 2]}) + frame(3)
    buffer, items = bytearray(), []
    for start in range(0, len(stream), 5):  # five bytes at a time
        buffer += stream[start : start + 5]
        items += unframe(buffer)
    assert items == ["a", {"b": [1, 2]}, 3]
    assert buffer == bytearray()


def test_a_temporary_folder_too_long_for_socket_addresses_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("x" * 90)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with pytest.raises(ServeError, match="Set TMPDIR to a shorter one"):
        sockets_dir()
    assert list(deep.iterdir()) == []
