"""How the worker gathers queued requests into batches."""

from __future__ import annotations

import time
from queue import Queue
from types import SimpleNamespace

import pytest
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError

from celestial_serve.batching import GreedyBatchLoop


def api(max_batch_size: int = 4, batch_timeout: float = 0.0, request_timeout: float = 30):
    return SimpleNamespace(
        max_batch_size=max_batch_size, batch_timeout=batch_timeout, request_timeout=request_timeout
    )


def queued(*uids: str, age: float = 0.0) -> Queue:
    queue: Queue = Queue()
    for uid in uids:
        queue.put((0, uid, time.monotonic() - age, {"uid": uid}))
    return queue


@pytest.fixture
def loop() -> GreedyBatchLoop:
    return GreedyBatchLoop(idle_timeout=0.05)


def test_takes_every_waiting_request_up_to_the_batch_size(loop: GreedyBatchLoop) -> None:
    queue = queued("a", "b", "c", "d", "e")
    batch, expired = loop.get_batch_requests(api(max_batch_size=4), queue, None)
    assert [uid for _, uid, _ in batch] == ["a", "b", "c", "d"]
    assert expired == []
    batch, _ = loop.get_batch_requests(api(max_batch_size=4), queue, None)
    assert [uid for _, uid, _ in batch] == ["e"]


def test_a_lone_request_does_not_wait_for_company(loop: GreedyBatchLoop) -> None:
    start = time.monotonic()
    batch, _ = loop.get_batch_requests(api(batch_timeout=0.0), queued("a"), None)
    assert [uid for _, uid, _ in batch] == ["a"]
    assert time.monotonic() - start < 0.05


def test_an_idle_queue_gives_an_empty_batch(loop: GreedyBatchLoop) -> None:
    assert loop.get_batch_requests(api(), queued(), None) == ([], [])


def test_requests_past_their_timeout_are_set_aside(loop: GreedyBatchLoop) -> None:
    batch, expired = loop.get_batch_requests(api(request_timeout=1), queued("old", age=5), None)
    assert batch == []
    assert expired == [(0, "old")]


def test_the_shutdown_sentinel_stops_the_loop(loop: GreedyBatchLoop) -> None:
    queue = queued("a")
    queue.put(_SENTINEL_VALUE)
    with pytest.raises(_StopLoopError):
        loop.get_batch_requests(api(), queue, None)
