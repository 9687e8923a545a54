"""The split: deterministic, stratified in expectation, stable as data grows."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest

from celestial_data.split import split_digests, split_of, split_point, stratified_splits


def digests(count: int, salt: str = "") -> list[str]:
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(count)]


def test_same_content_and_seed_give_the_same_split_in_any_order() -> None:
    hashes = digests(200)
    first = {h: split_of(h, 7, 0.2, 0.1) for h in hashes}
    shuffled = hashes[:]
    random.Random(3).shuffle(shuffled)
    assert {h: split_of(h, 7, 0.2, 0.1) for h in shuffled} == first


def test_the_seed_changes_the_split() -> None:
    hashes = digests(200)
    assert [split_of(h, 1, 0.2, 0.2) for h in hashes] != [split_of(h, 2, 0.2, 0.2) for h in hashes]


def test_split_point_is_a_known_value() -> None:
    # Pinned: a change here would move images between splits for every user.
    assert split_point("0" * 64, 42) == pytest.approx(0.045163462, abs=1e-9)


@pytest.mark.parametrize(("val", "test"), [(0.15, 0.15), (0.2, 0.0), (0.1, 0.3)])
def test_fractions_are_met_in_expectation(val: float, test: float) -> None:
    counts = Counter(split_of(h, 0, val, test) for h in digests(20_000))
    assert counts["val"] / 20_000 == pytest.approx(val, abs=0.01)
    assert counts["test"] / 20_000 == pytest.approx(test, abs=0.01)
    if test == 0:
        assert "test" not in counts


def test_changing_one_fraction_only_trades_images_with_train() -> None:
    hashes = digests(5_000)
    before = [split_of(h, 0, 0.15, 0.15) for h in hashes]
    more_val = [split_of(h, 0, 0.25, 0.15) for h in hashes]
    moved = {(a, b) for a, b in zip(before, more_val, strict=True) if a != b}
    assert moved == {("train", "val")}
    more_test = [split_of(h, 0, 0.15, 0.25) for h in hashes]
    moved = {(a, b) for a, b in zip(before, more_test, strict=True) if a != b}
    assert moved == {("train", "test")}


def test_files_with_the_same_pixels_draw_from_the_smallest_file_digest() -> None:
    a, b, c, d = sorted(digests(4, "files"))
    same, other = digests(2, "pixels")
    chosen = split_digests([(c, same), (d, other), (a, same), (b, "")])
    assert chosen == {a: a, b: b, c: a, d: d}  # only the copies move, to their group's digest


def classes_of(sizes: list[int]) -> list[tuple[str, int, str]]:
    """``(digest, label, file)`` of classes of the given sizes, contents never repeated."""
    return [
        (digest, label, f"{label}/{i:03d}.png")
        for label, size in enumerate(sizes)
        for i, digest in enumerate(digests(size, salt=f"class{label}-"))
    ]


@pytest.mark.parametrize("sizes", [[24, 24, 24], [7, 40, 150], [2, 3, 5]])
def test_stratified_splits_cut_each_class_to_the_nearest_image(sizes: list[int]) -> None:
    images = classes_of(sizes)
    splits = stratified_splits(images, 42, 0.15, 0.2)
    for label, size in enumerate(sizes):
        counts = Counter(s for s, (_, lab, _) in zip(splits, images, strict=True) if lab == label)
        tests = min(int(size * 0.2 + 0.5), size - 1)
        assert counts["test"] == tests
        assert counts["val"] == min(int(size * 0.15 + 0.5), size - 1 - tests)
        assert counts["train"] >= 1


def test_stratified_splits_take_the_lowest_points_for_test_and_the_highest_for_val() -> None:
    images = classes_of([40])
    splits = stratified_splits(images, 3, 0.25, 0.25)
    ranked = sorted(zip((split_point(d, 3) for d, _, _ in images), splits, strict=True))
    assert [split for _, split in ranked] == ["test"] * 10 + ["train"] * 20 + ["val"] * 10


def test_stratified_splits_do_not_depend_on_the_order_of_the_files() -> None:
    images = classes_of([30, 30])
    images += [(images[0][0], 1, "1/copy-of-0.png")]  # a duplicate filed in another class
    first = dict(zip(images, stratified_splits(images, 5, 0.2, 0.2), strict=True))
    shuffled = random.Random(0).sample(images, len(images))
    assert dict(zip(shuffled, stratified_splits(shuffled, 5, 0.2, 0.2), strict=True)) == first


def test_stratified_splits_keep_every_digest_in_one_split() -> None:
    images = classes_of([20, 20])
    # Every image of class 0 again under another name, and one of them in class 1 too.
    images += [(digest, 0, f"0/again-{i:03d}.png") for i, (digest, _, _) in enumerate(images[:20])]
    images += [(images[5][0], 1, "1/stray.png")]
    splits = stratified_splits(images, 1, 0.2, 0.2)
    by_digest: dict[str, set[str]] = {}
    for (digest, _, _), split in zip(images, splits, strict=True):
        by_digest.setdefault(digest, set()).add(split)
    assert all(len(found) == 1 for found in by_digest.values())


def test_adding_an_image_moves_at_most_one_image_per_boundary() -> None:
    images = classes_of([60])
    before = dict(zip(images, stratified_splits(images, 9, 0.15, 0.15), strict=True))
    grown = [*images, (hashlib.sha256(b"new").hexdigest(), 0, "0/new.png")]
    after = dict(zip(grown, stratified_splits(grown, 9, 0.15, 0.15), strict=True))
    assert sum(after[image] != split for image, split in before.items()) <= 2
