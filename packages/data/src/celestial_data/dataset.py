"""Find the images of a raw dataset folder and read what each file holds.

A raw dataset is laid out as ``<root>/<ClassName>/<image files>``. Class names
are the folder names, sorted, so the label order never depends on the order a
file system lists them in. Files are named by their path relative to the root,
with ``/`` separators, on every platform.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from celestial_data.errors import DatasetError
from celestial_data.image import decode, edge_brightness, pixel_digest

__all__ = [
    "FileInfo",
    "RawDataset",
    "can_fork",
    "default_workers",
    "image_extensions",
    "inspect_files",
    "is_image_name",
    "listing",
    "parallel_map",
    "read_image",
    "scan",
]

T = TypeVar("T")
R = TypeVar("R")

# Items handed to the worker threads at a time: enough to keep both cores busy,
# few enough that memory does not grow with the dataset.
CHUNK = 256
BATCH = 8


@dataclass(frozen=True)
class RawDataset:
    """The class folders of a raw dataset and the files found in them."""

    root: Path
    classes: tuple[str, ...]
    files: dict[str, list[str]]
    """For each class, the image files (relative to ``root``), sorted."""
    ignored: list[str] = field(default_factory=list)
    """Files that are not images (by extension) or are hidden, sorted."""
    hidden: list[str] = field(default_factory=list)
    """Hidden folders beside the class folders (``.name``) that hold images, never read."""

    @property
    def total(self) -> int:
        """Number of image files over all classes."""
        return sum(len(files) for files in self.files.values())


@dataclass(slots=True)
class FileInfo:
    """What one image file holds; ``error`` is set when it cannot be read."""

    file: str
    label: int
    sha256: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    error: str = ""
    pixels: str = ""
    """SHA-256 of the decoded RGB pixels (`pixel_digest`), when they were hashed."""
    edge: float | None = None
    """Median brightness of the picture's edges (`edge_brightness`), when it was decoded."""


@cache
def image_extensions() -> frozenset[str]:
    """Lower-case file extensions (with the dot) that Pillow can open."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.EXTENSION.items() if fmt in Image.OPEN)


@cache
def _common_extensions() -> frozenset[str]:
    Image.preinit()  # JPEG, PNG, GIF, BMP, PPM: cheap, unlike loading every plugin
    return frozenset(ext for ext, fmt in Image.EXTENSION.items() if fmt in Image.OPEN)


# Never images: no need to load every Pillow plugin to rule them out.
_NOT_IMAGES = frozenset(
    ".txt .md .rst .csv .tsv .json .yaml .yml .dvc .py .html .xml .db .ini .log .zip".split()  # noqa: SIM905
)


def is_image_name(name: str) -> bool:
    """Whether a file name looks like an image Pillow reads (hidden files never do)."""
    suffix = os.path.splitext(name)[1].lower()
    if name.startswith(".") or not suffix or suffix in _NOT_IMAGES:
        return False
    return suffix in _common_extensions() or suffix in image_extensions()


def _walk(folder: Path, root: Path) -> Iterator[str]:
    """Relative paths of every file under ``folder``, skipping hidden folders."""
    for current, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(current).relative_to(root)
        for name in names:
            yield (base / name).as_posix()


#: Folders an archiver adds beside the class folders: macOS's zip keeps each
#: file's metadata under ``__MACOSX/`` (``._`` files, not images), so a dataset
#: zipped on a Mac and unzipped elsewhere would seem to hold a class of that name.
ARCHIVE_FOLDERS = frozenset({"__MACOSX"})


#: Hidden folders that tools keep beside a dataset's folders: never a class hidden by mistake.
TOOL_FOLDERS = frozenset(
    ".git .dvc .hg .svn .ipynb_checkpoints .thumbnails .Trashes .AppleDouble .fseventsd".split()  # noqa: SIM905
)


def scan(root: str | Path) -> RawDataset:
    """List the classes and image files of a raw dataset folder.

    Hidden files, files whose extension Pillow does not read, loose files
    beside the class folders and the files of an archiver's folder
    (`ARCHIVE_FOLDERS`) are ignored and listed in ``ignored``; hidden folders
    are skipped (those beside the class folders that hold images are listed in
    ``hidden``). Images in sub-folders of a class folder belong to that class.

    Args:
        root: The dataset folder, laid out as ``root/<ClassName>/<image files>``.

    Returns:
        The classes (sorted) and their files.

    Raises:
        DatasetError: If the folder is missing or has fewer than two class
            folders. A class folder without image files is listed with no
            files: `celestial_data.check` reports it with every other problem.
    """
    root = Path(root)
    layout = f"{root}/<ClassName>/<image files>"
    if root.is_file():
        raise DatasetError(
            f"{root} is a file, not a raw dataset folder. Pass the folder laid out as {layout}."
        )
    if not root.is_dir():
        raise DatasetError(
            f"Raw dataset folder {root} not found. Expected a folder laid out as {layout}."
        )
    classes: list[str] = []
    ignored: list[str] = []
    hidden: list[str] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir():
            ignored.append(entry.name)
        elif entry.name in ARCHIVE_FOLDERS:
            archive = root / entry.name
            ignored += [f"{entry.name}/{path}" for path in _walk(archive, archive)]
        elif entry.name.startswith("."):
            if entry.name not in TOOL_FOLDERS and _holds_images(entry.path):
                hidden.append(entry.name)  # a class hidden by mistake
        else:
            classes.append(entry.name)
    if not classes:
        found = f" (found only {len(ignored)} loose files)" if ignored else ""
        raise DatasetError(
            f"No class folders in {root}{found}. Expected {layout}: put each class's "
            "images in a sub-folder named after the class."
        )
    if len(classes) == 1:
        inner = root / classes[0]
        nested = sorted(
            entry.name
            for entry in os.scandir(inner)
            if entry.is_dir() and not entry.name.startswith(".")
        )
        hint = (
            f" It holds {len(nested)} folders of its own ({listing(nested, limit=5)}): if those "
            f"are the classes, give {inner} as the raw folder, or move them up into {root} (an "
            "archive often wraps its folders in one)."
            if len(nested) > 1
            else ""
        )
        raise DatasetError(
            f"Only one class folder in {root} ('{classes[0]}'): a classifier needs at "
            f"least two. Add one folder of images per class, as {layout}.{hint}"
        )
    files: dict[str, list[str]] = {}
    for name in classes:
        images: list[str] = []
        others: list[str] = []
        for relative in sorted(_walk(root / name, root)):
            leaf = relative.rsplit("/", 1)[-1]
            (images if is_image_name(leaf) else others).append(relative)
        files[name] = images  # none: an error of the check, listed with the others
        ignored += others
    return RawDataset(
        root=root, classes=tuple(classes), files=files, ignored=sorted(ignored), hidden=hidden
    )


def _holds_images(folder: str) -> bool:
    """Whether ``folder`` itself (not its sub-folders) holds a file named as an image."""
    try:
        return any(e.is_file() and is_image_name(e.name) for e in os.scandir(folder))
    except OSError:
        return False


def listing(names: Sequence[str], limit: int = 10) -> str:
    """The first ``limit`` of ``names``, comma-separated, and how many more there are."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def default_workers() -> int:
    """Threads to decode with: one per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def can_fork() -> bool:
    """Whether this process may be forked safely: Linux, one thread, no JAX runtime loaded.

    A fork copies only the thread that calls it; a lock another thread held
    stays held for ever in the child. JAX's runtime keeps threads of its own,
    which Python does not count; macOS system libraries may not survive a fork.
    """
    return sys.platform == "linux" and threading.active_count() == 1 and "jax" not in sys.modules


#: The function forked workers of `parallel_map` run, set before they are
#: forked: it need not be picklable (a closure over a dataset will do).
_forked: Callable[[Any], Any] | None = None


def _run_forked(batch: list[Any]) -> list[Any]:
    assert _forked is not None, "set before the workers are forked"
    return [_forked(item) for item in batch]


def parallel_map(
    function: Callable[[T], R],
    items: Iterable[T],
    workers: int | None = None,
    *,
    processes: bool = False,
) -> Iterator[R]:
    """Yield ``function(item)`` for each item, in order, computed by workers.

    Pillow releases the GIL while it decodes and resizes, so threads use every
    core on large pictures without copying arrays between processes. On small
    ones (a 128-pixel render decodes in half a millisecond) Python's own work
    between Pillow's calls holds the GIL most of the time, and two threads took
    longer than one: with ``processes``, items and results travel to and from
    forked worker processes instead, when this process may be forked
    (`can_fork`), else threads are used. Results must then be picklable, and
    what ``function`` changes in an item stays in the worker: return it.
    Items are taken a chunk at a time, so results never pile up in memory.

    Raises:
        DatasetError: If a worker process died without an error of its own
            (killed: most likely by the out-of-memory killer, on a huge picture).
    """
    workers = workers or default_workers()
    iterator = iter(items)
    if workers == 1:
        yield from map(function, iterator)
        return
    if processes and can_fork():
        global _forked
        _forked = function
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as forked:
                yield from _chunked(forked, _run_forked, iterator)
        except BrokenProcessPool:
            raise DatasetError(
                "A worker process reading the images stopped without an error of its own: it "
                "was killed, most likely by the system's out-of-memory killer on a very large "
                "picture. Free memory, or shrink or remove the largest pictures, and run again."
            ) from None
        finally:
            _forked = None
        return

    def run(batch: list[T]) -> list[R]:
        return [function(item) for item in batch]

    with ThreadPoolExecutor(max_workers=workers) as threads:
        yield from _chunked(threads, run, iterator)


def _chunked(
    executor: Executor, run: Callable[[list[T]], list[R]], iterator: Iterator[T]
) -> Iterator[R]:
    # Each task is a small batch of items: a future per item would cost as
    # much as hashing a small file.
    while chunk := list(islice(iterator, CHUNK)):
        batches = [chunk[start : start + BATCH] for start in range(0, len(chunk), BATCH)]
        for results in executor.map(run, batches):
            yield from results


def read_info(root: Path, file: str, label: int, pixels: bool = False) -> FileInfo:
    """Hash one file; with ``pixels``, also decode it, read its header and hash its pixels.

    Decoding is what finds truncated and unidentifiable files; hashing alone
    only finds empty ones. The pixels' hash (``info.pixels``) finds the same
    picture in other containers.
    """
    if pixels:
        return read_image(root, file, label)[0]
    info = FileInfo(file=file, label=label)
    read_bytes(root, info)
    return info


def read_image(root: Path, file: str, label: int) -> tuple[FileInfo, Image.Image | None]:
    """`read_info` with ``pixels``, and the decoded picture (None where ``error`` is set)."""
    info = FileInfo(file=file, label=label)
    data = read_bytes(root, info)
    image = decode_into(info, data) if data else None
    if image is None:
        return info, None
    try:
        info.pixels = pixel_digest(image)
        info.edge = edge_brightness(image)
    except Exception as error:  # e.g. a mode Pillow cannot convert
        info.error = describe_error(error)
        return info, None
    return info, image


def read_bytes(root: Path, info: FileInfo, digest: bool = True) -> bytes:
    """The file's bytes, hashed into ``info`` (``b""`` with ``info.error`` set if unusable).

    Args:
        root: The dataset folder.
        info: The file's record; ``file`` names it, ``sha256`` and ``error`` are set.
        digest: Whether to hash the bytes (a second read after hashing need not).
    """
    try:
        with open(os.path.join(root, info.file), "rb") as stream:
            data = stream.read()
    except OSError as error:
        info.error = f"cannot be read: {error.strerror or error}"
        return b""
    if digest:
        info.sha256 = hashlib.sha256(data).hexdigest()
    if not data:
        info.error = "empty file (0 bytes)"
    return data


def decode_into(info: FileInfo, data: bytes) -> Image.Image | None:
    """Decode ``data`` with `decode`, recording its header (or its error) in ``info``."""
    header: dict[str, Any] = {}
    try:
        image = decode(data, header)
    except Exception as error:  # Pillow raises many types for broken files
        info.error = describe_error(error)
        return None
    info.width, info.height = header["width"], header["height"]
    info.mode, info.format = header["mode"], header["format"]
    return image


def describe_error(error: Exception) -> str:
    """A short reason for a file Pillow could not read."""
    if isinstance(error, Image.UnidentifiedImageError):
        return "not a readable image"
    text = str(error).split("\n", 1)[0].strip() or type(error).__name__
    return text[:120]


def inspect_files(
    dataset: RawDataset,
    workers: int | None = None,
    pixels: bool = False,
    *,
    processes: bool = False,
) -> list[FileInfo]:
    """Hash (and optionally decode) every image of ``dataset``, in parallel.

    Args:
        dataset: What `scan` found.
        workers: Threads to use (default: one per core).
        pixels: Also decode each image, read its header and hash its pixels
            (``FileInfo.pixels``).
        processes: Work in processes when it is safe (see `parallel_map`).

    Returns:
        One `FileInfo` per image, by class then file name.
    """
    jobs = [
        (file, label) for label, name in enumerate(dataset.classes) for file in dataset.files[name]
    ]
    return list(
        parallel_map(
            lambda job: read_info(dataset.root, job[0], job[1], pixels),
            jobs,
            workers,
            processes=processes,
        )
    )
