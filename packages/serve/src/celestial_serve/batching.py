"""How the inference worker gathers requests into batches.

LitServe 0.2.19's batched loop collects for ``batch_timeout`` seconds counted
from when it starts looking, whether or not a request has come: a lone request
waits out the rest of the window, and an idle worker polls its queue a thousand
times a second (or spins, with ``batch_timeout=0``).

`GreedyBatchLoop` blocks until a request arrives, then takes every request
already queued (up to ``max_batch_size``), waiting at most ``batch_timeout``
more for others. Under load, requests pile up while the model runs and the next
batch takes them all; a lone request is answered at once; an idle worker sleeps.

It also runs each batch with less per-request work than LitServe's loop, which
inspects the signatures of ``decode_request`` and ``encode_response`` for every
request and sends every answer on its own: here signatures are read once, and
the answers of a batch go to each HTTP server in one message when the transport
can (`celestial_serve.transport.AnswerTransport.send_many`). LitServe callbacks
are not run (the server registers none).
"""

from __future__ import annotations

import inspect
import logging
import pickle
import time
from collections import defaultdict
from queue import Empty, Queue
from typing import Any

from fastapi import HTTPException
from litserve import LitAPI
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.transport.base import MessageTransport
from litserve.utils import LitAPIStatus, LoopResponseType, PickleableHTTPException

__all__ = ["GreedyBatchLoop"]

logger = logging.getLogger(__name__)

# (response_queue_id, uid, data, status): one answer, before it is sent.
Answer = tuple[Any, str, Any, LitAPIStatus]


class GreedyBatchLoop(BatchedLoop):
    """A batched loop that never waits for a batch when no request is waiting."""

    def __init__(self, idle_timeout: float = 1.0) -> None:
        """Create the loop.

        Args:
            idle_timeout: Seconds to block for a first request before checking
                again (bounds how long shutdown can wait).
        """
        super().__init__()
        self.idle_timeout = idle_timeout
        self.stopping = False  # the stop sentinel came after requests still to answer

    def get_batch_requests(
        self, lit_api: LitAPI, request_queue: Queue, transport: MessageTransport
    ) -> tuple[list[tuple[Any, str, Any]], list[tuple[Any, str]]]:
        """The next batch ``[(response_queue_id, uid, payload)]`` and the expired requests.

        Raises:
            _StopLoopError: Once LitServe's stop sentinel is reached, after the
                requests queued before it have been handed out.
        """
        if self.stopping:
            raise _StopLoopError()
        try:
            items = [request_queue.get(timeout=self.idle_timeout)]
        except Empty:
            return [], []
        deadline = time.monotonic() + lit_api.batch_timeout
        while len(items) < lit_api.max_batch_size and items[-1] != _SENTINEL_VALUE:
            remaining = deadline - time.monotonic()
            try:
                items.append(
                    request_queue.get(timeout=remaining)
                    if remaining > 0
                    else request_queue.get_nowait()
                )
            except Empty:
                break
        return self.sort(lit_api, items, transport)

    def sort(
        self, lit_api: LitAPI, items: list[Any], transport: MessageTransport
    ) -> tuple[list[tuple[Any, str, Any]], list[tuple[Any, str]]]:
        """Split queued items into requests to answer and requests past their timeout."""
        timeout = lit_api.request_timeout
        apply_timeout = timeout not in (None, -1, False)
        batch, expired = [], []
        for item in items:
            if item == _SENTINEL_VALUE:
                if not batch and not expired:
                    raise _StopLoopError()
                self.stopping = True
                break
            response_queue_id, uid, timestamp, payload = item
            self.put_response(
                transport,
                response_queue_id,
                uid,
                (),
                LitAPIStatus.START,
                LoopResponseType.REGULAR,
            )
            if apply_timeout and time.monotonic() - timestamp > timeout:
                expired.append((response_queue_id, uid))
            else:
                batch.append((response_queue_id, uid, payload))
        return batch, expired

    def run_batched_loop(
        self,
        lit_api: LitAPI,
        request_queue: Queue,
        transport: MessageTransport,
        callback_runner: Any = None,
        lit_spec: Any = None,
    ) -> None:
        """Take batches and answer them until LitServe sends the stop sentinel."""
        with_context = {
            name: "context" in inspect.signature(getattr(lit_api, name)).parameters
            for name in ("decode_request", "encode_response")
        }
        while True:
            try:
                batch, expired = self.get_batch_requests(lit_api, request_queue, transport)
            except _StopLoopError:
                return
            answers: list[Answer] = [
                (
                    queue_id,
                    uid,
                    PickleableHTTPException.from_exception(
                        HTTPException(504, "Request timed out in the queue.")
                    ),
                    LitAPIStatus.ERROR,
                )
                for queue_id, uid in expired
            ]
            if batch:
                answers += self.run_batch(lit_api, batch, with_context)
            self.send(transport, answers)

    def run_batch(
        self, lit_api: LitAPI, batch: list[tuple[Any, str, Any]], with_context: dict[str, bool]
    ) -> list[Answer]:
        """Decode, predict and encode one batch: an answer (or error) per request."""
        queue_ids, uids, inputs = zip(*batch, strict=True)
        contexts: list[dict[str, Any]] = [{} for _ in inputs]

        def call(name: str, value: Any, context: dict[str, Any]) -> Any:
            method = getattr(lit_api, name)
            return method(value, context=context) if with_context[name] else method(value)

        try:
            inputs = [call("decode_request", i, c) for i, c in zip(inputs, contexts, strict=True)]
            outputs = lit_api.unbatch(lit_api.predict(lit_api.batch(inputs)))
            if len(outputs) != len(inputs):
                logger.error("predict gave %d outputs for %d requests.", len(outputs), len(inputs))
                raise HTTPException(500, "Batch size mismatch")
            return [
                (q, u, call("encode_response", y, c), LitAPIStatus.OK)
                for q, u, y, c in zip(queue_ids, uids, outputs, contexts, strict=True)
            ]
        except HTTPException as error:
            failure: Any = PickleableHTTPException.from_exception(error)
        except Exception as error:
            logger.exception("The model failed on a batch of %d requests.", len(inputs))
            failure = pickle.dumps(error)
        return [(q, u, failure, LitAPIStatus.ERROR) for q, u in zip(queue_ids, uids, strict=True)]

    def send(self, transport: MessageTransport, answers: list[Answer]) -> None:
        """Send answers, one message per HTTP server when the transport allows."""
        by_server: dict[Any, list[Any]] = defaultdict(list)
        for queue_id, uid, data, status in answers:
            by_server[queue_id].append(
                (uid, (data, status, LoopResponseType.REGULAR, self.worker_id))
            )
        send_many = getattr(transport, "send_many", None)
        for queue_id, items in by_server.items():
            if send_many is not None:
                send_many(items, queue_id)
            else:
                for item in items:
                    transport.send(item, consumer_id=queue_id)
