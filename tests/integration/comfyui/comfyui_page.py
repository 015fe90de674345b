"""ComfyUI's own page in a real headless Chromium (Debian's, as tests/browser uses): load workflows, run
them from the page, take screenshots.

As a script it regenerates the UI-format examples and the screenshots the node package's README shows:

    .venv/bin/python tests/integration/comfyui_page.py

(starts a flashvl server and a ComfyUI copy on loopback ports, converts each ``examples/api/NAME.json`` into
the UI format in the page, runs it there and writes ``examples/NAME.json`` and ``docs/NAME.png``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, Playwright, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfyui_harness as harness

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 760}
# Node id -> (x, y, width, height) in the saved UI workflows: room for the answers to show.
LAYOUTS: dict[str, dict[int, tuple[int, int, int, int]]] = {
    "ask_image": {1: (30, 60, 300, 360), 2: (370, 60, 420, 270), 3: (830, 60, 520, 150), 4: (830, 250, 520, 380)},
    "moderate_folder": {
        1: (30, 60, 320, 110),
        2: (390, 60, 400, 190),
        3: (830, 60, 520, 110),
        4: (830, 200, 520, 150),
        5: (830, 380, 520, 120),
    },
}


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def open_page(browser: Browser, base: str) -> tuple[Page, list[str]]:
    """ComfyUI's page; every request that is not to ComfyUI itself is aborted (nothing leaves loopback).
    Returns the page and the list its uncaught exceptions are collected in."""
    import httpx

    for setting, value in (("Comfy.TutorialCompleted", True), ("Comfy.Minimap.Visible", False)):
        httpx.post(f"{base}/settings/{setting}", json=value, timeout=10).raise_for_status()
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"{exc}\n{exc.stack}"))
    page.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith((base, "data:", "blob:")) else route.abort(),
    )
    page.goto(base)
    page.wait_for_function("() => window.app && window.app.graph", timeout=60_000)
    time.sleep(1.0)
    # ComfyUI's frontend 1.27.10 throws once while it registers settings for a new user profile
    # ("Cannot read properties of undefined (reading 'id')" in settingStore); not ours, not counted.
    errors.clear()
    return page, errors


def lay_out(page: Page, layout: dict[int, tuple[int, int, int, int]]) -> None:
    page.evaluate(
        """(layout) => {
            for (const [id, [x, y, w, h]] of Object.entries(layout)) {
                const node = window.app.graph.getNodeById(Number(id));
                node.pos = [x, y];
                node.size = [w, h];
            }
            window.app.canvas.ds.offset = [0, 0];
            window.app.canvas.ds.scale = 1;
            window.app.graph.setDirtyCanvas(true, true);
        }""",
        {str(k): v for k, v in layout.items()},
    )


def load_api(page: Page, api: dict[str, Any], name: str) -> dict[str, Any]:
    """Load an API-format workflow the way a user drops one on the page; returns the UI format."""
    page.evaluate("async ([api, name]) => { await window.app.loadApiJson(api, name); }", [api, name])
    lay_out(page, LAYOUTS[name])
    return page.evaluate("() => window.app.graph.serialize()")


def load_ui(page: Page, ui: dict[str, Any]) -> None:
    page.evaluate("async (ui) => { await window.app.loadGraphData(ui); }", ui)
    page.evaluate("() => { window.app.canvas.ds.offset = [0, 0]; window.app.canvas.ds.scale = 1; }")


def set_server_url(page: Page, url: str) -> None:
    page.evaluate(
        """(url) => {
            for (const node of window.app.graph._nodes)
                for (const widget of node.widgets || [])
                    if (widget.name === "server_url") widget.value = url;
            window.app.graph.setDirtyCanvas(true, true);
        }""",
        url,
    )


def graph_to_prompt(page: Page) -> dict[str, Any]:
    return page.evaluate("async () => (await window.app.graphToPrompt()).output")


def run_in_page(page: Page, comfy: harness.ComfyUI, timeout_s: float = 60.0) -> dict[str, Any]:
    """Queue the page's workflow with the page's own Run path; wait for its history entry."""
    before = set(_history(comfy))
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for prompt_id, entry in _history(comfy).items():
            if prompt_id not in before and (
                entry["status"].get("completed") or entry["status"].get("status_str") == "error"
            ):
                time.sleep(0.5)  # let the page draw the results
                return entry
        time.sleep(0.1)
    raise TimeoutError("the page's run did not finish")


def _history(comfy: harness.ComfyUI) -> dict[str, Any]:
    import httpx

    return httpx.get(f"{comfy.base}/history", timeout=10).json()


def regenerate(package: Path = harness.NODE_PACKAGE) -> None:
    """Write examples/NAME.json (UI format) and docs/NAME.png from examples/api/NAME.json, run in a real ComfyUI."""
    from PIL import Image
    from skimage import data

    from flashvl.testing import start_server, stop_server

    examples, docs = package / "examples", package / "docs"
    docs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = harness.prepare(tmp)
        Image.fromarray(data.astronaut()).save(root / "input" / "example.png")
        inbox = root / "input" / "moderation_inbox"
        inbox.mkdir()
        for name in ("astronaut", "coffee", "rocket"):
            Image.fromarray(getattr(data, name)()).save(inbox / f"{name}.png")
        server = start_server(["--language", "none"], tmp / "flashvl.log")
        comfy = harness.start(root, {"FLASHVL_URL": server.base})
        try:
            harness.wait_ready(comfy)
            with sync_playwright() as playwright:
                browser = launch(playwright)
                page, errors = open_page(browser, comfy.base)
                for name in LAYOUTS:
                    api = json.loads((examples / "api" / f"{name}.json").read_text())
                    ui = load_api(page, api, name)
                    (examples / f"{name}.json").write_text(json.dumps(ui, indent=1, ensure_ascii=False) + "\n")
                    set_server_url(page, server.base)
                    entry = run_in_page(page, comfy)
                    assert entry["status"]["status_str"] == "success", entry["status"]
                    set_server_url(page, api["2"]["inputs"]["server_url"])  # the screenshot shows the default
                    page.screenshot(path=str(docs / f"{name}.png"))
                assert not errors, errors
                browser.close()
        finally:
            harness.stop(comfy)
            stop_server(server.proc)
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    regenerate()
