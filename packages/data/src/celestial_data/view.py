"""The canonical view: the body found on its dark background, cropped to and centred.

A picture of a planet may show it smaller or larger, off-centre, darker or
brighter than the renders a model was trained on. The canonical view removes
what geometry and exposure can remove before the model sees the image, the
same way for training (`celestial_data.prepare`) and serving (every upload):

- **crop**: find the body (the pixels clearly brighter than the background,
  after a 3x3 minimum that removes noise and stray stars), and crop a
  square around it, centred on it, with ``margin`` of its extent around it.
  Off-centre, small or large bodies all come out the same size, in the middle.
  Beyond the picture's edges the square is filled with black, the background.
- **exposure**: scale the pixel values so that the view's bright end lands on
  a fixed level: the 95th percentile of its luminance, measured on the view
  itself (after the crop and the resize, before rounding). On luminance, so
  a grey picture gets the same gain as its colour original and looks like
  the grey training images; on the small view, so blur, noise or enlarging
  at the source's resolution hardly move it. A darker picture comes out as
  the original; a brighter one too, but for the highlights that burnt out.

Rotation, colour and noise are left to the training's augmentation
(``train.augment``). Images of other kinds (digits, faces, anything not a lit
object on a dark background) should turn the view off (``prepare.view.crop:
false``), which leaves images exactly as they were.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from pydantic import Field

from celestial_data.params import Params

__all__ = ["NO_VIEW", "ViewParams", "body_box", "canonical_view"]

# The body is found on a copy at most this many pixels a side (box-averaged),
# so finding it costs the same for a 128 px render and a 16-megapixel photo.
FIND_SIDE = 128
# A body too small to outlive that copy's 3x3 minimum (under 3 of its pixels,
# 1/40 of a large picture's side) is looked for again on copies this many
# times finer each, up to FINEST_SIDE pixels a side: a body under 3 pixels of
# that copy is a few pixels of a 16-megapixel photo, too small to classify.
FINER = 4
FINEST_SIDE = FIND_SIDE * FINER**2
# A body found under 1/REFINE of the picture's side is found again on the
# region around it, at a finer scale: on the coarse copy its edges are only
# known to one of that copy's pixels, a tenth of a small body.
REFINE = 4
# A pixel is part of the body above this fraction of the way from the
# background (2nd percentile) to the bright end (99.5th percentile): relative,
# so a darker or brighter picture finds the same body.
THRESHOLD = 0.15
# Below this spread of luminance (of 255), the picture is flat: no body to find.
MIN_CONTRAST = 8.0
# When more than this share of the picture passes for the body and its middle
# half spans under MIN_CONTRAST, that majority is a faint sky (see `_find`); a
# body stands out of it when the sky is under SKY of the way from the
# background to the brightest value. A body shrunk on a coarse copy is
# averaged with the sky, its brightest value dimmed: hence a quarter rather
# than THRESHOLD.
MOSTLY = 0.5
SKY = 0.25
# Exposure normalisation: this percentile of the view's luminance is brought to
# EXPOSURE_LEVEL. The 95th of a 16 x 16 view is its thirteenth brightest pixel:
# a few hot pixels do not move it.
EXPOSURE_PERCENTILE = 95.0
EXPOSURE_LEVEL = 224.0
Box = tuple[float, float, float, float]
"""``(left, top, right, bottom)`` in pixels."""

# ITU-R 601 luma weights, as Pillow's "L" conversion and Keras' grayscale use.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ViewParams(Params):
    """``prepare.view``: the canonical view of the body (see `celestial_data.view`)."""

    crop: bool = Field(
        True,
        description="find the body on its dark background and crop a square centred on it, so "
        "a smaller, larger or off-centre body looks as in training; `false` for images that are "
        "not one lit object on a dark background (digits, faces)",
    )
    margin: float = Field(
        0.05,
        ge=0,
        le=1,
        description="background kept around the body when cropping, as a fraction of its "
        "extent on each side (0 to 1)",
    )
    exposure: bool = Field(
        False,
        description="scale the pixel values so the view's bright end (95th percentile of its "
        "luminance) is always as bright, so a darker or brighter picture reads as the usual one; "
        "the bodies' own brightness is lost with it, which costs grey pictures",
    )


NO_VIEW = ViewParams(crop=False, exposure=False)
"""The view that leaves images as they are: models and datasets without a view."""


def canonical_view(image: Image.Image, view: ViewParams, size: int) -> Image.Image:
    """``image`` cropped to its body and normalised as ``view`` says, resized to ``size``.

    The crop square is placed to a fraction of a pixel and resized in one
    bilinear step (antialiased when shrinking), so the same body at another
    resolution or position gives nearly the same view.

    Args:
        image: A decoded image in mode ``RGB`` or ``L``.
        view: What to do; `NO_VIEW` only resizes.
        size: Side of the square result, in pixels.

    Returns:
        A ``size`` x ``size`` image of the same mode. A flat picture, where no
        body stands out, is only resized.
    """
    found = None
    if view.crop or view.exposure:
        found = body_box(image if image.mode == "L" else image.convert("L"))
    if found is None:
        if image.size == (size, size):
            return image
        return image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    box = _square(found, view.margin) if view.crop else (0.0, 0.0, image.width, image.height)
    if view.exposure:
        return _normalised(image, box, size)
    return _crop_resized(image, box, size)


def _square(found: Box, margin: float) -> Box:
    """The square centred on the body's box, ``margin`` of its extent wider on each side."""
    left, top, right, bottom = found
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    half = max(right - left, bottom - top) * (0.5 + margin)
    return (centre_x - half, centre_y - half, centre_x + half, centre_y + half)


def _crop_resized(image: Image.Image, box: Box, size: int) -> Image.Image:
    """The exact ``box`` of ``image`` resized to ``size``, black beyond the picture's edges."""
    outer, inner = _pixel_boxes(box)
    return image.crop(outer).resize(
        (size, size), Image.Resampling.BILINEAR, box=inner, reducing_gap=None
    )


def _pixel_boxes(box: Box) -> tuple[Box, Box]:
    """The whole pixels around ``box``, and ``box`` within them.

    Cropping the whole pixels, then resizing the exact box out of them in one
    bilinear step (antialiased when shrinking), places the box to a fraction
    of a pixel.
    """
    outer = (math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3]))
    inner = (box[0] - outer[0], box[1] - outer[1], box[2] - outer[0], box[3] - outer[1])
    return outer, inner


def body_box(luminance: Image.Image) -> Box | None:
    """The body's bounding box ``(left, top, right, bottom)`` in ``luminance``'s pixels.

    Pixels outside the 0.5th-99.5th percentiles of the body's coordinates are
    ignored, so a few stray bright pixels do not stretch the box. None when
    the picture is flat. A picture in another mode than ``L`` is converted.

    The body is looked for on a copy of at most `FIND_SIDE` pixels a side,
    then, while none stood out, on copies `FINER` times finer each (up to
    `FINEST_SIDE`): a planet a few dozen pixels across in a telescope's wide
    black frame vanishes from the coarse copy. A body found small in a large
    picture (`REFINE`) is found again on the region around it, so its box is
    as exact as a large body's.
    """
    if luminance.mode != "L":
        luminance = luminance.convert("L")
    side = FIND_SIDE
    factor = _factor(luminance, side)
    found = _find(luminance, factor)
    while found is None and factor > 1 and side < FINEST_SIDE:
        side *= FINER
        factor = _factor(luminance, side)
        found = _find(luminance, factor)
    if found is None or factor == 1:
        return found
    left, top, right, bottom = found
    extent = max(right - left, bottom - top)
    if extent * REFINE >= max(luminance.size):
        return found
    region = (
        max(0, math.floor(left - extent)),
        max(0, math.floor(top - extent)),
        min(luminance.width, math.ceil(right + extent)),
        min(luminance.height, math.ceil(bottom + extent)),
    )
    around = luminance.crop(region)
    fine = _find(around, _factor(around, FIND_SIDE))
    if fine is None:
        return found
    return (fine[0] + region[0], fine[1] + region[1], fine[2] + region[0], fine[3] + region[1])


def _factor(image: Image.Image, side: int) -> int:
    """The whole factor that brings ``image`` to at most ``side`` pixels a side."""
    return max(1, math.ceil(max(image.size) / side))


def _find(luminance: Image.Image, factor: int) -> Box | None:
    """`body_box` on ``luminance`` reduced by ``factor``, in ``luminance``'s pixels."""
    small = luminance.reduce(factor) if factor > 1 else luminance
    values = _minimum3(np.asarray(small, dtype=np.uint8))
    counts = np.bincount(values.ravel(), minlength=256)
    low, high = percentiles(counts, [2.0, 99.5])
    brightest = float(np.flatnonzero(counts)[-1])
    if high - low < MIN_CONTRAST:
        # A body under 0.5% of the picture leaves the 99.5th percentile on the
        # background: the brightest value the minimum kept is then its bright end.
        high = brightest
        if high - low < MIN_CONTRAST:
            return None
    body = values > low + THRESHOLD * (high - low)
    if body.mean() > MOSTLY:
        # Most of the picture passed for the body. If that majority is flat,
        # it is a faint sky (a black border, as stacking leaves, set the
        # background), not a body: the sky, the picture's median, is then the
        # background and the brightest value the bright end, if that stands
        # out; else no body stands out on this copy (a finer one is tried).
        first, median, third = percentiles(counts, [25.0, 50.0, 75.0])
        if third - first < MIN_CONTRAST:
            if median - low >= SKY * (brightest - low):
                return None
            body = values > median + THRESHOLD * (brightest - median)
    left, right = percentiles(body.sum(axis=0), [0.5, 99.5])
    top, bottom = percentiles(body.sum(axis=1), [0.5, 99.5])
    # The minimum took one pixel off every edge of the body: give it back.
    return (
        (float(left) - 1) * factor,
        (float(top) - 1) * factor,
        (float(right) + 2) * factor,
        (float(bottom) + 2) * factor,
    )


def percentiles(counts: np.ndarray, percents: list[float]) -> np.ndarray:
    """``np.percentile`` of the sample holding ``counts[v]`` times each integer ``v``.

    Bit for bit what ``np.percentile`` (its default, linear interpolation)
    gives on the sample itself, without sorting it: the body is found on
    every picture prepared and every upload served, and sorting took most of
    that. ``counts`` must not be all zero.
    """
    size = int(counts.sum())
    virtual = (size - 1) * (np.asarray(percents, dtype=np.float64) / 100)
    below = np.floor(virtual)
    weight = virtual - below
    ends = np.cumsum(counts)
    lower = np.minimum(below, size - 1).astype(np.int64)
    low = np.searchsorted(ends, lower, side="right").astype(np.float64)
    high = np.searchsorted(ends, np.minimum(lower + 1, size - 1), side="right").astype(np.float64)
    # The two-sided interpolation of np.percentile, so that the results are equal.
    step = high - low
    return np.where(weight >= 0.5, high - step * (1 - weight), low + step * weight)


def _minimum3(values: np.ndarray) -> np.ndarray:
    """3x3 minimum of a 2-D array (edges repeated): a bright speck under 3 pixels vanishes."""
    padded = np.pad(values, 1, mode="edge")
    height, width = values.shape
    rows = np.minimum(np.minimum(padded[:-2], padded[1:-1]), padded[2:])
    return np.minimum(np.minimum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])[:height, :width]


def _normalised(image: Image.Image, box: Box, size: int) -> Image.Image:
    """The view of ``box``, its values scaled so its luminance's bright end is `EXPOSURE_LEVEL`.

    Each band is resized as floats, so the gain is measured and applied before
    any rounding: a picture at half the exposure gives the same view.
    """
    outer, inner = _pixel_boxes(box)
    resized = [
        band.convert("F").resize(
            (size, size), Image.Resampling.BILINEAR, box=inner, reducing_gap=None
        )
        for band in image.crop(outer).split()
    ]
    bands = np.stack([np.asarray(band) for band in resized], axis=-1)
    luminance = bands @ LUMA if bands.shape[-1] == 3 else bands[..., 0]
    bright = float(np.percentile(luminance, EXPOSURE_PERCENTILE))
    gain = EXPOSURE_LEVEL / bright if bright > 0 else 1.0
    scaled = np.clip(np.rint(bands * gain), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled if image.mode == "RGB" else scaled[..., 0], image.mode)
