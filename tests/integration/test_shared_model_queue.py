"""The model queue shared in a real ``redis-server`` (``RedisModelGate``, ``--model-queue-redis-url``).

Two gates stand for two processes (ingress replicas) on one Redis: together they never hold more
than ``max_concurrent`` slots; waiters are served first come, first served across them; a full
queue and a long wait are 503 ``server_busy`` with Retry-After; a cancelled waiter leaves the
queue; three real processes taking 72 slots never hold more than 3 at once; a real process killed
while holding a slot gives it back when its lease runs out; without Redis each process falls back
to its own gate. Then two real ``flashvl serve`` processes share one queue: a slot held elsewhere
makes both wait and answer 503, and both report the shared counts on /metrics.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flashvl.errors import FlashvlError
from flashvl.pipeline.admission_redis import RedisModelGate
from flashvl.testing import start_redis, start_server, stop_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    proc, url = start_redis()
    yield url
    proc.kill()
    proc.wait()


def _gates(url: str, prefix: str, n: int = 2, **kw: float) -> list[RedisModelGate]:
    args = {"max_concurrent": 2, "max_queue": 16, "queue_timeout_s": 10.0} | kw
    return [
        RedisModelGate(
            url,
            int(args["max_concurrent"]),
            int(args["max_queue"]),
            float(args["queue_timeout_s"]),
            prefix=prefix,
            lease_s=float(kw.get("lease_s", 15.0)),
        )
        for _ in range(n)
    ]


async def _close(*gates: RedisModelGate) -> None:
    for gate in gates:
        await gate.aclose()


def test_two_processes_never_hold_more_than_max_concurrent(redis_url: str) -> None:
    async def run() -> tuple[int, int]:
        one, two = _gates(redis_url, "t:limit")
        running = peak = 0

        async def work(gate: RedisModelGate) -> None:
            nonlocal running, peak
            async with gate.slot():
                running += 1
                peak = max(peak, running)
                assert gate.active >= 1
                await asyncio.sleep(0.03)
                running -= 1

        await asyncio.gather(*(work(one if i % 2 else two) for i in range(16)))
        counts = one.shared_counts()
        await _close(one, two)
        return peak, counts[1] if counts else -1

    peak, held_after = asyncio.run(run())
    assert peak == 2  # both slots were used, never a third
    assert held_after == 0


def test_waiters_are_served_in_arrival_order_across_processes(redis_url: str) -> None:
    async def run() -> list[int]:
        one, two = _gates(redis_url, "t:fifo", max_concurrent=1)
        order: list[int] = []
        release = asyncio.Event()

        async def holder() -> None:
            async with one.slot():
                await release.wait()

        async def waiter(i: int, gate: RedisModelGate) -> None:
            async with gate.slot():
                order.append(i)
                await asyncio.sleep(0.01)

        first = asyncio.create_task(holder())
        await asyncio.sleep(0.05)
        tasks = []
        for i in range(6):  # alternate gates, each arrival clearly after the one before
            tasks.append(asyncio.create_task(waiter(i, two if i % 2 else one)))
            await asyncio.sleep(0.03)
        assert one.queued + two.queued == 6
        assert one.shared_counts() == (6, 1)
        release.set()
        await asyncio.gather(first, *tasks)
        await _close(one, two)
        return order

    assert asyncio.run(run()) == list(range(6))


def test_full_queue_and_long_wait_are_503_with_retry_after(redis_url: str) -> None:
    async def run() -> None:
        one, two = _gates(redis_url, "t:busy", max_concurrent=1, max_queue=1, queue_timeout_s=0.5)
        async with one.slot():
            waiting = asyncio.create_task(two.slot().__aenter__())
            await asyncio.sleep(0.05)
            with pytest.raises(FlashvlError) as full:  # one holds, one waits: the queue (1) is full
                async with one.slot():
                    pass
            assert full.value.status == 503 and full.value.code == "server_busy"
            assert full.value.retry_after is not None and full.value.retry_after >= 1
            with pytest.raises(FlashvlError) as waited:  # the waiter gives up after queue_timeout_s
                await waiting
            assert waited.value.status == 503 and "Waited" in str(waited.value)
            assert one.shared_counts() == (0, 1)  # and left the queue
        assert one.shared_counts() == (0, 0)
        await _close(one, two)

    asyncio.run(run())


def test_a_cancelled_waiter_leaves_the_queue(redis_url: str) -> None:
    async def run() -> None:
        one, two = _gates(redis_url, "t:cancel", max_concurrent=1)
        async with one.slot():
            waiter = asyncio.create_task(two.slot().__aenter__())
            await asyncio.sleep(0.05)
            assert one.shared_counts() == (1, 1) and two.queued == 1
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert one.shared_counts() == (0, 1) and two.queued == 0
        started = time.perf_counter()
        async with two.slot():  # nobody ahead: at once
            assert time.perf_counter() - started < 0.2
        await _close(one, two)

    asyncio.run(run())


_HOLDER = """
import asyncio, sys
from flashvl.pipeline.admission_redis import RedisModelGate

async def main():
    gate = RedisModelGate(sys.argv[1], 1, 4, 10.0, prefix="t:crash", lease_s=1.0)
    async with gate.slot():
        print("held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_killed_holders_slot_comes_back_after_its_lease(redis_url: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, redis_url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"

        async def run() -> float:
            (gate,) = _gates(redis_url, "t:crash", n=1, max_concurrent=1, lease_s=1.0)
            with pytest.raises(FlashvlError):  # alive, it renews its lease: the slot stays taken
                async with RedisModelGate(redis_url, 1, 4, 2.5, prefix="t:crash", lease_s=1.0).slot():
                    pass
            holder.kill()
            holder.wait()
            started = time.perf_counter()
            async with gate.slot():
                waited = time.perf_counter() - started
            await gate.aclose()
            return waited

        waited = asyncio.run(run())
        assert waited <= 1.5  # at most one lease (1 s) after the kill, plus a poll
    finally:
        holder.kill()
        holder.wait()


_WORKER = """
import asyncio, sys
import redis.asyncio as redis
from flashvl.pipeline.admission_redis import RedisModelGate

async def main():
    url = sys.argv[1]
    gate = RedisModelGate(url, 3, 100, 30.0, prefix="t:procs")
    counter = redis.Redis.from_url(url)

    async def work(i):
        async with gate.slot():
            now = await counter.incr("t:procs:running")
            await counter.sadd("t:procs:seen", now)  # every count of holders seen at once
            await asyncio.sleep(0.02)
            await counter.decr("t:procs:running")

    await asyncio.gather(*(work(i) for i in range(24)))
    await gate.aclose()
    print("done", flush=True)

asyncio.run(main())
"""


def test_three_real_processes_never_hold_more_than_max_concurrent(redis_url: str) -> None:
    import redis

    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, redis_url], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert all(proc.returncode == 0 and "done" in out for proc, out in zip(procs, outs, strict=True))
    client = redis.Redis.from_url(redis_url)
    seen = {int(n) for n in client.smembers("t:procs:seen")}
    assert max(seen) == 3, seen  # 72 slots taken by 3 processes, never 4 at once
    assert int(client.get("t:procs:running") or 0) == 0
    assert client.zcard("t:procs:holders") == 0 and client.zcard("t:procs:waiting") == 0
    client.close()


def test_without_redis_each_process_keeps_its_own_bound() -> None:
    async def run() -> None:
        gate = RedisModelGate("redis://127.0.0.1:1/0", 1, 0, 0.2)
        async with gate.slot():
            assert gate.active == 1
            with pytest.raises(FlashvlError) as busy:  # the local fallback: max 1, no queue
                async with gate.slot():
                    pass
            assert busy.value.status == 503
        assert gate.shared_counts() is None
        await gate.aclose()

    asyncio.run(run())


def test_two_servers_share_one_model_queue(redis_url: str, image_dir: Path, tmp_path: Path) -> None:
    shared = ["--model-queue-redis-url", redis_url, "--model-queue-redis-prefix", "t:servers"]
    args = ["--language", "none", "--vision-cache", "none", "--model-max-concurrent", "1"]
    args += ["--model-queue-timeout-s", "1", *shared]
    env = {"OMP_NUM_THREADS": "1"}
    servers = []
    try:
        for name in ("a", "b"):
            servers.append(start_server(args, tmp_path / f"{name}.log", env=env))
        body = {
            "image_base64": "data:image/jpeg;base64,"
            + base64.b64encode((image_dir / "coffee.jpg").read_bytes()).decode(),
            "prompt": "What colour is it?",
        }
        for server in servers:  # free queue: both answer
            assert httpx.post(f"{server.base}/infer", json=body, timeout=120).status_code == 200

        async def hold_and_ask() -> list[httpx.Response]:
            (gate,) = _gates(redis_url, "t:servers", n=1, max_concurrent=1)
            # the one slot, taken by a third process
            async with gate.slot(), httpx.AsyncClient(timeout=60) as client:
                metrics = await client.get(f"{servers[0].base}/metrics")
                assert "flashvl_model_slots_shared_in_use 1.0" in metrics.text
                return list(await asyncio.gather(*(client.post(f"{s.base}/infer", json=body) for s in servers)))

        refused = asyncio.run(hold_and_ask())
        for response in refused:  # neither server had a slot of its own to use
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "server_busy" and "retry-after" in response.headers
        for server in servers:  # released: both answer again
            assert httpx.post(f"{server.base}/infer", json=body, timeout=120).status_code == 200
    finally:
        for server in servers:
            stop_server(server.proc)
