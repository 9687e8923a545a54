"""Prepare a raw dataset folder: check it, split it and write the prepared format.

`prepare_dataset` works in two passes over the files, so memory stays flat
however many images there are:

1. read and hash every file (the hash decides its split);
2. for each split in turn, decode and resize its images on every core and
   append them to ``<split>_images.npy`` in order.

The outputs (see `celestial_data.prepared`) plus ``report.json`` and
``preview.png`` are byte-identical when inputs and params are, so DVC sees an
unchanged stage as unchanged.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from celestial_data.check import ON_CORRUPT, CheckReport, build_report
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
from celestial_data.errors import DatasetError, ParamsError
from celestial_data.image import COLOR_MODES, channels, to_array
from celestial_data.params import check_keys
from celestial_data.prepared import (
    DATASET_FILE,
    MANIFEST_FILE,
    SPLITS,
    PreparedDataset,
    load_prepared,
    write_dataset_json,
    write_manifest,
)
from celestial_data.preview import write_preview
from celestial_data.split import split_of

__all__ = [
    "DEFAULTS",
    "PREVIEW_FILE",
    "REPORT_FILE",
    "PrepareResult",
    "prepare_dataset",
    "validate_params",
]

DEFAULTS: dict[str, Any] = {
    "image_size": 32,
    "color_mode": "rgb",
    "seed": 42,
    "val_fraction": 0.15,
    "test_fraction": 0.15,
    "on_corrupt": "error",
}
"""The ``prepare`` section of ``params.yaml``, with its default values."""

REPORT_FILE = "report.json"
PREVIEW_FILE = "preview.png"
WHERE = "params.yaml: prepare"


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare_dataset` wrote."""

    dataset: PreparedDataset
    report: CheckReport
    split_counts: dict[str, dict[str, int]]
    """Images per class in each split."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Check a ``prepare`` section and return it complete with defaults.

    Raises:
        ParamsError: If a key is unknown or a value is out of range.
    """
    check_keys(params, DEFAULTS, WHERE)
    merged = {**DEFAULTS, **params}
    size = merged["image_size"]
    if not _is_int(size) or not 4 <= size <= 1024:
        raise ParamsError(
            f"{WHERE}.image_size must be a whole number of pixels from 4 to 1024 (the side "
            f"of the square images). Received: {size!r}"
        )
    if merged["color_mode"] not in COLOR_MODES:
        raise ParamsError(
            f"{WHERE}.color_mode must be one of {', '.join(COLOR_MODES)}. "
            f"Received: {merged['color_mode']!r}"
        )
    if not _is_int(merged["seed"]):
        raise ParamsError(f"{WHERE}.seed must be an integer. Received: {merged['seed']!r}")
    for key in ("val_fraction", "test_fraction"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise ParamsError(
                f"{WHERE}.{key} must be a number from 0 to below 1. Received: {value!r}"
            )
        merged[key] = float(value)
    if merged["val_fraction"] + merged["test_fraction"] >= 1:
        raise ParamsError(
            f"{WHERE}: val_fraction + test_fraction must leave images for training (sum "
            f"below 1). Received: {merged['val_fraction']} + {merged['test_fraction']}"
        )
    if merged["on_corrupt"] not in ON_CORRUPT:
        raise ParamsError(
            f"{WHERE}.on_corrupt must be one of {', '.join(ON_CORRUPT)}. "
            f"Received: {merged['on_corrupt']!r}"
        )
    return merged


def _output_names() -> list[str]:
    arrays = [f"{split}_{kind}.npy" for split in SPLITS for kind in ("images", "labels")]
    return [*arrays, DATASET_FILE, MANIFEST_FILE, REPORT_FILE, PREVIEW_FILE]


def _clear(out: Path) -> None:
    """Remove what an earlier prepare wrote (a split may no longer exist)."""
    for name in _output_names():
        (out / name).unlink(missing_ok=True)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, header)
    return stream.getvalue()


def _load(root: Path, info: FileInfo, size: int, color_mode: str) -> np.ndarray | None:
    """The image as a uint8 array, or None (with ``info.error`` set) if unreadable."""
    data = read_bytes(root, info, digest=False)  # hashed in the first pass
    image = decode_into(info, data, size) if data else None
    if image is None:
        return None
    try:
        return to_array(image, size, color_mode)  # type: ignore[arg-type]
    except Exception as error:  # e.g. a mode Pillow cannot convert
        info.error = describe_error(error)
        return None


def _write_images(
    path: Path,
    root: Path,
    entries: list[FileInfo],
    size: int,
    color_mode: str,
    workers: int | None,
) -> None:
    """Decode ``entries`` in parallel and append them to a ``.npy`` file, in order.

    Each entry gets its header read; entries that fail to decode get their
    ``error`` set and are left out.
    """
    shape = (size, size, channels(color_mode))  # type: ignore[arg-type]
    written = 0
    with open(path, "wb") as stream:
        stream.write(_npy_header((len(entries), *shape)))
        results = parallel_map(lambda info: _load(root, info, size, color_mode), entries, workers)
        for result in results:
            if result is not None:
                stream.write(result.tobytes())
                written += 1
    if written < len(entries):
        _rewrite_count(path, (written, *shape), len(_npy_header((len(entries), *shape))))


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


def _split_entries(infos: list[FileInfo], params: Mapping[str, Any]) -> dict[str, list[FileInfo]]:
    wanted = ["train"]
    wanted += [s for s in ("val", "test") if params[f"{s}_fraction"] > 0]
    entries: dict[str, list[FileInfo]] = {split: [] for split in wanted}
    for info in infos:
        if not info.error:
            split = split_of(
                info.sha256, params["seed"], params["val_fraction"], params["test_fraction"]
            )
            entries[split].append(info)
    return entries


def prepare_dataset(
    raw: str | Path,
    out: str | Path,
    params: Mapping[str, Any] | None = None,
    workers: int | None = None,
) -> PrepareResult:
    """Check, split and write a raw dataset in the prepared format.

    Args:
        raw: The raw folder, laid out as ``raw/<ClassName>/<image files>``.
        out: The output folder (created; earlier outputs in it are replaced).
        params: The ``prepare`` section (missing keys take `DEFAULTS`).
        workers: Threads to decode with (default: one per core).

    Returns:
        The prepared dataset, the check report and the counts per split.

    Raises:
        ParamsError: If ``params`` has an unknown key or a bad value.
        DatasetError: If the raw folder has errors (see `check_dataset`); no
            prepared dataset is left in ``out`` then.
    """
    params = validate_params(params or {})
    out = Path(out)
    if out.resolve().is_relative_to(Path(raw).resolve()):
        raise DatasetError(
            f"The output folder {out} is inside the raw folder {raw}: its files would be "
            "read as images next time. Write the prepared dataset elsewhere."
        )
    dataset = scan(raw)
    infos = inspect_files(dataset, workers=workers)
    entries = _split_entries(infos, params)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    size, color_mode = params["image_size"], params["color_mode"]
    for split, split_infos in entries.items():
        _write_images(
            out / f"{split}_images.npy", dataset.root, split_infos, size, color_mode, workers
        )
        entries[split] = [info for info in split_infos if not info.error]
        labels = np.array([info.label for info in entries[split]], dtype=np.int32)
        np.save(out / f"{split}_labels.npy", labels)
    report = build_report(dataset, infos, params["on_corrupt"])
    if not report.ok:
        _clear(out)
        raise DatasetError(" ".join(report.errors))
    return _finish(out, dataset, params, entries, report)


def _finish(
    out: Path,
    dataset: RawDataset,
    params: Mapping[str, Any],
    entries: dict[str, list[FileInfo]],
    report: CheckReport,
) -> PrepareResult:
    classes = list(dataset.classes)
    rows = [
        (info.file, classes[info.label], split, info.sha256)
        for split, split_infos in entries.items()
        for info in split_infos
    ]
    write_manifest(out, rows)
    write_dataset_json(
        out,
        classes,
        params["image_size"],
        params["color_mode"],
        {split: len(split_infos) for split, split_infos in entries.items()},
    )
    counts = {}
    for split, split_infos in entries.items():
        labels = Counter(info.label for info in split_infos)
        counts[split] = {name: labels.get(label, 0) for label, name in enumerate(classes)}
    for split, per_class in counts.items():
        empty = [name for name, n in per_class.items() if n == 0]
        if empty:
            report.warnings.append(
                f"Split '{split}' has no images of {', '.join(empty)}: the class is too "
                "small for the split fractions. Add images or raise the fraction."
            )
    document = {"params": dict(params), **report.to_dict(), "splits": counts}
    (out / REPORT_FILE).write_text(json.dumps(document, indent=2) + "\n")
    prepared = load_prepared(out)
    write_preview(prepared, out / PREVIEW_FILE)
    return PrepareResult(dataset=prepared, report=report, split_counts=counts)
