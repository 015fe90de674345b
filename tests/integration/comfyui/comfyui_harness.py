"""Run a real ComfyUI (the unmodified copy in ../shared/third_party/comfyui) with the flashvl node package.

ComfyUI is copied to a temporary folder (never written in ../shared), the node package is copied into
its ``custom_nodes/`` as a user would, and it runs as its own process on a free 127.0.0.1 port.
Workflows go in through ``POST /prompt`` (API format); results come back from ``GET /history/<id>``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from flashvl.testing import free_port

REPO = Path(__file__).resolve().parents[3]
COMFYUI_SRC = REPO.parent / "shared" / "third_party" / "comfyui"
NODE_PACKAGE = REPO / "integrations" / "comfyui"
PACKAGE_NAME = "flashvl_nodes"
# What ComfyUI 0.3.64 needs to start and serve its page (pyproject's `dev` extra installs them).
COMFYUI_MODULES = (
    "torch",
    "torchvision",
    "torchsde",
    "transformers",
    "safetensors",
    "scipy",
    "einops",
    "aiohttp",
    "yarl",
    "av",
    "psutil",
    "alembic",
    "sqlalchemy",
    "comfyui_frontend_package",
)
START_TIMEOUT_S = 120.0


def skip_reason() -> str | None:
    if not (COMFYUI_SRC / "main.py").is_file():
        return f"no ComfyUI at {COMFYUI_SRC} (the shared third_party copy); these tests run nodes in a real ComfyUI"
    missing = [m for m in COMFYUI_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return f"ComfyUI's Python deps are missing ({', '.join(missing)}): pip install -e '.[dev,glm]'"
    return None


@dataclass
class ComfyUI:
    proc: subprocess.Popen
    base: str
    root: Path
    log: Path
    started_s: float = 0.0

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    def queue(self, prompt: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.base}/prompt", json={"prompt": prompt, "client_id": uuid.uuid4().hex}, timeout=30)

    def run(self, prompt: dict[str, Any], timeout_s: float = 60.0) -> dict[str, Any]:
        """Queue a workflow and wait for its history entry (finished or failed)."""
        response = self.queue(prompt)
        assert response.status_code == 200, response.text
        prompt_id = response.json()["prompt_id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            entry = httpx.get(f"{self.base}/history/{prompt_id}", timeout=10).json().get(prompt_id)
            if entry and (entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
                return entry
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"workflow {prompt_id} did not finish in {timeout_s:g}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def texts(entry: dict[str, Any], node_id: str) -> list[str]:
    """What a PreviewAny node showed (one item per list element, in order)."""
    return entry["outputs"][node_id]["text"]


def execution_error(entry: dict[str, Any]) -> dict[str, Any]:
    assert entry["status"]["status_str"] == "error", entry["status"]
    return next(data for kind, data in entry["status"]["messages"] if kind == "execution_error")


def prepare(tmp: Path) -> Path:
    """A private ComfyUI copy with the node package in its custom_nodes/ (as a user installs it)."""
    root = tmp / "comfyui"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(COMFYUI_SRC, root, ignore=skip)
    for folder, _, _ in os.walk(root):  # ../shared may be read-only; the copy must not be
        os.chmod(folder, 0o755)
    (root / "custom_nodes").mkdir(exist_ok=True)
    shutil.copytree(NODE_PACKAGE, root / "custom_nodes" / PACKAGE_NAME, ignore=skip)
    (root / "input").mkdir(exist_ok=True)
    return root


def start(root: Path, env: dict[str, str]) -> ComfyUI:
    """Start ComfyUI on CPU on a free loopback port; returns at once (see ``wait_ready``)."""
    port = free_port()
    log = root.parent / f"comfyui-{port}.log"
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch"]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASHVL_", "COMFY"))} | env
    full_env["PYTHONDONTWRITEBYTECODE"] = "1"
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=root, stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env
    )
    return ComfyUI(proc, f"http://127.0.0.1:{port}", root, log, started)


def wait_ready(comfy: ComfyUI, timeout_s: float = START_TIMEOUT_S) -> float:
    """Wait until ComfyUI serves our node's definition; returns seconds since start."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if comfy.proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {comfy.proc.returncode}:\n{comfy.log_tail()}")
        try:
            if httpx.get(f"{comfy.base}/object_info/FlashvlAsk", timeout=2).status_code == 200:
                comfy.started_s = time.perf_counter() - comfy.started_s
                return comfy.started_s
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(comfy)
    raise RuntimeError(f"ComfyUI not ready in {timeout_s:g}s:\n{comfy.log_tail()}")


def stop(comfy: ComfyUI) -> None:
    comfy.proc.terminate()
    try:
        comfy.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        comfy.proc.kill()
        comfy.proc.wait(timeout=15)
