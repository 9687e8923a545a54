"""`celestial-eval drift`: a prediction log against the model's reference."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from celestial_eval.cli import main
from celestial_eval.drift import DriftParams, category_shift, ks_test
from celestial_eval.prediction_logs import read_log
from celestial_models.prediction_log import PredictionRecord

CLASSES = ("Mars", "Moon", "Sun")
MIX = (0.45, 0.35, 0.2)
MODEL_BYTES = b"a trained model"
MODEL = hashlib.sha256(MODEL_BYTES).hexdigest()


def draw(
    count: int,
    seed: int,
    *,
    mix: tuple[float, ...] = MIX,
    unknown: float = 0.05,
    darker: float = 0.0,
    model: str = MODEL,
    logged: bool = True,
) -> list[PredictionRecord]:
    """Records of answers drawn at random: one distribution per keyword."""
    rng = np.random.default_rng(seed)
    closest = rng.choice(len(CLASSES), size=count, p=mix)
    rejected = rng.random(count) < unknown
    confidence = np.clip(rng.beta(8, 1.5, count), 0.34, 1.0)
    scores = rng.gamma(4, 5, count) + np.where(rejected, 40, 0)
    means = np.clip(rng.normal([0.3, 0.25, 0.2], 0.04, (count, 3)) - darker, 0, 1)
    other = np.clip(rng.normal([0.2, 0.6], 0.05, (count, 2)), 0, 1)
    records = []
    for i in range(count):
        name = CLASSES[closest[i]]
        rest = [(c, round((1 - confidence[i]) / 2, 6)) for c in CLASSES if c != name]
        records.append(
            PredictionRecord(
                project="demo" if logged else "",
                model=model,
                label="unknown" if rejected[i] else name,
                unknown=bool(rejected[i]),
                score=round(float(scores[i]), 6),
                top_k=((name, round(float(confidence[i]), 6)), *rest),
                features=(*means[i], *other[i]),
                time=f"2026-12-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000000Z"
                if logged
                else None,
                digest="d" * 64 if logged else None,
                latency_ms=2.0 if logged else None,
            )
        )
    return records


def write_lines(path: Path, records: list[PredictionRecord], tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(r.to_json() + "\n" for r in records) + tail)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A model folder: its model.keras (bytes only) and a reference of 300 answers."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.keras").write_bytes(MODEL_BYTES)
    write_lines(folder / "reference.jsonl", draw(300, seed=1, logged=False))
    return folder


def drift(log: Path | str, model_dir: Path, out: Path, *extra: str) -> int:
    return main(["drift", str(log), "--model", str(model_dir), "--out", str(out), *extra])


def verdict(out: Path) -> dict:
    return json.loads((out / "drift.json").read_text())


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    error = capsys.readouterr().err
    assert error.startswith("celestial-eval: error: "), error
    assert error.count("\n") == 1, error
    return error


def test_a_log_drawn_like_the_reference_has_no_drift(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_lines(tmp_path / "logs" / "predictions.jsonl", draw(2000, seed=2))
    assert drift(log, model_dir, tmp_path / "out") == 0
    result = verdict(tmp_path / "out")
    assert result["drift"] is False and result["failed"] == []
    assert result["model"] == MODEL
    assert result["reference"]["records"] == 300
    assert result["log"]["kept"] == 2000 and result["log"]["other_models"] == 0
    assert result["log"]["time_span"] == {
        "first": "2026-12-01T00:00:00.000000Z",
        "last": "2026-12-01T00:33:19.000000Z",
    }
    names = [check["name"] for check in result["checks"]]
    assert names == [
        "class_mix",
        "unknown_rate",
        "confidence",
        "score",
        "feature:mean_red",
        "feature:mean_green",
        "feature:mean_blue",
        "feature:contrast",
        "feature:background",
    ]
    for check in result["checks"]:
        assert check["statistic"] is not None and check["p_value"] is not None
        assert check["threshold"] > 0 and check["drift"] is False
    out = capsys.readouterr().out
    assert out.startswith("no drift: 9 checks passed on 2000 answers of model " + MODEL[:12])


@pytest.mark.parametrize(
    ("change", "flagged"),
    [
        ({"mix": (0.1, 0.2, 0.7)}, {"class_mix"}),
        ({"unknown": 0.35}, {"class_mix", "unknown_rate", "score"}),
        ({"darker": 0.15}, {"feature:mean_red", "feature:mean_green", "feature:mean_blue"}),
    ],
    ids=["class-mix", "unknown-rate", "darker-images"],
)
def test_a_shift_is_flagged_by_its_checks(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict,
    flagged: set[str],
) -> None:
    log = write_lines(tmp_path / "predictions.jsonl", draw(2000, seed=2, **change))
    assert drift(log, model_dir, tmp_path / "out") == 1
    result = verdict(tmp_path / "out")
    assert result["drift"] is True
    assert set(result["failed"]) == flagged
    for check in result["checks"]:
        if check["drift"]:
            assert abs(check["statistic"]) > check["threshold"]
            assert check["p_value"] < result["params"]["p_value"]
    out = capsys.readouterr().out
    assert out.startswith(f"DRIFT: {len(flagged)} of 9 checks failed")
    assert sum(line.lstrip().startswith("DRIFT ") for line in out.splitlines()) == len(flagged)


def test_a_rising_unknown_rate_says_by_how_much(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_lines(tmp_path / "predictions.jsonl", draw(1000, seed=3, unknown=0.4))
    assert drift(log, model_dir, tmp_path / "out") == 1
    (check,) = [c for c in verdict(tmp_path / "out")["checks"] if c["name"] == "unknown_rate"]
    assert check["reference"]["rate"] == pytest.approx(0.05, abs=0.03)
    assert check["log"]["rate"] == pytest.approx(0.4, abs=0.05)
    assert check["statistic"] == pytest.approx(check["log"]["rate"] - check["reference"]["rate"])
    line = next(x for x in capsys.readouterr().out.splitlines() if "unknown_rate" in x)
    assert re.search(
        r"DRIFT unknown_rate +change \+0\.3\d\d > 0\.1 .*rate 0\.0\d+ -> 0\.[34]", line
    )


def test_thresholds_come_from_the_params_drift_section(model_dir: Path, tmp_path: Path) -> None:
    log = write_lines(tmp_path / "predictions.jsonl", draw(2000, seed=2, mix=(0.3, 0.35, 0.35)))
    assert drift(log, model_dir, tmp_path / "default") == 0
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 3\ndrift:\n  class_mix_psi: 0.02\n")
    assert drift(log, model_dir, tmp_path / "strict", "--params", str(params)) == 1
    result = verdict(tmp_path / "strict")
    assert result["failed"] == ["class_mix"]
    assert result["params"] == DriftParams(class_mix_psi=0.02).dump()


def test_a_small_log_cannot_fail_on_noise_alone(model_dir: Path, tmp_path: Path) -> None:
    # A big gap on 60 answers of one class: the PSI is large, the evidence is not.
    log = write_lines(tmp_path / "p.jsonl", draw(60, seed=5, mix=(0.3, 0.45, 0.25)))
    assert drift(log, model_dir, tmp_path / "out") == 0
    (check,) = [c for c in verdict(tmp_path / "out")["checks"] if c["name"] == "class_mix"]
    assert check["p_value"] >= 0.01


def test_records_of_other_models_are_left_out_and_counted(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "logs"
    write_lines(logs / "predictions.jsonl", draw(500, seed=2))
    write_lines(logs / "predictions.1.jsonl", draw(120, seed=3, model="f" * 64, darker=0.3))
    assert drift(logs, model_dir, tmp_path / "out") == 0
    result = verdict(tmp_path / "out")
    assert result["log"]["records"] == 620
    assert (result["log"]["kept"], result["log"]["other_models"]) == (500, 120)
    assert "120 logged answers of other models left out" in capsys.readouterr().out


def test_a_folder_is_its_jsonl_files_in_name_order_without_review(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_lines(logs / "predictions.jsonl", draw(3, seed=1))
    write_lines(logs / "predictions.2026-12-01.jsonl", draw(2, seed=2))
    write_lines(logs / "review" / "predictions.jsonl", draw(4, seed=3))
    (logs / "notes.txt").write_text("not a log\n")
    log = read_log([logs])
    assert [p.name for p in log.files] == ["predictions.2026-12-01.jsonl", "predictions.jsonl"]
    assert len(log.records) == 5


def test_a_cut_short_last_line_is_skipped_with_a_warning(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = draw(200, seed=2)
    partial = records[0].to_json()[:40]
    log = write_lines(tmp_path / "predictions.jsonl", records, tail=partial)
    assert drift(log, model_dir, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert f"celestial-eval: warning: {log}:201: last line cut short" in err
    result = verdict(tmp_path / "out")
    assert result["log"]["kept"] == 200 and result["log"]["skipped_lines"] == 1
    assert len(result["warnings"]) == 1


def test_a_corrupt_line_elsewhere_is_one_error_naming_file_and_line(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [r.to_json() for r in draw(100, seed=2)]
    lines[41] = lines[41][:30]
    log = tmp_path / "predictions.jsonl"
    log.write_text("\n".join(lines) + "\n")
    assert drift(log, model_dir, tmp_path / "out") == 2
    assert f"{log}:42: not a prediction record (not JSON" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "nowhere.jsonl", "nowhere.jsonl not found. Pass a log file or the folder"),
        (lambda d: write_lines(d / "empty.jsonl", []), "holds no record"),
        (lambda d: (d / "logs").mkdir() or d / "logs", "holds no prediction log (*.jsonl)"),
        (
            lambda d: write_lines(d / "p.jsonl", draw(80, seed=2, model="e" * 64)),
            "None of the 80 logged answers is of model " + MODEL[:12],
        ),
        (
            lambda d: write_lines(d / "p.jsonl", draw(20, seed=2)),
            "Only 20 logged answers are of model",
        ),
        (
            lambda d: write_bytes(d / "p.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\n"),
            "p.jsonl:1: not a prediction record",
        ),
    ],
    ids=["missing", "empty", "empty-folder", "other-model", "too-few", "binary"],
)
def test_bad_logs_are_one_clear_error_and_exit_2(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str
) -> None:
    assert drift(make(tmp_path), model_dir, tmp_path / "out") == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_missing_or_stale_reference_is_one_clear_error(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_lines(tmp_path / "p.jsonl", draw(100, seed=2))
    assert drift(log, tmp_path / "absent", tmp_path / "out") == 2
    assert "Model folder" in one_error_line(capsys)
    (model_dir / "model.keras").write_bytes(b"retrained by hand")
    assert drift(log, model_dir, tmp_path / "out") == 2
    assert "is another model" in one_error_line(capsys)
    (model_dir / "reference.jsonl").unlink()
    assert drift(log, model_dir, tmp_path / "out") == 2
    assert "has no reference.jsonl" in one_error_line(capsys)


def test_bad_params_exit_2(model_dir: Path, tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("drift:\n  p_valeu: 0.05\n")
    log = write_lines(tmp_path / "p.jsonl", draw(100, seed=2))
    assert drift(log, model_dir, tmp_path / "out", "--params", str(params)) == 2
    assert "Did you mean 'p_value'?" in one_error_line(capsys)


def test_an_output_that_cannot_be_written_is_bad_input_not_drift(
    model_dir: Path, tmp_path: Path, capsys
) -> None:
    log = write_lines(tmp_path / "p.jsonl", draw(100, seed=2))
    taken = tmp_path / "drift.jpg"
    taken.write_bytes(b"x")
    assert drift(log, model_dir, taken) == 2  # 1 would say: drift found
    assert "drift report's folder" in one_error_line(capsys)
    summary = tmp_path / "folder.md"
    summary.mkdir()
    assert drift(log, model_dir, tmp_path / "out", "--summary", str(summary)) == 2
    assert "Is a directory" in one_error_line(capsys)


def test_the_page_opens_offline_and_shows_the_verdict(model_dir: Path, tmp_path: Path) -> None:
    log = write_lines(tmp_path / "p.jsonl", draw(1000, seed=2, darker=0.2))
    assert drift(log, model_dir, tmp_path / "out") == 1
    html = (tmp_path / "out" / "drift.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "Content-Security-Policy" in html and "<script" not in html
    # The only URLs are SVG's namespace name, which nothing fetches.
    assert set(re.findall(r"https?://[^'\"\s)]+", html)) == {"http://www.w3.org/2000/svg"}
    assert not re.search(r"(src|href)=|url\(", html)
    assert "Drift: 3 of 9 checks failed" in html
    assert html.count("<svg") == 1 + 7  # the class mix, then each distribution
    assert "feature:mean_red" in html


def test_summary_appends_markdown_for_a_ci_job(model_dir: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# Earlier step\n")
    log = write_lines(tmp_path / "p.jsonl", draw(1000, seed=2, mix=(0.1, 0.2, 0.7)))
    assert drift(log, model_dir, tmp_path / "out", "--summary", str(summary)) == 1
    text = summary.read_text()
    assert text.startswith("# Earlier step\n## Drift found: class_mix\n")
    assert "| class_mix | psi |" in text and "**drift**" in text


def test_the_tests_agree_with_scipy_stats() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 300), rng.normal(0.2, 1.1, 2000)
    statistic, p = ks_test(a, b)
    expected = scipy.stats.ks_2samp(a, b, method="asymp")
    assert statistic == pytest.approx(expected.statistic)
    assert p == pytest.approx(expected.pvalue, rel=0.05)
    reference, log = [50, 30, 20, 0], [400, 350, 200, 50]
    psi, p = category_shift(reference, log)
    chi2 = scipy.stats.chi2_contingency(np.array([reference, log])[:, :4], correction=False)
    assert p == pytest.approx(chi2.pvalue)
    assert psi > 0 and category_shift(log, log)[0] == 0.0


@pytest.mark.slow
def test_the_command_exits_0_1_2_as_a_process(model_dir: Path, tmp_path: Path) -> None:
    command = [str(Path(sys.executable).parent / "celestial-eval")]  # the installed script
    same = write_lines(tmp_path / "same.jsonl", draw(500, seed=2))
    darker = write_lines(tmp_path / "darker.jsonl", draw(500, seed=2, darker=0.2))
    codes = {}
    for name, log in (("same", same), ("darker", darker), ("missing", tmp_path / "no.jsonl")):
        run = subprocess.run(
            [*command, "drift", str(log), "--model", str(model_dir), "--out", str(tmp_path / name)],
            capture_output=True,
            text=True,
        )
        codes[name] = run.returncode
        if name == "darker":
            assert "DRIFT feature:mean_red" in run.stdout
        if name == "missing":
            assert run.stderr.startswith("celestial-eval: error: Prediction log")
            assert "Traceback" not in run.stderr
    assert codes == {"same": 0, "darker": 1, "missing": 2}


@pytest.mark.slow
def test_drift_imports_neither_keras_nor_jax_nor_matplotlib(
    model_dir: Path, tmp_path: Path
) -> None:
    log = write_lines(tmp_path / "p.jsonl", draw(100, seed=2))
    code = (
        "import sys\nfrom celestial_eval.cli import main\n"
        f"main(['drift', {str(log)!r}, '--model', {str(model_dir)!r}, '--out', "
        f"{str(tmp_path / 'out')!r}])\n"
        "print(sorted({'keras', 'jax', 'matplotlib'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    assert result.stdout.strip().endswith("[]")


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium (installed by .ci/run) absent")
def test_the_page_renders_offline_in_a_real_browser(model_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    log = write_lines(tmp_path / "p.jsonl", draw(1000, seed=2, unknown=0.3))
    assert drift(log, model_dir, tmp_path / "out") == 1
    page_url = (tmp_path / "out" / "drift.html").resolve().as_uri()
    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_url, wait_until="load")
            charts = page.eval_on_selector_all(
                "svg",
                "els => els.map(e => [e.getBoundingClientRect().width,"
                " e.querySelectorAll('polyline, rect.bar').length])",
            )
            headline = page.inner_text(".verdict")
            failed_rows = page.eval_on_selector_all("tr.failed td.name", "els => els.length")
        finally:
            browser.close()
    assert requests == [page_url]
    assert errors == []
    assert len(charts) == 8 and all(width > 200 and shapes > 0 for width, shapes in charts)
    assert headline.startswith("Drift: ") and "checks failed" in headline
    assert failed_rows == len(verdict(tmp_path / "out")["failed"])


@pytest.mark.slow
def test_a_trained_models_reference_is_what_drift_reads(tmp_path: Path) -> None:
    from dataclasses import replace

    from celestial_data import write_prepared
    from celestial_models import TrainParams, train_model

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])
    images = np.clip(
        colours[labels][:, None, None] + rng.integers(-30, 30, (30, 16, 16, 3)), 0, 255
    )
    files = [f"c{k}/{i}.png" for i, k in enumerate(labels)]
    split = (images.astype(np.uint8), labels, files)
    write_prepared(tmp_path / "prepared", ["Alpha", "Beta", "Gamma"], "rgb",
                   {"train": split, "val": split})  # fmt: skip
    model_dir = tmp_path / "model"
    train_model(
        tmp_path / "prepared",
        model_dir,
        TrainParams(epochs=1, min_steps=0, batch_size=8, conv_size=4),
    )
    reference = read_log([model_dir / "reference.jsonl"]).records
    assert len(reference) == 30
    # The server's log of the same images, twice over: no drift; the same darkened: drift.
    served = [replace(r, time="2026-12-01T00:00:00.000000Z") for r in reference * 2]
    darker = [replace(r, features=(0.0, 0.0, 0.0, *r.features[3:])) for r in served]
    params = tmp_path / "params.yaml"
    params.write_text("drift:\n  min_records: 10\n")
    for name, records, status in (("same", served, 0), ("darker", darker, 1)):
        log = write_lines(tmp_path / f"{name}.jsonl", records)
        assert drift(log, model_dir, tmp_path / name, "--params", str(params)) == status
    assert verdict(tmp_path / "darker")["failed"] == [
        "feature:mean_red",
        "feature:mean_green",
        "feature:mean_blue",
    ]


def test_a_check_over_its_threshold_but_not_significant_says_why_it_is_ok() -> None:
    from celestial_eval.drift import Check

    fields = {"test": "ks", "threshold": 0.15, "reference": {"mean": 0.2}, "log": {"mean": 0.3}}
    chance = Check("feature:contrast", statistic=0.163, p_value=0.043, drift=False, **fields)
    assert chance.describe() == (
        "ok    feature:contrast       ks 0.163 > 0.15 (p 0.043, too high to call it drift); "
        "mean 0.2 -> 0.3"
    )
    drift = Check("feature:contrast", statistic=0.4, p_value=0.001, drift=True, **fields)
    assert "ks 0.400 > 0.15 (p 0.001); mean" in drift.describe()


def test_a_heavy_tail_does_not_squeeze_the_histogram_into_one_bin() -> None:
    from celestial_eval.drift_report import histogram

    rng = np.random.default_rng(0)
    reference = rng.normal(50, 10, 500)  # scores of known pictures
    log = np.concatenate([rng.normal(70, 10, 460), [20_000.0] * 40])  # and some junk
    centres, before, after, clipped = histogram(reference, log)
    assert clipped and max(centres) < 200  # the bins span the bulk, not the junk
    assert sum(before) == pytest.approx(1.0) and sum(after) == pytest.approx(1.0)
    assert after[-1] >= 0.08  # the junk counted in the last bin, not dropped
    peak = centres[int(np.argmax(after))] - centres[int(np.argmax(before))]
    assert 10 < peak < 30  # the shift of the bulk shows
    # Samples without far-out values are binned over their whole range.
    centres, _, _, clipped = histogram(np.linspace(0, 1, 101), rng.uniform(0, 1, 50))
    assert not clipped and 0 < min(centres) < 0.1 and 0.9 < max(centres) < 1
