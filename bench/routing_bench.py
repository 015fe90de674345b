"""Auto-routed simple questions vs always-cascade (offline vision + the llama.cpp language stage).

    python bench/routing_bench.py [--rounds 2]

With ``router_direct_without_vlm`` on, the classifier sends simple perception questions to the
vision stage alone; ``route="cascade"`` forces the language stage. The vision cache is off so both
sides pay for the vision stage. Writes bench/results/routing_bench.md and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from pathlib import Path

from PIL import Image

from flashvl.config import Settings
from flashvl.media import decode_image
from flashvl.pipeline.service import Pipeline, Query
from flashvl.runtime import ANSWER_ROLES, Runtime

RESULTS = Path(__file__).parent / "results"
SIMPLE = [
    "What is in this image?",
    "图里有什么?",
    "Describe this photo.",
    "这是什么动物?",
    "What animal is this?",
]


async def run(rounds: int) -> dict[str, list[float]]:

    settings = Settings(router_direct_without_vlm=True, vision_cache="none", max_tokens=64, arbitration=False)
    async with Runtime(settings, roles=ANSWER_ROLES) as runtime:
        return await measure(runtime.pipeline, settings, rounds)


async def measure(pipeline: Pipeline, settings: Settings, rounds: int) -> dict[str, list[float]]:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, "JPEG", quality=90)
    image = decode_image(buffer.getvalue(), settings, "path")
    times: dict[str, list[float]] = {"auto": [], "cascade": []}
    routes: dict[str, set[str]] = {"auto": set(), "cascade": set()}
    for _ in range(rounds):
        for question in SIMPLE:
            for mode in ("auto", "cascade"):
                start = time.perf_counter()
                answer = await pipeline.answer(Query([image], question, max_tokens=64, route=mode))  # type: ignore[arg-type]
                times[mode].append(time.perf_counter() - start)
                routes[mode].add(answer.route)
    print("routes taken:", routes)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the .md and .png go")
    args = parser.parse_args()
    times = asyncio.run(run(args.rounds))
    auto, cascade = statistics.median(times["auto"]), statistics.median(times["cascade"])
    table = (
        "# Routing: auto-routed simple questions vs always-cascade\n\n"
        f"{len(SIMPLE)} simple zh/en questions x {args.rounds} rounds on skimage chelsea; "
        "offline vision stage, "
        "llama.cpp Qwen2.5-Coder-1.5B, max_tokens 64, vision cache off.\n\n"
        "| mode | p50 | max |\n|---|---|---|\n"
        f"| auto (classifier -> direct) | {auto:.2f} s | {max(times['auto']):.2f} s |\n"
        f"| always cascade | {cascade:.2f} s | {max(times['cascade']):.2f} s |\n\n"
        f"p50 speed-up: **{cascade / auto:.1f}x**.\n"
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "routing_bench.md").write_text(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(["auto", "cascade"], [auto, cascade], color=["#6a6", "#c66"])
    ax.set_ylabel("p50 seconds")
    fig.tight_layout()
    fig.savefig(args.out_dir / "routing_bench.png", dpi=100)
    print(table)


if __name__ == "__main__":
    main()
