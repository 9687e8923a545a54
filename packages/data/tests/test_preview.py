"""The prepared dataset's preview: class names drawn legibly."""

from __future__ import annotations

from celestial_data.preview import label_font

# A private-use code point: no font draws it, so it gets the missing-glyph box.
MISSING = "\U0010fffd"


def drawn(text: str) -> bytes:
    return bytes(label_font().getmask(text))


def test_accented_class_names_are_drawn_with_their_letters() -> None:
    for letter in "üÉçøßłž":
        assert drawn(letter) != drawn(MISSING), letter
    assert drawn("u") != drawn("ü")
