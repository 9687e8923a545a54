"""Figures drawn in a process of their own while the evaluation goes on.

The evaluate stage spends about 2 s in Matplotlib (its import, then drawing
three PNGs) and as long importing Keras and predicting. On two cores both can
run at once: a `Drawer` forks one drawing process before Keras is imported,
and the training history is drawn there while the model loads. A figure
comes back as its PNG's bytes, and the caller writes it with the others, so a
failed evaluation leaves no figure behind. Where the process may not be forked
(`celestial_data.dataset.can_fork`: JAX already loaded, other threads, not
Linux), figures are drawn in the calling process, byte for byte the same.
"""

from __future__ import annotations

import io
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any

from celestial_data.dataset import can_fork
from celestial_eval.errors import EvalError

__all__ = ["Drawer", "Render"]

#: A drawing function: it writes its PNG to its ``path`` argument, a file or a binary stream.
Render = Callable[..., Any]


def _render(function: Render, args: tuple[Any, ...], keywords: dict[str, Any]) -> bytes:
    stream = io.BytesIO()
    function(*args, **keywords, path=stream)
    return stream.getvalue()


def _ignore_interrupts() -> None:
    # Ctrl+C reaches every process of the terminal's group: the drawing process
    # leaves it to the command, which reports it in one line and stops this one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Drawer:
    """Draws figures in a forked process where it can, else in this one.

    Use it as a context manager, and submit the first figure before Keras
    or JAX is imported: the process is forked then.
    """

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        if can_fork():
            self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("fork"), initializer=_ignore_interrupts
            )

    def draw(self, function: Render, *args: Any, **keywords: Any) -> Future[bytes]:
        """The PNG ``function(*args, **keywords, path=stream)`` writes, as a future of its bytes."""
        if self._pool is not None:
            return self._pool.submit(_render, function, args, keywords)
        future: Future[bytes] = Future()
        try:
            future.set_result(_render(function, args, keywords))
        except Exception as error:
            future.set_exception(error)
        return future

    @staticmethod
    def result(future: Future[bytes]) -> bytes:
        """The bytes of a figure drawn; its drawing's own error if it failed.

        Raises:
            EvalError: If the drawing process died without an error of its own.
        """
        try:
            return future.result()
        except BrokenProcessPool:
            raise EvalError(
                "The process drawing the evaluation's figures stopped without an error of its "
                "own: it was killed, most likely by the system's out-of-memory killer. Free "
                "memory and run again."
            ) from None

    def __enter__(self) -> Drawer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            # On an error, figures not yet started are not drawn for nothing.
            self._pool.shutdown(wait=True, cancel_futures=kind is not None)
