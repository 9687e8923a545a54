"""The prediction log and the review folder, called directly."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celestial_models.prediction_log import PredictionRecord, image_features
from celestial_serve import recorder
from celestial_serve import review as review_module
from celestial_serve.cli import main
from celestial_serve.errors import ServeError
from celestial_serve.recorder import LogOptions, PredictionLog, prepare_log_dir, sha256_holding_gil
from celestial_serve.response import prediction
from celestial_serve.review import ReviewFolder

CLASSES = ("Mars", "Moon", "Venus")
MODEL = {"project": "demo", "model_hash": "f" * 64}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def encoded(seed: int, fmt: str = "PNG") -> tuple[bytes, np.ndarray]:
    """A small image's file bytes and its (8, 8, 3) array."""
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue(), pixels


def answer_body(probabilities, score: float = 1.0) -> bytes:
    answer = prediction(np.array(probabilities), CLASSES, 2, MODEL, score=score, threshold=5.0)
    return json.dumps(answer).encode()


def records(folder: Path) -> list[PredictionRecord]:
    lines = []
    for path in sorted(folder.glob("predictions*.jsonl")):
        lines += path.read_text().splitlines()
    return [PredictionRecord.from_json(line) for line in lines]


def test_every_answer_is_recorded_with_its_fields(tmp_path: Path) -> None:
    log = PredictionLog(LogOptions(tmp_path))
    uploads = [encoded(seed) for seed in range(3)]
    for (data, pixels), probs in zip(
        uploads, ([0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]), strict=True
    ):
        log.add(answer_body(probs), data, pixels, "2026-01-02T03:04:05.000006Z", 0.0025)
    log.close()
    found = records(tmp_path)
    assert [r.label for r in found] == ["Mars", "Moon", "Venus"]
    features = image_features(np.stack([pixels for _, pixels in uploads]))
    for record, (data, _), row in zip(found, uploads, features, strict=True):
        assert record.digest == hashlib.sha256(data).hexdigest()
        assert record.features == pytest.approx(tuple(row), abs=1e-6)
        assert (record.project, record.model) == ("demo", "f" * 64)
        assert record.time == "2026-01-02T03:04:05.000006Z"
        assert record.latency_ms == 2.5
        assert record.score == 1.0 and not record.unknown
    names = [p.name for p in tmp_path.glob("*.jsonl")]
    assert len(names) == 1 and names[0].endswith(f"-{os.getpid()}.jsonl")


def test_a_file_past_the_size_cap_is_closed_and_the_next_lines_go_to_a_new_one(
    tmp_path: Path,
) -> None:
    log = PredictionLog(LogOptions(tmp_path, max_bytes=1))  # every pass fills a file
    for seed in range(3):
        data, pixels = encoded(seed)
        log.add(answer_body([0.2, 0.3, 0.5 + seed / 100 - 0.01 * seed]), data, pixels, "t", 0.001)
        log.write_pending()
    log.close()
    files = sorted(tmp_path.glob("predictions-*.jsonl"))
    assert len(files) == 3
    assert all(len(path.read_text().splitlines()) == 1 for path in files)
    assert [r.digest for r in records(tmp_path)] == [
        hashlib.sha256(encoded(seed)[0]).hexdigest() for seed in range(3)
    ]


class FullDisk:
    """``os.write`` on the log file takes ``room`` more bytes, then fails as a full disk does."""

    def __init__(self, log: PredictionLog, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log, self.room, self.real = log, None, os.write
        monkeypatch.setattr(os, "write", self.write)

    def write(self, descriptor: int, data) -> int:
        if self.room is None or self.log.file is None or descriptor != self.log.file.descriptor:
            return self.real(descriptor, data)
        if self.room == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = self.real(descriptor, bytes(data[: self.room]))
        self.room -= taken
        return taken


def test_lines_a_full_disk_refuses_are_held_and_written_whole_once_it_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = PredictionLog(LogOptions(tmp_path))
    disk = FullDisk(log, monkeypatch)
    uploads = [encoded(seed) for seed in range(4)]
    log.add(answer_body([0.9, 0.05, 0.05]), *uploads[0], "t", 0.001)
    log.write_pending()
    disk.room = 25  # part of the next line, then no more
    for data, pixels in uploads[1:]:
        log.add(answer_body([0.9, 0.05, 0.05]), data, pixels, "t", 0.001)
    log.write_pending()
    log.write_pending()  # still full: nothing more written, nothing lost
    assert len(log.held) == 3 and log.dropped == 0
    disk.room = None
    log.close()
    assert [r.digest for r in records(tmp_path)] == [
        hashlib.sha256(data).hexdigest() for data, _ in uploads
    ]
    assert log.dropped == 0


def test_past_the_bound_of_held_lines_the_newest_are_dropped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = []
    log = PredictionLog(LogOptions(tmp_path), dropped=counted.append)
    disk = FullDisk(log, monkeypatch)
    log.add(answer_body([0.9, 0.05, 0.05]), *encoded(0), "t", 0.001)
    log.write_pending()
    disk.room = 0
    monkeypatch.setattr(recorder, "MAX_HELD_BYTES", 1)  # one line held at most
    for seed in range(1, 4):
        log.add(answer_body([0.9, 0.05, 0.05]), *encoded(seed), "t", 0.001)
    log.write_pending()
    assert len(log.held) == 1 and sum(counted) == 2 == log.dropped
    disk.room = None
    log.close()
    assert [r.digest for r in records(tmp_path)] == [
        hashlib.sha256(encoded(seed)[0]).hexdigest() for seed in (0, 1)
    ]


@pytest.mark.parametrize("how", ["removed", "moved"])
def test_a_log_folder_removed_or_moved_while_serving_is_made_again(
    tmp_path: Path, how: str
) -> None:
    folder = tmp_path / "log"
    prepare_log_dir(folder)
    log = PredictionLog(LogOptions(folder))
    first, second = encoded(0), encoded(1)
    log.add(answer_body([0.9, 0.05, 0.05]), *first, "t", 0.001)
    log.write_pending()
    if how == "removed":
        shutil.rmtree(folder)
    else:
        folder.rename(tmp_path / "elsewhere")
    log.add(answer_body([0.2, 0.7, 0.1], score=9.0), *second, "t", 0.001)  # unknown: reviewed
    log.write_pending()
    log.close()
    assert [r.digest for r in records(folder)] == [hashlib.sha256(second[0]).hexdigest()]
    assert (folder / "review" / f"{hashlib.sha256(second[0]).hexdigest()}.json").is_file()


def test_an_answer_given_with_rejection_off_is_logged_as_the_gate_decided(tmp_path: Path) -> None:
    log = PredictionLog(LogOptions(tmp_path))
    data, pixels = encoded(0)
    answer = prediction(
        np.array([0.9, 0.05, 0.05]), CLASSES, 2, MODEL, score=9.0, threshold=5.0, reject=False
    )
    assert answer["label"] == "Mars" and not answer["unknown"]  # what the client asked for
    log.add(answer, data, pixels, "t", 0.001)
    log.close()
    (record,) = records(tmp_path)
    assert (record.label, record.unknown, record.top_k[0][0]) == ("unknown", True, "Mars")
    assert (tmp_path / "review" / f"{record.digest}.json").is_file()


@pytest.mark.parametrize("size", [0, 2047, 2048, 7_777])
def test_the_writer_hashes_uploads_as_sha256_does(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert sha256_holding_gil(data) == hashlib.sha256(data).hexdigest()


def record_for(data: bytes, confidence: float, unknown: bool = False) -> PredictionRecord:
    top = (("Mars", confidence), ("Moon", 1 - confidence))
    return PredictionRecord(
        project="demo",
        model="m",
        label="unknown" if unknown else "Mars",
        unknown=unknown,
        score=None,
        top_k=top,
        features=(0.0,),
        digest=hashlib.sha256(data).hexdigest(),
    )


def keep(folder: ReviewFolder, data: bytes, confidence: float, unknown: bool = False) -> bool:
    record = record_for(data, confidence, unknown)
    return folder.keep(record, record.to_json(), data)


def test_review_keeps_unknown_and_unsure_answers_once_with_their_record(tmp_path: Path) -> None:
    review = ReviewFolder(tmp_path, below=0.5, max_bytes=2**20)
    png, jpeg, sure = encoded(1)[0], encoded(2, "JPEG")[0], encoded(3)[0]
    assert keep(review, png, 0.9, unknown=True)
    assert keep(review, jpeg, 0.4)
    assert not keep(review, sure, 0.9)
    assert not keep(review, png, 0.3)  # the same image again
    digest = hashlib.sha256(png).hexdigest()
    jpeg_digest = hashlib.sha256(jpeg).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{digest}.png", f"{digest}.json", f"{jpeg_digest}.jpg", f"{jpeg_digest}.json"]
    )
    assert (tmp_path / f"{digest}.png").read_bytes() == png
    kept = PredictionRecord.from_json((tmp_path / f"{digest}.json").read_text())
    assert kept.unknown and kept.digest == digest


@pytest.mark.parametrize("fmt", ["JPEG2000", "TIFF", "WEBP", "BMP", "PPM", "TGA"])
def test_a_kept_image_of_any_format_has_a_name_the_review_readers_take(
    tmp_path: Path, fmt: str
) -> None:
    from celestial_data.dataset import is_image_name

    stream = io.BytesIO()
    Image.new("RGB", (24, 24), (200, 90, 40)).save(stream, format=fmt)
    name = f"x.{review_module.extension(stream.getvalue())}"
    assert is_image_name(name), name  # as `label export` picks the review folder's images


def test_review_past_its_cap_lets_the_oldest_go_first(tmp_path: Path) -> None:
    images = [encoded(seed)[0] for seed in range(4)]
    entry = len(images[0]) + len(record_for(images[0], 0.1).to_json()) + 1
    review = ReviewFolder(tmp_path, below=0.5, max_bytes=2 * entry + entry // 2)
    for data in images[:3]:
        assert keep(review, data, 0.1)
    digests = [hashlib.sha256(data).hexdigest() for data in images]
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted(digests[1:3])
    # A new process reads the folder's age order from the records' times.
    os.utime(tmp_path / f"{digests[2]}.json", (1, 1))
    again = ReviewFolder(tmp_path, below=0.5, max_bytes=2 * entry + entry // 2)
    assert keep(again, images[3], 0.1)
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted([digests[1], digests[3]])
    assert len(list(tmp_path.iterdir())) == 4


def test_an_image_the_disk_refuses_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    review = ReviewFolder(tmp_path, below=0.5, max_bytes=2**20)

    def full(descriptor: int, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space"):
        keep(review, encoded(1)[0], 0.1)
    assert list(tmp_path.iterdir()) == []


def test_no_image_is_kept_while_the_disk_is_short_of_room_for_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    review = ReviewFolder(tmp_path, below=0.5, max_bytes=2**20)
    monkeypatch.setattr(review_module, "free_bytes", lambda folder: review_module.RESERVE_BYTES)
    assert not keep(review, encoded(1)[0], 0.1)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(review_module, "free_bytes", lambda folder: 2**40)
    assert keep(review, encoded(1)[0], 0.1)


def test_a_log_dir_that_is_a_file_or_cannot_be_made_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ServeError, match="is a file, not a folder"):
        prepare_log_dir(a_file)
    with pytest.raises(ServeError, match="Cannot write prediction logs to --log-dir"):
        prepare_log_dir(a_file / "logs")
    prepare_log_dir(tmp_path / "new" / "logs")
    assert (tmp_path / "new" / "logs" / "review").is_dir()


@pytest.mark.parametrize("where", ["file", "file/logs"])
def test_a_bad_log_dir_is_one_start_up_error(trained_project, tmp_path, capsys, where) -> None:
    (tmp_path / "file").write_text("")
    status = main(
        [str(trained_project), "--port", str(free_port()), "--log-dir", str(tmp_path / where)]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("celestial-serve: error: ")
    assert "--log-dir" in err and "Traceback" not in err
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_log_options_without_a_log_dir_are_one_usage_error_not_ignored(tmp_path, capsys) -> None:
    status = main([str(tmp_path), "--review-below", "0.9", "--log-max-mib", "1"])
    err = capsys.readouterr().err
    assert status == 2  # a usage error, as a bad value is
    assert err == (
        "celestial-serve: error: --log-max-mib, --review-below only apply to the prediction "
        "log: add --log-dir DIR to keep one, or leave them out.\n"
    )
    assert main([str(tmp_path), "--log-max-mib", "1"]) == 2
    assert capsys.readouterr().err == (
        "celestial-serve: error: --log-max-mib only applies to the prediction log: add "
        "--log-dir DIR to keep one, or leave it out.\n"
    )


def test_a_review_folder_that_refuses_images_is_said_once_and_again_when_it_takes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = PredictionLog(LogOptions(tmp_path, review_below=0.99))
    offer = log.review.offer
    refusing = True

    def read_only(*args):
        if refusing:
            raise OSError(errno.EROFS, "Read-only file system")
        return offer(*args)

    monkeypatch.setattr(log.review, "offer", read_only)
    uploads = [encoded(seed) for seed in range(6)]
    for data, pixels in uploads[:4]:
        log.add(answer_body([0.4, 0.3, 0.3]), data, pixels, "t", 0.001)
        log.write_pending()
    refusing = False
    for data, pixels in uploads[4:]:
        log.add(answer_body([0.4, 0.3, 0.3]), data, pixels, "t", 0.001)
        log.write_pending()
    log.close()

    said = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert said == [
        (
            "ERROR",
            f"Cannot keep images for review in {tmp_path / 'review'} (Read-only file system): "
            "the answers are logged, but their images are not kept until it can",
            None,
        ),
        ("WARNING", f"Images for review are kept in {tmp_path / 'review'} again", None),
    ]
    assert len(records(tmp_path)) == 6  # every answer logged all along
    assert len(list((tmp_path / "review").glob("*.json"))) == 2
