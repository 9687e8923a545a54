"""Render a synthetic dataset of the ten bodies of the reference dataset.

Everything is procedural NumPy, with no download: each body has a fixed
surface (an equirectangular albedo map built once per process from seeded
value noise, bands, spots and craters, as its real surface is fixed), and each
image shows it as a sphere from a random orientation (spin about its axis,
tilt, roll), at a jittered scale and offset, under optional phase lighting,
with colour jitter and sensor noise. Saturn's rings are intersected with the
line of sight, so they open and close with the tilt.

``variation`` adds the spread of real pictures on top: exposure, the body's
size, its position and its colour saturation, each in proportion to it. At 0
nothing is drawn for it, so the images are those of a renderer without it.

Images are deterministic: image ``i`` of a body depends only on ``(seed,
body, i)`` (and ``variation``), so asking for more images per class keeps the
first ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field

from celestial_data.dataset import can_fork, default_workers, listing, parallel_map
from celestial_data.errors import DatasetError, ParamsError
from celestial_data.params import Params

__all__ = [
    "BODIES",
    "MANIFEST",
    "SynthParams",
    "build_surfaces",
    "montage",
    "render",
    "synthesize",
]

#: The list of what `synthesize` rendered into a folder, with each file's
#: SHA-256: a hidden folder, which dataset readers skip.
MANIFEST = Path(".synth") / "renders.json"


class SynthParams(Params):
    """The ``synth`` section of ``params.yaml``."""

    section = "synth"

    per_class: int = Field(
        100,
        ge=1,
        le=1_000_000,
        description="images rendered per body; image *i* of a body is the same whatever the "
        "count, so raising it keeps the first images",
    )
    size: int = Field(
        128, ge=16, le=1024, description="side of the square JPEG images, in pixels (16 to 1024)"
    )
    seed: int = Field(
        0,
        ge=0,
        le=2**63 - 1,
        description="seed of the whole dataset: the orientation, scale, offset, lighting and "
        "noise of every image",
    )
    variation: float = Field(
        0.0,
        ge=0,
        le=1,
        description="how far the images stray from the usual view, from 0 (not at all) to 1, "
        "each change in proportion: exposure (from half to twice as bright at 1), size (the "
        "body down to 0.6 of its usual size), position (off-centre by up to a fifth of the "
        "side, the body kept whole) and colour (desaturated, a quarter of the images grey at "
        "1); image *i* keeps its pose, lighting and noise whatever the value, and `0` writes "
        "the same bytes as before this key existed",
    )


BODIES: tuple[str, ...] = (
    "Earth",
    "Jupiter",
    "Mars",
    "Mercury",
    "Moon",
    "Neptune",
    "Pluto",
    "Saturn",
    "Uranus",
    "Venus",
)

TEXTURE_HEIGHT = 192
TEXTURE_WIDTH = 2 * TEXTURE_HEIGHT
# The surfaces are the same whatever the dataset seed, as real surfaces are.
SURFACE_SEED = 20240607
JPEG_QUALITY = 92
PHASE_CHANCE = 0.5
NOISE = 0.03
# At variation 1: exposure from 2**-1 to 2**1, the body's radius down to
# 1 - 0.4 of its usual size, its centre up to 0.2 of the side away, and
# desaturation up to 4/3 (so a quarter of the pictures are fully grey).
EXPOSURE_STOPS = 1.0
MAX_SHRINK = 0.4
MAX_SHIFT = 0.2
MAX_DESATURATION = 4 / 3
# Rec. 601 luma, as Pillow's conversion to grayscale uses.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# ---------------------------------------------------------------- noise


@cache
def _sphere_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latitude, longitude (radians) and unit vectors of the texel centres."""
    lat = (0.5 - (np.arange(TEXTURE_HEIGHT) + 0.5) / TEXTURE_HEIGHT) * math.pi
    lon = ((np.arange(TEXTURE_WIDTH) + 0.5) / TEXTURE_WIDTH) * 2 * math.pi - math.pi
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    xyz = np.stack(
        [np.cos(lat2) * np.cos(lon2), np.cos(lat2) * np.sin(lon2), np.sin(lat2)], axis=-1
    )
    return lat2, lon2, xyz


class _Noise:
    """Seeded 3-D value noise and its fractal sum, evaluated on points."""

    PERIOD = 64

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        lattice = rng.random((self.PERIOD,) * 3)
        # One extra layer on each axis (a copy of the first), so the eight
        # corners of a cell are plain offsets into one flat table.
        self.table = np.pad(lattice, (0, 1), mode="wrap").reshape(-1)
        self.shifts = rng.uniform(0, self.PERIOD, size=(16, 3))

    def value(self, points: np.ndarray) -> np.ndarray:
        """Smooth noise in [0, 1] at ``points`` (..., 3), one feature per unit."""
        cell = np.floor(points)
        frac = points - cell
        weight = frac * frac * (3 - 2 * frac)
        index = cell.astype(np.int64) & (self.PERIOD - 1)
        side = self.PERIOD + 1
        base = (index[..., 0] * side + index[..., 1]) * side + index[..., 2]
        table = self.table
        dx, dy = side * side, side
        c000, c100 = table[base], table[base + dx]
        c010, c110 = table[base + dy], table[base + dx + dy]
        c001, c101 = table[base + 1], table[base + dx + 1]
        c011, c111 = table[base + dy + 1], table[base + dx + dy + 1]
        wx, wy, wz = weight[..., 0], weight[..., 1], weight[..., 2]
        x00 = c000 + wx * (c100 - c000)
        x10 = c010 + wx * (c110 - c010)
        x01 = c001 + wx * (c101 - c001)
        x11 = c011 + wx * (c111 - c011)
        y0 = x00 + wy * (x10 - x00)
        y1 = x01 + wy * (x11 - x01)
        return y0 + wz * (y1 - y0)

    def fbm(self, points: np.ndarray, frequency: float, octaves: int = 5) -> np.ndarray:
        """Fractal sum of ``octaves`` of noise, normalised to about [0, 1]."""
        total = np.zeros(points.shape[:-1])
        amplitude, norm = 1.0, 0.0
        for octave in range(octaves):
            total += amplitude * self.value(points * frequency + self.shifts[octave])
            norm += amplitude
            amplitude *= 0.5
            frequency *= 2.0
        return total / norm


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _mix(a: np.ndarray, b: Sequence[float] | np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (np.asarray(b, dtype=float) - a) * t[..., None]


def _fill(color: Sequence[float]) -> np.ndarray:
    return np.broadcast_to(np.asarray(color, dtype=float), (*_sphere_grid()[0].shape, 3)).copy()


def _cover(field: np.ndarray, share: float, softness: float) -> np.ndarray:
    """0..1 mask over the highest ``share`` of the sphere's area in ``field``.

    The threshold is an area-weighted quantile, so the share does not depend
    on the noise's distribution; ``softness`` blurs the edge (in field units).
    """
    weights = np.cos(_sphere_grid()[0]).reshape(-1)
    order = np.argsort(field.reshape(-1))
    cumulative = np.cumsum(weights[order])
    cut = np.searchsorted(cumulative, (1 - share) * cumulative[-1])
    threshold = field.reshape(-1)[order[min(cut, order.size - 1)]]
    return _smoothstep(threshold - softness, threshold + softness, field)


def _spot(lat0: float, lon0: float, width: float, height: float) -> np.ndarray:
    """Elliptic distance (1 at the edge) from a spot centred at ``lat0, lon0``."""
    lat, lon, _ = _sphere_grid()
    dlon = (lon - lon0 + math.pi) % (2 * math.pi) - math.pi
    return np.hypot(dlon * np.cos(lat) / width, (lat - lat0) / height)


def _craters(
    albedo: np.ndarray, rng: np.random.Generator, count: int, sizes: tuple[float, float]
) -> np.ndarray:
    """Add ``count`` craters (dark floor, bright rim, lit on one side)."""
    lat_grid, lon_grid, xyz = _sphere_grid()
    shade = np.zeros(lat_grid.shape)
    small, large = sizes
    # A power law: many small craters, few large ones.
    radii = small * (large / small) ** (rng.random(count) ** 2.5)
    centres = rng.normal(size=(count, 3))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows_per_radian = TEXTURE_HEIGHT / math.pi
    for centre, radius in zip(centres, radii, strict=True):
        lat0 = math.asin(centre[2])
        reach = 1.6 * radius
        top = max(0, int((math.pi / 2 - lat0 - reach) * rows_per_radian))
        bottom = min(TEXTURE_HEIGHT, int((math.pi / 2 - lat0 + reach) * rows_per_radian) + 1)
        band = xyz[top:bottom]
        distance = np.sqrt(np.maximum(0.0, 2 - 2 * band @ centre)) / radius
        near = distance < 1.6
        if not near.any():
            continue
        d = distance[near]
        # East-west position inside the crater gives a lit and a shadowed wall.
        east = (lon_grid[top:bottom][near] - math.atan2(centre[1], centre[0]) + math.pi) % (
            2 * math.pi
        ) - math.pi
        side = np.clip(east * np.cos(lat0) / radius, -1, 1)
        profile = (
            -0.10 * _smoothstep(1.0, 0.6, d)
            + 0.14 * np.exp(-(((d - 1.0) / 0.18) ** 2))
            + 0.10 * side * (d < 1.0)
            + 0.04 * np.exp(-(((d - 1.4) / 0.25) ** 2))
        )
        shade[top:bottom][near] += profile
    return albedo * (1 + shade[..., None])


def _rays(rng: np.random.Generator, count: int) -> np.ndarray:
    """Bright ray systems around a few young craters, as a 0..1 mask."""
    lat, _, xyz = _sphere_grid()
    mask = np.zeros(lat.shape)
    for _ in range(count):
        centre = rng.normal(size=3)
        centre /= np.linalg.norm(centre)
        distance = np.arccos(np.clip(xyz @ centre, -1, 1))
        tangent = xyz - (xyz @ centre)[..., None] * centre
        reference = np.cross(centre, [0.0, 0.0, 1.0])
        reference /= np.linalg.norm(reference)
        angle = np.arctan2(tangent @ np.cross(centre, reference), tangent @ reference)
        spokes = np.maximum(0, np.cos(angle * rng.integers(7, 13) + rng.uniform(0, 6))) ** 6
        reach = rng.uniform(0.25, 0.5)
        mask += np.exp(-distance / reach * 3) * (0.3 + 0.7 * spokes) * (distance > 0.015)
        mask += 0.8 * (distance < 0.02)
    return np.clip(mask, 0, 1)


# ---------------------------------------------------------------- surfaces


def _bands(
    noise: _Noise, profile: Callable[[np.ndarray], np.ndarray], turbulence: float
) -> np.ndarray:
    """A band value per texel from a latitude profile, wobbled by noise."""
    lat, _, xyz = _sphere_grid()
    stretched = xyz * np.array([2.0, 2.0, 10.0])
    wobble = turbulence * (noise.fbm(stretched, 1.0, 4) - 0.5)
    return profile(lat + wobble)


def _jupiter(noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    lat, _, xyz = _sphere_grid()

    def profile(latitude: np.ndarray) -> np.ndarray:
        degrees = np.degrees(latitude)
        belts = np.zeros_like(degrees)
        for centre, half, depth in [
            (-16, 7, 1.0),
            (16, 6, 0.9),
            (-31, 4, 0.6),
            (28, 4, 0.6),
            (40, 3, 0.45),
            (-42, 3, 0.45),
            (0, 3, 0.3),
        ]:
            belts = np.maximum(
                belts, depth * _smoothstep(half + 2.5, half - 1.0, abs(degrees - centre))
            )
        return belts

    belts = _bands(noise, profile, 0.14)
    streaks = noise.fbm(xyz * np.array([3.0, 3.0, 24.0]), 1.0, 4)
    albedo = _mix(_fill((0.92, 0.88, 0.78)), (0.68, 0.50, 0.34), belts)
    albedo *= (0.88 + 0.24 * streaks)[..., None]
    polar = _smoothstep(50, 75, np.abs(np.degrees(lat)))
    albedo = _mix(albedo, (0.62, 0.58, 0.54), polar * 0.7)
    spot = _spot(math.radians(-22), 0.5, 0.22, 0.10)
    albedo = _mix(albedo, (0.96, 0.92, 0.84), _smoothstep(1.45, 1.05, spot) * 0.8)
    albedo = _mix(albedo, (0.80, 0.40, 0.26), _smoothstep(1.0, 0.55, spot))
    return albedo


def _saturn(noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    lat, _, _ = _sphere_grid()

    def profile(latitude: np.ndarray) -> np.ndarray:
        return 0.5 + 0.5 * np.sin(np.degrees(latitude) / 5.0)

    bands = _bands(noise, profile, 0.04)
    albedo = _mix(_fill((0.93, 0.84, 0.62)), (0.80, 0.68, 0.46), bands * 0.6)
    polar = _smoothstep(55, 80, np.abs(np.degrees(lat)))
    return _mix(albedo, (0.62, 0.66, 0.66), polar * 0.6)


def _uranus(noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    lat, _, xyz = _sphere_grid()
    haze = noise.fbm(xyz * np.array([1.0, 1.0, 5.0]), 2.0, 3)
    albedo = _fill((0.66, 0.86, 0.89)) * (0.97 + 0.06 * haze)[..., None]
    return _mix(albedo, (0.78, 0.92, 0.93), _smoothstep(40, 80, np.degrees(lat)) * 0.6)


def _neptune(noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    lat, _, xyz = _sphere_grid()

    def profile(latitude: np.ndarray) -> np.ndarray:
        return 0.5 + 0.5 * np.sin(np.degrees(latitude) / 7.0)

    bands = _bands(noise, profile, 0.08)
    albedo = _mix(_fill((0.25, 0.45, 0.88)), (0.18, 0.33, 0.75), bands)
    spot = _spot(math.radians(-22), 1.0, 0.26, 0.12)
    albedo = _mix(albedo, (0.08, 0.16, 0.45), _smoothstep(1.0, 0.5, spot))
    streaks = noise.fbm(xyz * np.array([4.0, 4.0, 30.0]) + 7.0, 1.0, 3)
    clouds = _smoothstep(0.62, 0.75, streaks) * (
        _smoothstep(14, 4, np.abs(np.degrees(lat) + 34))
        + _smoothstep(10, 3, np.abs(np.degrees(lat) - 26))
    )
    return _mix(albedo, (0.85, 0.90, 0.98), np.clip(clouds, 0, 1) * 0.9)


def _venus(noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    _, _, xyz = _sphere_grid()
    swirl = noise.fbm(xyz * np.array([2.0, 2.0, 6.0]), 1.5, 5)
    fine = noise.fbm(xyz, 6.0, 3)
    albedo = _mix(_fill((0.98, 0.86, 0.58)), (0.86, 0.68, 0.40), _smoothstep(0.35, 0.7, swirl))
    return albedo * (0.95 + 0.1 * fine)[..., None]


def _mars(noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    lat, _, xyz = _sphere_grid()
    regions = noise.fbm(xyz, 1.6, 6)
    detail = noise.fbm(xyz, 10.0, 3)
    albedo = _mix(_fill((0.80, 0.43, 0.24)), (0.70, 0.34, 0.18), detail)
    albedo = _mix(albedo, (0.38, 0.20, 0.13), _cover(regions, 0.3, 0.05) * 0.85)
    albedo = _craters(albedo, rng, 120, (0.01, 0.05))
    caps = _smoothstep(74, 80, np.abs(np.degrees(lat)) + 6 * (detail - 0.5))
    return _mix(albedo, (0.95, 0.94, 0.92), caps)


def _earth(noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    lat, _, xyz = _sphere_grid()
    land = noise.fbm(xyz, 1.3, 6)
    dry = noise.fbm(xyz + 11.0, 2.5, 4)
    latitude = np.abs(np.degrees(lat))
    is_land = _cover(land, 0.3, 0.015)
    shelf = _cover(land, 0.55, 0.06)  # shallower, lighter water near the coasts
    ocean = _mix(_fill((0.04, 0.12, 0.38)), (0.07, 0.22, 0.52), shelf)
    desert = _smoothstep(0.45, 0.65, dry) * _smoothstep(45, 20, latitude)
    ground = _mix(_fill((0.20, 0.36, 0.14)), (0.72, 0.60, 0.40), desert)
    albedo = _mix(ocean, ground, is_land)
    ice = _smoothstep(66, 74, latitude + 8 * (dry - 0.5))
    return _mix(albedo, (0.95, 0.96, 0.98), ice)


def _moon(noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    lat, lon, xyz = _sphere_grid()
    detail = noise.fbm(xyz, 8.0, 4)
    albedo = _fill((0.66, 0.65, 0.63)) * (0.9 + 0.2 * detail)[..., None]
    # Maria cluster on the near side (longitude 0), as on the real Moon.
    near_side = np.cos(lat) * np.cos(lon) * 0.5 + 0.5
    maria = _cover(noise.fbm(xyz, 1.8, 5) + 0.22 * (near_side - 0.5), 0.25, 0.04)
    albedo = _mix(albedo, (0.34, 0.34, 0.35), maria * 0.9)
    albedo = _craters(albedo, rng, 260, (0.012, 0.10))
    return albedo + 0.25 * _rays(rng, 3)[..., None]


def _mercury(noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    _, _, xyz = _sphere_grid()
    detail = noise.fbm(xyz, 6.0, 4)
    albedo = _fill((0.56, 0.55, 0.53)) * (0.92 + 0.16 * detail)[..., None]
    albedo = _craters(albedo, rng, 700, (0.01, 0.07))
    return albedo + 0.22 * _rays(rng, 6)[..., None]


def _heart(lat0: float, lon0: float, scale: float) -> np.ndarray:
    """Inside (<= 0) of a heart curve drawn on the sphere around ``lat0, lon0``."""
    lat, lon, _ = _sphere_grid()
    dlon = (lon - lon0 + math.pi) % (2 * math.pi) - math.pi
    x = dlon * np.cos(lat) / scale
    y = (lat - lat0) / scale + 0.25
    return (x * x + y * y - 1) ** 3 - x * x * y**3


def _pluto(noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    _, _, xyz = _sphere_grid()
    mottle = noise.fbm(xyz, 3.0, 5)
    albedo = _mix(_fill((0.80, 0.76, 0.70)), (0.52, 0.44, 0.38), _smoothstep(0.45, 0.7, mottle))
    # Cthulhu: a long dark red-brown band south of the equator.
    dark = _smoothstep(1.0, 0.5, _spot(math.radians(-15), math.radians(-85), 1.3, 0.55))
    dark = np.clip(dark + 0.5 * _smoothstep(0.55, 0.7, noise.fbm(xyz + 3.0, 2.0, 4)) * dark, 0, 1)
    albedo = _mix(albedo, (0.24, 0.15, 0.12), dark)
    heart = _smoothstep(0.05, -0.05, _heart(math.radians(18), math.radians(10), 0.55))
    albedo = _mix(albedo, (0.97, 0.95, 0.92), heart * (0.85 + 0.15 * mottle))
    return albedo


_SURFACES: dict[str, Callable[[_Noise, np.random.Generator], np.ndarray]] = {
    "Earth": _earth,
    "Jupiter": _jupiter,
    "Mars": _mars,
    "Mercury": _mercury,
    "Moon": _moon,
    "Neptune": _neptune,
    "Pluto": _pluto,
    "Saturn": _saturn,
    "Uranus": _uranus,
    "Venus": _venus,
}


@cache
def _surface(body: str) -> np.ndarray:
    """The body's albedo map, float32 ``(H, W, 3)``, built once per process."""
    index = BODIES.index(body)
    noise = _Noise(SURFACE_SEED + index)
    rng = np.random.default_rng([SURFACE_SEED, index])
    albedo = _SURFACES[body](noise, rng)
    return np.clip(albedo, 0, 1).astype(np.float32)


@cache
def _clouds() -> np.ndarray:
    """Earth's cloud cover (0..1 per texel); each image shows it turned at random."""
    _, _, xyz = _sphere_grid()
    noise = _Noise(SURFACE_SEED - 1)
    swirls = noise.fbm(xyz * np.array([1.0, 1.0, 2.5]), 2.5, 6)
    return _cover(swirls, 0.3, 0.1).astype(np.float32)


# ---------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Variation:
    """How one picture strays from the usual view; the defaults change nothing."""

    exposure: float = 1.0  # factor on the brightness
    scale: float = 1.0  # factor on the body's radius
    shift: tuple[float, float] = (0.0, 0.0)  # offset of the centre, in sides (x, y)
    desaturation: float = 0.0  # 0: the colours as rendered; 1: grey


def _draw_variation(rng: np.random.Generator, amount: float) -> _Variation:
    """One picture's variation, each change in proportion to ``amount`` (0 to 1).

    The draws do not depend on ``amount``, so a picture's changes grow with it
    in the same direction: its exposure at 0.5 is halfway (in stops) to its
    exposure at 1.
    """
    exposure, shrink, reach, angle, grey = rng.random(5)
    distance = amount * MAX_SHIFT * reach
    return _Variation(
        exposure=2.0 ** (amount * EXPOSURE_STOPS * (2 * exposure - 1)),
        scale=1 - amount * MAX_SHRINK * shrink,
        shift=(distance * math.cos(2 * math.pi * angle), distance * math.sin(2 * math.pi * angle)),
        desaturation=min(1.0, amount * MAX_DESATURATION * grey),
    )


def _rotation(tilt: float, roll: float) -> np.ndarray:
    """Columns: the body's x, y, z (axis) axes in view coordinates.

    View coordinates: x right, y up, z toward the viewer. With no tilt or roll
    the axis points up and longitude 0 faces the viewer.
    """
    base = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    ct, st = math.cos(tilt), math.sin(tilt)
    cr, sr = math.cos(roll), math.sin(roll)
    tilt_x = np.array([[1, 0, 0], [0, ct, -st], [0, st, ct]])
    roll_z = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return roll_z @ tilt_x @ base


def _sample(texture: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    height, width = texture.shape[:2]
    row = np.clip(((0.5 - lat / math.pi) * height).astype(np.int64), 0, height - 1)
    column = (((lon / (2 * math.pi)) + 0.5) * width).astype(np.int64) % width
    # One flat gather is several times faster than indexing two axes.
    flat = texture.reshape(height * width, -1) if texture.ndim == 3 else texture.reshape(-1)
    return np.take(flat, row * width + column, axis=0)


def _ring_layer(
    x: np.ndarray, y: np.ndarray, axis: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour, opacity and depth of Saturn's rings along each line of sight."""
    depth = -(axis[0] * x + axis[1] * y) / axis[2]
    radius = np.sqrt(x * x + y * y + depth * depth)
    optical = (
        0.08 * ((radius > 1.24) & (radius < 1.53))
        + 1.2 * ((radius >= 1.53) & (radius < 1.95))
        + 0.05 * ((radius >= 1.95) & (radius < 2.03))
        + 0.55 * ((radius >= 2.03) & (radius < 2.27))
    )
    ripple = 0.85 + 0.15 * np.cos(radius * 60.0)
    opacity = 1 - np.exp(-optical * ripple / max(abs(axis[2]), 0.05))
    shade = np.clip(0.55 + 0.45 * (radius - 1.24) / 0.7, 0.55, 1.0)
    colour = np.array([0.86, 0.78, 0.62])[None, :] * shade[:, None]
    return colour, opacity, depth


def render(
    body: str,
    rng: np.random.Generator,
    size: int = 128,
    phase_chance: float = PHASE_CHANCE,
    noise: float = NOISE,
    variation: float = 0.0,
) -> np.ndarray:
    """Render one image of ``body`` as uint8 ``(size, size, 3)``.

    Args:
        body: One of `BODIES`.
        rng: The source of this image's randomness (orientation, scale,
            offset, lighting, colour and noise).
        size: Side of the square image in pixels.
        phase_chance: Probability that the body is lit from the side (a
            gibbous phase) rather than face on.
        noise: Largest standard deviation of the sensor noise (0..1 scale);
            each image draws its own from 0 to this.
        variation: How far the picture strays from the usual view (0 to 1):
            exposure, size, position and colour saturation, as described by
            `SynthParams.variation`. Its draws come from a stream spawned
            from ``rng``, so the rest of the image is the same as at 0.

    Returns:
        The image, on a black background.
    """
    if body not in BODIES:
        raise ValueError(f"body must be one of {', '.join(BODIES)}. Received: {body!r}")
    if not 0 <= variation <= 1:
        raise ValueError(f"variation must be from 0 to 1. Received: {variation!r}")
    # Spawning leaves rng's own stream as it was; at 0 nothing is drawn at all.
    look = _draw_variation(rng.spawn(1)[0], variation) if variation > 0 else _Variation()
    ringed = body == "Saturn"
    radius = size * (rng.uniform(0.15, 0.2) if ringed else rng.uniform(0.33, 0.46)) * look.scale
    extent = radius * (2.3 if ringed else 1.0)
    slack = max(0.0, size / 2 - extent - 1)
    offset = rng.uniform(-0.6, 0.6, size=2) * slack + np.multiply(look.shift, size)
    # Clipped to the slack, the body (and Saturn's rings) stays whole in the frame.
    centre = size / 2 + np.clip(offset, -slack, slack)
    spin = rng.uniform(-math.pi, math.pi)
    if ringed:
        tilt = rng.choice([-1, 1]) * rng.uniform(0.06, 0.55)
        roll = rng.uniform(-0.35, 0.35)
    else:
        tilt = rng.uniform(-0.45, 0.45)
        roll = rng.uniform(-0.6, 0.6)
    frame = _rotation(tilt, roll)
    # Light: full face on (as most survey images are) or at a phase angle.
    if rng.random() < phase_chance:
        phase = rng.uniform(0.3, 1.4)
        direction = rng.uniform(0, 2 * math.pi)
        light = np.array(
            [
                math.sin(phase) * math.cos(direction),
                math.sin(phase) * math.sin(direction),
                math.cos(phase),
            ]
        )
    else:
        light = np.array([0.0, 0.0, 1.0])
    gain = rng.uniform(0.85, 1.1) * (1 + rng.normal(0, 0.04, size=3))

    coords = (np.arange(size) + 0.5 - centre[0]) / radius
    rows = (centre[1] - (np.arange(size) + 0.5)) / radius
    x, y = np.meshgrid(coords, rows)
    canvas = np.zeros((size, size, 3), dtype=np.float32)
    r2 = x * x + y * y
    coverage = np.clip((1 - np.sqrt(r2)) * radius + 0.5, 0, 1)
    inside = coverage > 0
    px, py = x[inside], y[inside]
    pz = np.sqrt(np.maximum(0.0, 1 - px * px - py * py))
    normal = np.stack([px, py, pz], axis=-1)
    local = normal @ frame
    lat = np.arcsin(np.clip(local[:, 2], -1, 1))
    lon = np.arctan2(local[:, 1], local[:, 0]) + spin
    lon = (lon + math.pi) % (2 * math.pi) - math.pi
    albedo = _sample(_surface(body), lat, lon).astype(np.float64)
    if body == "Earth":
        turn = rng.uniform(-math.pi, math.pi)
        cover = _sample(_clouds(), -lat if rng.random() < 0.5 else lat, lon + turn)
        albedo = _mix(albedo, (0.97, 0.97, 0.98), cover * 0.85)
    incidence = np.clip(normal @ light, 0, 1)
    if body in ("Mercury", "Moon", "Pluto", "Mars"):
        # Lommel-Seeliger: airless bodies look flat at full phase.
        light_amount = np.clip(2 * incidence / (incidence + pz + 1e-6), 0, 1.2)
    else:
        # Thick atmospheres: softer terminator, some limb darkening.
        light_amount = np.sqrt(incidence) * (0.7 + 0.3 * pz)
    colour = albedo * (0.03 + light_amount)[:, None]
    if body == "Earth":
        colour = _mix(colour, (0.35, 0.55, 0.95), (1 - pz) ** 3 * 0.5 * (incidence > 0))
    canvas[inside] = colour * coverage[inside][:, None]

    if ringed:
        axis = frame[:, 2]
        box = np.abs(y) < 2.4
        colour, opacity, depth = _ring_layer(x[box], y[box], axis)
        # The planet hides the ring behind it; the ring covers the planet behind it.
        surface = np.sqrt(np.maximum(0.0, 1 - x[box] ** 2 - y[box] ** 2))
        hidden = (r2[box] < 1) & (depth < surface)
        opacity = np.where(hidden, 0.0, opacity)
        lit = 0.08 + 0.92 * max(0.3, float(light[2]))
        canvas[box] = _mix(canvas[box], colour * lit, opacity)
        inside[box] |= opacity > 0

    canvas *= gain.astype(np.float32)
    if look.exposure != 1:
        canvas *= np.float32(look.exposure)
    # Sensor noise on the body only: the background stays black, as in the
    # reference images.
    sigma = np.float32(rng.uniform(0.0, noise))
    canvas[inside] += rng.standard_normal((int(inside.sum()), 3), dtype=np.float32) * sigma
    if look.desaturation > 0:
        # After the noise, so that a grey picture is grey to the last pixel.
        grey = np.clip(canvas, 0, 1) @ LUMA
        weight = np.float32(look.desaturation)
        canvas = canvas * (1 - weight) + grey[..., None] * weight
    return (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------- datasets


def _encode(image: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(image).save(stream, format="JPEG", quality=JPEG_QUALITY)
    return stream.getvalue()


def synthesize(
    out: str | Path,
    params: SynthParams | Mapping[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    workers: int | None = None,
) -> list[Path]:
    """Render ``OUT/<Class>/<Class>_<i>.jpg`` for each class.

    Earlier renders of the chosen classes in ``out`` are removed first, so the
    folder holds exactly what was asked for. What was rendered is listed in
    ``out/`` `MANIFEST`; a file in ``out`` that is not listed there, or has
    changed since, is someone's own (the reference dataset's photos are named
    as renders are), so ``out`` is refused rather than anything deleted.

    Args:
        out: Output folder (created).
        params: Images per class, their size, the seed and the variation
            (default: the defaults).
        classes: Bodies to render (default: all of `BODIES`).
        workers: Processes (or threads, where forking is not safe) to render
            with (default: one per core).

    Returns:
        The paths written, class by class.

    Raises:
        ParamsError: If a class is unknown.
        DatasetError: If ``out`` holds files this function did not render.
    """
    params = SynthParams.of(params)
    per_class, size, seed, variation = params.per_class, params.size, params.seed, params.variation
    chosen = list(BODIES if classes is None else classes)
    unknown = [name for name in chosen if name not in BODIES]
    if unknown or not chosen:
        raise ParamsError(
            f"Unknown class(es) {', '.join(unknown) or '(none given)'}: synth renders "
            f"{', '.join(BODIES)} (names are case-sensitive)."
        )
    chosen = sorted(set(chosen), key=BODIES.index)
    out = Path(out)
    earlier = _earlier_renders(out)
    kept = {file: digest for file, digest in earlier.items() if file.split("/")[0] not in chosen}
    for file in earlier.keys() - kept.keys():
        (out / file).unlink()
    jobs = []
    for name in chosen:
        (out / name).mkdir(parents=True, exist_ok=True)
        jobs += [(name, i) for i in range(per_class)]

    build_surfaces(chosen)  # once, before the workers need them
    tasks = [(str(out), name, i, size, seed, variation) for name, i in jobs]
    workers = workers or default_workers()
    if workers > 1 and len(tasks) >= 8 * workers and can_fork():
        # Rendering is many small NumPy steps that hold the GIL, so processes
        # beat threads; forked workers share the surfaces built above.
        chunk = max(1, min(32, len(tasks) // (4 * workers)))
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            written = list(pool.imap(_make, tasks, chunksize=chunk))
    else:
        written = list(parallel_map(_make, tasks, workers))
    for (name, i), (_, digest) in zip(jobs, written, strict=True):
        kept[f"{name}/{name}_{i}.jpg"] = digest
    manifest = out / MANIFEST
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text(json.dumps({"renders": dict(sorted(kept.items()))}, indent=1) + "\n")
    return [Path(path) for path, _ in written]


def _earlier_renders(out: Path) -> dict[str, str]:
    """The files of ``out`` rendered by `synthesize`, by path (``Class/name``), with their SHA-256.

    Raises:
        DatasetError: If ``out`` is a file, or holds files (hidden ones aside)
            that its `MANIFEST` does not list as they are now.
    """
    if not out.exists():
        return {}
    if not out.is_dir():
        raise DatasetError(f"{out} is a file: give synth a folder to render into.")
    try:
        listed = json.loads((out / MANIFEST).read_text())["renders"]
    except (OSError, ValueError, KeyError, TypeError):
        listed = {}
    renders, foreign = {}, []
    for folder, folders, files in os.walk(out):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder, name)
            file = path.relative_to(out).as_posix()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if listed.get(file) == digest:
                renders[file] = digest
            else:
                foreign.append(file)
    if foreign:
        raise DatasetError(
            f"{out} holds {len(foreign)} file(s) synth did not render "
            f"({listing(foreign, limit=3)}); synth replaces "
            "its own earlier renders only, and never removes or mixes in other files. Render "
            "into an empty or new folder, or move those files out."
        )
    return renders


def _make(task: tuple[str, str, int, int, int, float]) -> tuple[str, str]:
    """Render image ``i`` of a body, write it as a JPEG; return its path and SHA-256."""
    out, name, i, size, seed, variation = task
    rng = np.random.default_rng([seed, BODIES.index(name), i])
    path = os.path.join(out, name, f"{name}_{i}.jpg")
    data = _encode(render(name, rng, size, variation=variation))
    with open(path, "wb") as stream:
        stream.write(data)
    return path, hashlib.sha256(data).hexdigest()


def build_surfaces(bodies: Sequence[str] = BODIES) -> None:
    """Build (and keep for this process) the surface maps of ``bodies``.

    Rendering builds them on first use; this pays the one-off cost up front.
    """
    for body in bodies:
        _surface(body)
    if "Earth" in bodies:
        _clouds()


def montage(
    per_class: int = 8, size: int = 128, seed: int = 0, variation: float = 0.0
) -> Image.Image:
    """A grid of renders, one row per body, for looking at the dataset."""
    grid = Image.new("RGB", (per_class * size, len(BODIES) * size))
    for row, name in enumerate(BODIES):
        for column in range(per_class):
            rng = np.random.default_rng([seed, row, column])
            image = render(name, rng, size, variation=variation)
            grid.paste(Image.fromarray(image), (column * size, row * size))
    return grid
