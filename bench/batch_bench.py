"""Batch throughput (images/s): a durable batch job (in-process worker, SQLite queue, micro-batches)
versus calling POST /moderate in a loop over HTTP, on the same images and the same stages.

    .venv/bin/python bench/batch_bench.py [--images 48] [--batch-size 8]

Both sides run the vision stage and moderation rules; the language stage is off (``--language none``)
so that the figure measures the serving path, not a 1.5B model's decoding. Model load time is excluded
on both sides. Writes bench/results/batch_bench.md and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def make_images(folder: Path, count: int) -> list[Path]:
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    paths = []
    for i in range(count):
        image = Image.fromarray(photos[i % len(photos)]).rotate(i % 7, expand=False)  # distinct bytes each
        path = folder / f"img{i:03d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


async def run_batch(settings, folder: Path) -> float:
    from flashvl.jobs.batch import collect_items
    from flashvl.jobs.sqlite_store import SqliteJobStore
    from flashvl.jobs.tasks import make_handler
    from flashvl.jobs.worker import WorkerConfig, run_job
    from flashvl.runtime import Runtime

    store = SqliteJobStore(folder / "bench.sqlite3")
    store.create_job("bench", "moderate", collect_items(folder / "images"))
    async with Runtime(settings, roles={"vision"}) as runtime:
        ctx = runtime.job_context(allow_paths=True)
        start = time.perf_counter()
        final = await run_job(store, "bench", make_handler("moderate", ctx), WorkerConfig.from_settings(settings))
        seconds = time.perf_counter() - start
    assert final["done"] == final["total"], final
    return seconds


def run_http(paths: list[Path], log: Path) -> float:
    from flashvl.testing import start_server, stop_server

    server = start_server(["--language", "none"], log)
    proc, base = server.proc, server.base
    try:
        bodies = [{"image_base64": base64.b64encode(p.read_bytes()).decode()} for p in paths]
        with httpx.Client(timeout=300) as client:
            client.post(f"{base}/moderate", json=bodies[0]).raise_for_status()  # warm-up, not timed
            start = time.perf_counter()
            for body in bodies:
                client.post(f"{base}/moderate", json=body).raise_for_status()
            return time.perf_counter() - start
    finally:
        stop_server(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the .md and .png go")
    args = parser.parse_args()
    from flashvl.config import Settings

    settings = Settings(language="none", jobs_batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        paths = make_images(folder / "images", args.images)
        batch_s = asyncio.run(run_batch(settings, folder))
        http_s = run_http(paths, folder / "server.log")
    batch_rate, http_rate = args.images / batch_s, args.images / http_s
    ratio = batch_rate / http_rate
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = (
        f"# Batch vs HTTP loop ({args.images} photos, moderate task, language stage off)\n\n"
        "| path | seconds | images/s |\n|---|---|---|\n"
        f"| batch job (SQLite queue, micro-batch {args.batch_size}) | {batch_s:.2f} | {batch_rate:.2f} |\n"
        f"| POST /moderate in a loop (HTTP, base64) | {http_s:.2f} | {http_rate:.2f} |\n\n"
        f"Ratio batch / HTTP: **{ratio:.2f}x**\n"
    )
    (args.out_dir / "batch_bench.md").write_text(table)
    print(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(["batch job", "HTTP loop"], [batch_rate, http_rate], color=["#3b7", "#37b"])
    ax.set_ylabel("images/s")
    ax.set_title(f"moderate, {args.images} images: batch/HTTP = {ratio:.2f}x")
    fig.tight_layout()
    fig.savefig(args.out_dir / "batch_bench.png", dpi=120)


if __name__ == "__main__":
    main()
