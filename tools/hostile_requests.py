"""Hostile but well-formed HTTP requests to celestial-serve's API, as hypothesis strategies.

One generator for the fuzz test (``packages/serve/tests/test_fuzz.py``, a few
thousand requests) and the hostile benchmark (``bench/bench_hostile.py``, tens
of thousands): every upload form (a raw ``image/*`` body, JSON
``{"image": "<base64>"}``, a multipart ``file``) around valid, truncated,
corrupt or absurdly sized images, plus garbage content types, ``k`` and
``reject`` values, JSON nested or grown out of all proportion, and, for a
server with an API key, right and wrong keys.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = ["HostileRequest", "absurd_png", "hostile_requests", "repeatable"]

# Printable ASCII without surrounding spaces: what an HTTP client lets through.
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
    str.strip
)
BOUNDARY = "hostile-boundary"


@dataclass(frozen=True)
class HostileRequest:
    """One request: what `requests.request` sends to ``POST /predict``."""

    form: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: The key sent, when the server has one: whether it is the right one.
    right_key: bool = True
    method: str = field(default="POST")

    def __repr__(self) -> str:
        # Hypothesis prints the failing example: keep a long body readable.
        shown = self.body if len(self.body) <= 200 else self.body[:200] + b"..."
        return (
            f"HostileRequest(form={self.form!r}, query={self.query!r}, "
            f"headers={self.headers!r}, body={shown!r} ({len(self.body)} bytes), "
            f"right_key={self.right_key})"
        )


def chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk with its length and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def absurd_png(width: int, height: int, color_type: int = 2, pixels: bytes = b"\0") -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` pixels, with a tiny image inside."""
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    palette = chunk(b"PLTE", b"\0\0\0\xff\xff\xff") if color_type == 3 else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + palette
        + chunk(b"IDAT", zlib.compress(pixels))
        + chunk(b"IEND", b"")
    )


@st.composite
def images(draw: st.DrawFn, samples: list[bytes]) -> bytes:
    """An image file: valid, truncated, corrupt, or declaring an absurd size."""
    kind = draw(st.sampled_from(["valid", "truncated", "flipped", "absurd", "bytes"]))
    if kind == "absurd":
        side = st.integers(1, 2**31 - 1) | st.sampled_from([20_000, 6_300, 4_001, 65_535])
        return absurd_png(draw(side), draw(side), draw(st.sampled_from([0, 2, 3, 4, 6])))
    if kind == "bytes":
        return draw(st.binary(max_size=2048))
    data = bytearray(draw(st.sampled_from(samples)))
    if kind == "truncated":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flipped":
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=20)):
            data[position] ^= draw(st.integers(1, 255))
    return bytes(data)


@st.composite
def json_bodies(draw: st.DrawFn, image: bytes) -> bytes:
    """A JSON body around ``image``: as asked, as a data URL, wrong, deep or huge."""
    encoded = base64.b64encode(image).decode()
    kind = draw(st.sampled_from(["image", "data URL", "broken", "nested", "huge", "other"]))
    if kind == "image":
        return json.dumps({"image": encoded}).encode()
    if kind == "data URL":
        return json.dumps({"image": f"data:image/png;base64,{encoded}"}).encode()
    if kind == "broken":
        body = json.dumps({"image": encoded}).encode()
        return body[: draw(st.integers(0, len(body)))] + draw(st.binary(max_size=8))
    if kind == "nested":
        depth = draw(st.integers(1, 100_000))
        opener = draw(st.sampled_from([b"[", b'{"image": ', b'{"a": [']))
        return opener * depth + draw(st.sampled_from([b"", b"]" * depth, b"1"]))
    if kind == "huge":  # many keys, or a long string that is not base64
        count = draw(st.integers(1, 50_000))
        if draw(st.booleans()):
            return json.dumps({f"k{i}": i for i in range(count)}).encode()
        return json.dumps({"image": "@" * count * 10}).encode()
    value = st.none() | st.integers() | st.floats() | st.text(max_size=20) | st.lists(st.none())
    return json.dumps({"image": draw(value)}).encode()


@st.composite
def multipart_bodies(draw: st.DrawFn, image: bytes) -> tuple[str, bytes]:
    """A multipart form around ``image``, its content type first: right, misnamed or cut."""
    name = draw(st.sampled_from(["file", "file", "image", ""]))
    filename = draw(st.sampled_from(['; filename="x.png"', '; filename="x.png"', ""]))
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + image
    body += draw(st.sampled_from([f"\r\n--{BOUNDARY}--\r\n".encode(), b"", b"--"]))
    boundary = draw(st.sampled_from([BOUNDARY, BOUNDARY, "other", ""]))
    return f"multipart/form-data; boundary={boundary}", body


CONTENT_TYPES = st.sampled_from(
    ["image/png", "image/jpeg", "IMAGE/PNG; q=1", "image/", "image/x-unknown"]
)
GARBAGE_TYPES = (
    st.sampled_from(
        ["text/plain", "application/octet-stream", "application/x-www-form-urlencoded", "", ";;;"]
    )
    | HEADER_TEXT
)
QUERY_VALUES = (
    st.sampled_from(["1", "3", "5", "0", "-1", "1000", "true", "false", "no", "yes", "1e3"])
    | HEADER_TEXT
)


@st.composite
def hostile_requests(
    draw: st.DrawFn, samples: list[bytes], api_key: str | None = None
) -> HostileRequest:
    """A request to ``POST /predict`` in any form (``samples``: valid image files).

    With ``api_key``, most requests carry it, and the others a wrong one or none.
    """
    image = draw(images(samples))
    form = draw(st.sampled_from(["raw", "json", "multipart", "garbage"]))
    if form == "raw":
        content_type, body = draw(CONTENT_TYPES), image
    elif form == "json":
        content_type = draw(st.sampled_from(["application/json", "application/json; x=y"]))
        body = draw(json_bodies(image))
    elif form == "multipart":
        content_type, body = draw(multipart_bodies(image))
    else:
        content_type, body = draw(GARBAGE_TYPES), draw(st.sampled_from([image, b"", b"{}"]))
    headers = {"Content-Type": content_type} if content_type else {}
    query = draw(st.dictionaries(st.sampled_from(["k", "reject", "other"]), QUERY_VALUES))
    right_key = True
    if api_key is not None:
        right_key = draw(st.integers(0, 9)) > 0
        if right_key:
            headers["X-API-Key"] = api_key
        elif draw(st.booleans()):
            headers["X-API-Key"] = draw(HEADER_TEXT.filter(lambda key: key != api_key))
    return HostileRequest(form, query, headers, body, right_key)


def repeatable(requests: int) -> settings:
    """Hypothesis settings for a run of ``requests`` examples, the same on every run.

    No deadline (a request's time is the server's), no example database, and
    no health checks: large bodies and slow answers are the point.
    """
    return settings(
        max_examples=requests,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
