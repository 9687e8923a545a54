"""Check a raw dataset: what it holds and what is wrong with it.

`check_dataset` reads every image once and returns a `CheckReport`: classes,
counts, sizes, modes, and the problems found. Problems are either errors (the
dataset cannot be prepared as it is) or warnings (it can, but look).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from celestial_data.dataset import FileInfo, RawDataset, inspect_files, is_image_name, listing, scan
from celestial_data.view import ViewParams

__all__ = [
    "BRIGHT_EDGE",
    "BRIGHT_EDGE_SHARE",
    "IMBALANCE_RATIO",
    "ON_CORRUPT",
    "UNKNOWN",
    "CheckReport",
    "OnCorrupt",
    "build_report",
    "check_dataset",
    "format_report",
    "unread_photos",
]

OnCorrupt = Literal["error", "skip"]
ON_CORRUPT: tuple[str, ...] = get_args(OnCorrupt)
UNKNOWN = "unknown"
"""The label answered for an image of none of a model's classes: no class may be named so."""
IMBALANCE_RATIO = 3.0
"""Largest class over smallest class above which a warning is given."""
BRIGHT_EDGE = 64.0
"""Median edge brightness (of 255) above which a picture is not on a dark background."""
BRIGHT_EDGE_SHARE = 0.25
"""Share of such pictures above which the canonical view's crop is warned about."""


@dataclass
class CheckReport:
    """What a raw dataset holds and the problems found in it."""

    classes: list[str]
    counts: dict[str, int]
    """Readable images per class (after skipping corrupt ones)."""
    sizes: dict[str, int]
    """Images per original size, ``"WxH"``, most common first."""
    modes: dict[str, int]
    """Images per Pillow mode (``RGB``, ``L``, ``RGBA``, ...)."""
    formats: dict[str, int]
    ignored: list[str]
    """Files that are not images or are hidden, relative to the root."""
    corrupt: list[dict[str, str]]
    """Images that cannot be read: ``{"file", "reason"}``."""
    skipped: list[str]
    """Corrupt images left out because ``on_corrupt`` is ``skip``."""
    duplicates: list[list[str]]
    """Groups of byte-identical images (each group lands in one split)."""
    same_pixels: list[list[str]] = field(default_factory=list)
    """Groups of files that differ in bytes but hold the same pixels (a PNG and
    its BMP copy); each group lands in one split too."""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the dataset can be prepared (no errors)."""
        return not self.errors

    @property
    def total(self) -> int:
        """Readable images over all classes."""
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data.

        ``same_pixels`` is there only when some were found, so that the report
        of a dataset without any stays byte-identical to earlier versions'
        (``dvc.lock`` records its hash).
        """
        return {
            "classes": self.classes,
            "total": self.total,
            "counts": self.counts,
            "sizes": self.sizes,
            "modes": self.modes,
            "formats": self.formats,
            "ignored": self.ignored,
            "corrupt": self.corrupt,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            **({"same_pixels": self.same_pixels} if self.same_pixels else {}),
            "errors": self.errors,
            "warnings": self.warnings,
        }


def _ranked(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


def build_report(
    dataset: RawDataset,
    infos: list[FileInfo],
    on_corrupt: OnCorrupt,
    view: ViewParams | None = None,
) -> CheckReport:
    """Turn what was read from each file into a report of counts and problems.

    Args:
        dataset: What `scan` found.
        infos: One entry per image file, as `inspect_files` returns them.
        on_corrupt: ``"error"`` (corrupt images are errors) or ``"skip"``
            (they are left out and listed in ``skipped``).
        view: The canonical view the images will be taken in: with ``crop``
            on, a dataset whose pictures are mostly not on a dark background
            is warned about (see `_crop_warning`).

    Returns:
        The report; ``report.errors`` is empty when the dataset can be prepared.
    """
    good = [info for info in infos if not info.error]
    bad = sorted((info for info in infos if info.error), key=lambda info: info.file)
    counts = Counter(dataset.classes[info.label] for info in good)
    report = CheckReport(
        classes=list(dataset.classes),
        counts={name: counts.get(name, 0) for name in dataset.classes},
        sizes=_ranked(Counter(f"{info.width}x{info.height}" for info in good)),
        modes=_ranked(Counter(info.mode for info in good)),
        formats=_ranked(Counter(info.format for info in good)),
        ignored=list(dataset.ignored),
        corrupt=[{"file": info.file, "reason": info.error} for info in bad],
        skipped=[info.file for info in bad] if on_corrupt == "skip" else [],
        duplicates=_duplicates(good),
        same_pixels=_same_pixels(good),
    )
    if bad and on_corrupt == "error":
        listed = listing([f"{info.file} ({info.error})" for info in bad])
        report.errors.append(
            f"{len(bad)} image file(s) cannot be read: {listed}. Replace or delete them, "
            "or set 'on_corrupt: skip' in the prepare section of params.yaml to leave them out."
        )
    elif bad:
        report.warnings.append(
            f"{len(bad)} unreadable image file(s) skipped: {listing([i.file for i in bad])}."
        )
    for name in dataset.classes:
        if not dataset.files[name]:
            others = [file for file in dataset.ignored if file.startswith(f"{name}/")]
            listed = f" ({len(others)} other files ignored: {listing(others)})" if others else ""
            report.errors.append(
                f"Class folder '{dataset.root / name}' has no image files{listed}. "
                f"Add images or remove the folder.{unread_photos(others)}"
            )
        elif report.counts[name] == 0:
            report.errors.append(
                f"Class folder '{dataset.root / name}' has no readable images "
                f"({len(dataset.files[name])} unreadable). Add images or remove the folder."
            )
        if name.casefold() == UNKNOWN:
            report.errors.append(
                f"Class folder '{dataset.root / name}' is named as the answer for images of no "
                f"known class ('{UNKNOWN}'): an image of this class and a rejected one would "
                "get the same label. Rename the folder (for example to 'unknown-body')."
            )
    by_case: dict[str, list[str]] = defaultdict(list)
    for name in dataset.classes:
        by_case[name.casefold()].append(name)
    for names in (names for names in by_case.values() if len(names) > 1):
        report.warnings.append(
            f"Class folders {', '.join(repr(n) for n in names)} differ only in case: on a "
            "file system that ignores case (macOS, Windows) a clone holds them as one folder, "
            "and their images as one class. Rename or merge them."
        )
    report.warnings += _duplicate_warnings(report.duplicates, "byte-identical images")
    report.warnings += _duplicate_warnings(
        report.same_pixels, "images with the same pixels in different files"
    )
    imbalance = _imbalance_warning(report.counts)
    if imbalance:
        report.warnings.append(imbalance)
    crop = _crop_warning(good) if view is not None and view.crop else None
    if crop:
        report.warnings.append(crop)
    report.warnings += _ignored_warnings(report.ignored, dataset.hidden)
    return report


def _ignored_warnings(ignored: list[str], hidden: list[str]) -> list[str]:
    """What was left out and why: loose images, hidden folders, files that are not images."""
    loose = [name for name in ignored if "/" not in name and is_image_name(name)]
    others = [name for name in ignored if name not in loose]
    warnings = []
    if loose:
        warnings.append(
            f"{len(loose)} image file(s) outside any class folder ignored: {listing(loose)}. "
            "Move each into the folder of its class."
        )
    if hidden:
        warnings.append(
            f"{len(hidden)} hidden folder(s) beside the class folders skipped (a name starting "
            f"with a dot is never a class): {listing(hidden)}. Rename one without its dot if "
            "it holds a class."
        )
    if others:
        warnings.append(
            f"{len(others)} file(s) that are not images ignored: "
            f"{listing(others)}.{unread_photos(others)}"
        )
    return warnings


#: Photo formats Pillow does not read, by extension: a phone's or a camera's
#: pictures in them are ignored as "not images", with the fix named.
UNREAD_PHOTOS = {
    ".heic": "HEIC",
    ".heif": "HEIF",
    ".jxl": "JPEG XL",
    **dict.fromkeys((".cr2", ".cr3", ".nef", ".arw", ".dng", ".orf", ".raf", ".rw2"), "camera raw"),
}


def unread_photos(ignored: list[str]) -> str:
    """A hint for ignored files in a photo format Pillow does not read, or ''."""
    suffixes = {Path(name).suffix.lower() for name in ignored}
    found = sorted({UNREAD_PHOTOS[suffix] for suffix in suffixes if suffix in UNREAD_PHOTOS})
    if not found:
        return ""
    return (
        f" Among them are {' and '.join(found)} photos, which are not read: convert them to "
        "JPEG or PNG (a phone can save JPEG: on an iPhone, Settings > Camera > Formats > "
        "Most Compatible)."
    )


def _duplicates(infos: list[FileInfo]) -> list[list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for info in infos:
        groups[info.sha256].append(info.file)
    return sorted(sorted(files) for files in groups.values() if len(files) > 1)


def _same_pixels(infos: list[FileInfo]) -> list[list[str]]:
    """Groups of files with the same pixels, where the group holds more than one content."""
    groups: dict[str, list[FileInfo]] = defaultdict(list)
    for info in infos:
        if info.pixels:
            groups[info.pixels].append(info)
    return sorted(
        sorted(info.file for info in group)
        for group in groups.values()
        if len({info.sha256 for info in group}) > 1
    )


def _duplicate_warnings(groups: list[list[str]], kind: str) -> list[str]:
    if not groups:
        return []
    warnings = [
        f"{len(groups)} group(s) of {kind} ({sum(map(len, groups))} files); "
        "each group is kept whole in one split: "
        + listing([" = ".join(group) for group in groups], limit=5)
        + "."
    ]
    conflicting = [g for g in groups if len({file.split("/", 1)[0] for file in g}) > 1]
    if conflicting:
        warnings.append(
            f"{len(conflicting)} group(s) of identical images are filed under different "
            "classes (conflicting labels): "
            + listing([" = ".join(group) for group in conflicting], limit=5)
            + ". Delete the copies in the wrong class."
        )
    return warnings


def _imbalance_warning(counts: dict[str, int]) -> str:
    present = {name: n for name, n in counts.items() if n}
    if len(present) < 2:
        return ""
    largest = max(present, key=lambda name: present[name])
    smallest = min(present, key=lambda name: present[name])
    ratio = present[largest] / present[smallest]
    if ratio <= IMBALANCE_RATIO:
        return ""
    listed = ", ".join(f"{name} {n}" for name, n in counts.items())
    return (
        f"Classes are strongly imbalanced: {largest} has {ratio:.1f}x the images of "
        f"{smallest} ({listed}). Add images to the small classes."
    )


def _crop_warning(good: list[FileInfo]) -> str | None:
    """A warning when many pictures are not one object on a dark background.

    The canonical view's crop looks for the bright object on a dark
    background; on a digit drawn on paper, a face or a scene it crops at
    places that mean nothing. Such pictures have bright edges.
    """
    edges = [info.edge for info in good if info.edge is not None]
    bright = sum(edge > BRIGHT_EDGE for edge in edges)
    if not edges or bright <= BRIGHT_EDGE_SHARE * len(edges):
        return None
    return (
        f"{bright} of {len(edges)} images ({bright / len(edges):.0%}) are not on a dark "
        f"background (the median brightness of their edges is above {BRIGHT_EDGE:.0f} of "
        "255), but prepare.view.crop is on: the view crops each image to its bright object "
        "on a dark background, and crops these at places that mean nothing. For images of "
        "other kinds (digits on paper, faces, scenes), set 'crop: false' under 'view' in "
        "the prepare section of params.yaml; and if which way is up matters in them (a 6 "
        "turned is a 9), 'turn: 0' under 'augment' in the train section, which turns "
        "training images by quarter turns."
    )


def check_dataset(
    root: str | Path,
    on_corrupt: OnCorrupt = "error",
    workers: int | None = None,
    view: ViewParams | None = None,
) -> CheckReport:
    """Read every image of a raw dataset folder and report on it.

    Args:
        root: The dataset folder, laid out as ``root/<ClassName>/<image files>``.
        on_corrupt: ``"error"`` or ``"skip"``: what unreadable images are.
        workers: Threads to decode with (default: one per core).
        view: The canonical view the images will be taken in (see
            `build_report`); None checks nothing about it.

    Returns:
        The report (check ``report.ok``).

    Raises:
        DatasetError: If the folder layout itself is wrong (see `scan`).
    """
    dataset = scan(root)
    infos = inspect_files(dataset, workers=workers, pixels=True)
    return build_report(dataset, infos, on_corrupt, view)


def format_report(report: CheckReport, root: str | Path) -> str:
    """The report as text for a terminal."""
    width = max(len(name) for name in report.classes)
    lines = [
        f"Dataset {root}: {len(report.classes)} classes, {report.total} images",
        "",
        *(f"  {name:<{width}}  {report.counts[name]:>7}" for name in report.classes),
        "",
        "Sizes:   " + _inline(report.sizes),
        "Modes:   " + _inline(report.modes),
        "Formats: " + _inline(report.formats),
        f"Ignored: {len(report.ignored)} file(s) that are not images",
        f"Duplicates: {len(report.duplicates)} group(s) of byte-identical images",
    ]
    if report.same_pixels:
        lines.append(
            f"Same pixels: {len(report.same_pixels)} group(s) of images in different files"
        )
    if report.corrupt:
        lines.append(f"Unreadable: {len(report.corrupt)} file(s)")
        lines += [f"  {item['file']}: {item['reason']}" for item in report.corrupt[:20]]
        if len(report.corrupt) > 20:
            lines.append(f"  ... ({len(report.corrupt) - 20} more)")
    lines += ["", *(f"warning: {w}" for w in report.warnings)]
    lines += [f"error: {e}" for e in report.errors]
    lines.append("OK" if report.ok else f"{len(report.errors)} error(s)")
    return "\n".join(lines)


def _inline(counter: dict[str, int], limit: int = 5) -> str:
    items = [f"{key} ({n})" for key, n in counter.items()]
    return listing(items, limit) or "none"
