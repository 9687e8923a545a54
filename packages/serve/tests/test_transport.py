"""Requests and answers between processes over ZeroMQ: nothing lost, each to its server."""

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
from celestial_serve.transport import AnswerTransport, RequestQueue, sockets_dir

# A stand-in inference worker: doubles each request's payload and answers the
# HTTP server named in the request, until it gets None.
WORKER = """
import pickle, sys
queue, answers = pickle.loads(sys.stdin.buffer.read())
while (item := queue.get(timeout=30)) is not None:
    server, uid, payload = item
    answers.send_many([(uid, 2 * payload)], server)
"""


@pytest.fixture
def folder() -> Iterator[Path]:
    made = sockets_dir()
    yield made
    shutil.rmtree(made, ignore_errors=True)


def channels(folder: Path, workers: int, servers: int) -> tuple[RequestQueue, AnswerTransport]:
    queue = RequestQueue([f"ipc://{folder}/requests-0-{i}" for i in range(workers)])
    answers = AnswerTransport([f"ipc://{folder}/answers-{i}" for i in range(servers)])
    return queue, answers


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
    queue, answers = channels(folder, workers=2, servers=2)
    workers = [start_worker(queue, answers, i) for i in range(2)]
    try:
        for n in range(40):
            queue.put((n % 2, f"r{n}", n))  # server n % 2 asks
        first, second = pickle.loads(pickle.dumps(answers)), pickle.loads(pickle.dumps(answers))

        async def both() -> tuple[list, list]:
            return await asyncio.gather(receive(first, 0, 20), receive(second, 1, 20))

        to_first, to_second = asyncio.run(both())
    finally:
        for _ in workers:
            queue.put(None)  # round-robin: one each
        for process in workers:
            process.wait(timeout=30)
    assert sorted(to_first) == sorted((f"r{n}", 2 * n) for n in range(0, 40, 2))
    assert sorted(to_second) == sorted((f"r{n}", 2 * n) for n in range(1, 40, 2))
    assert [process.returncode for process in workers] == [0, 0]


def test_answers_sent_together_arrive_one_by_one_in_order(folder: Path) -> None:
    _, answers = channels(folder, workers=1, servers=1)
    receiver = pickle.loads(pickle.dumps(answers))

    async def exchange() -> list:
        first = asyncio.ensure_future(receiver.areceive(0))  # binds the address
        await asyncio.sleep(0.05)
        answers.send_many([("a", 1), ("b", 2)], 0)
        answers.send(("c", 3), 0)
        return [await asyncio.wait_for(first, 30), *await receive(receiver, 0, 2)]

    assert asyncio.run(exchange()) == [("a", 1), ("b", 2), ("c", 3)]


def test_a_request_sent_before_the_worker_listens_is_kept(folder: Path) -> None:
    queue, _ = channels(folder, workers=1, servers=1)
    queue.put("early")
    time.sleep(0.2)
    worker_side = pickle.loads(pickle.dumps(queue))
    assert worker_side.get(timeout=10) == "early"


def test_an_empty_queue_raises_empty_after_the_timeout(folder: Path) -> None:
    queue, _ = channels(folder, workers=1, servers=1)
    start = time.monotonic()
    with pytest.raises(Empty):
        queue.get(timeout=0.1)
    assert time.monotonic() - start >= 0.09
    with pytest.raises(Empty):
        queue.get_nowait()


def test_a_temporary_folder_too_long_for_socket_addresses_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("x" * 90)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with pytest.raises(ServeError, match="Set TMPDIR to a shorter one"):
        sockets_dir()
    assert list(deep.iterdir()) == []
