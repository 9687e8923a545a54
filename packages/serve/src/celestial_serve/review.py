"""The review folder: the uploads a served model was unsure of, for people to label.

``<log dir>/review/`` holds, for each kept image, ``<digest>.<ext>`` (the
uploaded bytes as sent; the extension from the detected format) and
``<digest>.json`` (its prediction record, one line). An image is kept when the
answer is unknown or the closest class's probability is below a threshold;
the same image (digest) is kept once; past a size cap the oldest go first.
Files are written under a hidden temporary name and renamed into place, the
record last, so a reader that sees ``<digest>.json`` also finds the image; a
write the disk refuses leaves nothing behind. The prediction log comes
first: no image is kept while its disk has less than `RESERVE_BYTES` free
besides it, and a folder removed while serving is made again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path

from celestial_models.prediction_log import PredictionRecord

logger = logging.getLogger(__name__)

__all__ = ["EXTENSIONS", "RESERVE_BYTES", "REVIEW_DIR", "ReviewFolder", "extension", "free_bytes"]

#: The review folder's name inside the log folder.
REVIEW_DIR = "review"
#: File extensions by Pillow format name; other formats use the first that
#: Pillow registers for them (``jp2`` for JPEG 2000), so that the review folder's
#: readers, which pick images by their extension, take every kept image.
EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
    "WEBP": "webp",
}
#: Seconds between re-reads of the folder, to see what other HTTP processes kept.
RESCAN_S = 10.0
#: Bytes the disk must keep free besides a kept image, for the prediction log.
RESERVE_BYTES = 128 * 2**20


#: The first bytes of the common formats: their extension without asking Pillow.
SIGNATURES = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)


def extension(data: bytes) -> str:
    """The file extension of an encoded image, from the format Pillow detects (``bin`` if none)."""
    for signature, known in SIGNATURES:  # every upload kept is sniffed: Pillow takes longer
        if data.startswith(signature):
            return known
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            name = image.format or ""
    except Exception:  # the server decoded it, so this is not expected: keep it anyway
        name = ""
    if name in EXTENSIONS:
        return EXTENSIONS[name]
    registered = (ext for ext, fmt in Image.registered_extensions().items() if fmt == name)
    return next(registered, ".bin")[1:]


def free_bytes(folder: str) -> int:
    """Bytes an unprivileged process may still write on the disk of ``folder``."""
    status = os.statvfs(folder)
    return status.f_bavail * status.f_frsize


class ReviewFolder:
    """Keep uncertain uploads in ``folder``, at most ``max_bytes`` of them (oldest out first).

    Args:
        folder: The review folder (created if missing).
        below: Keep answers whose closest class's probability is below this.
        max_bytes: The cap on the folder's images and records together.
    """

    def __init__(self, folder: Path, below: float, max_bytes: int) -> None:
        self.folder = folder
        self.place = os.fspath(folder)
        self.below = below
        self.max_bytes = max_bytes
        self.entries: OrderedDict[str, int] = OrderedDict()  # digest -> bytes, oldest first
        self.total = 0
        self.scanned = 0.0
        self.added = False
        self.short_of_space = False

    def unsure(self, unknown: bool, confidence: float) -> bool:
        """Whether an answer (``unknown``, closest class's probability) is to be kept."""
        return self.max_bytes > 0 and (unknown or confidence < self.below)

    def keep(self, record: PredictionRecord, line: str, data: bytes) -> bool:
        """Keep ``data``, the upload ``record`` (``line``) answers, if wanted; return if added."""
        if record.digest is None:
            return False
        return self.offer(record.digest, record.unknown, record.confidence, line, data)

    def offer(self, digest: str, unknown: bool, confidence: float, line: str, data: bytes) -> bool:
        """`keep` for an answer not made into a record: its digest, fields and line."""
        if not self.unsure(unknown, confidence):
            return False
        if not os.path.isdir(self.place):  # not made yet, or removed while serving
            os.makedirs(self.place, exist_ok=True)
            self.scan()
        elif time.monotonic() - self.scanned > RESCAN_S and (self.added or not self.scanned):
            self.scan()
        if digest in self.entries:
            return False
        text = (line + "\n").encode()
        size = len(data) + len(text)
        if size > self.max_bytes:
            return False
        if os.path.exists(f"{self.place}/{digest}.json"):  # kept by another HTTP process
            return False
        if free_bytes(self.place) < size + RESERVE_BYTES:
            if not self.short_of_space:
                logger.warning(
                    "Less than %d MiB free on the disk of %s: uploads are not kept for review "
                    "until there is more (the prediction log still records every answer)",
                    RESERVE_BYTES // 2**20,
                    self.place,
                )
            self.short_of_space = True
            return False
        self.short_of_space = False
        self._write(f"{digest}.{extension(data)}", data)
        self._write(f"{digest}.json", text)
        self.entries[digest] = size
        self.total += size
        self.added = True
        while self.total > self.max_bytes and len(self.entries) > 1:
            self._evict(*self.entries.popitem(last=False))
        return True

    def _write(self, name: str, data: bytes) -> None:
        # os calls on strings: this runs in the HTTP process for every image kept.
        folder = self.place
        partial = f"{folder}/.{name}.partial"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(descriptor, view) :]
            finally:
                os.close(descriptor)
            os.replace(partial, f"{folder}/{name}")
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise

    def _evict(self, digest: str, size: int) -> None:
        self.total -= size
        for path in sorted(self.folder.glob(f"{digest}.*"), key=lambda p: p.suffix != ".json"):
            with contextlib.suppress(FileNotFoundError):  # another process took it
                path.unlink()

    def scan(self) -> None:
        """Re-read the folder: its entries, oldest first by their record's time of writing."""
        sizes: dict[str, int] = {}
        times: dict[str, float] = {}
        with os.scandir(self.folder) as listing:
            for entry in listing:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                digest, _, suffix = entry.name.partition(".")
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat()
                    sizes[digest] = sizes.get(digest, 0) + stat.st_size
                    if suffix == "json":
                        times[digest] = stat.st_mtime
        ordered = sorted(times, key=times.__getitem__)
        self.entries = OrderedDict((digest, sizes[digest]) for digest in ordered)
        self.total = sum(self.entries.values())
        self.scanned = time.monotonic()
        self.added = False
