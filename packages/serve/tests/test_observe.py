"""Watching a real server: /metrics, the prediction log, its review folder, a kill."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from celestial_models.prediction_log import PredictionRecord, RecordError

pytestmark = pytest.mark.slow


def noise_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def log_records(folder: Path) -> list[PredictionRecord]:
    found = []
    for path in sorted(folder.glob("predictions*.jsonl")):
        found += [PredictionRecord.from_json(line) for line in path.read_text().splitlines()]
    return found


def test_metrics_and_log_see_every_answer_on_every_process(
    launch, trained_project, reference, tmp_path
) -> None:
    logs = tmp_path / "logs"
    server = launch(
        trained_project,
        tmp_path / "server.log",
        "--log-level", "warning", "--workers", "2", "--api-servers", "2",
        "--log-dir", str(logs), "--review-below", "0.99",
    )  # fmt: skip
    server.wait_until_healthy()
    uploads = [path.read_bytes() for paths in reference.values() for path in paths[:1]]
    uploads += [noise_png(seed) for seed in range(3)]
    answers = []
    for data in uploads:
        response = requests.post(
            f"{server.url}/predict", data=data, headers={"Content-Type": "image/jpeg"}, timeout=30
        )
        assert response.status_code == 200, response.text
        answers.append(response.json())
    bad = requests.post(f"{server.url}/predict", data=b"no", headers={"Content-Type": "image/png"})
    assert bad.status_code == 400

    # Two HTTP processes answer in turn: each scrape must still add up every process.
    for _ in range(3):
        scraped = requests.get(f"{server.url}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        values = samples(scraped.text)
        n = len(uploads)
        route = ("route", "/predict")
        assert values[("celestial_requests_total", (route, ("status", "200")))] == n
        assert values[("celestial_requests_total", (route, ("status", "400")))] == 1
        assert values[("celestial_request_duration_seconds_count", (route,))] == n + 1
        by_label: dict[str, int] = {}
        for answer in answers:
            by_label[answer["label"]] = by_label.get(answer["label"], 0) + 1
        for label, count in by_label.items():
            assert values[("celestial_answers_total", (("label", label),))] == count
        assert values[("celestial_batch_size_sum", ())] == n  # one image each, however batched
        unknown = by_label.get("unknown", 0) / n
        assert values[("celestial_unknown_rate", ())] == pytest.approx(unknown)
        assert values[("celestial_prediction_log_dropped_total", ())] == 0

    assert server.stop()
    assert 1 <= len(list(logs.glob("predictions-*.jsonl"))) <= 2  # one per HTTP process
    found = log_records(logs)
    by_digest = {record.digest: record for record in found}
    assert len(found) == len(uploads)
    review = logs / "review"
    for data, answer in zip(uploads, answers, strict=True):
        digest = hashlib.sha256(data).hexdigest()
        record = by_digest[digest]
        assert (record.label, record.unknown) == (answer["label"], answer["unknown"])
        assert record.model == answer["model"]["model_hash"]
        assert record.top_k[0] == (answer["top_k"][0]["label"], answer["top_k"][0]["probability"])
        assert record.latency_ms is not None and record.latency_ms > 0
        assert len(record.features) == 5
        unsure = answer["unknown"] or answer["probability"] < 0.99
        assert (review / f"{digest}.json").exists() == unsure
        extension = "png" if data.startswith(b"\x89PNG") else "jpg"
        if unsure:
            assert (review / f"{digest}.{extension}").read_bytes() == data


def test_the_stock_transport_logs_the_answers_it_sent(
    launch, trained_project, reference, tmp_path
) -> None:
    # Its answers come as JSON (the lean transport hands over the answer object).
    logs = tmp_path / "logs"
    server = launch(
        trained_project, tmp_path / "server.log", "--transport", "stock", "--log-dir", str(logs)
    )
    server.wait_until_healthy()
    uploads = [path.read_bytes() for paths in reference.values() for path in paths[:1]][:3]
    answers = []
    for data in uploads:
        response = requests.post(f"{server.url}/predict", files={"file": ("a.jpg", data)})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert server.stop()
    by_digest = {record.digest: record for record in log_records(logs)}
    assert len(by_digest) == len(uploads)
    for data, answer in zip(uploads, answers, strict=True):
        record = by_digest[hashlib.sha256(data).hexdigest()]
        assert (record.label, record.unknown, record.score) == (
            answer["label"],
            answer["unknown"],
            answer["score"],
        )
        assert record.top_k == tuple((e["label"], e["probability"]) for e in answer["top_k"])


def test_metrics_want_the_api_key_when_one_is_set(guarded_server) -> None:
    assert requests.get(f"{guarded_server.url}/metrics", timeout=10).status_code == 401
    scraped = requests.get(f"{guarded_server.url}/metrics", headers=guarded_server.key_header)
    assert scraped.status_code == 200
    assert ("celestial_unknown_rate", ()) in samples(scraped.text)


def test_nothing_is_written_by_default_and_no_metrics_removes_the_route(
    launch, trained_project, reference, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the server starts here
    server = launch(trained_project, tmp_path / "server.log", "--no-metrics")
    server.wait_until_healthy()
    data = next(iter(reference.values()))[0].read_bytes()
    response = requests.post(f"{server.url}/predict", files={"file": ("a.jpg", data)}, timeout=30)
    assert response.status_code == 200
    assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 404
    assert server.stop()
    assert [p.name for p in tmp_path.rglob("*")] == ["server.log"]


def test_a_killed_server_leaves_a_readable_log_missing_at_most_its_last_second(
    launch, trained_project, reference, tmp_path
) -> None:
    logs = tmp_path / "logs"
    server = launch(trained_project, tmp_path / "server.log", "--log-dir", str(logs))
    server.wait_until_healthy()
    data = next(iter(reference.values()))[0].read_bytes()
    answered: list[float] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.post(
                        f"{server.url}/predict",
                        data=data,
                        headers={"Content-Type": "image/jpeg"},
                        timeout=5,
                    )
                except requests.RequestException:
                    return
                if response.status_code == 200:
                    answered.append(time.monotonic())

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(3)
    killed = time.monotonic()
    os.killpg(server.process.pid, signal.SIGKILL)
    stop.set()
    for thread in clients:
        thread.join()
    files = sorted(logs.glob("predictions-*.jsonl"))
    assert files
    complete = 0
    for path in files:
        text = path.read_text()
        lines = text.split("\n")
        for line in lines[:-1]:  # every complete line parses
            PredictionRecord.from_json(line)
            complete += 1
        if lines[-1]:  # only the last line may be cut short
            with pytest.raises(RecordError):
                PredictionRecord.from_json(lines[-1])
    settled = sum(1 for at in answered if at < killed - 1.0)
    assert settled > 0
    assert complete >= settled
