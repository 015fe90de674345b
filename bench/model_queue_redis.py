"""The model queue shared in Redis (``RedisModelGate``) against the per-process ``ModelGate``, on a
real local ``redis-server``.

- uncontended: one ``slot()`` entered and left, 500 times (one Lua script each way, plus the
  lease renewer's task): p50 / p99;
- contended: 64 callers, each holding a slot for 50 ms, ``max_concurrent`` 4, split over two gates
  (two processes' worth, on one event loop here): wall time against the ideal 64 x 50 ms / 4.
  The difference is the hand-off (a release gives the slot to the oldest waiter and publishes its
  token; that waiter's process wakes it, and it confirms with one script).

This machine has 2 CPU cores shared with everything else running; numbers are upper bounds.
Run: .venv/bin/python bench/model_queue_redis.py
"""

from __future__ import annotations

import asyncio
import time

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


async def main(url: str) -> None:
    p50, p99 = await uncontended(url)
    print(f"uncontended slot() enter + exit: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
    local = ModelGate(4, 64, 30.0)
    print(f"local ModelGate, 64 x 50 ms at max 4: {await contended([local]):.2f} s (ideal 0.80 s)")
    shared = [RedisModelGate(url, 4, 64, 30.0, prefix="bench:contended") for _ in range(2)]
    print(f"RedisModelGate x2, 64 x 50 ms at max 4: {await contended(list(shared)):.2f} s (ideal 0.80 s)")
    for gate in shared:
        await gate.aclose()


if __name__ == "__main__":
    proc, url = start_redis()
    try:
        asyncio.run(main(url))
    finally:
        proc.kill()
        proc.wait()
