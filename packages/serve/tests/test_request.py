"""Upload parsing and checks, called directly."""

from __future__ import annotations

import base64
import io
import json
import pickle

import numpy as np
import pytest
from fastapi import HTTPException
from PIL import Image
from starlette.datastructures import QueryParams

from celestial_data import ImageFormat, decode, to_array
from celestial_serve.request import (
    PredictionRequest,
    UploadRules,
    check_query,
    decode_image,
    image_from_json,
    parse_k,
    takes_body,
)

RULES = UploadRules(ImageFormat(16, "rgb"), num_classes=4)


def encoded(fmt: str = "PNG", size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (size[1], size[0], channels) if channels else (size[1], size[0])
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def status_of(call) -> tuple[int, str]:
    with pytest.raises(HTTPException) as caught:
        call()
    return caught.value.status_code, caught.value.detail


def test_k_defaults_to_five_capped_at_the_number_of_classes() -> None:
    assert parse_k({}, 10) == 5
    assert parse_k({}, 3) == 3
    assert parse_k({"k": "2"}, 10) == 2
    assert parse_k({"k": "50"}, 10) == 10


@pytest.mark.parametrize("k", ["0", "-1", "two", "1.5", ""])
def test_k_must_be_a_positive_integer(k: str) -> None:
    status, detail = status_of(lambda: parse_k({"k": k}, 10))
    assert status == 400
    assert "positive integer" in detail


def test_the_query_takes_k_and_reject_once_each_and_nothing_else() -> None:
    check_query(QueryParams("k=3&reject=false"))
    check_query(QueryParams(""))
    status, detail = status_of(lambda: check_query(QueryParams("top_k=3")))
    assert status == 400
    assert detail.startswith("Unknown query parameter 'top_k' (top_k, the answer's field, is ")
    assert "POST /predict takes k: " in detail and "; reject: " in detail
    status, detail = status_of(lambda: check_query(QueryParams("k=1&k=3")))
    assert (status, detail) == (400, "Query parameter k is given 2 times (1, 3). Give it once.")


def test_json_image_is_base64_with_or_without_data_url_and_line_breaks() -> None:
    data = encoded()
    text = base64.b64encode(data).decode()
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    url_safe = base64.urlsafe_b64encode(data).decode()
    mime = base64.encodebytes(data).decode()  # what base64 tools write: lines of 76
    for value in (text, wrapped, f"data:image/png;base64,{text}", url_safe, mime):
        assert image_from_json(json.dumps({"image": value}).encode()) == data


def test_a_url_for_the_image_is_400_saying_nothing_is_fetched() -> None:
    body = json.dumps({"image": "https://example.com/moon.jpg"}).encode()
    status, detail = status_of(lambda: image_from_json(body))
    assert status == 400 and "is a URL" in detail and "fetches nothing" in detail


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[1, 2]", "must be an object"),
        (b'{"img": "aGk="}', "must be an object"),
        (b'{"image": 3}', "Received: 'image' as int, not a string"),
        (b'{"image": "@@@not base64"}', "not valid base64"),
        (b'{"image": "aGk"}', "not valid base64"),
    ],
)
def test_bad_json_bodies_are_400_with_the_reason(body: bytes, expected: str) -> None:
    status, detail = status_of(lambda: image_from_json(body))
    assert status == 400
    assert expected in detail


@pytest.mark.parametrize("opener", [b"[", b'{"image": '])
def test_json_nested_too_deep_for_the_parser_is_400(opener: bytes) -> None:
    body = opener * 100_000  # json.loads recurses once per level
    status, detail = status_of(lambda: image_from_json(body))
    assert status == 400
    assert "nested too deeply" in detail


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "RGBA")])
def test_decoding_is_the_training_preprocessing(fmt: str, mode: str) -> None:
    data = encoded(fmt, mode=mode)
    expected = to_array(decode(data), ImageFormat(16, "rgb"))
    array = decode_image(data, RULES)
    assert array.dtype == np.uint8
    assert array.shape == (16, 16, 3)
    np.testing.assert_array_equal(array, expected)


def test_an_iphone_heic_photo_is_400_saying_how_to_convert_it() -> None:
    # The start of a HEIC file: its file-type box, then boxes Pillow cannot read.
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
    status, detail = status_of(lambda: decode_image(heic, RULES))
    assert status == 400 and detail.startswith("The upload is a HEIC/HEIF photo")
    assert "Most Compatible" in detail


def test_grayscale_models_get_one_channel() -> None:
    rules = UploadRules(ImageFormat(8, "grayscale"), num_classes=2)
    assert decode_image(encoded(), rules).shape == (8, 8, 1)


def test_bytes_that_are_no_image_are_400() -> None:
    status, detail = status_of(lambda: decode_image(b"hello, not an image", RULES))
    assert status == 400
    assert "not an image" in detail
    assert "b'hello" in detail


@pytest.mark.parametrize(("fmt", "size"), [("JPEG", (64, 64)), ("JPEG", (4, 4)), ("PNG", (4, 4))])
def test_a_truncated_image_is_400_saying_so(fmt: str, size: tuple[int, int]) -> None:
    # Cut before its header is whole, a small file is no image Pillow knows:
    # its first bytes still tell what it was meant to be.
    data = encoded(fmt, size=size)
    status, detail = status_of(lambda: decode_image(data[: len(data) // 2], RULES))
    assert status == 400
    assert "truncated or corrupt" in detail
    assert "Send the complete file" in detail


def test_an_image_of_32_bit_pixels_is_415_saying_how_to_save_it() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)).save(buffer, "TIFF")
    status, detail = status_of(lambda: decode_image(buffer.getvalue(), RULES))
    assert status == 415
    assert "32-bit floating-point pixels (mode F)" in detail
    assert "save the image with 8 or 16 bits per channel" in detail


def test_too_many_pixels_is_413_before_decoding() -> None:
    rules = UploadRules(ImageFormat(16, "rgb"), num_classes=4, max_pixels=1000)
    status, detail = status_of(lambda: decode_image(encoded(size=(40, 30)), rules))
    assert status == 413
    assert "(40 x 30, 1,200 pixels); the limit is 1,000 pixels (--max-megapixels 0.001)" in detail


def test_an_image_just_over_the_limit_says_by_how_much() -> None:
    rules = UploadRules(ImageFormat(16, "rgb"), num_classes=4, max_pixels=16_000_000)
    header_only = encoded("PNG", size=(4000, 4001))
    status, detail = status_of(lambda: decode_image(header_only, rules))
    assert status == 413
    assert "(4000 x 4001, 16,004,000 pixels); the limit is 16,000,000 pixels" in detail


def test_an_image_pillow_refuses_as_a_decompression_bomb_is_413_naming_the_limit() -> None:
    buffer = io.BytesIO()
    Image.new("L", (20_000, 20_000)).save(buffer, "PNG")
    for max_pixels in (None, 512 * 512):  # as the route calls it: inline first, then whole
        status, detail = status_of(lambda m=max_pixels: decode_image(buffer.getvalue(), RULES, m))
        assert status == 413
        assert "(400,000,000 pixels)" in detail
        assert f"the limit is {RULES.max_pixels:,} pixels (--max-megapixels" in detail


@pytest.mark.parametrize(
    ("content_type", "whole_body"),
    [
        ("image/jpeg", True),
        ("Image/PNG; q=1", True),
        ("application/json", True),
        ("application/octet-stream", True),
        ("application/json; charset=utf-8", True),
        ("multipart/form-data; boundary=x", False),
        ("application/x-www-form-urlencoded", False),
        ("text/plain", False),
        ("", False),
    ],
)
def test_which_content_types_carry_the_image_as_the_body(
    content_type: str, whole_body: bool
) -> None:
    assert takes_body(content_type) is whole_body


def test_a_request_survives_the_trip_to_a_worker_intact() -> None:
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for request in (PredictionRequest(image, 3, False), PredictionRequest(image[..., :1], 10)):
        copy = pickle.loads(pickle.dumps(request, pickle.HIGHEST_PROTOCOL))
        assert (copy.k, copy.reject) == (request.k, request.reject)
        assert (copy.image.dtype, copy.image.shape) == (np.uint8, request.image.shape)
        np.testing.assert_array_equal(copy.image, request.image)
