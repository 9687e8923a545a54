"""How the worker gathers queued requests into batches and answers them."""

from __future__ import annotations

import pickle
import time
from queue import Queue
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi import HTTPException
from litserve.utils import LitAPIStatus

from celestial_serve.litserve_internals import GreedyBatchLoop


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
    batch, expired = loop.get_batch_requests(api(max_batch_size=4), queue)
    assert [uid for _, uid, _ in batch] == ["a", "b", "c", "d"]
    assert expired == []
    batch, _ = loop.get_batch_requests(api(max_batch_size=4), queue)
    assert [uid for _, uid, _ in batch] == ["e"]


def test_a_lone_request_does_not_wait_for_company(loop: GreedyBatchLoop) -> None:
    start = time.monotonic()
    batch, _ = loop.get_batch_requests(api(batch_timeout=0.0), queued("a"))
    assert [uid for _, uid, _ in batch] == ["a"]
    assert time.monotonic() - start < 0.05


def test_an_idle_queue_gives_an_empty_batch(loop: GreedyBatchLoop) -> None:
    assert loop.get_batch_requests(api(), queued()) == ([], [])


def test_requests_past_their_timeout_are_set_aside(loop: GreedyBatchLoop) -> None:
    batch, expired = loop.get_batch_requests(api(request_timeout=1), queued("old", age=5))
    assert batch == []
    assert expired == [(0, "old")]


class Doubler:
    """A LitAPI-like model: doubles numbers, optionally failing in predict."""

    max_batch_size = 8
    batch_timeout = 0.0
    request_timeout = 30

    def __init__(self, failure: Exception | None = None, drop: bool = False) -> None:
        self.failure = failure
        self.drop = drop
        self.batches: list[int] = []

    def decode_request(self, request: dict, context: dict) -> float:
        context["tag"] = request["tag"]
        return float(request["x"])

    def batch(self, inputs: list) -> np.ndarray:
        self.batches.append(len(inputs))
        return np.array(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.failure is not None:
            raise self.failure
        return 2 * x[:-1] if self.drop else 2 * x

    def unbatch(self, y: np.ndarray) -> list:
        return list(y)

    def encode_response(self, y: float, context: dict) -> dict:
        return {"y": float(y), "tag": context["tag"]}


class Recorder:
    """A transport that records what is sent, per message."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, list]] = []

    def send_many(self, items: list, consumer_id: int) -> None:
        self.messages.append((consumer_id, items))


def requests_from(*servers: int) -> list[tuple[int, str, dict]]:
    return [(server, f"u{n}", {"x": n, "tag": f"t{n}"}) for n, server in enumerate(servers)]


def test_each_request_gets_its_own_answer_with_its_context(loop: GreedyBatchLoop) -> None:
    model = Doubler()
    answers = loop.run_batch(model, requests_from(0, 1, 0))
    assert answers == [
        (0, "u0", {"y": 0.0, "tag": "t0"}, LitAPIStatus.OK),
        (1, "u1", {"y": 2.0, "tag": "t1"}, LitAPIStatus.OK),
        (0, "u2", {"y": 4.0, "tag": "t2"}, LitAPIStatus.OK),
    ]
    assert model.batches == [3]


def test_a_failing_model_answers_every_request_of_the_batch_with_the_error(
    loop: GreedyBatchLoop,
) -> None:
    answers = loop.run_batch(Doubler(RuntimeError("boom")), requests_from(0, 0))
    assert [status for *_, status in answers] == [LitAPIStatus.ERROR] * 2
    assert all(isinstance(pickle.loads(data), RuntimeError) for _, _, data, _ in answers)


def test_an_http_error_keeps_its_status_and_message(loop: GreedyBatchLoop) -> None:
    failure = HTTPException(422, "no such body")
    answers = loop.run_batch(Doubler(failure), requests_from(0))
    ((_, _, error, status),) = answers
    assert status == LitAPIStatus.ERROR
    assert (error.status_code, error.detail) == (422, "no such body")


def test_a_model_that_loses_an_answer_fails_the_batch(loop: GreedyBatchLoop) -> None:
    answers = loop.run_batch(Doubler(drop=True), requests_from(0, 0))
    assert [status for *_, status in answers] == [LitAPIStatus.ERROR] * 2
    assert all(isinstance(pickle.loads(data), ValueError) for _, _, data, _ in answers)


def test_the_answers_of_a_batch_go_out_in_one_message_per_server(loop: GreedyBatchLoop) -> None:
    transport = Recorder()
    queue: Queue = Queue()
    for request in requests_from(0, 1, 0, 1, 1):
        server, uid, payload = request
        queue.put((server, uid, time.monotonic(), payload))
    loop.run(Doubler(), "cpu", 0, queue, transport)
    per_server = {}
    for server, items in transport.messages:
        per_server.setdefault(server, []).append([uid for uid, _ in items])
    assert per_server == {0: [["u0", "u2"]], 1: [["u1", "u3", "u4"]]}
    uid, (data, status, _, _) = transport.messages[0][1][0]
    assert (uid, data, status) == ("u0", {"y": 0.0, "tag": "t0"}, LitAPIStatus.OK)


def test_the_loop_answers_queued_requests_and_times_out_stale_ones(
    loop: GreedyBatchLoop,
) -> None:
    model = Doubler()
    model.request_timeout = 1
    queue: Queue = Queue()
    queue.put((0, "old", time.monotonic() - 5, {"x": 1, "tag": "a"}))
    queue.put((0, "new", time.monotonic(), {"x": 3, "tag": "b"}))
    transport = Recorder()
    loop.run(model, "cpu", 0, queue, transport)
    sent = {uid: payload for _, items in transport.messages for uid, payload in items}
    assert sent["new"][:2] == ({"y": 6.0, "tag": "b"}, LitAPIStatus.OK)
    assert (sent["old"][0].status_code, sent["old"][1]) == (504, LitAPIStatus.ERROR)
