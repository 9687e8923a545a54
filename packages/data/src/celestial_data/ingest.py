"""Add labelled images to a raw dataset folder: all of them, or none.

`add_images` is how images labelled outside the pipeline (by people, in a
labelling tool) join ``raw/<ClassName>/``: it checks every class name and
every image first, skips the images whose bytes or pixels are already
somewhere in the raw folder, and only then copies the rest. A new class name
makes a new class folder, unless it is one letter or two away from an
existing class ("Marz" beside "Mars"): a typo would otherwise start a class of
its own, and the next model would learn it. Such a name must be confirmed
(``new_classes``). An existing file is never replaced.

Nothing is written to the raw folder until every check has passed. The copies
are first written into a hidden staging folder beside it, then linked into
place one by one (a link fails rather than replace a file); if placing one
fails, those already placed are removed, so the raw folder is left as it was.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shlex
import shutil
import unicodedata
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from celestial_data.dataset import is_image_name, parallel_map, read_info
from celestial_data.errors import DatasetError

__all__ = [
    "MAX_CLASS_NAME",
    "NEAR_NAME",
    "RESERVED_CLASS_NAMES",
    "Candidate",
    "IngestResult",
    "add_images",
    "class_name_problem",
    "near_class",
]

#: Longest class name accepted, in characters (folder names are at most 255 bytes).
MAX_CLASS_NAME = 64
#: Names that cannot be classes (compared without case), and why.
RESERVED_CLASS_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "unknown": "the answer for an image of no known class",
        "new class": "the choice that asks Label Studio for a new class's name",
    }
)
# Characters that are not allowed in a folder name on some platform a clone may land on.
_FORBIDDEN = frozenset('/\\:*?"<>|')
_MAX_FILE_NAME = 200
# How many problems an error message lists before "... (N more)".
_LISTED = 10
#: A new class name at least this similar to an existing one (difflib's ratio:
#: "Marz" and "Mars" 0.75, "Jupitr" and "Jupiter" 0.92) is taken for a typo
#: until it is confirmed.
NEAR_NAME = 0.75


@dataclass(frozen=True)
class Candidate:
    """An image to add: where it is, its class, and its file name in the class folder.

    Attributes:
        source: The image file to copy.
        label: The class it belongs to (a class folder name).
        name: Its file name in ``raw/<label>/``.
        origin: Where it comes from, for messages (a task id, a file).
    """

    source: Path
    label: str
    name: str
    origin: str = ""


@dataclass
class IngestResult:
    """What `add_images` did (or, for a dry run, would do)."""

    added: dict[str, list[str]] = field(default_factory=dict)
    """For each class, the files added, relative to the raw folder."""
    new_classes: list[str] = field(default_factory=list)
    """Classes that had no folder before."""
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    """``(origin, the raw file)`` for each image skipped as already in the raw folder."""
    repeated: list[tuple[str, str]] = field(default_factory=list)
    """``(origin, the earlier origin)`` for each image given twice, skipped the second time."""

    @property
    def total(self) -> int:
        """Number of images added."""
        return sum(len(files) for files in self.added.values())


def class_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a class folder name, or None if it can.

    A class name is a folder name on every platform: not empty, at most
    `MAX_CLASS_NAME` characters, no path separator or ``:*?"<>|``, no control
    character, no leading dot (hidden folders are not read), no surrounding
    spaces, not ``.``/``..``, and not a reserved name (`RESERVED_CLASS_NAMES`).
    """
    if not name:
        return "is empty"
    if name != name.strip():
        return "has leading or trailing spaces"
    if len(name) > MAX_CLASS_NAME:
        return f"is {len(name)} characters long (at most {MAX_CLASS_NAME})"
    bad = sorted({c for c in name if c in _FORBIDDEN})
    if bad:
        return f"contains {' '.join(bad)} (a path separator or a character folders cannot hold)"
    if name.startswith("."):
        return "starts with a dot (a hidden folder, never read as a class)"
    if any(unicodedata.category(c).startswith("C") for c in name):
        return "contains a control or invisible formatting character"
    if name.casefold() in RESERVED_CLASS_NAMES:
        return f"is reserved ({RESERVED_CLASS_NAMES[name.casefold()]})"
    return None


def _listing(lines: Sequence[str]) -> str:
    shown = "; ".join(lines[:_LISTED])
    more = len(lines) - _LISTED
    return shown + (f"; ... ({more} more)" if more > 0 else "")


def _existing_classes(raw: Path) -> list[str]:
    if not raw.is_dir():
        return []
    return sorted(e.name for e in os.scandir(raw) if e.is_dir() and not e.name.startswith("."))


def _raw_files(raw: Path) -> list[str]:
    """Every image file under ``raw``'s class folders, relative to ``raw`` (posix)."""
    files: list[str] = []
    for name in _existing_classes(raw):
        for current, dirs, names in os.walk(raw / name, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            base = Path(current).relative_to(raw)
            files += [(base / leaf).as_posix() for leaf in names if is_image_name(leaf)]
    return sorted(files)


def near_class(name: str, existing: Sequence[str]) -> str | None:
    """The existing class ``name`` is most likely a typo of, or None (see `NEAR_NAME`)."""
    if name in existing:
        return None
    by_fold = {known.casefold(): known for known in existing}
    close = difflib.get_close_matches(name.casefold(), list(by_fold), n=1, cutoff=NEAR_NAME)
    return by_fold[close[0]] if close else None


def _check_names(
    candidates: Sequence[Candidate], existing: Sequence[str], confirmed: Collection[str] = ()
) -> list[str]:
    """One problem per bad class name or file name."""
    problems: list[str] = []
    folded = {name.casefold(): name for name in existing}
    seen: set[str] = set()
    for candidate in candidates:
        label = candidate.label
        if label in seen:
            continue
        seen.add(label)
        problem = class_name_problem(label)
        where = f" ({candidate.origin})" if candidate.origin else ""
        if problem:
            problems.append(f"class name {label!r}{where} {problem}")
        elif label not in existing and label.casefold() in folded:
            problems.append(
                f"class name {label!r}{where} differs from the existing class "
                f"{folded[label.casefold()]!r} only in case"
            )
        elif label not in confirmed and (near := near_class(label, existing)) is not None:
            problems.append(
                f"class name {label!r}{where} is not a class yet and is close to the existing "
                f"class {near!r}: a typo? Correct the label, or confirm {label!r} as a new class "
                f"(celestial-eval label import --new-class {shlex.quote(label)}; new_classes "
                "in Python)"
            )
    for candidate in candidates:
        name = candidate.name
        if (
            len(name) > _MAX_FILE_NAME
            or any(c in _FORBIDDEN or unicodedata.category(c).startswith("C") for c in name)
            or not is_image_name(name)
        ):
            problems.append(
                f"file name {candidate.name!r} ({candidate.origin}) is not an image name"
            )
    return problems


def _fingerprints(root: Path, files: Sequence[str], workers: int | None) -> list[tuple[str, str]]:
    """``(sha256 of the bytes, digest of the pixels)`` of each file ("" when undecodable)."""
    infos = parallel_map(lambda file: read_info(root, file, 0, pixels=True), files, workers)
    return [(info.sha256, info.pixels) for info in infos]


def add_images(
    raw: str | Path,
    candidates: Iterable[Candidate],
    dry_run: bool = False,
    workers: int | None = None,
    new_classes: Collection[str] = (),
) -> IngestResult:
    """Copy labelled images into ``raw/<label>/<name>``, skipping those already present.

    Args:
        raw: The raw dataset folder (created if missing).
        candidates: The images and their classes.
        dry_run: Check everything and report what would be added; write nothing.
        workers: Threads to hash and decode with (default: one per core).
        new_classes: New class names confirmed as such, though close to an
            existing class's (see `near_class`).

    Returns:
        The files added per class, the new classes and the images skipped.
        An image whose bytes or decoded pixels equal those of a file already in
        ``raw`` with the same class (``duplicates``), or of an earlier
        candidate (``repeated``), is skipped.

    Raises:
        DatasetError: If a class name is not a valid folder name or is an
            unconfirmed near-copy of an existing one, an image is missing or
            unreadable, one image is given two classes (twice in
            ``candidates``, or another class than the raw folder files it
            under), or a target file exists with other content. Nothing is
            written then.
    """
    raw = Path(raw)
    items = list(candidates)
    if raw.exists() and not raw.is_dir():
        raise DatasetError(f"The raw folder {raw} is a file. Give the raw dataset folder.")
    existing = _existing_classes(raw)
    problems = _check_names(items, existing, new_classes)
    missing = [c for c in items if not c.source.is_file()]
    problems += [f"image {c.source} ({c.origin}) is not there" for c in missing]
    if problems:
        raise DatasetError(
            f"Cannot add the labelled images: {len(problems)} problem(s): {_listing(problems)}. "
            "Fix the labels or the files and run again; nothing was written to "
            f"{raw}."
        )
    present: dict[str, str] = {}
    raw_files = _raw_files(raw)
    for file, (sha, pixels) in zip(raw_files, _fingerprints(raw, raw_files, workers), strict=True):
        present.setdefault(sha, file)
        if pixels:
            present.setdefault(pixels, file)
    # Absolute paths: joined to any root, they stay themselves.
    prints = _fingerprints(Path(), [str(c.source.resolve()) for c in items], workers)
    result = IngestResult()
    chosen: dict[str, Candidate] = {}  # a fingerprint -> the candidate that holds it
    planned: list[Candidate] = []
    for candidate, (sha, pixels) in zip(items, prints, strict=True):
        if not pixels:
            problems.append(
                f"image {candidate.source} ({candidate.origin}) is not a readable image"
            )
            continue
        copy = present.get(sha) or present.get(pixels)
        if copy is not None:
            held = copy.split("/", 1)[0]
            if held != candidate.label:  # a relabelling: never decided silently
                problems.append(
                    f"{candidate.origin} labels {candidate.label!r} an image already in the raw "
                    f"folder as {held!r} ({raw.name}/{copy}): correct the label, or if {held!r} "
                    f"is wrong, move that file into {raw.name}/{candidate.label}/ and import again"
                )
            else:
                result.duplicates.append((candidate.origin, f"{raw.name}/{copy}"))
            continue
        earlier = chosen.get(sha) or chosen.get(pixels)
        if earlier is not None:
            if earlier.label != candidate.label:
                problems.append(
                    f"the same image is labelled {earlier.label!r} ({earlier.origin}) and "
                    f"{candidate.label!r} ({candidate.origin})"
                )
            else:
                result.repeated.append((candidate.origin, earlier.origin))
            continue
        chosen[sha] = chosen[pixels] = candidate
        target = raw / candidate.label / candidate.name
        if target.exists():  # a file with other content: never replace it
            problems.append(
                f"{target} exists and holds another image ({candidate.origin}); rename or remove it"
            )
            continue
        planned.append(candidate)
    if problems:
        raise DatasetError(
            f"Cannot add the labelled images: {len(problems)} problem(s): {_listing(problems)}. "
            f"Fix them and run again; nothing was written to {raw}."
        )
    for candidate in planned:
        result.added.setdefault(candidate.label, []).append(f"{candidate.label}/{candidate.name}")
    result.new_classes = sorted(set(result.added) - set(existing))
    if not dry_run and planned:
        _write(raw, planned)
    return result


def _write(raw: Path, planned: Sequence[Candidate]) -> None:
    """Stage copies beside ``raw``, then link each into place; undo all on any failure."""
    raw_made = not raw.exists()
    raw.parent.mkdir(parents=True, exist_ok=True)
    staging = raw.parent / f".{raw.name}.{uuid.uuid4().hex[:12]}.partial"
    staging.mkdir()
    placed: list[Path] = []
    made: list[Path] = []
    try:
        staged = []
        for index, candidate in enumerate(planned):
            path = staging / f"{index}-{candidate.name}"
            shutil.copyfile(candidate.source, path)
            staged.append(path)
        if raw_made:
            raw.mkdir()
        for path, candidate in zip(staged, planned, strict=True):
            folder = raw / candidate.label
            if not folder.is_dir():
                folder.mkdir()
                made.append(folder)
            target = folder / candidate.name
            os.link(path, target)  # fails if target exists: never replaces a file
            placed.append(target)
    except BaseException:
        for target in placed:
            target.unlink(missing_ok=True)
        for folder in reversed(made):
            _remove_if_empty(folder)
        if raw_made:
            _remove_if_empty(raw)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # something else was put there meanwhile: keep it
        folder.rmdir()
