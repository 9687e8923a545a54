"""The split: deterministic, stratified in expectation, stable as data grows."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest

from celestial_data.split import split_digests, split_of, split_point


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
