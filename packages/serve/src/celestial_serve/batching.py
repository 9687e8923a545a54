"""How the inference worker gathers requests into batches.

LitServe 0.2.19's batched loop collects for ``batch_timeout`` seconds counted
from when it starts looking, whether or not a request has come: a lone request
waits out the rest of the window, and an idle worker polls its queue a thousand
times a second (or spins, with ``batch_timeout=0``).

`GreedyBatchLoop` blocks until a request arrives, then takes every request
already queued (up to ``max_batch_size``), waiting at most ``batch_timeout``
more for others. Under load, requests pile up while the model runs and the next
batch takes them all; a lone request is answered at once; an idle worker sleeps.
"""

from __future__ import annotations

import time
from queue import Empty, Queue
from typing import Any

from litserve import LitAPI
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.transport.base import MessageTransport
from litserve.utils import LitAPIStatus, LoopResponseType

__all__ = ["GreedyBatchLoop"]


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

    def get_batch_requests(
        self, lit_api: LitAPI, request_queue: Queue, transport: MessageTransport
    ) -> tuple[list[tuple[Any, str, Any]], list[tuple[Any, str]]]:
        """The next batch ``[(response_queue_id, uid, payload)]`` and the expired requests."""
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
                raise _StopLoopError()
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
