"""What the browser tests of the page share: Debian's Chromium (never Playwright's download), the probe that
records CSP violations from inside the page, and a page that keeps what it complained about (console errors,
uncaught exceptions), with the API key typed in when the server asks for one.

A test module takes the ``browser`` fixture (one Chromium per module) by importing ``browser_fixture``
(not a conftest.py: test modules elsewhere ``from conftest import ...`` the suite's top one)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
# Records CSP violations from inside the page; init scripts are injected by the driver, not blocked by CSP.
CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`));
"""


@contextmanager
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (deselect with -m 'not browser')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


class Opened:
    """A page of the server, and every console error, uncaught exception and CSP violation it had."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on(
            "console",
            lambda m: self.errors.append(m.text) if isinstance(m, ConsoleMessage) and m.type == "error" else None,
        )
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.add_init_script(CSP_PROBE)

    def goto(self, url: str, api_key: str | None = None) -> Opened:
        """Opens the page; with ``api_key``, types it into the header's "API key" field (kept for the tab)."""
        self.page.goto(url)
        if api_key is not None:
            self.page.click("#api-key-box summary")
            self.page.fill("#api-key", api_key)
            self.page.dispatch_event("#api-key", "change")
        return self

    def clean(self, expected: str | None = None) -> None:
        """No CSP violation and no console error (but the one refusal a test provoked, if it says so)."""
        assert self.page.evaluate("window.__cspViolations") == []
        unexpected = [error for error in self.errors if not (expected and expected in error)]
        assert unexpected == [], unexpected
