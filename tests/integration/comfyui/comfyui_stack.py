"""The stack the ComfyUI tests share: two flashvl servers and ComfyUI with the V3 and the V1 nodes.

All on 127.0.0.1: flashvl server A (offline vision, no language stage, API keys on, a 1 Mpx pixel cap so
a 413 is reachable), flashvl server B (a key ComfyUI does not have: 401s; later stopped: unreachable),
ComfyUI with the V3 nodes and ComfyUI with the classic V1 fallback (``FLASHVL_COMFYUI_NODES=v1``), both
holding A's key in FLASHVL_API_KEY.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import io
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from flashvl.testing import ServerProcess, start_server, stop_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit"))
import comfyui_harness as harness
from render import render_table

NODE_IDS = [
    "FlashvlAsk",
    "FlashvlCaption",
    "FlashvlOCR",
    "FlashvlModerate",
    "FlashvlDetect",
    "FlashvlLoadImageFolder",
    "FlashvlSaveJSONL",
]
OBJECTS_Q = "What objects are in the image and where are they?"
EXAMPLES = harness.NODE_PACKAGE / "examples"
TABLE = [["Item", "Qty", "Price"], ["Apple", "2", "1.50"], ["Pear", "3", "0.80"], ["Plum", "5", "2.25"]]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def build_images() -> dict[str, bytes]:
    """Three different 512x512 photos, a table page, and an oversized image for the folder test."""
    from skimage import data

    def square(array: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(array).resize((512, 512), Image.Resampling.BICUBIC))

    table = np.asarray(render_table(TABLE).convert("RGB"))
    return {
        "astronaut.png": _png(data.astronaut()),
        "chelsea.png": _png(square(data.chelsea())),
        "coffee.png": _png(square(data.coffee())),
        "table.png": _png(table),
        "rocket.png": _png(data.rocket()),  # 427x640, its own size in the folder test
    }


class Stack:
    def __init__(
        self,
        a: ServerProcess,
        b: ServerProcess,
        v3: harness.ComfyUI,
        v1: harness.ComfyUI,
        key: str,
        images: dict[str, bytes],
    ) -> None:
        self.a, self.b, self.v3, self.v1, self.key, self.images = a, b, v3, v1, key, images
        self.headers = {"Authorization": f"Bearer {key}"}

    def api(self, path: str, **kwargs: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.a.base}{path}", headers=self.headers, timeout=60, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def infer(self, name: str, prompt: str) -> dict[str, Any]:
        return self.api("/infer", json={"image_base64": b64(self.images[name]), "prompt": prompt})


def b64(content: bytes) -> str:
    return base64.b64encode(content).decode()


@contextlib.contextmanager
def running_stack(tmp: Path) -> Iterator[Stack]:
    """Servers A and B and both ComfyUIs, started under ``tmp``; stopped on exit."""
    key, other = f"fvl_{secrets.token_urlsafe(32)}", f"fvl_{secrets.token_urlsafe(32)}"
    entry = f"comfy:infer:{hashlib.sha256(key.encode()).hexdigest()}"
    other_entry = f"other:infer:{hashlib.sha256(other.encode()).hexdigest()}"
    roots = {form: harness.prepare(tmp / form) for form in ("v3", "v1")}
    images = build_images()
    for root in roots.values():
        inbox = root / "input" / "moderation_inbox"
        inbox.mkdir()
        for name, content in images.items():
            (root / "input" / name).write_bytes(content)
        (root / "input" / "example.png").write_bytes(images["astronaut.png"])
        for name in ("coffee.png", "astronaut.png", "rocket.png"):
            (inbox / name).write_bytes(images[name])
        (inbox / "notes.txt").write_text("not an image: skipped")
    a = start_server(["--language", "none", "--api-keys", entry, "--max-image-pixels", "1000000"], tmp / "a.log")
    b = start_server(["--language", "none", "--api-keys", other_entry], tmp / "b.log")
    env = {"FLASHVL_API_KEY": key, "FLASHVL_URL": a.base}
    v3 = harness.start(roots["v3"], env)
    v1 = harness.start(roots["v1"], env | {"FLASHVL_COMFYUI_NODES": "v1"})
    try:
        for comfy in (v3, v1):
            harness.wait_ready(comfy)
        yield Stack(a, b, v3, v1, key, images)
    finally:
        for comfy in (v3, v1):
            harness.stop(comfy)
        for server in (a, b):
            stop_server(server.proc)


def with_server(prompt: dict[str, Any], server_url: str) -> dict[str, Any]:
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if "server_url" in node["inputs"]:
            node["inputs"]["server_url"] = server_url
    return prompt
