"""Dynamic batching vs a one-request-at-a-time loop (like the GLM-V web demo), on the tiny GLM model.

Both sides run in this process on the same tiny random GLM-4.6V-architecture model (built
into a temp folder, never downloaded), the same photos and question, greedy, fixed answer
length (the random tiny model never stops early). C clients each send requests back to
back, for C in 1, 4, 8, 16:

- naive: one lock around ``processor.apply_chat_template`` + ``model.generate`` per request
  (what the demo's single worker does): requests queue;
- flashvl: ``Glm4vStage.see`` (preprocessing on a thread pool, dynamic batches).

Writes bench/results/batching.md and .png. Run: .venv/bin/python bench/batching.py [--requests 48]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from flashvl.media.types import LoadedImage
from flashvl.stages.base import VisionRequest
from flashvl.stages.glm4v.stage import Glm4vStage
from flashvl.stages.glm4v.tiny import build_tiny_glm4v

RESULTS = Path(__file__).parent / "results"
QUESTION = "Describe the image."


def photos() -> list[LoadedImage]:
    from skimage import data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        out.append(LoadedImage(image, name, "JPEG", image.width, image.height, 0, "upload"))
    return out


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


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=48, help="requests per concurrency level and side")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    folder = Path(tempfile.mkdtemp()) / "tiny-glm4v"
    build_tiny_glm4v(folder, seed=1)
    stage = Glm4vStage(str(folder), max_batch=16, max_pixels=512 * 512)  # default batch_wait_ms
    await stage.load()
    images = photos()
    import torch

    lock = asyncio.Lock()
    model, processor = stage._model, stage._processor  # the very same weights for the naive loop

    def naive_sync(index: int) -> None:
        from flashvl.stages.glm4v.engine import downscale

        image = downscale(images[index % 4].image, 512 * 512)
        messages = [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}],
            }
        ]
        inputs = processor.apply_chat_template(
            messages,
            tokenize=True,
            add_generation_prompt=True,
            return_dict=True,
            return_tensors="pt",
            enable_thinking=False,
        )
        inputs = {k: v.to(stage.device) for k, v in inputs.items()}
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=args.max_tokens, min_new_tokens=args.max_tokens, do_sample=False)

    async def naive(index: int) -> None:
        async with lock:  # one at a time, like the demo's single worker
            await asyncio.to_thread(naive_sync, index)

    async def batched(index: int) -> None:
        await stage.see(VisionRequest([images[index % 4]], QUESTION, max_tokens=args.max_tokens, temperature=0))

    for fn in (naive, batched):  # warm-up
        await fn(0)
    rows = []
    for level in levels:
        for side, fn in (("naive loop", naive), ("flashvl batching", batched)):
            stage._batcher.batch_sizes.clear()
            wall, lat = await clients(level, args.requests, fn)
            sizes = stage._batcher.batch_sizes if side.startswith("flashvl") else [1]
            rows.append(
                {
                    "side": side,
                    "concurrency": level,
                    "rps": args.requests / wall,
                    "p50": float(np.percentile(lat, 50)),
                    "p99": float(np.percentile(lat, 99)),
                    "mean_batch": float(np.mean(sizes)),
                }
            )
            print(rows[-1], flush=True)
    await stage.close()
    write(rows, args, levels, stage.device or "?")


def write(rows: list[dict], args: argparse.Namespace, levels: list[int], device: str) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    by = {(r["side"], r["concurrency"]): r for r in rows}
    lines = [
        "# Dynamic batching vs one-at-a-time (tiny GLM-4.6V-architecture model)",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · {platform.processor() or platform.machine()} · "
        f"{os.cpu_count()} CPUs · device {device} · load {os.getloadavg()[0]:.2f} · "
        f"{args.requests} requests per cell · {args.max_tokens} tokens per answer, greedy",
        "",
        "| concurrency | naive req/s | flashvl req/s | speed-up | naive p50 s | flashvl p50 s | naive p99 s "
        "| flashvl p99 s | flashvl mean batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        n, f = by[("naive loop", level)], by[("flashvl batching", level)]
        lines.append(
            f"| {level} | {n['rps']:.2f} | {f['rps']:.2f} | {f['rps'] / n['rps']:.2f}x | {n['p50']:.3f} | "
            f"{f['p50']:.3f} | {n['p99']:.3f} | {f['p99']:.3f} | {f['mean_batch']:.1f} |"
        )
    (args.out_dir / "batching.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for side, colour in (("naive loop", "tab:gray"), ("flashvl batching", "tab:blue")):
        left.plot(levels, [by[(side, c)]["rps"] for c in levels], "o-", color=colour, label=side)
        right.plot(levels, [by[(side, c)]["p50"] for c in levels], "o-", color=colour, label=f"{side} p50")
        right.plot(levels, [by[(side, c)]["p99"] for c in levels], "x--", color=colour, label=f"{side} p99")
    left.set(xlabel="concurrent clients", ylabel="requests/s", title="Throughput")
    right.set(xlabel="concurrent clients", ylabel="seconds", title="Latency")
    left.legend()
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out_dir / "batching.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
