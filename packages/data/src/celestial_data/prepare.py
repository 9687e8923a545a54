"""Prepare a raw dataset folder: check it, split it and write the prepared format.

`prepare_dataset` decodes each picture once, and memory stays flat however
many images there are:

1. on every core, read and hash every file, decode it, hash its pixels, and
   draw its array and its varied copies (`celestial_data.vary`) into a
   scratch file, in file order (the file's hash decides its split, unless
   other files hold the same pixels: then the group's smallest file hash
   does, so the group stays in one split);
2. for each split in turn, copy its rows from the scratch file to
   ``<split>_images.npy``, in order.

Where the splits ask for different numbers of copies, the first pass draws
the fewest any split asks for, and a second one the rest of the splits that
ask for more (copy ``k`` of a file is the same whichever pass draws it).

The outputs (see `celestial_data.prepared`) plus ``report.json`` and
``preview.png`` are byte-identical when inputs and params are, so DVC sees an
unchanged stage as unchanged.

Everything is written into a hidden staging folder beside the output folder
and moved into it only once the whole dataset is written, so a prepare that
fails (bad images, an interrupt) leaves the output folder as it found it:
absent (as DVC leaves it, having removed the stage's outputs), or holding the
earlier prepare's dataset, never an empty or half-written one.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Self

import numpy as np
from PIL import Image
from pydantic import Field, model_validator

from celestial_data.check import CheckReport, OnCorrupt, build_report
from celestial_data.dataset import (
    FileInfo,
    RawDataset,
    decode_into,
    describe_error,
    parallel_map,
    read_bytes,
    read_image,
    scan,
)
from celestial_data.errors import DatasetError
from celestial_data.image import ColorMode, ImageFormat, to_array
from celestial_data.params import Params
from celestial_data.prepared import (
    ARRAY_SPLITS,
    DATASET_FILE,
    MANIFEST_FILE,
    TEST_VARIED,
    TRAIN_VARIED,
    VARIED,
    PreparedDataset,
    load_prepared,
    write_dataset_json,
    write_manifest,
)
from celestial_data.preview import write_preview
from celestial_data.split import split_digests, split_of, stratified_splits
from celestial_data.vary import copy_rng, reduced, vary
from celestial_data.view import ViewParams

__all__ = ["PREVIEW_FILE", "REPORT_FILE", "PrepareParams", "PrepareResult", "prepare_dataset"]


class PrepareParams(Params):
    """The ``prepare`` section of ``params.yaml``."""

    section = "prepare"

    image_size: int = Field(
        32,
        ge=4,
        le=1024,
        description="side of the square images the model sees, in pixels (4 to 1024); images "
        "are resized to it (prepare warns when it is over twice the largest picture's side: "
        "training's memory and time grow with its square)",
    )
    color_mode: ColorMode = Field(
        "rgb",
        description="`rgb` (3 channels) or `grayscale` (1 channel); every image is converted "
        "to it, whatever its mode on disk",
    )
    seed: int = Field(
        42,
        description="seed of the split: an image's split is drawn from a seeded hash of its "
        "content",
    )
    split: Literal["hashed", "stratified"] = Field(
        "hashed",
        description="`hashed`: each image's split is drawn from its content alone, so adding "
        "images never moves existing ones, and each class gets its shares on average (a class "
        "of a few dozen images may get half its share, or none); `stratified`: each class is "
        "cut to the nearest image by the fractions (its images ranked by the same hash), so "
        "adding an image may move the image at each of its class's boundaries",
    )
    val_fraction: float = Field(
        0.15,
        gt=0,
        lt=1,
        description="share of each class put in the validation split (above 0 and below 1: "
        "training stops early and calibrates the unknown-image threshold on it; on average "
        "with `split: hashed`)",
    )
    test_fraction: float = Field(
        0.15,
        ge=0,
        lt=1,
        description="share of each class put in the test split; `0` means no test split, and "
        "evaluation then uses validation (on average with `split: hashed`)",
    )
    on_corrupt: OnCorrupt = Field(
        "error",
        description="what an unreadable, truncated or empty image does: `error` stops with the "
        "list of files; `skip` leaves them out and lists them in `report.json`",
    )
    varied: int = Field(
        0,
        ge=0,
        le=16,
        description="varied copies of each validation picture, drawn from the source picture "
        "(shrunk, shifted, turned, blurred, noisy, recompressed, and exposed otherwise when "
        "`view.exposure` is on: `celestial_data.vary`) and "
        "written as the `varied` split; training calibrates the unknown-image threshold on them "
        "too, so known bodies in pictures unlike the training ones are accepted as often; 0 "
        "writes none",
    )
    train_varied: int = Field(
        0,
        ge=0,
        le=16,
        description="varied copies of each training picture, drawn as `varied`'s are and "
        "written as the `train_varied` split; training fits the model on them with the "
        "training pictures, so it learns bodies framed, turned, blurred and compressed "
        "otherwise, as the view cannot make them alike; each copy is one more training image "
        "an epoch, so training takes that much longer; 0 writes none",
    )
    test_varied: int = Field(
        0,
        ge=0,
        le=16,
        description="varied copies of each test picture, drawn as `varied`'s are and written "
        "as the `test_varied` split; `evaluate` reports the model's accuracy and the share it "
        "accepts as known on them (`varied` in `metrics.json`), so every experiment shows how "
        "the model holds up on pictures unlike the project's; nothing trains or calibrates on "
        "them; 0 writes none",
    )

    view: ViewParams = ViewParams()

    @model_validator(mode="after")
    def _leaves_training_images(self) -> Self:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                "val_fraction + test_fraction must leave images for training (sum below 1). "
                f"Received: {self.val_fraction} + {self.test_fraction}"
            )
        return self

    @property
    def image_format(self) -> ImageFormat:
        """The size, colour mode and view of the prepared images."""
        return ImageFormat(self.image_size, self.color_mode, self.view)


REPORT_FILE = "report.json"
PREVIEW_FILE = "preview.png"
#: The staging folder's file of every picture's array and first copies, in file order.
SCRATCH = ".arrays"


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare_dataset` wrote."""

    dataset: PreparedDataset
    report: CheckReport
    split_counts: dict[str, dict[str, int]]
    """Images per class in each split."""


def _output_names() -> list[str]:
    arrays = [f"{split}_{kind}.npy" for split in ARRAY_SPLITS for kind in ("images", "labels")]
    return [*arrays, DATASET_FILE, MANIFEST_FILE, REPORT_FILE, PREVIEW_FILE]


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` to write into; on failure, removed with what it made.

    Folders made on the way to ``out`` are removed too, each only if still empty.
    """
    if out.exists() and not out.is_dir():
        raise DatasetError(f"The output folder {out} is a file. Remove it or choose another.")
    made = _missing_folders(out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 folder would become ``out`` itself.
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.partial"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # something else was put there meanwhile: keep it
                break
        raise


def _publish(staging: Path, out: Path) -> None:
    """Move the staged outputs into ``out``, replacing what an earlier prepare wrote there.

    Files of ``out`` that prepare does not write are kept; an earlier output
    that this run did not write (a split that no longer exists) is removed.
    """
    if not out.exists():
        os.replace(staging, out)
        return
    written = {path.name for path in staging.iterdir()}
    for name in written:
        os.replace(staging / name, out / name)
    for name in set(_output_names()) - written:
        (out / name).unlink(missing_ok=True)
    staging.rmdir()


def _npy_header(shape: tuple[int, ...]) -> bytes:
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, header)
    return stream.getvalue()


def _arrays(
    info: FileInfo,
    image: Image.Image | None,
    image_format: ImageFormat,
    clean: bool,
    copies: range,
    seed: int,
) -> bytes:
    """The picture's array (with ``clean``) and its varied copies ``copies``, as bytes.

    Copy ``k`` of a file is drawn from its own generator (`copy_rng`), so it
    is the same whichever pass draws it. ``b""`` where the picture is unusable:
    ``info.error`` says why.
    """
    if image is None:
        return b""
    try:
        arrays = [to_array(image, image_format)] if clean else []
        if copies:
            source = reduced(image, image_format)  # a large photo's copies cost a small one's
            exposure = image_format.view.exposure
            arrays += [
                to_array(vary(source, copy_rng(seed, info.file, k), exposure), image_format)
                for k in copies
            ]
    except Exception as error:  # e.g. a mode Pillow cannot convert
        info.error = describe_error(error)
        return b""
    return b"".join(array.tobytes() for array in arrays)


def _read(
    root: Path, job: tuple[str, int], image_format: ImageFormat, copies: range, seed: int
) -> tuple[FileInfo, bytes]:
    """Read, hash and decode one file; its array and first varied copies as bytes."""
    info, image = read_image(root, *job)
    return info, _arrays(info, image, image_format, True, copies, seed)


def _reread(
    root: Path, info: FileInfo, image_format: ImageFormat, copies: range, seed: int
) -> tuple[str, bytes]:
    """The further varied copies of a file read before: its error, or their bytes."""
    again = FileInfo(file=info.file, label=info.label)
    data = read_bytes(root, again)
    image = decode_into(again, data) if data else None
    if not again.error and again.sha256 != info.sha256:
        again.error = "changed while prepare read it"
    return again.error, _arrays(again, image, image_format, False, copies, seed)


def _write_rows(path: Path, shape: tuple[int, ...], rows: Iterable[bytes]) -> None:
    """Write a ``.npy`` file of ``shape`` from its rows' bytes, in order."""
    with open(path, "wb") as stream:
        stream.write(_npy_header(shape))
        for row in rows:
            stream.write(row)


class _Scratch:
    """Each picture's array and first copies, one row a picture, read back a part at a time.

    Read with plain reads, not a memory map: a map's pages count as the
    process's memory, which would grow with the dataset.
    """

    def __init__(self, path: Path, item: int, items: int) -> None:
        self.path, self.item, self.row = path, item, item * items
        self.rows: dict[str, int] = {}  # file -> row

    def add(self, stream: IO[bytes], file: str, data: bytes) -> None:
        self.rows[file] = len(self.rows)
        stream.write(data)

    def parts(self, infos: list[FileInfo], start: int, stop: int) -> Iterator[bytes]:
        """Items ``start`` to ``stop`` of each file's row, in the order of ``infos``."""
        with open(self.path, "rb") as stream:
            for info in infos:
                stream.seek(self.rows[info.file] * self.row + start * self.item)
                yield stream.read((stop - start) * self.item)


def _split_names(params: PrepareParams) -> list[str]:
    """The splits ``params`` make: train and val, and test unless its fraction is 0."""
    return ["train", "val"] + (["test"] if params.test_fraction > 0 else [])


def _with_more_copies(
    scratch: _Scratch,
    infos: list[FileInfo],
    copies: range,
    dataset: RawDataset,
    params: PrepareParams,
    workers: int | None,
) -> Iterator[bytes]:
    """Each picture's copies: the first pass's, then ``copies``, drawn in a second pass."""
    more = parallel_map(
        lambda info: _reread(dataset.root, info, params.image_format, copies, params.seed),
        infos,
        workers,
        processes=True,
    )
    drawn = scratch.parts(infos, 1, 1 + copies.start)
    for info, before, (error, data) in zip(infos, drawn, more, strict=True):
        if error:
            raise DatasetError(
                f"{dataset.root / info.file} was read a moment ago and now is not usable "
                f"({error}): was it changed while prepare ran? Run prepare again."
            )
        yield before + data


def _split_entries(infos: list[FileInfo], params: PrepareParams) -> dict[str, list[FileInfo]]:
    entries: dict[str, list[FileInfo]] = {split: [] for split in _split_names(params)}
    good = [info for info in infos if not info.error]
    digests = split_digests((info.sha256, info.pixels) for info in good)
    fractions = (params.val_fraction, params.test_fraction)
    if params.split == "stratified":
        images = [(digests[info.sha256], info.label, info.file) for info in good]
        splits = stratified_splits(images, params.seed, *fractions)
    else:
        splits = [split_of(digests[info.sha256], params.seed, *fractions) for info in good]
    for info, split in zip(good, splits, strict=True):
        entries[split].append(info)
    return entries


def prepare_dataset(
    raw: str | Path,
    out: str | Path,
    params: PrepareParams | Mapping[str, Any] | None = None,
    workers: int | None = None,
) -> PrepareResult:
    """Check, split and write a raw dataset in the prepared format.

    Args:
        raw: The raw folder, laid out as ``raw/<ClassName>/<image files>``.
        out: The output folder (created; earlier outputs in it are replaced
            once the new ones are all written).
        params: The ``prepare`` section (default: its defaults).
        workers: Processes to decode with, or threads where this process may not
            fork (see `parallel_map`); default: one per core.

    Returns:
        The prepared dataset, the check report and the counts per split.

    Raises:
        DatasetError: If the raw folder has errors (see `check_dataset`);
            ``out`` is left as it was then (absent, or holding the earlier
            dataset).
    """
    params = PrepareParams.of(params)
    out = Path(out)
    if out.resolve().is_relative_to(Path(raw).resolve()):
        raise DatasetError(
            f"The output folder {out} is inside the raw folder {raw}: its files would be "
            "read as images next time. Write the prepared dataset elsewhere."
        )
    dataset = scan(raw)
    image_format = params.image_format
    shape = image_format.shape
    # Copies of every split: drawn in the first pass, with the picture decoded once.
    wanted = {
        VARIED: ("val", params.varied),
        TRAIN_VARIED: ("train", params.train_varied),
        TEST_VARIED: ("test", params.test_varied),
    }
    made = _split_names(params)
    first = min(count for source, count in wanted.values() if source in made)
    jobs = [
        (file, label) for label, name in enumerate(dataset.classes) for file in dataset.files[name]
    ]
    with _staging(out) as staging:
        scratch = _Scratch(staging / SCRATCH, int(np.prod(shape)), 1 + first)
        infos: list[FileInfo] = []
        with open(scratch.path, "wb") as stream:
            for info, data in parallel_map(
                lambda job: _read(dataset.root, job, image_format, range(first), params.seed),
                jobs,
                workers,
                processes=True,
            ):
                infos.append(info)
                if data:
                    scratch.add(stream, info.file, data)
        report = build_report(dataset, infos, params.on_corrupt, params.view)
        if not report.ok:
            raise DatasetError(" ".join(report.errors))
        entries = _split_entries(infos, params)
        for split, split_infos in entries.items():
            rows = scratch.parts(split_infos, 0, 1)
            _write_rows(staging / f"{split}_images.npy", (len(split_infos), *shape), rows)
            labels = np.array([info.label for info in split_infos], dtype=np.int32)
            np.save(staging / f"{split}_labels.npy", labels)
        copied: dict[str, list[FileInfo]] = {}
        for split, (source, count) in wanted.items():
            # Each source picture's copies, in the order of its split.
            copied[split] = [info for info in entries.get(source, []) for _ in range(count)]
            if not copied[split]:
                continue
            rows = scratch.parts(entries[source], 1, 1 + count)
            if count > first:
                more = range(first, count)
                rows = _with_more_copies(scratch, entries[source], more, dataset, params, workers)
            _write_rows(staging / f"{split}_images.npy", (len(copied[split]), *shape), rows)
            labels = np.array([info.label for info in copied[split]], dtype=np.int32)
            np.save(staging / f"{split}_labels.npy", labels)
        scratch.path.unlink()
        counts = _finish(staging, dataset, params, entries, copied, report)
        _publish(staging, out)
    return PrepareResult(dataset=load_prepared(out), report=report, split_counts=counts)


#: A split holding less than this share of what its fraction asks is warned about.
SHORT_SPLIT = 0.5
#: An ``image_size`` more than this many times the largest picture's side is warned about.
ENLARGED = 2


def _size_warnings(infos: list[FileInfo], params: PrepareParams) -> list[str]:
    """A warning when ``image_size`` enlarges even the largest picture many times."""
    largest = max((max(info.width, info.height) for info in infos), default=0)
    if not largest or params.image_size <= ENLARGED * largest:
        return []
    times = params.image_size / largest
    return [
        f"image_size {params.image_size} enlarges even the largest picture ({largest} pixels "
        f"across) {times:.0f} times: no detail is gained, and training's memory and time grow "
        f"with the square of the size ({times**2:.0f} times those at {largest}). Set image_size "
        f"in the prepare section of params.yaml to {largest} or less."
    ]


def _split_warnings(counts: dict[str, dict[str, int]], params: PrepareParams) -> list[str]:
    """Warnings for a class missing from a split, and a split far short of its fraction."""
    stratify = (
        " Or set 'split: stratified' in the prepare section of params.yaml: each class is then "
        "cut to the nearest image by the fractions."
        if params.split == "hashed"
        else ""
    )
    warnings = []
    for split, per_class in counts.items():
        empty = [name for name, n in per_class.items() if n == 0]
        if empty:
            warnings.append(
                f"Split '{split}' has no images of {', '.join(empty)}: the class is too "
                f"small for the split fractions. Add images or raise the fraction.{stratify}"
            )
    if params.split != "hashed":  # stratified: each class's shares to the nearest image
        return warnings
    total = sum(sum(per_class.values()) for per_class in counts.values())
    sizes: dict[str, int] = {}
    for per_class in counts.values():
        for name, n in per_class.items():
            sizes[name] = sizes.get(name, 0) + n
    for split, fraction in (("val", params.val_fraction), ("test", params.test_fraction)):
        per_class = counts.get(split, {})
        held = sum(per_class.values())
        short = [
            f"{name} ({per_class[name]} of {size} images, about {fraction * size:.2g} asked)"
            for name, size in sizes.items()
            if 0 < per_class.get(name, 0) < SHORT_SPLIT * fraction * size
        ]
        if held < SHORT_SPLIT * fraction * total:
            warnings.append(
                f"Split '{split}' holds {held} of the {total} images ({held / total:.0%}), "
                f"where {split}_fraction asks for {fraction:.0%}: with 'split: hashed', each "
                "image's split is drawn from its content, and a small dataset's shares vary. "
                "Set 'split: stratified' in the prepare section of params.yaml for each "
                "class's share to the nearest image."
            )
        elif short:  # the split as a whole has its share, but not every class
            warnings.append(
                f"Split '{split}' holds less than half its share of {', '.join(short)}: "
                "with 'split: hashed', each image's split is drawn from its content, and a "
                f"small class's shares vary, so its {split} figures rest on few images.{stratify}"
            )
    return warnings


def _finish(
    out: Path,
    dataset: RawDataset,
    params: PrepareParams,
    entries: dict[str, list[FileInfo]],
    copied: dict[str, list[FileInfo]],
    report: CheckReport,
) -> dict[str, dict[str, int]]:
    """Write the manifest, ``dataset.json``, the report and the preview; return the counts.

    ``copied`` lists, per split of varied copies, the source entry of each
    copy, in array order (empty: none).
    """
    classes = list(dataset.classes)
    rows = [
        (info.file, classes[info.label], split, info.sha256)
        for split, split_infos in (entries | copied).items()
        for info in split_infos
    ]
    sizes = {split: len(split_infos) for split, split_infos in entries.items()}
    sizes |= {split: len(copies) for split, copies in copied.items() if copies}
    write_manifest(out, rows)
    write_dataset_json(out, classes, params.image_format, sizes)
    counts = {}
    for split, split_infos in entries.items():
        labels = Counter(info.label for info in split_infos)
        counts[split] = {name: labels.get(label, 0) for label, name in enumerate(classes)}
    report.warnings += _split_warnings(counts, params)
    kept = [info for split_infos in entries.values() for info in split_infos]
    report.warnings += _size_warnings(kept, params)
    document = {"params": params.dump(), **report.to_dict(), "splits": counts}
    (out / REPORT_FILE).write_text(json.dumps(document, indent=2) + "\n")
    write_preview(load_prepared(out), out / PREVIEW_FILE)
    return counts
