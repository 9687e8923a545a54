"""Varied copies of a picture: the same body as another camera or framing would show it.

`celestial-data prepare` writes ``prepare.varied`` copies of every validation
picture (the ``varied`` split), and training calibrates the unknown-image
threshold on them as well as on the pictures themselves, so that the share
of known images it accepts holds on pictures unlike the training ones, not
only on pictures like them (see `celestial_models.scoring.calibrate`). With
``prepare.train_varied``, it writes copies of every training picture too (the
``train_varied`` split), which the model is trained on with the pictures:
what the view cannot make alike (a turn by any angle, a body partly off the
picture, blur, compression) is then learnt.

Each copy is drawn from the source picture, before the canonical view
(`celestial_data.view`), as a real picture would differ: a change drawn on the
small prepared array is not the same change once the view has cropped and
shrunk the picture. The changes are those the model is trained or built to
answer alike (framing, orientation, sharpness, noise, compression), and
exposure when the view normalises it (``prepare.view.exposure``). Without
that, and for colour always, a changed picture is not drawn: for bodies told
apart by their brightness and colour, an exposed or grey picture is nearer
to another body than to its own, and calibrating on it would accept wrong
answers.
"""

from __future__ import annotations

import io
import math
import zlib
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

from celestial_data.view import body_box

if TYPE_CHECKING:
    from celestial_data.image import ImageFormat

__all__ = [
    "BLUR",
    "CONTEXT",
    "EXPOSURE_STOPS",
    "NOISE_SIGMA",
    "QUALITY",
    "SCALE",
    "SHIFT",
    "copy_rng",
    "reduced",
    "vary",
]

#: Range of the body's size in the copy, as a share of the picture's.
SCALE = (0.7, 1.0)
#: Largest shift of the picture, as a share of its side, in a random direction.
#: Past the largest shift a picture should still be accepted at (a fifth, as
#: `bench_robust` measures): the threshold rejects the far end of what it is
#: calibrated on, so the copies reach beyond it (with 0.2, known bodies a
#: fifth off the picture were accepted at 0.71 over five training seeds; with
#: 0.3, at 0.93).
SHIFT = 0.3
#: Largest Gaussian blur radius, as a share of the picture's side (1.5 px at 128).
BLUR = 0.012
#: Largest change of exposure, in stops either way (1: from half to twice the light).
EXPOSURE_STOPS = 1.0
#: Largest standard deviation of the Gaussian noise added (0-255 scale).
NOISE_SIGMA = 15.0
#: Range of the JPEG quality the copy is saved with and read back from.
QUALITY = (30, 95)
#: A copy is drawn on the picture reduced until what the view keeps of it is
#: at most this many times the model's side across (and at least `MIN_SIDE`).
DETAIL = 4
MIN_SIDE = 128
#: A copy of a picture much larger than its body is drawn on the square of this
#: many times the body's extent around it: a shift of `SHIFT` of its side and a
#: shrink to `SCALE`'s smallest keep the body inside it.
CONTEXT = 3.0


def reduced(image: Image.Image, image_format: ImageFormat) -> Image.Image:
    """``image`` cut and reduced to what its copies need, as small as they can be drawn on.

    With ``view.crop``, a picture much larger than its body (a planet in a
    telescope's wide frame) is first cut to the square of `CONTEXT` times the
    body's extent around it: room for every shift and shrink `vary` draws,
    and nothing of the frame the view would crop away. Then what the
    canonical view keeps (the body's square, else the whole picture) is
    brought down by a whole factor towards ``max(MIN_SIDE, DETAIL * size)``
    pixels across, never below: finer detail would be averaged away when the
    view shrinks it to the model's ``size``. So a copy of a 16-megapixel
    photo costs about what a copy of a 128-pixel picture does (drawn whole,
    it took 30 times as long as preparing the photo, and a few seconds for a
    small body in a wide frame), and its noise and blur are drawn at about
    the scale the model sees. A picture already that small is returned as it
    is. The mode is made ``RGB`` or ``L``, as `vary` makes it.
    """
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    smallest = max(MIN_SIDE, DETAIL * image_format.size)
    kept = float(max(image.size))
    if kept < 2 * smallest:  # no whole factor fits: the body need not be found
        return image
    if image_format.view.crop:
        found = body_box(image if image.mode == "L" else image.convert("L"))
        if found is not None:
            extent = max(found[2] - found[0], found[3] - found[1])
            kept = min(kept, extent * (1 + 2 * image_format.view.margin))
            image = _around(image, found, extent * CONTEXT)
    factor = int(kept // smallest)
    return image.reduce(factor) if factor > 1 else image


def _around(
    image: Image.Image, found: tuple[float, float, float, float], side: float
) -> Image.Image:
    """The square of ``side`` centred on the box ``found``, within ``image`` (all if larger)."""
    if side >= max(image.size):
        return image
    centre_x, centre_y, half = (found[0] + found[2]) / 2, (found[1] + found[3]) / 2, side / 2
    return image.crop(
        (
            max(0, math.floor(centre_x - half)),
            max(0, math.floor(centre_y - half)),
            min(image.width, math.ceil(centre_x + half)),
            min(image.height, math.ceil(centre_y + half)),
        )
    )


def copy_rng(seed: int, file: str, copy: int) -> np.random.Generator:
    """The generator of one copy of one file: the same whatever the order of the files."""
    return np.random.default_rng([seed, zlib.crc32(file.encode()), copy])


def vary(image: Image.Image, rng: np.random.Generator, exposure: bool = False) -> Image.Image:
    """A varied copy of ``image``: shrunk, shifted, turned, blurred, noisy, recompressed.

    The body is shrunk about the centre to a size drawn in `SCALE`, the picture
    moved by up to `SHIFT` of its side, turned by an angle drawn from 0 to 360
    degrees (black where the picture left), blurred (radius up to `BLUR` of
    the side), given Gaussian noise (up to `NOISE_SIGMA`), with ``exposure``
    exposed up to `EXPOSURE_STOPS` either way (highlights burn out), and saved
    as a JPEG of a quality drawn in `QUALITY`, then decoded. The copy has the
    size of ``image`` and its mode (``RGB`` or ``L``; others are made ``RGB``).

    Args:
        image: A decoded picture.
        rng: The copy's generator (see `copy_rng`).
        exposure: Whether to change the exposure too, for a view that
            normalises it. Without it, the copy is drawn as before the option.
    """
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    width, height = image.size
    factor = rng.uniform(*SCALE)
    small = image.resize(
        (max(1, round(width * factor)), max(1, round(height * factor))),
        Image.Resampling.BICUBIC,
    )
    angle = rng.uniform(0.0, 2 * np.pi)
    distance = rng.uniform(0.0, SHIFT)
    left = (width - small.width) // 2 + round(distance * width * np.cos(angle))
    top = (height - small.height) // 2 + round(distance * height * np.sin(angle))
    canvas = Image.new(image.mode, image.size)
    canvas.paste(small, (left, top))
    turned = canvas.rotate(rng.uniform(0.0, 360.0), resample=Image.Resampling.BICUBIC)
    radius = rng.uniform(0.0, BLUR * max(width, height))
    blurred = turned.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else turned
    pixels = np.asarray(blurred, dtype=np.float32)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * rng.uniform(0.0, NOISE_SIGMA)
    if exposure:
        pixels *= np.float32(2.0 ** rng.uniform(-EXPOSURE_STOPS, EXPOSURE_STOPS))
    noisy = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), image.mode)
    stream = io.BytesIO()
    noisy.save(stream, "JPEG", quality=int(rng.integers(QUALITY[0], QUALITY[1] + 1)))
    with Image.open(stream) as decoded:
        return decoded.convert(image.mode)
