"""Vision cache: hit vs miss on the real offline vision stage (in-process Pipeline, no language stage).

    python bench/cache_bench.py [--rounds 20]

Writes bench/results/cache_bench.md and .png. Target: hit <= 2 ms p50 and >= 50x faster than a miss.
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
from flashvl.runtime import Runtime

RESULTS = Path(__file__).parent / "results"


def images(n: int) -> list:
    from skimage import data

    base = Image.fromarray(data.chelsea())
    out = []
    for i in range(n):  # distinct bytes per round: every miss is a real miss
        buffer = io.BytesIO()
        base.rotate(i * 0.5).save(buffer, "JPEG", quality=90)
        out.append(decode_image(buffer.getvalue(), Settings(), "path"))
    return out


async def run(rounds: int) -> tuple[list[float], list[float]]:
    settings = Settings(language="none", vision_cache="memory-lru", arbitration=False)
    async with Runtime(settings, roles={"vision"}) as runtime:
        return await measure(runtime.pipeline, rounds)


async def measure(pipeline: Pipeline, rounds: int) -> tuple[list[float], list[float]]:
    miss, hit = [], []
    for image in images(rounds):
        query = Query([image], task="caption")
        start = time.perf_counter()
        first = await pipeline.answer(query)
        miss.append(time.perf_counter() - start)
        start = time.perf_counter()
        second = await pipeline.answer(query)
        hit.append(time.perf_counter() - start)
        assert not first.stages[0].cached and second.stages[0].cached and first.text == second.text
    return miss, hit


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[8]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the .md and .png go")
    args = parser.parse_args()
    miss, hit = asyncio.run(run(args.rounds))
    p50_miss, p50_hit = statistics.median(miss), statistics.median(hit)
    table = (
        "# Vision cache: hit vs miss (offline vision stage, memory LRU, whole Pipeline.answer)\n\n"
        f"{args.rounds} distinct images (skimage chelsea, rotated), each asked twice.\n\n"
        "| | p50 | p90 |\n|---|---|---|\n"
        f"| miss (vision stage runs) | {p50_miss * 1000:.1f} ms | {p90(miss) * 1000:.1f} ms |\n"
        f"| hit (served from cache) | {p50_hit * 1000:.3f} ms | {p90(hit) * 1000:.3f} ms |\n\n"
        f"Speed-up at p50: **{p50_miss / p50_hit:.0f}x** (target >= 50x; hit target <= 2 ms p50).\n"
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "cache_bench.md").write_text(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(["miss", "hit"], [p50_miss * 1000, p50_hit * 1000], color=["#c66", "#6a6"])
    ax.set_yscale("log")
    ax.set_ylabel("p50 ms (log)")
    ax.set_title(f"vision cache: {p50_miss / p50_hit:.0f}x")
    fig.tight_layout()
    fig.savefig(args.out_dir / "cache_bench.png", dpi=100)
    print(table)


if __name__ == "__main__":
    main()
