"""The web page's "Knowledge" view in a real headless Chromium against a real flashvl server (vision stage,
no language stage): upload a screenshot and a PDF, search, open a hit with its matching line outlined, ask
and see the sources. The page's strict CSP must see no violation."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from flashvl.testing import start_server, stop_server
from tests.browser.helpers import Opened, browser_fixture  # noqa: F401 (the browser fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kb.corpus import PDFS, SCREENSHOTS, pdf_bytes, png_bytes, screenshot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def kb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("kbpage")
    server = start_server(["--language", "none", "--kb-sqlite-path", str(folder / "kb.sqlite3")], folder / "log")
    yield server.base
    stop_server(server.proc)


def test_knowledge_view_uploads_searches_opens_and_asks(browser: Browser, kb_server: str, tmp_path: Path) -> None:
    vpn, manual = tmp_path / "vpn_setup.png", tmp_path / "办公手册.pdf"
    vpn.write_bytes(png_bytes(screenshot(SCREENSHOTS["vpn_setup.png"])))
    manual.write_bytes(pdf_bytes(PDFS["办公手册.pdf"]))
    context = browser.new_context(viewport={"width": 1200, "height": 1400})
    context.set_default_timeout(120_000)
    expect.set_options(timeout=120_000)
    opened = Opened(context.new_page()).goto(f"{kb_server}/")
    page = opened.page
    tab = page.locator("#view-tab-knowledge")  # the page's views are tabs: open the Knowledge view
    if tab.count():
        tab.click()
    expect(page.locator("#knowledge")).to_be_visible()
    page.fill("#kb-collection", "handbooks")
    page.set_input_files("#kb-files", [str(vpn), str(manual)])
    page.click("#kb-upload")
    expect(page.locator("#kb-upload-status")).to_have_text(
        "vpn_setup.png: indexed (1 page); 办公手册.pdf: indexed (2 pages)"
    )

    page.fill("#kb-query", "灭火器")
    page.click("#kb-search")
    first = page.locator("#kb-results .kb-hit").first
    expect(first.locator(".kb-hit-title")).to_have_text("办公手册.pdf · page 2")
    expect(first.locator("mark").first).to_have_text("灭火器")
    first.locator(".kb-hit-title").click()
    expect(page.locator("#kb-viewer-title")).to_have_text("办公手册.pdf · page 2")
    expect(page.locator("#kb-canvas")).to_have_attribute("data-highlighted", "1")
    assert page.evaluate("document.getElementById('kb-canvas').width") > 100

    page.fill("#kb-question", "VPN server address?")
    page.click("#kb-ask")
    expect(page.locator("#kb-answer")).to_contain_text("vpn.northwind.example")
    expect(page.locator("#kb-sources .kb-source strong")).to_have_text(["vpn_setup.png · page 1"])
    page.fill("#kb-question", "What is the capital of Australia?")
    page.click("#kb-ask")
    expect(page.locator("#kb-answer")).to_have_attribute("data-answered", "false")
    expect(page.locator("#kb-sources .kb-source")).to_have_count(0)
    opened.clean()
    context.close()
