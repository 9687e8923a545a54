"""The web page in a real headless Chromium: choose a reference image, read the label."""

from __future__ import annotations

import shutil
from urllib.parse import urlparse

import pytest
import requests

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def answer(server, path, headers: dict[str, str] | None = None) -> dict:
    """The server's answer for the JPEG at ``path``, asked directly."""
    return requests.post(
        f"{server.url}/predict",
        data=path.read_bytes(),
        headers={"Content-Type": "image/jpeg", **(headers or {})},
        timeout=30,
    ).json()


def test_choosing_an_image_shows_it_with_its_label_and_top_k(server, reference, browser) -> None:
    path = reference["Jupiter"][1]
    expected = answer(server, path)
    page = browser.new_page()
    elsewhere = []
    page.on(
        "request",
        lambda r: urlparse(r.url).hostname not in ("127.0.0.1", None) and elsewhere.append(r.url),
    )
    page.goto(server.url + "/")
    page.get_by_label("Choose an image").set_input_files(str(path))
    label = page.locator("#label")
    label.filter(has_text=expected["label"]).wait_for(timeout=30_000)
    assert label.inner_text().startswith(f"{expected['label']} (")
    rows = page.locator("#topk li")
    assert rows.count() == len(expected["top_k"])
    assert rows.first.inner_text().startswith(expected["top_k"][0]["label"])
    assert page.locator("#preview").is_visible()
    assert "tiny-bodies" in page.locator("#model").inner_text()
    assert page.locator("#error").inner_text() == ""
    assert elsewhere == []


def test_a_file_that_is_no_image_shows_the_servers_message(server, browser, tmp_path) -> None:
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is text, not a picture")
    page = browser.new_page()
    page.goto(server.url + "/")
    page.get_by_label("Choose an image").set_input_files(str(bogus))
    error = page.get_by_role("alert")
    error.filter(has_text="not an image").wait_for(timeout=30_000)
    assert "notes.png" in error.inner_text()
    assert page.locator("#label").inner_text() == ""


def test_an_image_of_no_class_shows_unknown_until_rejection_is_off(
    server, browser, tmp_path
) -> None:
    from PIL import Image

    noise = tmp_path / "noise.png"
    Image.effect_noise((64, 64), 120).convert("RGB").save(noise)
    page = browser.new_page()
    page.goto(server.url + "/")
    page.get_by_label("Choose an image").set_input_files(str(noise))
    label = page.locator("#label")
    label.filter(has_text="unknown").wait_for(timeout=30_000)
    assert label.inner_text().startswith("unknown (none of the classes; closest: ")
    assert "unknown" in (label.get_attribute("class") or "")
    assert "score" in page.locator("#score").inner_text()
    assert page.locator("#topk li").count() >= 1
    page.get_by_role("checkbox").uncheck()
    label.filter(has_not_text="unknown").wait_for(timeout=30_000)
    closest = page.locator("#topk li").first.inner_text().split("\n")[0].split("\t")[0]
    assert label.inner_text().startswith(closest.strip())


def test_with_an_api_key_the_page_asks_for_it_and_sends_it(guarded_server, reference, browser):
    path = reference["Jupiter"][1]
    expected = answer(guarded_server, path, guarded_server.key_header)
    page = browser.new_page()
    sent = []
    page.on("request", lambda r: sent.append(r.headers.get("x-api-key")))
    page.goto(guarded_server.url + "/")
    key = page.get_by_label("API key")
    key.wait_for(timeout=30_000)  # shown once /info answers 401
    page.get_by_label("Choose an image").set_input_files(str(path))
    page.get_by_role("alert").filter(has_text="Invalid API Key").wait_for(timeout=30_000)
    key.fill(guarded_server.api_key)
    page.get_by_role("button", name="Use key").click()
    label = page.locator("#label")
    label.filter(has_text=expected["label"]).wait_for(timeout=30_000)
    assert page.locator("#error").inner_text() == ""
    page.locator("#model").filter(has_text="tiny-bodies").wait_for(timeout=30_000)
    assert guarded_server.api_key in sent  # as the X-API-Key header
    stored = page.evaluate(
        "() => JSON.stringify([localStorage, sessionStorage, document.cookie, location.href])"
    )
    assert guarded_server.api_key not in stored


def test_a_busy_servers_plain_text_503_is_shown_as_it_said(server, reference, browser) -> None:
    page = browser.new_page()
    page.route(
        "**/predict*",
        lambda route: route.fulfill(
            status=503, body="Service Unavailable", content_type="text/plain; charset=utf-8"
        ),
    )
    page.goto(server.url + "/")
    page.get_by_label("Choose an image").set_input_files(str(reference["Jupiter"][1]))
    error = page.get_by_role("alert")
    error.filter(has_text="HTTP 503").wait_for(timeout=30_000)
    assert "Service Unavailable (HTTP 503)" in error.inner_text()


def test_an_earlier_choices_late_answer_does_not_replace_the_latest(
    server, reference, browser
) -> None:
    first, second = reference["Jupiter"][1], reference["Mars"][1]
    expected = answer(server, second)
    held = []

    def hold_the_first(route) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)  # answered only after the second choice's answer

    page = browser.new_page()
    page.route("**/predict*", hold_the_first)
    page.goto(server.url + "/")
    choose = page.get_by_label("Choose an image")
    choose.set_input_files(str(first))
    page.wait_for_function("() => document.querySelector('#result').ariaBusy === 'true'")
    choose.set_input_files(str(second))
    label = page.locator("#label")
    label.filter(has_text=expected["label"]).wait_for(timeout=30_000)
    held[0].fulfill(status=200, json={**expected, "label": "Stale", "unknown": False})
    page.wait_for_timeout(500)
    assert label.inner_text().startswith(f"{expected['label']} (")


def test_clearing_the_choice_clears_the_answer_and_the_page_asks_for_nothing_missing(
    server, reference, browser, tmp_path
) -> None:
    page = browser.new_page()
    missing = []
    page.on("response", lambda r: r.status == 404 and missing.append(r.url))
    page.goto(server.url + "/")
    choose = page.get_by_label("Choose an image")
    choose.set_input_files(str(reference["Jupiter"][1]))
    page.locator("#label").filter(has_text="(").wait_for(timeout=30_000)
    choose.set_input_files([])
    assert page.locator("#preview").is_hidden()
    page.get_by_role("checkbox").uncheck()  # would classify the choice again, if any
    page.wait_for_timeout(500)
    assert page.locator("#label").inner_text() == ""
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    choose.set_input_files(str(notes))
    page.get_by_role("alert").filter(has_text="not an image").wait_for(timeout=30_000)
    assert page.locator("#preview").is_hidden()  # no broken-image icon
    assert missing == []  # a favicon included
