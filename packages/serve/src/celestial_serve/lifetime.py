"""How the server's processes end: on SIGTERM as on Ctrl+C, and with their parent."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from types import FrameType

__all__ = ["die_with_parent", "leave_ctrl_c_to_the_main_process", "stop_on_signals"]

#: prctl's option (linux/prctl.h): the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
#: The signals that stop the server.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals() -> None:
    """Make SIGTERM stop the server like Ctrl+C: else LitServe leaves its workers running.

    The first SIGTERM or SIGINT starts the graceful shutdown, which stops the
    workers; later ones are ignored, so that they cannot cut it short (Ctrl+C
    under ``nox -s serve`` brings both). The server also gets SIGTERM when the
    process that started it dies (Linux), so that a killed ``nox -s serve`` or
    script does not leave it serving; and so does every process it starts when
    it dies itself, even killed outright.
    """
    main = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main:  # a forked child inherited the handler: die normally
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        for stopping in STOP_SIGNALS:
            signal.signal(stopping, signal.SIG_IGN)
        raise KeyboardInterrupt

    for stop in STOP_SIGNALS:
        signal.signal(stop, handler)
    if not die_with_parent():
        raise KeyboardInterrupt
    # The HTTP processes are forked from this one; the inference workers, new
    # interpreters, ask for the same in `ClassifierAPI.setup`. Without it, this
    # process killed outright (SIGKILL, out of memory) left them serving.
    os.register_at_fork(after_in_child=_forked_child_dies_with_parent)


def leave_ctrl_c_to_the_main_process() -> None:
    """Have an inference worker ignore SIGINT: the server's main process stops it.

    Ctrl+C in a terminal sends SIGINT to every process of the foreground
    group. The main process then shuts down gracefully: its HTTP processes
    answer the requests they hold, and only then are the inference workers
    stopped (SIGTERM). A worker that died at the SIGINT itself would fail
    every request in flight.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def die_with_parent() -> bool:
    """Have Linux send this process SIGTERM when its parent dies (elsewhere: nothing).

    Returns:
        Whether the parent was still alive once asked: if it died before,
        the signal will never come, and the caller must stop.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    return os.getppid() == parent


def _forked_child_dies_with_parent() -> None:
    if not die_with_parent():
        os.kill(os.getpid(), signal.SIGTERM)
