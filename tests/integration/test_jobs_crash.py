"""Batch jobs survive kill -9: of the CLI worker (twice, at random points) and of the server.

The items run the ``safety`` task (the real Open-NSFW model on each image, no other stage): the full
``moderate`` task would make 200+ items take minutes on a 2-core machine, and what is under test here
is the queue, not the models. Some items are broken files: they must end parked with their error.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.servers import start_server, stop_server

N_GOOD, N_BROKEN = 216, 6


def make_images(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(N_GOOD):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"img{i:03d}.png")
    for i in range(N_BROKEN):
        (folder / f"broken{i}.png").write_bytes(b"not an image at all")
    return sorted(p.name for p in folder.iterdir())


def finished_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM items WHERE state IN ('done', 'parked')").fetchone()[0]
    except sqlite3.Error:
        return 0


def batch_command(folder: Path, out: Path, db: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flashvl",
        "batch",
        "safety",
        str(folder),
        "--out",
        str(out),
        "--no-progress",
        "--jobs-sqlite-path",
        str(db),
        "--jobs-batch-size",
        "4",
        "--jobs-max-attempts",
        "2",
        "--jobs-backoff-s",
        "0.05",
        "--vision-threads",
        "1",
    ]


def check_exactly_once(rows: list[dict], names: list[str]) -> None:
    keys = [row["key"] for row in rows]
    assert len(keys) == len(set(keys)), "an item appears twice"
    assert sorted(keys) == names, "an item is missing"
    parked = {row["key"]: row for row in rows if row["status"] == "parked"}
    assert sorted(parked) == [f"broken{i}.png" for i in range(N_BROKEN)]
    # a permanent 4xx (a broken file) is parked at once, not retried
    assert all(row["error"].startswith("unsupported_format") and row["failures"] == 1 for row in parked.values())
    done = [row for row in rows if row["status"] == "done"]
    assert len(done) == N_GOOD and all(0 <= row["result"]["nsfw_score"] <= 1 for row in done)


@pytest.mark.slow
def test_cli_batch_survives_two_sigkills(tmp_path: Path) -> None:
    names = make_images(tmp_path / "images")
    out, db = tmp_path / "results.jsonl", tmp_path / "jobs.sqlite3"
    seed = int(time.time())
    rng = random.Random(seed)
    print(f"kill points seed {seed}")
    killed_at = []
    for round_ in range(2):
        target = rng.randint(15 + 80 * round_, 70 + 80 * round_)
        proc = subprocess.Popen(
            batch_command(tmp_path / "images", out, db), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while finished_count(db) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the batch ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at.append(finished_count(db))
    assert not out.exists(), "results are only written when the job has finished"
    assert killed_at[0] < killed_at[1] < len(names)
    done = subprocess.run(batch_command(tmp_path / "images", out, db), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    print(f"killed after {killed_at} finished items; resumed: {done.stderr.strip().splitlines()[-1]}")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    check_exactly_once(rows, names)
    # Nothing finished before a kill was run again: at most the in-flight micro-batch was re-taken.
    with sqlite3.connect(db) as conn:
        retaken = conn.execute("SELECT COUNT(*) FROM items WHERE claims > 1 AND failures = 0").fetchone()[0]
    assert retaken <= 2 * 4


@pytest.mark.slow
def test_server_job_survives_sigkill_of_the_server(tmp_path: Path) -> None:
    names = make_images(tmp_path / "images")
    db, log = tmp_path / "jobs.sqlite3", tmp_path / "server.log"
    args = [
        "--language",
        "none",
        "--file-root",
        str(tmp_path / "images"),
        "--jobs-sqlite-path",
        str(db),
        "--jobs-batch-size",
        "4",
        "--jobs-max-attempts",
        "2",
        "--jobs-backoff-s",
        "0.05",
        "--vision-threads",
        "1",
    ]
    proc, base = start_server(args, log)
    try:
        body = "".join(json.dumps({"key": n, "image": (tmp_path / "images" / n).as_uri()}) + "\n" for n in names)
        submitted = httpx.post(f"{base}/jobs", params={"task": "safety", "job_id": "crash"}, content=body, timeout=30)
        assert submitted.status_code == 202, submitted.text
        assert submitted.json()["total"] == len(names)
        target = random.randint(20, 150)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            progress = httpx.get(f"{base}/jobs/crash", timeout=10).json()
            if progress["done"] + progress["parked"] >= target:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not progress["finished"]
        proc, base = start_server(args, tmp_path / "server2.log")
        # Resubmitting the same job id and keys adds nothing.
        resubmitted = httpx.post(f"{base}/jobs", params={"task": "safety", "job_id": "crash"}, content=body, timeout=30)
        assert resubmitted.json()["added"] == 0
        deadline = time.monotonic() + 180
        while not (progress := httpx.get(f"{base}/jobs/crash", timeout=10).json())["finished"]:
            assert time.monotonic() < deadline, progress
            time.sleep(0.2)
        rows = [json.loads(line) for line in httpx.get(f"{base}/jobs/crash/results", timeout=30).text.splitlines()]
        check_exactly_once(rows, names)
        csv_text = httpx.get(f"{base}/jobs/crash/results", params={"format": "csv"}, timeout=30).text
        assert csv_text.splitlines()[0].startswith("key,status,failures,error")
        assert len(csv_text.splitlines()) == len(names) + 1
    finally:
        stop_server(proc)
