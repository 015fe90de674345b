"""The flashvl ComfyUI nodes' HTTP client on its own (errors, timeouts, bounded concurrency), and the
example workflows in ComfyUI's own page (a real browser). Stack: comfyui_stack.py."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import comfyui_harness as harness
import httpx
import pytest
from comfyui_stack import EXAMPLES, Stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(harness.skip_reason() is not None, reason=harness.skip_reason() or ""),
]


# ---------------------------------------------------------------------- the client alone


def _client_module() -> Any:
    spec = importlib.util.spec_from_file_location("flashvl_comfyui_client", harness.NODE_PACKAGE / "flashvl_client.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_client_errors_for_format_timeout_and_wrong_server(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _client_module()
    monkeypatch.setenv("FLASHVL_API_KEY", stack.key)
    # 415: not an image at all (the nodes always send PNG; a client of the module may not)
    with pytest.raises(client.FlashvlNodeError, match=r"HTTP 415 unsupported_format"):
        client.FlashvlClient(stack.a.base, "FlashvlCaption").post_file(
            "/caption", "file", "x.png", b"plain text", "image/png"
        )
    # a server that accepts the connection and never answers: the node's timeout_s
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        start = time.perf_counter()
        with pytest.raises(client.FlashvlNodeError, match=r"did not answer /infer within 0\.5s. Raise timeout_s"):
            client.FlashvlClient(f"http://127.0.0.1:{silent.getsockname()[1]}", "FlashvlAsk", 0.5).post_json(
                "/infer", {"prompt": "x"}
            )
        assert time.perf_counter() - start < 3
    finally:
        silent.close()
    # server_url pointing at ComfyUI itself, not at flashvl
    with pytest.raises(
        client.FlashvlNodeError, match=r"HTTP 405.*has no POST /infer: is server_url the address of a flashvl server"
    ):
        client.FlashvlClient(stack.v3.base, "FlashvlAsk").post_json("/infer", {"prompt": "x"})
    with pytest.raises(client.FlashvlNodeError, match=r"is not an http\(s\) URL"):
        client.FlashvlClient("ftp://127.0.0.1/", "FlashvlAsk")


def test_concurrency_is_bounded(stack: Stack) -> None:
    """A batch runs at most ``concurrency`` requests at once (counted by a loopback proxy in front of A)."""
    import http.server

    counts = {"now": 0, "max": 0}
    lock = threading.Lock()

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            with lock:
                counts["now"] += 1
                counts["max"] = max(counts["max"], counts["now"])
            try:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(0.2)  # hold the slot, so overlap shows
                upstream = httpx.post(
                    f"{stack.a.base}{self.path}",
                    content=body,
                    headers={k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")},
                    timeout=60,
                )
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)
            finally:
                with lock:
                    counts["now"] -= 1

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proxy = f"http://127.0.0.1:{server.server_address[1]}"
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "coffee.png"}},
            "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 6}},
            "3": {"class_type": "FlashvlCaption", "inputs": {"image": ["2", 0], "server_url": proxy, "concurrency": 2}},
            "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        }
        entry = stack.v3.run(prompt)
        assert entry["status"]["status_str"] == "success", entry["status"]
        captions = harness.texts(entry, "4")
        assert len(captions) == 6 and len(set(captions)) == 1
        assert counts["max"] == 2
    finally:
        server.shutdown()


# ---------------------------------------------------------------------- ComfyUI's own page


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium (scripts/system-deps.sh)")
def test_ui_examples_load_and_run_in_comfyuis_page(stack: Stack, tmp_path: Path) -> None:
    """The UI-format examples load in ComfyUI's page (real Chromium), turn into the same graph as the API
    examples, and run from the page; the answers show in the page."""
    import comfyui_page as ui_page
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = ui_page.launch(playwright)
        try:
            page, errors = ui_page.open_page(browser, stack.v3.base)
            for name in ui_page.LAYOUTS:
                ui = json.loads((EXAMPLES / f"{name}.json").read_text())
                api = json.loads((EXAMPLES / "api" / f"{name}.json").read_text())
                ui_page.load_ui(page, ui)
                from_page = ui_page.graph_to_prompt(page)
                assert sorted(from_page) == sorted(api)
                for node_id, node in api.items():
                    assert from_page[node_id]["class_type"] == node["class_type"]
                    for key, value in node["inputs"].items():
                        assert from_page[node_id]["inputs"][key] == value, (name, node_id, key)
                ui_page.set_server_url(page, stack.a.base)
                entry = ui_page.run_in_page(page, stack.v3)
                assert entry["status"]["status_str"] == "success", entry["status"]
                shown = page.evaluate("() => [...document.querySelectorAll('textarea')].map(t => t.value)")
                if name == "ask_image":
                    answer = stack.infer("astronaut.png", api["2"]["inputs"]["question"])["text"]
                    assert answer in shown
                else:
                    assert any(re.fullmatch(r"flashvl/verdicts_\d{5}_\.jsonl", text) for text in shown), shown
                page.screenshot(path=str(tmp_path / f"{name}.png"))
            assert not errors, errors
        finally:
            browser.close()
