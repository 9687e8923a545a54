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
them (the prepare report lists the counts per class and split).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable

__all__ = ["split_digests", "split_of", "split_point"]


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
