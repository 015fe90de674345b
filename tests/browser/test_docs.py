"""/docs (Swagger UI) and /redoc in a real headless Chromium: they render the API from files the
server itself serves (no CDN: nothing downloaded at run time), under the page's CSP, with no console
errors and no CSP violations."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Request, expect

from tests.browser.test_page import CHROMIUM_ARGS, UI_TIMEOUT_MS, PageProbe, browser  # noqa: F401

pytestmark = pytest.mark.browser
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    yield context
    context.close()


def open_docs(context: BrowserContext, url: str) -> tuple[PageProbe, list[str]]:
    """The page and every URL on another host than the server's that it got a response from."""
    probe = PageProbe(context.new_page())
    foreign: list[str] = []
    own = urlsplit(url).netloc

    def on_request(request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https") and parts.netloc != own:
            foreign.append(request.url)

    probe.page.on("requestfinished", on_request)
    response = probe.page.goto(url)
    assert response is not None and response.ok
    assert "script-src 'self'" in response.headers["content-security-policy"]  # the same CSP as the page
    assert "unsafe-inline" not in response.headers["content-security-policy"].split("script-src", 1)[1].split(";")[0]
    return probe, foreign


def assert_clean(probe: PageProbe, foreign: list[str], blocked: tuple[str, ...] = ()) -> None:
    """Nothing fetched off the server; no CSP violation, console error or exception except ``blocked``."""
    assert foreign == [], f"fetched off the server: {foreign}"
    assert [v for v in probe.csp_violations() if not (blocked and v.endswith(blocked))] == []
    assert [e for e in probe.console_errors if not any(url in e for url in blocked)] == []
    assert probe.page_errors == []


def test_swagger_ui_renders_the_api_from_local_files(context: BrowserContext, live_server: str) -> None:
    probe, foreign = open_docs(context, f"{live_server}/docs")
    page = probe.page
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("flashvl")
    expect(page.locator(".opblock-summary-path", has_text="/infer").first).to_be_visible()
    page.locator(".opblock-summary-path", has_text="/infer").first.click()  # it is interactive, not a picture
    expect(page.locator(".try-out__btn").first).to_be_visible()
    assert_clean(probe, foreign)


def test_redoc_renders_the_api_from_local_files(context: BrowserContext, live_server: str) -> None:
    probe, foreign = open_docs(context, f"{live_server}/redoc")
    page = probe.page
    expect(page.locator(".api-info h1").first).to_contain_text("flashvl")
    expect(page.get_by_text("/infer").first).to_be_attached()
    # ReDoc's sidebar shows a Redocly logo hard-coded to its CDN; the CSP (img-src 'self') blocks it, so
    # nothing is fetched (``foreign`` is empty) and the link shows its text alone.
    assert_clean(probe, foreign, blocked=(REDOCLY_LOGO,))
