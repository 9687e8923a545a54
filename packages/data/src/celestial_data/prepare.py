"""Prepare a raw dataset folder: check it, split it and write the prepared format.

`prepare_dataset` works in two passes over the files, so memory stays flat
however many images there are:

1. read and hash every file, and hash its decoded pixels (the file's hash
   decides its split, unless other files hold the same pixels: then the
   group's smallest file hash does, so the group stays in one split);
2. for each split in turn, decode and resize its images on every core and
   append them to ``<split>_images.npy`` in order.

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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
from pydantic import Field, model_validator

from celestial_data.check import CheckReport, OnCorrupt, build_report
from celestial_data.dataset import (
    FileInfo,
    RawDataset,
    decode_into,
    describe_error,
    inspect_files,
    parallel_map,
    read_bytes,
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


def _load(
    root: Path, info: FileInfo, image_format: ImageFormat, copies: tuple[int, int] | None = None
) -> tuple[np.ndarray | None, str]:
    """The image as a uint8 array, or None and why if unreadable.

    With ``copies`` ``(count, seed)``: the ``count`` varied copies of the
    picture (`celestial_data.vary`), stacked, instead of the image. The
    reason is returned, not only set on ``info``: a worker process's ``info``
    is a copy.
    """
    data = read_bytes(root, info, digest=False)  # hashed in the first pass
    image = decode_into(info, data) if data else None
    if image is None:
        return None, info.error or ""
    try:
        if copies is None:
            return to_array(image, image_format), ""
        count, seed = copies
        source = reduced(image, image_format)  # a large photo's copies cost a small one's
        varied = [
            to_array(
                vary(source, copy_rng(seed, info.file, k), image_format.view.exposure),
                image_format,
            )
            for k in range(count)
        ]
        return np.stack(varied), ""
    except Exception as error:  # e.g. a mode Pillow cannot convert
        return None, describe_error(error)


def _write_images(
    path: Path,
    root: Path,
    entries: list[FileInfo],
    image_format: ImageFormat,
    workers: int | None,
    copies: tuple[int, int] | None = None,
) -> None:
    """Decode ``entries`` in parallel and append them to a ``.npy`` file, in order.

    Each entry gets its header read; entries that fail to decode get their
    ``error`` set and are left out. With ``copies`` ``(count, seed)``, each
    entry's ``count`` varied copies are written instead (see `_load`).
    """
    shape = image_format.shape
    per_entry = copies[0] if copies else 1
    rows = len(entries) * per_entry
    written = 0
    with open(path, "wb") as stream:
        stream.write(_npy_header((rows, *shape)))
        results = parallel_map(
            lambda info: _load(root, info, image_format, copies),
            entries,
            workers,
            processes=True,
        )
        for info, (result, error) in zip(entries, results, strict=True):
            if result is None:
                info.error = error
            else:
                stream.write(result.tobytes())
                written += per_entry
    if written < rows:
        _rewrite_count(path, (written, *shape), len(_npy_header((rows, *shape))))


def _rewrite_count(path: Path, shape: tuple[int, ...], offset: int) -> None:
    """Give a ``.npy`` file fewer rows than its header first said, copying in chunks."""
    temporary = path.with_name(f".{path.name}.partial")
    with open(path, "rb") as source, open(temporary, "wb") as target:
        target.write(_npy_header(shape))
        source.seek(offset)
        remaining = int(np.prod(shape))
        while remaining:
            chunk = source.read(min(remaining, 1 << 22))
            target.write(chunk)
            remaining -= len(chunk)
    os.replace(temporary, path)


def _split_entries(infos: list[FileInfo], params: PrepareParams) -> dict[str, list[FileInfo]]:
    wanted = ["train"]
    wanted += [
        s
        for s, share in (("val", params.val_fraction), ("test", params.test_fraction))
        if share > 0
    ]
    entries: dict[str, list[FileInfo]] = {split: [] for split in wanted}
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
    infos = inspect_files(dataset, workers=workers, pixels=True, processes=True)
    entries = _split_entries(infos, params)
    with _staging(out) as staging:
        for split, split_infos in entries.items():
            path = staging / f"{split}_images.npy"
            _write_images(path, dataset.root, split_infos, params.image_format, workers)
            entries[split] = [info for info in split_infos if not info.error]
            labels = np.array([info.label for info in entries[split]], dtype=np.int32)
            np.save(staging / f"{split}_labels.npy", labels)
        copied: dict[str, list[FileInfo]] = {}
        for split, (source, count) in {
            VARIED: ("val", params.varied),
            TRAIN_VARIED: ("train", params.train_varied),
            TEST_VARIED: ("test", params.test_varied),
        }.items():
            # Each source picture's copies, in the order of its split.
            copied[split] = [info for info in entries.get(source, []) for _ in range(count)]
            if copied[split]:
                path = staging / f"{split}_images.npy"
                _write_images(
                    path,
                    dataset.root,
                    entries[source],
                    params.image_format,
                    workers,
                    (count, params.seed),
                )
                labels = np.array([info.label for info in copied[split]], dtype=np.int32)
                np.save(staging / f"{split}_labels.npy", labels)
        report = build_report(dataset, infos, params.on_corrupt, params.view)
        if not report.ok:
            raise DatasetError(" ".join(report.errors))
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
