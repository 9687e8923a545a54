"""The prediction log: every answer, one JSON line each, written off the request path.

With ``celestial-serve --log-dir DIR``, each HTTP process hands every answer
of ``POST /predict`` (the answer object, or the JSON it was sent as on the
stock transport, with the uploaded bytes, the model's input array, the time
and the latency) to its `PredictionLog`, which only appends them to a bounded
in-memory queue: a microsecond or two on the request path. A background
thread wakes every `FLUSH_S` seconds and does the rest for the whole lot at
once: the features of every image in one `image_features` call, the digests,
the lines (`celestial_models.prediction_log.answer_line`, the format of
`PredictionRecord`), appended to the process's current file with one write
and flushed to the operating system; then it keeps the uncertain uploads in
the review folder (`celestial_serve.review`). That is about 20 µs of CPU per
answer, in the same process as the event loop: keep new per-answer work
there, and cheap. When the queue is full, answers are not recorded and are
counted as dropped: requests are never slowed by the log.

Files are ``DIR/predictions-<UTC time the file was opened>-<pid>.jsonl``: one
file per HTTP process at a time, so processes never share one, and names sort
by time. A file that passes the size cap is closed and the next lines go to a
new one. Every line is written whole, with its newline, after the lines
before it: a killed server leaves at most the last `FLUSH_S` seconds of answers
unrecorded and at most its last line cut short; a reader skips that line.

What the disk refuses (it is full) is held, up to `MAX_HELD_BYTES`, and
written from where it stopped on the next pass, so a line is never cut in
the middle of a file; only lines past that bound are dropped, and counted.
A log folder removed or moved while serving is made again, with a new file,
and the server says so: the lines are never written to a file no longer
there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from celestial_models.prediction_log import answer_line, image_features
from celestial_serve.errors import ServeError
from celestial_serve.response import UNKNOWN
from celestial_serve.review import REVIEW_DIR, ReviewFolder

__all__ = [
    "FLUSH_S",
    "LogOptions",
    "PredictionLog",
    "as_gated",
    "log_file_name",
    "prepare_log_dir",
    "sha256_holding_gil",
]

#: Seconds between the writer's passes: the most a kill can lose.
FLUSH_S = 0.1
#: Seconds between fsyncs of the current file (for a machine crash, not a kill).
SYNC_S = 1.0
#: Answers held for the writer at most; more are dropped (and counted).
MAX_PENDING = 20_000
#: Bytes of lines held while the disk refuses them, at most; newer lines are dropped.
MAX_HELD_BYTES = 16 * 2**20
MIB = 2**20
# Bytes hashed at once: hashlib keeps the GIL below 2,048.
_HASH_PIECE = 2047

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogOptions:
    """Where and how to log predictions (``--log-dir`` and its companions)."""

    folder: Path
    max_bytes: int = 64 * MIB
    review_below: float = 0.5
    review_max_bytes: int = 256 * MIB


def prepare_log_dir(folder: Path) -> None:
    """Create ``folder`` and its review folder, and check that files can be written there.

    Raises:
        ServeError: If ``folder`` is a file, or cannot be created or written to.
    """
    if folder.exists() and not folder.is_dir():
        raise ServeError(
            f"--log-dir {folder} is a file, not a folder. Give a folder (it is created if "
            "missing) or remove the file."
        )
    try:
        (folder / REVIEW_DIR).mkdir(parents=True, exist_ok=True)
        for place in (folder, folder / REVIEW_DIR):
            probe = place / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as error:
        raise ServeError(
            f"Cannot write prediction logs to --log-dir {folder} ({error.strerror or error}). "
            "Give a folder this user can write to, or fix its permissions."
        ) from None


def sha256_holding_gil(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex, computed without letting go of the GIL.

    hashlib lets go of it for 2 KiB or more at once: the event loop, waiting for
    it, would take it back for every answer the writer hashes, and the two
    threads would hand it to and fro (each time a wake-up and a cache miss).
    """
    digest = hashlib.sha256()
    view = memoryview(data)
    for start in range(0, len(view), _HASH_PIECE):
        digest.update(view[start : start + _HASH_PIECE])
    return digest.hexdigest()


def log_file_name(opened: datetime, pid: int) -> str:
    """The name of a log file opened at ``opened`` by process ``pid``."""
    return f"predictions-{opened.strftime('%Y%m%dT%H%M%S.%fZ')}-{pid}.jsonl"


class _Answer(NamedTuple):  # a tuple: made for every answer, on the request path
    answer: dict[str, Any] | bytes  # the answer, or its JSON as sent
    upload: bytes  # the encoded image, as uploaded
    image: np.ndarray  # the model's input
    time: str
    latency_s: float


class PredictionLog:
    """One HTTP process's prediction log and review folder, written by a background thread.

    Made before the HTTP processes fork; each process starts its own thread
    and file on its first answer.

    Args:
        options: The log folder, size cap and review settings.
        dropped: Called with the number of answers dropped (for /metrics).
    """

    def __init__(self, options: LogOptions, dropped: Any = None) -> None:
        self.options = options
        self.on_dropped = dropped
        self.pending: deque[_Answer] = deque()
        self.pid: int | None = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.file: _LogFile | None = None
        self.held: deque[bytes] = deque()  # lines not yet written whole, oldest first
        self.held_bytes = 0
        self.failing = False
        self.review_failing = False
        self.review = ReviewFolder(
            options.folder / REVIEW_DIR, options.review_below, options.review_max_bytes
        )
        self.dropped = 0
        self.writing = threading.Lock()

    def add(
        self,
        answer: dict[str, Any] | bytes,
        upload: bytes,
        image: np.ndarray,
        at: str,
        latency_s: float,
    ) -> None:
        """Queue an answer for the log (never blocks; drops it if the queue is full).

        Args:
            answer: The answer (`celestial_serve.response.prediction`), or its JSON as sent.
            upload: The uploaded bytes.
            image: The model's input.
            at: The time of the answer (`celestial_models.prediction_log.utc_now`).
            latency_s: Seconds from the request's arrival to its answer.
        """
        if self.pid != os.getpid():
            self._start()
        if len(self.pending) >= MAX_PENDING:
            self._drop(1)
            return
        self.pending.append(_Answer(answer, upload, image, at, latency_s))

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self.on_dropped is not None:
            self.on_dropped(count)

    def _start(self) -> None:
        # In a forked process, the parent's queue, thread and file are not ours.
        self.pid = os.getpid()
        self.pending = deque()
        self.file = None
        self.held, self.held_bytes = deque(), 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(FLUSH_S):
            self._pass()
        self._pass()

    def _pass(self) -> None:
        try:
            self.write_pending()
        except Exception:  # a full disk, a removed folder: say so, and keep serving
            logger.exception("Could not write to the prediction log in %s", self.options.folder)

    def close(self) -> None:
        """Write what is queued and close the file (at the HTTP process's shutdown)."""
        if self.thread is None or self.pid != os.getpid():
            return
        self.stopping.set()
        self.thread.join(timeout=10)
        with self.writing:
            if self.held:  # the disk still refuses them
                logger.error(
                    "%d answers could not be written to the prediction log in %s before the "
                    "server stopped",
                    len(self.held),
                    self.options.folder,
                )
                self._drop(len(self.held))
                self.held.clear()
            if self.file is not None:
                self.file.close()
                self.file = None

    def write_pending(self) -> int:
        """Write every queued answer now; return how many (the thread calls this)."""
        with self.writing:
            return self._write_pending()

    def _write_pending(self) -> int:
        answers = []
        with contextlib.suppress(IndexError):
            while True:
                answers.append(self.pending.popleft())
        if not answers and not self.held:
            return 0
        try:
            lines, kept = self._lines(answers)
        except Exception:
            self._drop(len(answers))
            raise
        self._hold(lines)
        self._append()
        self._offer(kept)
        return len(answers)

    def _offer(self, kept: list[tuple[Any, ...]]) -> None:
        """Offer the review folder its images; a folder that refuses them is said once.

        The log has every answer: only the review copies are lost meanwhile.
        """
        try:
            for digest, unknown, confidence, line, upload in kept:
                self.review.offer(digest, unknown, confidence, line, upload)
        except OSError as error:
            if not self.review_failing:  # said once, not for every image
                logger.error(
                    "Cannot keep images for review in %s (%s): the answers are logged, but "
                    "their images are not kept until it can",
                    self.review.folder,
                    error.strerror or error,
                )
                self.review_failing = True
            return
        if self.review_failing and kept:
            logger.warning("Images for review are kept in %s again", self.review.folder)
            self.review_failing = False

    def _lines(self, answers: list[_Answer]) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The log lines of ``answers``, and what the review folder is offered."""
        if not answers:
            return [], []
        features = image_features(np.stack([answer.image for answer in answers])).tolist()
        lines, kept = [], []
        for answer, row in zip(answers, features, strict=True):
            fields = answer.answer
            if isinstance(fields, bytes):  # the answer as sent, not the object it came from
                fields = json.loads(fields)
            fields = as_gated(fields)
            digest = sha256_holding_gil(answer.upload)
            line = answer_line(fields, row, answer.time, digest, answer.latency_s * 1000)
            lines.append(line)
            unknown, confidence = fields["unknown"], fields["top_k"][0]["probability"]
            if self.review.unsure(unknown, confidence):
                kept.append((digest, unknown, confidence, line, answer.upload))
        return lines, kept

    def _hold(self, lines: list[str]) -> None:
        """Queue ``lines`` for the file, dropping (and counting) those past `MAX_HELD_BYTES`."""
        dropped = 0
        for line in lines:
            data = (line + "\n").encode()
            if self.held and self.held_bytes + len(data) > MAX_HELD_BYTES:
                dropped += 1
                continue
            self.held.append(data)
            self.held_bytes += len(data)
        if dropped:
            logger.error(
                "The prediction log in %s is %d MiB behind (is the disk full?): %d answers "
                "were not recorded",
                self.options.folder,
                MAX_HELD_BYTES // MIB,
                dropped,
            )
            self._drop(dropped)

    def _append(self) -> None:
        """Write the held lines, in order; what the disk refuses stays held for the next pass."""
        if not self.held:
            return
        if self.file is not None and not self.file.still_there():
            logger.warning(
                "The prediction log %s was removed or moved while serving: writing to a new "
                "file in %s",
                self.file.path,
                self.options.folder,
            )
            self.file.close()
            self.file = None
        try:
            if self.file is None:
                self.file = _LogFile.open(self.options.folder)
            self.file.write(self.held)
        except OSError as error:
            if not self.failing:  # said once, not on every pass
                logger.error(
                    "Cannot write to the prediction log in %s (%s): holding up to %d MiB of "
                    "answers until it can",
                    self.options.folder,
                    error.strerror or error,
                    MAX_HELD_BYTES // MIB,
                )
                self.failing = True
            return
        finally:
            self.held_bytes = sum(map(len, self.held))
        if self.failing:
            logger.warning("The prediction log in %s is written again", self.options.folder)
            self.failing = False
        if self.file.size >= self.options.max_bytes:
            self.file.close()
            self.file = None


def as_gated(answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` as the unknown-image gate decided it, for the log.

    A client may ask for the closest class of an unknown image (``reject``
    off); the log still records it as unknown, so that monitoring and the
    review folder see every image the model does not know.
    """
    score, threshold = answer.get("score"), answer.get("threshold")
    if answer["unknown"] or score is None or threshold is None or score <= threshold:
        return answer
    return {**answer, "label": UNKNOWN, "unknown": True}


class _LogFile:
    """One open log file, written with ``os.write``: nothing buffered out of sight."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self.descriptor = descriptor
        status = os.fstat(descriptor)
        self.identity = (status.st_dev, status.st_ino)
        self.size = status.st_size
        self.synced = time.monotonic()

    @classmethod
    def open(cls, folder: Path) -> _LogFile:
        """A new file in ``folder`` (made again if it was removed)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / log_file_name(datetime.now(UTC), os.getpid())
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        return cls(path, os.open(path, flags, 0o666))

    def still_there(self) -> bool:
        """Whether the file is still at its path (not removed, or moved with its folder)."""
        try:
            status = os.stat(self.path)
        except OSError:
            return False
        return (status.st_dev, status.st_ino) == self.identity

    def write(self, held: deque[bytes]) -> None:
        """Write the lines of ``held`` in one go, removing each once it is written whole.

        A line the disk took part of is kept with the rest cut off, to be
        finished first on the next call.

        Raises:
            OSError: What the disk said; ``held`` then holds what is left.
        """
        data = b"".join(held)
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                done += os.write(self.descriptor, view[done:])
        finally:
            self.size += done
            while held and done >= len(held[0]):
                done -= len(held.popleft())
            if held and done:
                held[0] = held[0][done:]
        now = time.monotonic()
        if now - self.synced >= SYNC_S:
            os.fsync(self.descriptor)
            self.synced = now

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.descriptor)
