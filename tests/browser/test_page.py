"""Drive the web page at `/` in a real headless Chromium against a live flashvl server.

Needs Debian's `chromium` at /usr/bin/chromium (never `playwright install`) and the
`live_server` fixture (base URL of a running server) from tests/conftest.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ANSWER_TIMEOUT_MS = 120_000  # the CPU language model is slow
UI_TIMEOUT_MS = 30_000  # page reactions; generous because CI shares 2 cores with the models
# Records CSP violations from inside the page; init scripts are injected by the driver, not blocked by CSP.
CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`));
"""


class PageProbe:
    """A page plus everything it complained about: console errors, uncaught exceptions, CSP violations."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.add_init_script(CSP_PROBE)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def csp_violations(self) -> list[str]:
        return self.page.evaluate("window.__cspViolations")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (deselect with -m 'not browser')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def probe(browser: Browser, live_server: str) -> Iterator[PageProbe]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    probe = PageProbe(context.new_page())
    response = probe.page.goto(f"{live_server}/")
    assert response is not None and response.ok
    # Without the header the "no CSP violations" checks below would prove nothing.
    assert "script-src 'self'" in response.headers.get("content-security-policy", "")
    yield probe
    context.close()


@pytest.fixture
def coffee_jpeg(tmp_path: Path) -> Path:
    from skimage import data

    path = tmp_path / "coffee.jpg"
    Image.fromarray(np.asarray(data.coffee())).save(path, format="JPEG", quality=90)
    return path


def choose_image(page: Page, path: Path) -> None:
    page.set_input_files("#file-input", str(path))
    expect(page.locator("#file-meta")).to_be_visible()  # the page accepted the file


def wait_until_finished(page: Page) -> str:
    """Waits for the answer to end one way or the other and returns its data-state."""
    answer = page.locator("#answer")
    page.wait_for_selector(
        "#answer[data-state=done], #answer[data-state=error]", state="attached", timeout=ANSWER_TIMEOUT_MS
    )
    return answer.get_attribute("data-state") or ""


def test_ask_about_a_photo_streams_an_answer_with_stages(probe: PageProbe, coffee_jpeg: Path) -> None:
    page = probe.page
    choose_image(page, coffee_jpeg)
    expect(page.locator("#preview")).to_be_visible()
    assert page.eval_on_selector("#preview", "img => img.naturalWidth") == 600  # coffee() is 600×400

    page.fill("#question", "Describe this image.")
    page.click("#ask")
    state = wait_until_finished(page)
    assert state == "done", f"page error: {page.text_content('#error')!r}"

    assert page.text_content("#answer").strip()
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#stop")).to_be_disabled()
    expect(page.locator("#ask")).to_be_enabled()
    # Thinking, when there is any, stays folded away until the user opens it.
    assert page.eval_on_selector("#thinking", "d => d.hidden || !d.open")

    expect(page.locator("#stages")).to_be_visible()
    # exactly "vision" (an arbitration re-ask adds a "vision-reask" stage when the answer names something unseen)
    vision = page.locator("#stages li.stage", has=page.locator(".stage-name", has_text=re.compile(r"^vision$")))
    expect(vision).to_have_count(1)
    # The offline default's vision stage is the pipeline, named as the server gives it (not a VLM).
    assert vision.locator(".stage-backend").text_content() == "offline-pipeline"
    assert re.fullmatch(r"\d+\.\d+ s", vision.locator(".stage-time").text_content())
    summary = page.text_content("#stage-summary")
    assert "Total" in summary and "Route" in summary
    expect(page.locator("#stage-note")).to_contain_text("not a vision-language model")

    assert probe.console_errors == []
    assert probe.page_errors == []
    assert probe.csp_violations() == []


def test_a_text_file_named_png_shows_the_servers_error(probe: PageProbe, tmp_path: Path) -> None:
    page = probe.page
    fake = tmp_path / "notes.png"
    fake.write_text("These are my shopping notes, not a picture.\n" * 20)
    choose_image(page, fake)

    page.fill("#question", "What is in this picture?")
    page.press("#question", "Enter")  # Enter submits
    state = wait_until_finished(page)

    assert state == "error"
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("data-code", "unsupported_format")
    assert error.text_content().strip()
    assert page.text_content("#answer") == ""
    # The browser itself logs the 415 as a failed resource load; nothing else may go wrong.
    assert [e for e in probe.console_errors if "status of 415" not in e] == []
    assert probe.page_errors == []
    assert probe.csp_violations() == []


def test_stop_aborts_the_stream(probe: PageProbe, coffee_jpeg: Path) -> None:
    page = probe.page
    choose_image(page, coffee_jpeg)
    # A question only the language stage answers (seconds of streaming): rule answers come back
    # at once, and with the image's observations memoised there would be nothing left to stop.
    page.fill("#question", "Tell a short story about what might happen next in this picture.")
    page.click("#ask")
    expect(page.locator("#answer")).to_have_attribute("data-state", "streaming")
    page.click("#stop")

    expect(page.locator("#answer")).to_have_attribute("data-state", "done")
    expect(page.locator("#status")).to_have_text("Stopped.")
    expect(page.locator("#stop")).to_be_disabled()
    expect(page.locator("#ask")).to_be_enabled()
    expect(page.locator("#error")).to_be_hidden()
    assert probe.page_errors == []
    assert probe.csp_violations() == []


# ------------------------------------------------------------------ a newcomer's first hour (issue 20)

RULE_QUESTION = "Is this image safe for work?"  # answered by a rule: quick, no language model


@pytest.fixture
def astronaut_png(tmp_path: Path) -> Path:
    from skimage import data

    path = tmp_path / "astronaut.png"
    Image.fromarray(np.asarray(data.astronaut())).save(path, format="PNG")
    return path


def test_on_a_phone_the_page_scrolls_to_the_answer(browser: Browser, live_server: str, coffee_jpeg: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        probe = PageProbe(context.new_page())
        page = probe.page
        page.goto(f"{live_server}/")
        choose_image(page, coffee_jpeg)
        page.fill("#question", RULE_QUESTION)
        page.evaluate("window.scrollTo(0, 0)")  # from the top of the page (filling scrolled to the question)
        card = page.locator("#answer-card")
        expect(card).not_to_be_in_viewport()  # one column: the answer is below the fold
        page.click("#ask")
        expect(card).to_be_in_viewport(ratio=0.3, timeout=UI_TIMEOUT_MS)  # before the answer is done
        assert wait_until_finished(page) == "done"
        expect(page.locator("#answer")).to_be_in_viewport()
        assert probe.csp_violations() == [] and probe.page_errors == []
    finally:
        context.close()


def test_choosing_another_image_clears_the_old_answer(probe: PageProbe, coffee_jpeg: Path, astronaut_png: Path) -> None:
    page = probe.page
    choose_image(page, coffee_jpeg)
    page.fill("#question", RULE_QUESTION)
    page.click("#ask")
    assert wait_until_finished(page) == "done"
    expect(page.locator("#answer")).not_to_be_empty()
    expect(page.locator("#stages")).to_be_visible()

    choose_image(page, astronaut_png)
    expect(page.locator("#answer")).to_be_empty()
    expect(page.locator("#answer")).to_have_attribute("data-state", "idle")
    expect(page.locator("#stages")).to_be_hidden()
    expect(page.locator("#answer-placeholder")).to_be_visible()
    expect(page.locator("#status")).to_be_empty()
    # the question stays: asking it about the new image is one click
    expect(page.locator("#question")).to_have_value(RULE_QUESTION)


def test_a_new_image_while_answering_drops_the_answer_in_flight(
    probe: PageProbe, coffee_jpeg: Path, astronaut_png: Path
) -> None:
    page = probe.page
    choose_image(page, coffee_jpeg)
    page.fill("#question", "Describe this image in detail.")  # the cascade: seconds of streaming
    page.click("#ask")
    expect(page.locator("#answer")).to_have_attribute("data-state", "streaming")
    choose_image(page, astronaut_png)
    expect(page.locator("#answer")).to_have_attribute("data-state", "idle")
    page.wait_for_timeout(1500)  # nothing of the old answer arrives afterwards
    expect(page.locator("#answer")).to_be_empty()
    expect(page.locator("#answer")).to_have_attribute("data-state", "idle")
    expect(page.locator("#stop")).to_be_disabled()
    assert probe.page_errors == []


def test_the_api_key_field_has_its_own_label(probe: PageProbe) -> None:
    page = probe.page
    page.click("#api-key-box summary")
    field = page.get_by_label("API key", exact=True)
    expect(field).to_have_id("api-key")
    expect(field).to_have_accessible_name("API key")
    expect(field).to_have_accessible_description(re.compile("Only if this server asks for one"))
    field.fill("secret")
    assert probe.csp_violations() == []
