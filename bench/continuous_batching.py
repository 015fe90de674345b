"""Static vs continuous batching in the in-process GLM stage, on a mixed workload (tiny GLM model).

The tiny random GLM-4.6V-architecture model (built into a temp folder, never downloaded) never stops
early, so every answer is exactly its ``max_tokens`` long. ``--clients`` clients (8) send requests
back to back, each its own image (a crop of one of four photos); half of them ask for short answers
(16 tokens), half for long ones (256). With static batches a short request that arrives while a long
batch runs waits for the whole batch; with continuous batching it joins the running batch at the
next decode step and leaves when its 16 tokens are done.

Both sides (``--batch-continuous`` off / on) run in this process on the same model, one after the
other, ``--repeats`` times alternating. Reported: the short requests' p50 and p99 latency under the
mixed load, their solo latency (one request at a time, on the same stage and code path, warm,
measured just before and just after each mixed run so that a change in the machine's load between
them shows in both), and p50 / solo.

``--threads`` (1) is the generating thread's intra-op threads: on 2 CPU cores shared with other
jobs, two OpenMP threads that wait for each other make every forward many times slower as soon as
another process takes a core (measured 2026-11-30 at load 7: solo 1.23 s with 2 threads, 64 ms
with 1), which would bury the batching under the machine's noise.

Writes continuous_batching.md and .png under --out-dir.
Run: .venv/bin/python bench/continuous_batching.py
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    stage = Glm4vStage(
        str(folder), max_batch=args.clients, max_pixels=256 * 256, continuous=continuous, threads=args.threads
    )
    await stage.load()
    model, forward = stage._model, stage._model.forward
    spent = {"prefill": 0.0, "decode": 0.0, "prefills": 0.0, "steps": 0.0}

    @functools.wraps(forward)  # generate checks its arguments against the forward's signature
    def timed(*pos: Any, **kw: Any) -> Any:  # where the mixed run's time goes: prompts read vs decode steps
        start = time.perf_counter()
        out = forward(*pos, **kw)
        kind = "prefill" if kw["input_ids"].shape[1] > 1 else "decode"
        spent[kind] += time.perf_counter() - start
        spent["prefills" if kind == "prefill" else "steps"] += 1
        return out

    try:

        async def one(index: int, tokens: int) -> float:
            start = time.perf_counter()
            await stage.see(VisionRequest([image_for(index, sources)], QUESTION, max_tokens=tokens, temperature=0))
            return time.perf_counter() - start

        for i in range(2):  # warm-up
            await one(10_000 + i, args.short)
        solo = [await one(20_000 + i, args.short) for i in range(args.solo)]
        short: list[float] = []
        long: list[float] = []
        counter = iter(range(args.requests))
        load = os.getloadavg()[0]

        async def client(kind: int) -> None:
            for index in counter:
                tokens = args.short if kind % 2 else args.long
                latency = await one(index, tokens)
                (short if tokens == args.short else long).append(latency)

        model.forward = timed
        started = time.perf_counter()
        await asyncio.gather(*[client(k) for k in range(args.clients)])
        wall = time.perf_counter() - started
        model.forward = forward
        solo += [await one(30_000 + i, args.short) for i in range(args.solo)]
    finally:
        await stage.close()
    return {
        "solo": solo,
        "short": short,
        "long": long,
        "wall": [wall],
        "load": [load, os.getloadavg()[0]],
        **{key: [value] for key, value in spent.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--requests", type=int, default=48, help="requests per mixed run (the short clients, faster, send most)"
    )
    parser.add_argument("--short", type=int, default=16)
    parser.add_argument("--long", type=int, default=256)
    parser.add_argument("--solo", type=int, default=8, help="solo requests before, and again after, each mixed run")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="the generating thread's intra-op threads")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    keys = ("solo", "short", "long", "wall", "load", "prefill", "decode", "prefills", "steps")
    samples: dict[str, dict[str, list[float]]] = {side: {key: [] for key in keys} for side in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_glm4v(Path(tmp) / "tiny", seed=1)
        for repeat in range(args.repeats):
            order = list(SIDES.items()) if repeat % 2 == 0 else list(SIDES.items())[::-1]
            for side, continuous in order:
                got = asyncio.run(side_run(folder, continuous, args))
                for key, values in got.items():
                    samples[side][key].extend(values)
                print(
                    f"{side}: short p50 {np.percentile(got['short'], 50):.3f}s, solo {np.median(got['solo']):.3f}s, "
                    f"load {got['load'][0]:.1f}-{got['load'][1]:.1f}"
                )
    stats = {
        side: {
            "solo": float(np.median(s["solo"])),
            "p50": float(np.percentile(s["short"], 50)),
            "p99": float(np.percentile(s["short"], 99)),
            "long": float(np.percentile(s["long"], 50)),
            "wall": float(np.median(s["wall"])),
            "n": f"{len(s['short'])} + {len(s['long'])}",
            "load": f"{min(s['load']):.1f}-{max(s['load']):.1f}",
            "split": f"{sum(s['prefill']) / sum(s['wall']):.0%} in {sum(s['prefills']) / len(s['wall']):.0f} prefills, "
            f"{sum(s['decode']) / sum(s['wall']):.0%} in {sum(s['steps']) / len(s['wall']):.0f} decode steps "
            f"({1000 * sum(s['decode']) / max(1, sum(s['steps'])):.1f} ms each)",
        }
        for side, s in samples.items()
    }
    lines = [
        "# GLM stage: static vs continuous batching, mixed short and long answers (tiny GLM model)",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} · {os.cpu_count()} CPUs · "
        f"load {os.getloadavg()[0]:.2f} at the end · {args.clients} clients, half asking for {args.short}-token, "
        f"half for {args.long}-token answers, back to back · {args.requests} requests per run · "
        f"{args.repeats} runs per side, alternating · greedy, fp32 · {args.threads} intra-op thread(s) · "
        f"solo: {args.solo} requests before and {args.solo} after each mixed run",
        "",
        "| batching | short: solo s | short: p50 s | short: p99 s | p50 / solo | long: p50 s | "
        "requests short + long | mixed run wall s | load during |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {side} | {s['solo']:.3f} | {s['p50']:.3f} | {s['p99']:.3f} | **{s['p50'] / s['solo']:.2f}** | "
            f"{s['long']:.3f} | {s['n']} | {s['wall']:.2f} | {s['load']} |"
            for side, s in stats.items()
        ],
        "",
        f"Short requests' p50, continuous / static: {stats['continuous']['p50'] / stats['static']['p50']:.2f}. "
        "Target: short p50 <= 1.5x its solo latency with continuous batching.",
        "",
        "Where a mixed run's time went (model forwards, share of its wall time; per run):",
        "",
        *[f"- {side}: {s['split']}" for side, s in stats.items()],
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
