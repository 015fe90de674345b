"""Dynamic batching vs a one-request-at-a-time loop (like the GLM-V web demo), on the tiny GLM model.

Both sides run in this process on the same tiny random GLM-4.6V-architecture model (built
into a temp folder, never downloaded), greedy, fixed answer length (the random tiny model
never stops early). Every request carries its own image (a different crop of one of four
photos), so no cache of any kind can help either side. C clients each send requests back
to back, for C in 1, 4, 8, 16, and for each answer length:

- naive: ``processor.apply_chat_template`` + ``model.generate`` per request on ONE long-lived
  thread (what the demo's single worker does, in its best case): requests queue;
- flashvl: ``Glm4vStage.see`` (preprocessing on a thread pool, dynamic batches).

Each cell (side, answer length, concurrency) runs in its own fresh process after a short
warm-up, the two sides alternating, so neither inherits the other's threads or memory.

Writes bench/results/batching.md and .png. Run: .venv/bin/python bench/batching.py
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from flashvl.media.types import LoadedImage
from flashvl.stages.base import VisionRequest
from flashvl.stages.glm4v.stage import Glm4vStage
from flashvl.stages.glm4v.tiny import build_tiny_glm4v

RESULTS = Path(__file__).parent / "results"
QUESTION = "Describe the image."


def photos() -> list[Image.Image]:
    from skimage import data

    names = ("astronaut", "coffee", "chelsea", "rocket")
    return [Image.fromarray(getattr(data, name)()).convert("RGB") for name in names]


def image_for(index: int, sources: list[Image.Image]) -> LoadedImage:
    """Request ``index``'s own image: a crop (70-100% of each side, seeded by the index) of a photo."""
    source = sources[index % len(sources)]
    rng = np.random.default_rng(index)
    width, height = (int(side * rng.uniform(0.7, 1.0)) for side in source.size)
    left, top = int(rng.integers(0, source.width - width + 1)), int(rng.integers(0, source.height - height + 1))
    image = source.crop((left, top, left + width, top + height))
    return LoadedImage(image, f"crop-{index}", "JPEG", image.width, image.height, 0, "upload")


async def clients(concurrency: int, total: int, one: callable) -> tuple[float, list[float]]:  # type: ignore[valid-type]
    """``concurrency`` clients share ``total`` requests; returns (wall seconds, per-request latencies)."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def client() -> None:
        for index in counter:
            start = time.perf_counter()
            await one(index)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(concurrency)])
    return time.perf_counter() - start, latencies


async def measure(side: str, folder: Path, max_tokens: int, level: int, total: int) -> dict:
    """One cell, in this (fresh) process: load the model, warm up, run ``total`` requests."""
    import torch

    from flashvl.stages.glm4v.engine import downscale, prepare

    stage = Glm4vStage(str(folder), max_batch=16, max_pixels=512 * 512)  # default batch_wait_ms
    await stage.load()
    sources = photos()
    model, processor = stage._model, stage._processor  # the very same loading code for the naive loop
    naive_thread = ThreadPoolExecutor(1, thread_name_prefix="naive")  # one worker, like the demo
    loop = asyncio.get_running_loop()

    def naive_sync(index: int) -> None:
        image = downscale(image_for(index, sources).image, 512 * 512)
        content = [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]
        messages = [{"role": "user", "content": content}]
        # The same chat template and preprocessing call as flashvl's, then one plain generate.
        inputs = prepare(processor, messages, enable_thinking=False, max_tokens=max_tokens, temperature=0, top_p=1)
        with torch.inference_mode():
            model.generate(
                **{k: v.to(stage.device) for k, v in inputs.inputs.items()},
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
            )

    async def naive(index: int) -> None:
        await loop.run_in_executor(naive_thread, naive_sync, index)

    async def batched(index: int) -> None:
        await stage.see(VisionRequest([image_for(index, sources)], QUESTION, max_tokens=max_tokens, temperature=0))

    one = naive if side == "naive loop" else batched
    await clients(level, 2 * level, lambda index: one(10_000 + index))  # warm-up: threads, allocator, caches
    stage._batcher.batch_sizes.clear()
    wall, lat = await clients(level, total, one)
    sizes = stage._batcher.batch_sizes if side == "flashvl batching" else [1]
    await stage.close()
    naive_thread.shutdown()
    return {
        "side": side,
        "max_tokens": max_tokens,
        "concurrency": level,
        "rps": total / wall,
        "latencies": lat,
        "mean_batch": float(np.mean(sizes)),
        "device": stage.device or "?",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=48, help="requests per cell and side")
    parser.add_argument("--max-tokens", default="32,128", help="answer lengths to measure, comma separated")
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell and side (alternating)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: side|folder|tokens|level, run in a child
    args = parser.parse_args()
    if args.cell:
        side, folder, max_tokens, level = args.cell.split("|")
        result = asyncio.run(measure(side, Path(folder), int(max_tokens), int(level), args.requests))
        print("RESULT " + json.dumps(result), flush=True)
        return
    levels = [int(v) for v in args.levels.split(",")]
    lengths = [int(v) for v in args.max_tokens.split(",")]
    folder = Path(tempfile.mkdtemp()) / "tiny-glm4v"
    build_tiny_glm4v(folder, seed=1)
    rows = []
    # Every cell runs in a fresh process, the two sides alternating (and swapping order each repeat):
    # thread pools, OpenMP teams and the allocator of one side never linger into the other's run, and
    # a shared machine's drift hits both sides alike. The speed-up is the median of the repeats' ratios.
    for max_tokens in lengths:
        for level in levels:
            runs: dict[str, list[dict]] = {"naive loop": [], "flashvl batching": []}
            for repeat in range(args.repeats):
                sides = ["naive loop", "flashvl batching"]
                for side in sides if repeat % 2 == 0 else sides[::-1]:
                    cell = f"{side}|{folder}|{max_tokens}|{level}"
                    command = [sys.executable, __file__, "--cell", cell, "--requests", str(args.requests)]
                    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=1800).stdout
                    runs[side].append(json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:]))
            ratios = [f["rps"] / n["rps"] for n, f in zip(runs["naive loop"], runs["flashvl batching"], strict=True)]
            for side, results in runs.items():
                latencies = [value for result in results for value in result["latencies"]]
                rows.append(
                    {
                        "side": side,
                        "max_tokens": max_tokens,
                        "concurrency": level,
                        "rps": float(np.median([r["rps"] for r in results])),
                        "p50": float(np.percentile(latencies, 50)),
                        "p99": float(np.percentile(latencies, 99)),
                        "mean_batch": float(np.mean([r["mean_batch"] for r in results])),
                        "speedup": float(np.median(ratios)),
                        "speedups": ratios,
                        "device": results[0]["device"],
                    }
                )
            print(max_tokens, level, [round(r, 2) for r in ratios], flush=True)
    write(rows, args, levels, lengths, rows[-1]["device"])


def write(rows: list[dict], args: argparse.Namespace, levels: list[int], lengths: list[int], device: str) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    by = {(r["side"], r["max_tokens"], r["concurrency"]): r for r in rows}
    lines = [
        "# Dynamic batching vs one-at-a-time (tiny GLM-4.6V-architecture model)",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · {platform.processor() or platform.machine()} · "
        f"{os.cpu_count()} CPUs · device {device} · load {os.getloadavg()[0]:.2f} · "
        f"{args.requests} requests per run, each with its own image (crops of 4 photos, <= 512x512) · greedy · "
        f"{args.repeats} alternating runs per cell and side, each in a fresh process",
        "",
        "req/s: median of the runs; speed-up: median of the runs' ratios (each run's ratio in brackets); "
        "latencies pooled over the runs.",
        "",
        "| answer tokens | concurrency | naive req/s | flashvl req/s | speed-up | naive p50 s | flashvl p50 s "
        "| naive p99 s | flashvl p99 s | flashvl mean batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for max_tokens in lengths:
        for level in levels:
            n, f = by[("naive loop", max_tokens, level)], by[("flashvl batching", max_tokens, level)]
            lines.append(
                f"| {max_tokens} | {level} | {n['rps']:.2f} | {f['rps']:.2f} | **{f['speedup']:.2f}x** "
                f"({', '.join(f'{r:.2f}' for r in f['speedups'])}) | "
                f"{n['p50']:.3f} | {f['p50']:.3f} | {n['p99']:.3f} | {f['p99']:.3f} | {f['mean_batch']:.1f} |"
            )
    (args.out_dir / "batching.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    styles = dict(zip(lengths, ["o-", "s--", "^:", "d-."], strict=False))
    for max_tokens in lengths:
        speedup = [by[("flashvl batching", max_tokens, c)]["speedup"] for c in levels]
        axes[0].plot(levels, speedup, styles[max_tokens], label=f"{max_tokens} tokens")
        for side, colour in (("naive loop", "tab:gray"), ("flashvl batching", "tab:blue")):
            p50 = [by[(side, max_tokens, c)]["p50"] for c in levels]
            axes[1].plot(levels, p50, styles[max_tokens], color=colour, label=f"{side}, {max_tokens} tokens")
    axes[0].axhline(3.0, color="tab:red", lw=0.8, ls=":", label="3x")
    axes[0].set(xlabel="concurrent clients", ylabel="flashvl req/s ÷ naive req/s", title="Throughput speed-up")
    axes[1].set(xlabel="concurrent clients", ylabel="p50 seconds", title="Latency")
    axes[0].legend()
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out_dir / "batching.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
