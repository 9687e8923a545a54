"""Assign images to train / val / test by a seeded hash of their content.

Each image's split depends only on its bytes, the seed and the fractions:

- the same files give the same split on any machine, in any listing order;
- adding images never moves an existing image to another split, so validation
  and test results stay comparable between versions of the data;
- duplicates always land in the same split, so none leaks from train into
  val or test: byte-identical files have the same bytes, and files holding the
  same pixels in other containers (a PNG and its BMP copy) are drawn from one
  digest, the smallest of the group's file digests (`split_digests`), so an
  image without such a copy keeps the split of its own bytes;
- changing one fraction only moves images between that split and train.

The split is stratified in expectation: every class is cut with the same
fractions, and each class's share of a split follows a binomial law around
them (the prepare report lists the counts per class and split). A class of a
few dozen images can then get half its share, or none (``val`` held 4 of 72
images where 15% asked for 11). `stratified_splits` (``prepare.split:
stratified``) cuts each class to the nearest image instead, by the same
points ranked: adding an image then moves at most the image at each of its
class's two boundaries.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

__all__ = ["split_digests", "split_of", "split_point", "stratified_splits"]


def split_point(sha256: str, seed: int) -> float:
    """A number in ``[0, 1)``, uniform over contents, fixed by content and seed.

    Args:
        sha256: Hex SHA-256 digest of the image file.
        seed: The split seed (params ``prepare.seed``).
    """
    digest = hashlib.sha256(f"celestial-split:{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(sha256: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """The split (``train``, ``val`` or ``test``) of an image.

    Args:
        sha256: Hex SHA-256 digest of the image file.
        seed: The split seed.
        val_fraction: Expected share of images in ``val``.
        test_fraction: Expected share of images in ``test`` (0: no test split).

    Returns:
        The split name.
    """
    point = split_point(sha256, seed)
    if point < test_fraction:
        return "test"
    # val counts down from 1, so changing one fraction only trades images
    # between that split and train.
    if point >= 1.0 - val_fraction:
        return "val"
    return "train"


def split_digests(files: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The digest each file's split is drawn from, for files hashed two ways.

    Args:
        files: ``(file digest, pixel digest)`` of each image; an empty pixel
            digest means the pixels were not hashed.

    Returns:
        For each file digest, the smallest file digest among the files with
        the same pixels (itself when it has no such copy).
    """
    by_pixels: dict[str, set[str]] = defaultdict(set)
    chosen: dict[str, str] = {}
    for sha256, pixels in files:
        chosen[sha256] = sha256
        if pixels:
            by_pixels[pixels].add(sha256)
    for group in by_pixels.values():
        first = min(group)
        for sha256 in group:
            chosen[sha256] = min(chosen[sha256], first)
    return chosen


def stratified_splits(
    images: Sequence[tuple[str, int, str]], seed: int, val_fraction: float, test_fraction: float
) -> list[str]:
    """The split of each image, each class cut to the nearest image by the fractions.

    Each class's images are ranked by their split point (`split_point`, the
    number `split_of` compares with the fractions): the lowest
    ``round(n * test_fraction)`` go to ``test``, the highest ``round(n *
    val_fraction)`` to ``val``, and the rest, at least one, to ``train``.
    Images drawn from one digest take the split of the first of them by file
    name, so duplicates stay in one split, whatever their class.

    Args:
        images: ``(digest, label, file)`` of each image; the digest is the one
            its split is drawn from (see `split_digests`).
        seed: The split seed.
        val_fraction: Share of each class put in ``val``.
        test_fraction: Share of each class put in ``test``.

    Returns:
        The split of each image, in the order given.
    """
    points = [split_point(digest, seed) for digest, _, _ in images]
    splits = ["train"] * len(images)
    classes: dict[int, list[int]] = defaultdict(list)
    for index, (_, label, _) in enumerate(images):
        classes[label].append(index)
    for members in classes.values():
        members.sort(key=lambda index: (points[index], images[index][2]))
        count = len(members)
        tests = min(_nearest(count * test_fraction), count - 1)
        vals = min(_nearest(count * val_fraction), count - 1 - tests)
        for index in members[:tests]:
            splits[index] = "test"
        for index in members[count - vals :]:
            splits[index] = "val"
    first: dict[str, str] = {}
    for index in sorted(range(len(images)), key=lambda index: images[index][2]):
        splits[index] = first.setdefault(images[index][0], splits[index])
    return splits


def _nearest(value: float) -> int:
    """``value`` rounded to the nearest whole number, halves up (22.5 images: 23)."""
    return math.floor(value + 0.5)
