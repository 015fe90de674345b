"""The real ``flashvl`` processes a newcomer runs first (issue 20): ``ask`` loads the language model
only when the route needs it and keeps native logs quiet unless ``--verbose``; ``serve`` exits
non-zero with a one-line cause when a stage cannot be built or loaded, logs only JSON lines, and
says "ready" with each stage's load time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

LLAMA_WARNING = "this is probably a bug in the model"  # llama.cpp's own line while loading the bundled GGUF


@pytest.fixture(scope="module")
def coffee(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("cli") / "coffee.jpg"
    Image.fromarray(np.asarray(data.coffee())).save(path, format="JPEG", quality=90)
    return path


def flashvl(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flashvl", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def json_lines(text: str) -> list[dict]:
    """Every non-empty line parsed as JSON (fails on the first line that is not)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_ask_answered_by_a_rule_never_loads_the_language_model(coffee: Path, tmp_path: Path) -> None:
    # A language model that cannot load: a rule's answer must not need it.
    missing = tmp_path / "missing.gguf"
    done = flashvl("ask", str(coffee), "Is this image safe for work?", "--json", "--language-model-path", str(missing))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)  # stdout is the answer alone: no log lines, no blank line
    assert answer["route"] == "rule", answer
    assert [stage["name"] for stage in answer["stages"]] == ["vision"]
    assert "Traceback" not in done.stderr and "missing.gguf" not in done.stderr


@pytest.mark.slow
def test_native_logs_are_quiet_unless_verbose(coffee: Path) -> None:
    question = "Why might someone drink this in the morning?"  # a cascade: the language model loads
    quiet = flashvl("ask", str(coffee), question, "--max-tokens", "4", "--route-default", "cascade")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() and not quiet.stdout.startswith("\n")
    assert LLAMA_WARNING not in quiet.stdout + quiet.stderr
    loud = flashvl("ask", str(coffee), question, "--max-tokens", "4", "--route-default", "cascade", "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert LLAMA_WARNING in loud.stderr  # the same run with --verbose shows it: the check above can fail


def test_serve_exits_at_once_when_a_stage_cannot_be_built() -> None:
    done = flashvl("serve", "--port", "0", "--language", "nonexistent", timeout=120)
    assert done.returncode == 1
    lines = json_lines(done.stdout + done.stderr)  # every line JSON, uvicorn's included
    failed = [line for line in lines if line["event"] == "startup_failed"]
    assert len(failed) == 1 and "unknown language stage 'nonexistent'" in failed[0]["cause"]
    assert "\n" not in failed[0]["cause"]
    assert not any("Traceback" in json.dumps(line) for line in lines)


@pytest.mark.slow
def test_serve_exits_when_a_stage_fails_to_load(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    done = flashvl(
        "serve",
        "--port",
        "0",
        "--language-model-path",
        str(missing),
        "--jobs-sqlite-path",
        str(tmp_path / "jobs.db"),
        "--review-sqlite-path",
        str(tmp_path / "reviews.db"),
        timeout=180,
    )
    assert done.returncode == 1
    failed = [line for line in json_lines(done.stdout + done.stderr) if line["event"] == "startup_failed"]
    assert len(failed) == 1
    assert failed[0]["cause"].startswith("the language stage failed to load") and "missing.gguf" in failed[0]["cause"]


@pytest.mark.slow
def test_server_log_is_json_lines_with_a_ready_line(live_server: str, server_log: Path) -> None:
    lines = json_lines(server_log.read_text(encoding="utf-8"))
    assert any(line.get("logger") == "uvicorn.error" for line in lines)  # uvicorn's own lines, as JSON
    ready = [line for line in lines if line["event"] == "ready"]
    assert len(ready) == 1
    stages = ready[0]["stages"]
    assert {"vision", "language"} <= set(stages) and all(isinstance(s, float) for s in stages.values())
    assert ready[0]["seconds"] >= max(stages.values())
