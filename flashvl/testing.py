"""Start and stop a real ``flashvl serve`` process on loopback: for tests, benchmarks and scripts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

READY_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    base: str  # http://127.0.0.1:PORT
    ready_s: float  # process start -> first /readyz 200


def start_server(
    extra_args: list[str], log_path: Path, env: dict[str, str] | None = None, timeout_s: float = READY_TIMEOUT_S
) -> ServerProcess:
    """Start ``flashvl serve`` on a free 127.0.0.1 port and wait until /readyz says ready.

    Each server gets its own job and review databases next to its log unless the flags name them.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "flashvl", "serve", "--host", "127.0.0.1", "--port", str(port), *extra_args]
    if "--jobs-sqlite-path" not in extra_args:
        cmd += ["--jobs-sqlite-path", str(log_path.parent / f"jobs-{port}.sqlite3")]
    if "--review-sqlite-path" not in extra_args:
        cmd += ["--review-sqlite-path", str(log_path.parent / f"reviews-{port}.sqlite3")]
    base = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    while time.perf_counter() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return ServerProcess(proc, base, time.perf_counter() - start)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server not ready in {timeout_s:g}s:\n{log_path.read_text()[-4000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, in MiB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def start_redis(timeout_s: float = 10.0) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``redis-server`` on a free loopback port, nothing persisted; (process, URL) once it answers.
    Raises ``FileNotFoundError`` naming the package when redis-server is not installed."""
    import shutil

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError(
            "redis-server is not installed: apt-get install -y redis-server (scripts/system-deps.sh)"
        )
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"
