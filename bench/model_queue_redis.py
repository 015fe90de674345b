"""The model queue shared in Redis (``RedisModelGate``) against the per-process ``ModelGate``, on a
real local ``redis-server``.

- uncontended: one ``slot()`` entered and left, 500 times (one Lua script each way, plus the
  lease renewer's task): p50 / p99;
- contended: 64 callers, each holding a slot for 50 ms, ``max_concurrent`` 4, split over two gates
  (two processes' worth, on one event loop here): wall time against the ideal 64 x 50 ms / 4.
  The difference is the hand-off (a release gives the slot to the oldest waiter and publishes its
  token; that waiter's process wakes it, and it confirms with one script).

This machine has 2 CPU cores shared with everything else running; numbers are upper bounds.
Run: .venv/bin/python bench/model_queue_redis.py (writes bench/results/model_queue_redis.md and .png, or
``--out-dir``)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import time
from pathlib import Path

from flashvl.pipeline.admission import Admission, ModelGate
from flashvl.pipeline.admission_redis import RedisModelGate
from flashvl.testing import start_redis


async def uncontended(url: str, n: int = 500) -> tuple[float, float]:
    gate = RedisModelGate(url, 4, 64, 30.0, prefix="bench:uncontended")
    seconds = []
    for _ in range(n):
        start = time.perf_counter()
        async with gate.slot():
            pass
        seconds.append(time.perf_counter() - start)
    await gate.aclose()
    seconds.sort()
    return seconds[n // 2], seconds[int(n * 0.99)]


async def contended(gates: list[Admission], callers: int = 64, hold_s: float = 0.05) -> float:
    async def work(gate: Admission) -> None:
        async with gate.slot():
            await asyncio.sleep(hold_s)

    start = time.perf_counter()
    await asyncio.gather(*(work(gates[i % len(gates)]) for i in range(callers)))
    return time.perf_counter() - start


async def main(url: str, out_dir: Path, rounds: int) -> None:
    p50, p99 = await uncontended(url)
    walls: dict[str, list[float]] = {"per-process ModelGate": [], "RedisModelGate x2": []}
    for number in range(rounds):  # interleaved, so machine noise hits both alike
        local = ModelGate(4, 64, 30.0)
        shared = [RedisModelGate(url, 4, 64, 30.0, prefix=f"bench:contended:{number}") for _ in range(2)]
        walls["per-process ModelGate"].append(await contended([local]))
        walls["RedisModelGate x2"].append(await contended(list(shared)))
        for gate in shared:
            await gate.aclose()
    ideal = 64 * 0.05 / 4
    lines = [
        f"# Model queue shared in Redis vs per process ({dt.date.today()}, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)",
        "",
        f"Uncontended `slot()` enter + exit through Redis: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms.",
        "",
        f"64 callers each holding a slot 50 ms, max 4 at once (ideal {ideal:.2f} s), {rounds} rounds:",
        "",
        "| queue | median wall s | ratio to ideal | overhead per wave of 4 hand-offs (ms) |",
        "|---|---|---|---|",
    ]
    for name, values in walls.items():
        median = sorted(values)[len(values) // 2]
        lines.append(f"| {name} | {median:.3f} | {median / ideal:.2f} | {(median - ideal) / 16 * 1e3:.1f} |")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model_queue_redis.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    _plot(walls, ideal, out_dir / "model_queue_redis.png")


def _plot(walls: dict[str, list[float]], ideal: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.boxplot(list(walls.values()))
    ax.set_xticks(range(1, len(walls) + 1), list(walls))
    ax.axhline(ideal, linestyle="--", color="grey", label=f"ideal {ideal:.2f} s")
    ax.set_ylabel("wall seconds, 64 x 50 ms at max 4")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    proc, url = start_redis()
    try:
        asyncio.run(main(url, args.out_dir, args.rounds))
    finally:
        proc.kill()
        proc.wait()
