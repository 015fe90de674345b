"""Every benchmark is one command that writes where it is told (``--out-dir``, never only into the
repository) and starts its servers on free ports (issue 20)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


def test_there_are_benchmarks() -> None:
    assert len(SCRIPTS) >= 7


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_bench_takes_an_out_dir(script: Path) -> None:
    shown = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "--out-dir" in shown.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_no_bench_names_a_fixed_port_or_log_path(script: Path) -> None:
    source = script.read_text(encoding="utf-8")
    assert not re.search(r"""["']--port["'],\s*["']?\d""", source), "ports come from flashvl.testing.free_port"
    assert not re.search(r"127\.0\.0\.1:\d{2,5}|localhost:\d{2,5}", source)
    assert not re.search(r"""Path\(["']/tmp/""", source), "logs go under --out-dir or a fresh temporary folder"
