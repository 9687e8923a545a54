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
from celestial_serve.transport import (
    AnswerTransport,
    RequestQueue,
    Wiring,
    frame,
    sockets_dir,
    unframe,
)

# A stand-in inference worker: doubles each request's payload and answers the
# HTTP server named in the request, until it gets None.
WORKER = """
import pickle, sys
queue, answers = pickle.loads(sys.stdin.buffer.read())
while (item := queue.get(timeout=30)) is not None:
    server, uid, payload = item
    answers.send_many([(uid, 2 * payload)], server)
"""

PATH = "/predict"


@pytest.fixture
def folder() -> Iterator[Path]:
    made = sockets_dir()
    yield made
    shutil.rmtree(made, ignore_errors=True)


def channels(folder: Path, workers: int) -> tuple[RequestQueue, AnswerTransport]:
    wiring = Wiring({PATH: [f"{folder}/worker-0-{i}" for i in range(workers)]})
    return RequestQueue(wiring, PATH), AnswerTransport(wiring)


def http_server(queue: RequestQueue, answers: AnswerTransport):
    """The ends of one HTTP server process: its own copy, as after a fork."""
    return pickle.loads(pickle.dumps((queue, answers)))


def start_worker(queue: RequestQueue, answers: AnswerTransport, worker_id: int):
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER],
        stdin=subprocess.PIPE,
        env={**os.environ, "LITSERVE_WORKER_ID": str(worker_id)},
    )
    process.stdin.write(pickle.dumps((queue, answers)))
    process.stdin.close()
    return process


async def receive(transport: AnswerTransport, server: int, count: int) -> list:
    return [await asyncio.wait_for(transport.areceive(server), timeout=30) for _ in range(count)]


def test_every_request_is_answered_once_to_the_server_that_sent_it(folder: Path) -> None:
    queue, answers = channels(folder, workers=2)
    workers = [start_worker(queue, answers, i) for i in range(2)]
    servers = [http_server(queue, answers) for _ in range(2)]
    try:
        for n in range(40):  # sent before connecting: held until connected
            server_queue, _ = servers[n % 2]
            server_queue.put((n % 2, f"r{n}", n))

        async def both() -> list[list]:
            return await asyncio.gather(
                *(receive(transport, i, 20) for i, (_, transport) in enumerate(servers))
            )

        to_first, to_second = asyncio.run(both())
    finally:
        for process in workers:
            process.kill()
            process.wait(timeout=30)
    assert sorted(to_first) == sorted((f"r{n}", 2 * n) for n in range(0, 40, 2))
    assert sorted(to_second) == sorted((f"r{n}", 2 * n) for n in range(1, 40, 2))


def test_requests_are_shared_out_and_none_is_lost_or_repeated(folder: Path) -> None:
    queue, answers = channels(folder, workers=2)
    workers = [start_worker(queue, answers, i) for i in range(2)]
    server_queue, transport = http_server(queue, answers)

    async def exchange() -> list:
        first = asyncio.ensure_future(transport.areceive(0))  # connects
        await asyncio.sleep(0.2)
        for n in range(200):
            server_queue.put((0, f"r{n}", n))
        return [await asyncio.wait_for(first, 30), *await receive(transport, 0, 199)]

    try:
        got = asyncio.run(exchange())
    finally:
        for _ in workers:
            server_queue.put(None)
        for process in workers:
            process.wait(timeout=30)
    assert sorted(got) == sorted((f"r{n}", 2 * n) for n in range(200))
    assert [process.returncode for process in workers] == [0, 0]  # both got a None


def test_an_empty_queue_raises_empty_after_the_timeout(folder: Path) -> None:
    queue, _ = channels(folder, workers=1)
    start = time.monotonic()
    with pytest.raises(Empty):
        queue.get(timeout=0.1)
    assert time.monotonic() - start >= 0.09
    with pytest.raises(Empty):
        queue.get_nowait()


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
