"""The Redis cache backend against a real redis-server (Debian's), started here on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from flashvl.pipeline.cache.base import result_from_dict, result_to_dict
from flashvl.pipeline.cache.redis import RedisVisionCache
from flashvl.stages.base import Box, Timings, VisionResult
from flashvl.testing import start_redis
from tests.conftest import free_port


@pytest.fixture()
def redis_url() -> Iterator[str]:
    proc, url = start_redis()  # a real redis-server on loopback
    yield url
    proc.kill()
    proc.wait()


def test_two_instances_share_entries_and_ttl_applies(redis_url: str) -> None:
    async def run() -> tuple[RedisVisionCache, RedisVisionCache]:
        one, two = RedisVisionCache(redis_url, ttl_s=1), RedisVisionCache(redis_url, ttl_s=1)
        value = result_to_dict(
            VisionResult(
                "s",
                "a cat",
                {"objects": [{"label": "cat"}]},
                boxes=[Box("cat", 0.9, 1, 2, 3, 4)],
                timings=Timings({"detect": 0.1}),
            )
        )
        assert await two.get("k") is None
        await one.set("k", value)
        hit = await two.get("k")  # another instance sees the entry
        assert hit is not None and result_from_dict(hit).description == "a cat"
        assert result_from_dict(hit).boxes[0].label == "cat"
        assert await two.get("other") is None
        await asyncio.sleep(1.6)
        assert await two.get("k") is None  # expired by Redis
        await one.close()
        await two.close()
        return one, two

    _, two = asyncio.run(run())
    assert (two.stats.hits, two.stats.misses) == (1, 3)


def test_redis_down_is_a_miss_not_an_error() -> None:
    async def run() -> RedisVisionCache:
        cache = RedisVisionCache(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
        assert await cache.get("k") is None
        await cache.set("k", result_to_dict(VisionResult("s", "x")))
        await cache.close()
        return cache

    cache = asyncio.run(run())
    assert cache.stats.errors == 2 and cache.stats.misses == 1
