"""Static vs continuous batching in the in-process GLM stage, on a mixed workload (tiny GLM model).

The tiny random GLM-4.6V-architecture model (built into a temp folder, never downloaded) never stops
early, so every answer is exactly its ``max_tokens`` long. ``--clients`` clients (8) send requests
back to back, each its own image (a crop of one of four photos); half of them ask for short answers
(16 tokens), half for long ones (256). With static batches a short request that arrives while a long
batch runs waits for the whole batch; with continuous batching it joins the running batch at the
next decode step and leaves when its 16 tokens are done.

Both sides (``--batch-continuous`` off / on) run in this process on the same model, one after the
other, ``--repeats`` times alternating. Reported: the short requests' p50 and p99 latency under the
mixed load, their solo latency (one request at a time), and p50 / solo.

Writes continuous_batching.md and .png under --out-dir.
Run: .venv/bin/python bench/continuous_batching.py
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flashvl.media.types import LoadedImage
from flashvl.stages.base import VisionRequest
from flashvl.stages.glm4v.stage import Glm4vStage
from flashvl.stages.glm4v.tiny import build_tiny_glm4v

RESULTS = Path(__file__).parent / "results"
QUESTION = "Describe the image."
SIDES = {"static": False, "continuous": True}


def photos() -> list[Image.Image]:
    from skimage import data

    return [Image.fromarray(getattr(data, n)()).convert("RGB") for n in ("astronaut", "coffee", "chelsea", "rocket")]


def image_for(index: int, sources: list[Image.Image]) -> LoadedImage:
    source = sources[index % len(sources)]
    rng = np.random.default_rng(index)
    width, height = (int(side * rng.uniform(0.7, 1.0)) for side in source.size)
    left, top = int(rng.integers(0, source.width - width + 1)), int(rng.integers(0, source.height - height + 1))
    image = source.crop((left, top, left + width, top + height))
    return LoadedImage(image, f"crop-{index}", "JPEG", image.width, image.height, 0, "upload")


async def side_run(folder: Path, continuous: bool, args: argparse.Namespace) -> dict[str, list[float]]:
    sources = photos()
    stage = Glm4vStage(str(folder), max_batch=args.clients, max_pixels=256 * 256, continuous=continuous)
    await stage.load()
    try:

        async def one(index: int, tokens: int) -> float:
            start = time.perf_counter()
            await stage.see(VisionRequest([image_for(index, sources)], QUESTION, max_tokens=tokens, temperature=0))
            return time.perf_counter() - start

        for i in range(2):  # warm-up
            await one(10_000 + i, args.short)
        solo = [await one(20_000 + i, args.short) for i in range(args.solo)]
        short: list[float] = []
        counter = iter(range(args.requests))

        async def client(kind: int) -> None:
            for index in counter:
                tokens = args.short if kind % 2 else args.long
                latency = await one(index, tokens)
                if tokens == args.short:
                    short.append(latency)

        started = time.perf_counter()
        await asyncio.gather(*[client(k) for k in range(args.clients)])
        wall = time.perf_counter() - started
    finally:
        await stage.close()
    return {"solo": solo, "short": short, "wall": [wall]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48, help="requests per mixed run (half short, half long)")
    parser.add_argument("--short", type=int, default=16)
    parser.add_argument("--long", type=int, default=256)
    parser.add_argument("--solo", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    samples: dict[str, dict[str, list[float]]] = {side: {"solo": [], "short": [], "wall": []} for side in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_glm4v(Path(tmp) / "tiny", seed=1)
        for repeat in range(args.repeats):
            order = list(SIDES.items()) if repeat % 2 == 0 else list(SIDES.items())[::-1]
            for side, continuous in order:
                got = asyncio.run(side_run(folder, continuous, args))
                for key, values in got.items():
                    samples[side][key].extend(values)
                print(f"{side}: short p50 {np.percentile(got['short'], 50):.3f}s, solo {np.median(got['solo']):.3f}s")
    stats = {
        side: {
            "solo": float(np.median(s["solo"])),
            "p50": float(np.percentile(s["short"], 50)),
            "p99": float(np.percentile(s["short"], 99)),
            "wall": float(np.median(s["wall"])),
        }
        for side, s in samples.items()
    }
    lines = [
        "# GLM stage: static vs continuous batching, mixed short and long answers (tiny GLM model)",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} · {os.cpu_count()} CPUs · "
        f"load {os.getloadavg()[0]:.2f} · {args.clients} clients · {args.requests} requests per run (half "
        f"{args.short}-token, half {args.long}-token answers) · {args.repeats} runs per side · greedy, fp32",
        "",
        "| batching | short: solo s | short: p50 s | short: p99 s | p50 / solo | mixed run wall s |",
        "|---|---|---|---|---|---|",
        *[
            f"| {side} | {s['solo']:.3f} | {s['p50']:.3f} | {s['p99']:.3f} | **{s['p50'] / s['solo']:.2f}** | "
            f"{s['wall']:.2f} |"
            for side, s in stats.items()
        ],
        "",
        f"Short requests' p50, continuous / static: {stats['continuous']['p50'] / stats['static']['p50']:.2f}. "
        "Target: short p50 <= 1.5x its solo latency with continuous batching.",
    ]
    (args.out_dir / "continuous_batching.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.boxplot([samples[side]["short"] for side in SIDES], tick_labels=list(SIDES))
    for i, side in enumerate(SIDES, start=1):
        ax.axhline(stats[side]["solo"], xmin=(i - 1) / 2 + 0.1, xmax=i / 2 - 0.1, color="grey", linestyle="--")
    ax.set(ylabel="short-answer latency, s (dashed: solo)", title="Short requests under a mixed load")
    fig.tight_layout()
    fig.savefig(args.out_dir / "continuous_batching.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
