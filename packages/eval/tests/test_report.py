"""The offline HTML report: content, self-containment, and a real headless browser."""

import base64
import json
import re
import shutil
from pathlib import Path

import pytest

from celestial_eval.cli import main
from celestial_eval.report import build_report, plot_specs, write_report

DVC_YAML = """\
stages:
  evaluate:
    cmd: celestial-eval evaluate model data/prepared evaluation
    metrics:
      - evaluation/metrics.json:
          cache: false
    plots:
      - evaluation/confusion.csv:
          template: confusion
          x: actual
          y: predicted
          title: Confusion matrix
          cache: false
      - evaluation/preview.png:
          cache: false
plots:
  - Loss:
      x: epoch
      y:
        evaluation/history.csv: [loss, val_loss]
  - Accuracy:
      x: epoch
      y:
        evaluation/history.csv: [accuracy, val_accuracy]
"""


@pytest.fixture
def project(tmp_path: Path, written) -> Path:
    evaluation, _ = written
    project = tmp_path / "planets"
    project.mkdir()
    shutil.copytree(evaluation, project / "evaluation")
    (project / "dvc.yaml").write_text(DVC_YAML)
    (project / "params.yaml").write_text("evaluate:\n  split: auto\n")
    return project


def embedded(html: str) -> list[bytes]:
    """The bytes of every image the page embeds, in order."""
    return [base64.b64decode(data) for data in re.findall(r"base64,([A-Za-z0-9+/=]+)'", html)]


def pngs(project: Path) -> list[bytes]:
    """The bytes of every PNG of the evaluation folder, sorted."""
    return sorted(p.read_bytes() for p in (project / "evaluation").glob("*.png"))


def test_reads_the_plots_dvc_yaml_declares(project: Path) -> None:
    specs = plot_specs(project)

    assert [s.title for s in specs] == [
        "Loss",
        "Accuracy",
        "Confusion matrix",
        "evaluation/preview.png",
    ]
    assert specs[0].sources == {"evaluation/history.csv": ["loss", "val_loss"]}
    assert specs[0].x == {"evaluation/history.csv": "epoch"}
    assert specs[2].template == "confusion"


def test_report_is_self_contained(project: Path) -> None:
    html = build_report(project)

    assert "<script" not in html
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)
    assert "default-src 'none'" in html  # the browser refuses any fetch
    # every PNG of the evaluation, embedded: preview declared, the others added
    assert html.count("src='data:image/png;base64,") == 3
    assert html.count("<svg") == 2  # loss, accuracy
    assert "undefined" in html  # Gamma's precision
    assert "Class &#x27;Gamma&#x27; was never predicted" in html
    assert "Gamma/img6.jpg" in html  # misclassified table


def test_the_varied_copies_have_cards_when_evaluated(project: Path) -> None:
    assert "varied copies" not in build_report(project)
    path = project / "evaluation" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["varied"] = {"images": 24, "accuracy": 0.875, "accepted": 0.75}
    path.write_text(json.dumps(metrics))
    html = build_report(project)
    assert "<div class='value'>87.5%</div><div>accuracy on varied copies</div>" in html
    assert "<div class='value'>75.0%</div><div>varied copies accepted</div>" in html


def test_report_is_deterministic(project: Path, tmp_path: Path) -> None:
    assert build_report(project) == build_report(project)


def test_without_declared_plots_the_evaluation_files_are_drawn(project: Path) -> None:
    (project / "dvc.yaml").unlink()
    html = build_report(project)

    assert html.count("<svg") == 2
    assert html.count("src='data:image/png;base64,") == 3
    assert sorted(embedded(html)) == pngs(project)


def test_missing_metrics_is_a_clear_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("celestial-eval: error: No metrics at ")
    assert "dvc repro" in error


def test_cli_writes_the_report(project: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "site" / "report.html"
    assert main(["report", str(project), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text().startswith("<!DOCTYPE html>")


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium (installed by .ci/run) absent")
def test_report_renders_offline_in_a_real_browser(project: Path) -> None:
    from playwright.sync_api import sync_playwright

    # A class named at length must not push the page wider than the window.
    metrics_file = project / "evaluation" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    first = next(iter(metrics["classes"]))
    long_name = "Supercalifragilisticexpialidocious_" * 3 + "planet"
    metrics["classes"] = {
        (long_name if name == first else name): values
        for name, values in metrics["classes"].items()
    }
    metrics_file.write_text(json.dumps(metrics))
    path = write_report(project)
    page_url = path.resolve().as_uri()
    requests: list[str] = []
    failed: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_url, wait_until="load")
            page.wait_for_load_state("networkidle")
            charts = page.eval_on_selector_all(
                "svg",
                "els => els.map(e => [e.getBoundingClientRect().width,"
                " e.querySelectorAll('polyline, rect').length])",
            )
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => e.complete && e.naturalWidth)"
            )
            confusion = page.eval_on_selector(
                "img[alt='evaluation/confusion.png']", "e => e.complete && e.naturalWidth"
            )
            page_width = page.evaluate("() => document.documentElement.scrollWidth")
            window_width = page.evaluate("() => window.innerWidth")
        finally:
            browser.close()

    # Only the page itself was loaded; data: URIs never reach the network.
    assert [u for u in requests if not u.startswith("data:")] == [page_url]
    assert failed == []
    assert errors == []
    assert len(charts) == 2 and all(width > 200 and shapes > 0 for width, shapes in charts)
    assert len(images) == 3 and all(width and width > 200 for width in images)
    assert confusion > 200  # the matrix is visible offline
    assert page_width <= window_width


def test_the_confusion_matrix_is_the_png_evaluate_drew(project: Path) -> None:
    # One renderer: the report embeds evaluate's confusion.png, byte for byte.
    drawn = (project / "evaluation" / "confusion.png").read_bytes()
    html = build_report(project)  # a confusion template on confusion.csv
    assert embedded(html).count(drawn) == 1
    assert "<figcaption>evaluation/confusion.png</figcaption>" in html

    # Declared twice, as the project template does (DVC's view and the image): shown once.
    (project / "dvc.yaml").write_text(
        "plots:\n  - Confusion matrix:\n      template: confusion\n      x: predicted\n"
        "      y:\n        evaluation/confusion.csv: actual\n  - evaluation/confusion.png\n"
    )
    html = build_report(project)
    assert embedded(html).count(drawn) == 1
    assert sorted(embedded(html)) == pngs(project)  # history and preview added, once each


def test_a_missing_confusion_png_is_named(project: Path) -> None:
    (project / "evaluation" / "confusion.png").unlink()
    html = build_report(project)
    assert "evaluation/confusion.png not found: <code>dvc pull</code> it, or make it" in html
