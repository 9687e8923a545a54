"""A real celestial-serve process on 127.0.0.1: every input form, errors, batching."""

from __future__ import annotations

import base64
import io
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from celestial_serve.request import RAW

pytestmark = pytest.mark.slow


def expected_probabilities(classifier, data: bytes) -> dict[str, float]:
    """What the model says in process about an encoded image."""
    probabilities = classifier.predict(classifier.prepare(data)[None])[0]
    return dict(zip(classifier.classes, map(float, probabilities), strict=True))


def check_answer(answer: dict, expected: dict[str, float], classifier) -> None:
    """The server's answer carries the in-process probabilities, best first, and the model."""
    served = {item["label"]: item["probability"] for item in answer["top_k"]}
    assert served.keys() <= expected.keys()
    for label, probability in served.items():
        assert probability == pytest.approx(expected[label], abs=1e-5)
    best = max(served, key=served.get)
    closest = answer["top_k"][0]["label"]
    assert answer["label"] == ("unknown" if answer["unknown"] else closest)
    assert answer["score"] is not None
    assert served[closest] == served[best]
    assert answer["probability"] == answer["top_k"][0]["probability"]
    assert answer["model"]["model_hash"] == classifier.model_hash


def png(size: tuple[int, int], seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_health_and_info_describe_the_loaded_model(server, classifier) -> None:
    health = requests.get(f"{server.url}/health", timeout=10)
    assert (health.status_code, health.text) == (200, "ok")
    model = requests.get(f"{server.url}/info", timeout=10).json()["model"]
    assert model["project"] == "tiny-bodies"
    assert model["model_hash"] == classifier.model_hash
    assert model["classes"] == list(classifier.classes)
    assert model["input_shape"] == list(classifier.input_shape)


def test_each_input_form_gets_the_same_right_answer(server, classifier, reference) -> None:
    path = reference["Mars"][0]
    data = path.read_bytes()
    expected = expected_probabilities(classifier, data)
    url = f"{server.url}/predict"
    answers = [
        requests.post(url, files={"file": (path.name, data, "image/jpeg")}, timeout=30),
        requests.post(url, data=data, headers={"Content-Type": "image/jpeg"}, timeout=30),
        requests.post(url, data=data, headers={"Content-Type": RAW}, timeout=30),
        requests.post(url, json={"image": base64.b64encode(data).decode()}, timeout=30),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        check_answer(response.json(), expected, classifier)
    assert len(answers[0].json()["top_k"]) == 5
    assert all(answer.json() == answers[0].json() for answer in answers[1:])


def test_k_chooses_how_many_classes_are_listed(server, reference) -> None:
    data = reference["Moon"][0].read_bytes()
    for k, listed in [(1, 1), (3, 3), (99, len(reference))]:
        response = requests.post(
            f"{server.url}/predict",
            params={"k": k},
            data=data,
            headers={"Content-Type": "image/jpeg"},
            timeout=30,
        )
        assert len(response.json()["top_k"]) == listed


def test_concurrent_requests_each_get_their_own_answer(server, classifier, reference) -> None:
    files = [path for paths in reference.values() for path in paths]
    ask_all_at_once(server, classifier, [files[i % len(files)] for i in range(64)])
    assert '"POST /predict' not in server.log_text()  # --log-level warning: no request lines


def test_several_workers_and_http_servers_route_every_answer_home(
    trained_project: Path, classifier, reference, tmp_path: Path, launch, transport: str
) -> None:
    temporary = Path(tempfile.mkdtemp(prefix="t-", dir="/tmp"))  # short: socket paths
    wide = launch(
        trained_project,
        tmp_path / "wide.log",
        "--workers",
        "2",
        "--api-servers",
        "2",
        "--log-level",
        "warning",
        env={"TMPDIR": str(temporary)},
    )
    wide.wait_until_healthy()
    sockets = list(temporary.glob("celestial-serve-*"))  # the lean transport's
    assert len(sockets) == (1 if transport == "lean" else 0)
    files = [path for paths in reference.values() for path in paths]
    ask_all_at_once(wide, classifier, [files[i % len(files)] for i in range(80)])
    assert wide.stop(), "processes of the server were left running after SIGTERM"
    assert list(temporary.glob("celestial-serve-*")) == [], "the socket folder was left behind"
    shutil.rmtree(temporary)


def test_batching_off_still_answers_each_request_and_logs_it(
    trained_project: Path, classifier, reference, tmp_path: Path, launch
) -> None:
    single = launch(trained_project, tmp_path / "single.log", "--max-batch-size", "1")
    single.wait_until_healthy()
    ask_all_at_once(single, classifier, [paths[0] for paths in reference.values()][:4])
    # At the default level (info), every request is logged, fast path or not.
    deadline = time.monotonic() + 10
    while single.log_text().count('"POST /predict?k=10 HTTP/1.1" 200') < 4:
        assert time.monotonic() < deadline, single.log_text()
        time.sleep(0.1)


def test_a_large_image_is_decoded_off_the_event_loop_with_the_same_answer(
    server, classifier, reference
) -> None:
    path = next(iter(reference.values()))[0]
    with Image.open(path) as image:
        large = image.convert("RGB").resize((1024, 1024), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    large.save(buffer, "PNG")
    data = buffer.getvalue()
    answer = ask_raw(server, data, content_type="image/png")
    check_answer(answer, expected_probabilities(classifier, data), classifier)


def ask_all_at_once(server, classifier, paths: list[Path]) -> None:
    """Send every image from 8 threads (a new connection each); check every answer."""

    def ask(path: Path) -> dict:
        return ask_raw(server, path.read_bytes(), k=len(classifier.classes))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, paths))
    for path, answer in zip(paths, answers, strict=True):
        check_answer(answer, expected_probabilities(classifier, path.read_bytes()), classifier)


def ask_raw(server, data: bytes, content_type: str = "image/jpeg", k: int | None = None) -> dict:
    response = requests.post(
        f"{server.url}/predict",
        params={} if k is None else {"k": k},
        data=data,
        headers={"Content-Type": content_type},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


BAD_REQUESTS = {
    "empty body": ({"Content-Type": "image/jpeg"}, b"", 400, "empty"),
    "not an image": ({"Content-Type": "image/png"}, b"hello world", 400, "not an image"),
    "wrong content type": ({"Content-Type": "text/plain"}, b"hello", 415, "Unsupported"),
    "no content type": ({}, b"hello", 415, "Unsupported"),
    "invalid JSON": ({"Content-Type": "application/json"}, b'{"image": ', 400, "not valid JSON"),
    "JSON without image": ({"Content-Type": "application/json"}, b"{}", 400, '{"image"'),
    "invalid base64": (
        {"Content-Type": "application/json"},
        b'{"image": "%%%"}',
        400,
        "not valid base64",
    ),
    "bad multipart": (
        {"Content-Type": "multipart/form-data; boundary=x"},
        b"garbage",
        400,
        "multipart",
    ),
    "too many bytes": ({"Content-Type": "image/png"}, b"\0" * (11 * 2**20), 413, "too large"),
    "too many pixels": ({"Content-Type": "image/png"}, "huge", 413, "megapixels"),
    "truncated image": ({"Content-Type": "image/jpeg"}, "truncated", 400, "truncated"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_4xx_json_error(server, reference, case: str) -> None:
    headers, body, status, words = BAD_REQUESTS[case]
    if body == "huge":
        buffer = io.BytesIO()
        Image.new("L", (8000, 6000)).save(buffer, "PNG")
        body = buffer.getvalue()
    elif body == "truncated":
        body = truncated(reference["Earth"][0].read_bytes())
    response = requests.post(f"{server.url}/predict", data=body, headers=headers, timeout=60)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["detail"]


@pytest.mark.parametrize("guarded", [False, True], ids=["fast path", "LitServe's route"])
def test_json_nested_a_thousand_deep_is_a_json_400_on_every_path(
    request: pytest.FixtureRequest, transport: str, guarded: bool
) -> None:
    server = request.getfixturevalue("guarded_server" if guarded else "server")
    headers = {"Content-Type": "application/json", **server.key_header}
    for body in (b"[" * 1000 + b"]" * 1000, b'{"image": ' * 1000):
        response = requests.post(f"{server.url}/predict", data=body, headers=headers, timeout=30)
        assert response.status_code == 400, response.text
        assert "nested too deeply" in response.json()["detail"]
    assert "Traceback" not in server.log_text()


def test_a_streamed_body_over_the_limit_is_cut_off_with_413(server) -> None:
    def chunks():  # no Content-Length: the server counts as it reads
        for _ in range(11):
            yield b"\0" * 2**20

    for content_type in ("image/png", "application/json"):
        response = requests.post(
            f"{server.url}/predict",
            data=chunks(),
            headers={"Content-Type": content_type},
            timeout=60,
        )
        assert response.status_code == 413, response.text
        assert "too large" in response.json()["detail"]
    assert ask_raw(server, png((20, 20)))["model"]["project"] == "tiny-bodies"


def test_an_api_key_guards_every_input_form(guarded_server, classifier, reference) -> None:
    path = reference["Venus"][0]
    data = path.read_bytes()
    forms = [
        {"data": data, "headers": {"Content-Type": "image/jpeg"}},
        {"json": {"image": base64.b64encode(data).decode()}},
        {"files": {"file": (path.name, data, "image/jpeg")}},
    ]
    url = f"{guarded_server.url}/predict"
    for form in forms:
        for key in (None, "wrong", guarded_server.api_key + "x", guarded_server.api_key[:-1]):
            extra = {} if key is None else {"X-API-Key": key}
            headers = {**form.get("headers", {}), **extra}
            refused = requests.post(url, **{**form, "headers": headers}, timeout=30)
            assert refused.status_code == 401, (form.keys(), key, refused.text)
            assert "X-API-Key" in refused.json()["detail"]
        headers = {**form.get("headers", {}), **guarded_server.key_header}
        allowed = requests.post(url, **{**form, "headers": headers}, timeout=30)
        assert allowed.status_code == 200, allowed.text
        check_answer(allowed.json(), expected_probabilities(classifier, data), classifier)


@pytest.mark.parametrize(
    ("method", "route", "status"),
    [
        ("GET", "/health", 200),
        ("GET", "/info", 200),
        ("GET", "/docs", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/nowhere", 404),
        ("GET", "/predict", 405),
        ("POST", "/predict", 415),
    ],
)
def test_an_api_key_guards_every_route_but_the_page(
    guarded_server, method: str, route: str, status: int
) -> None:
    url = f"{guarded_server.url}{route}"
    for headers in ({}, {"X-API-Key": "wrong"}):
        refused = requests.request(method, url, headers=headers, timeout=30)
        assert refused.status_code == 401, (route, headers, refused.text)
        assert refused.headers["content-type"] == "application/json"
    allowed = requests.request(method, url, headers=guarded_server.key_header, timeout=30)
    assert allowed.status_code == status, allowed.text
    page = requests.get(f"{guarded_server.url}/", timeout=30)  # a browser opens it keyless
    assert page.status_code == 200
    assert 'id="key"' in page.text


def test_a_form_without_the_file_field_says_which_field(server, reference) -> None:
    data = reference["Earth"][0].read_bytes()
    response = requests.post(f"{server.url}/predict", files={"image": data}, timeout=30)
    assert response.status_code == 400
    assert "no file in field 'file'" in response.json()["detail"]
    text = requests.post(f"{server.url}/predict", data={"file": "Mars.jpg"}, timeout=30)
    assert text.status_code == 415  # a urlencoded form, not multipart
    as_text = requests.post(f"{server.url}/predict", files={"file": (None, "Mars.jpg")}, timeout=30)
    assert as_text.status_code == 400
    assert "text field, not a file upload" in as_text.json()["detail"]


def test_unknown_routes_and_methods_get_json_errors(server) -> None:
    missing = requests.get(f"{server.url}/nowhere", timeout=10)
    assert missing.status_code == 404
    assert "POST /predict" in missing.json()["detail"]
    wrong = requests.get(f"{server.url}/predict", timeout=10)
    assert wrong.status_code == 405
    assert "not allowed" in wrong.json()["detail"]
    slash = requests.post(f"{server.url}/predict/", allow_redirects=False, timeout=10)
    assert slash.status_code == 404  # not an empty 307 to /predict
    assert slash.json()["detail"].startswith("No route POST /predict/. Routes: GET / (page), POST")


def test_a_second_server_on_the_same_port_says_the_port_is_taken(
    server, trained_project: Path, tmp_path: Path, launch
) -> None:
    second = launch(trained_project, tmp_path / "second.log", "--port", str(server.port))
    second.process.wait(timeout=60)
    assert second.process.returncode == 1
    assert f"error: Port {server.port} on 127.0.0.1 is already in use" in second.log_text()


def test_a_cut_model_file_is_a_clear_start_up_error(
    trained_project: Path, tmp_path: Path, launch
) -> None:
    broken = tmp_path / "broken-bodies"
    (broken / "model").mkdir(parents=True)
    for name in ("metadata.json", "model.keras", "inference.jax"):
        data = (trained_project / "model" / name).read_bytes()
        (broken / "model" / name).write_bytes(data[:100] if name == "model.keras" else data)
    # A short path: a socket's address is at most 108 bytes.
    temporary = Path(tempfile.mkdtemp(prefix="tmp-", dir="/tmp"))
    server = launch(broken, tmp_path / "broken.log", env={"TMPDIR": str(temporary)})
    assert server.process.wait(timeout=300) == 1
    assert server.stop(), "the failed server left processes behind"
    last = server.log_text().strip().splitlines()[-1]
    assert last.startswith("celestial-serve: error: The model in ")
    assert "could not be loaded" in last
    logged = server.log_text()  # the worker's error, above the summary
    assert "model.keras is not the model inference.jax was exported from" in logged
    assert "changed or cut" in logged and "dvc checkout dvc.yaml" in logged
    left = list(temporary.iterdir())
    shutil.rmtree(temporary)
    assert left == []  # the sockets' and the metrics' folders removed
    assert "dvc repro" in last
