"""The vision cache: keys that separate image/stage/model/setting/parameters; LRU, LFU, TTL; metrics."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from flashvl.config import Settings
from flashvl.media import decode_image
from flashvl.media.types import LoadedImage
from flashvl.pipeline.cache.base import result_from_dict, result_to_dict, vision_cache_key
from flashvl.pipeline.cache.memory import MemoryVisionCache
from flashvl.stages.base import Box, Timings, VisionRequest, VisionResult
from flashvl.stages.offline.stage import OfflineVisionStage


def _image(value: int) -> LoadedImage:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(buffer, "PNG")
    return decode_image(buffer.getvalue(), Settings(), "path")


def _vision_result(text: str) -> VisionResult:
    return VisionResult("s", text, {"objects": []}, boxes=[Box("cat", 0.9, 1, 2, 3, 4)], timings=Timings({"x": 1.0}))


def _result(text: str) -> dict:
    """What the cache holds: JSON-able values (a result as ``result_to_dict`` makes it)."""
    return result_to_dict(_vision_result(text))


def test_key_changes_with_image_stage_model_setting_and_parameters() -> None:
    stage = OfflineVisionStage(ocr_min_score=0.5)
    request = VisionRequest([_image(10)], "What is it?")
    key = vision_cache_key(stage, request)
    assert key == vision_cache_key(OfflineVisionStage(ocr_min_score=0.5), VisionRequest([_image(10)], "What is it?"))
    other_model = OfflineVisionStage(ocr_min_score=0.5)
    other_model.model_id = "another-model"
    variants = {
        "image": vision_cache_key(stage, VisionRequest([_image(11)], "What is it?")),
        "model": vision_cache_key(other_model, request),
        "setting": vision_cache_key(OfflineVisionStage(ocr_min_score=0.6), request),
        "task": vision_cache_key(stage, VisionRequest([_image(10)], "What is it?", task="ocr")),
        "question": vision_cache_key(stage, VisionRequest([_image(10)], "Why is it?")),
        "max_pixels": vision_cache_key(stage, VisionRequest([_image(10)], "What is it?", max_pixels=70_000)),
    }
    assert key not in variants.values() and len(set(variants.values())) == len(variants)


def test_lru_evicts_least_recently_used_and_counts() -> None:
    async def run() -> MemoryVisionCache:
        cache = MemoryVisionCache("lru", max_items=2)
        await cache.set("a", _result("A"))
        await cache.set("b", _result("B"))
        assert (await cache.get("a"))["description"] == "A"  # a is now most recent
        await cache.set("c", _result("C"))  # evicts b
        assert await cache.get("b") is None and (await cache.get("c"))["description"] == "C"
        return cache

    cache = asyncio.run(run())
    assert (cache.stats.hits, cache.stats.misses, cache.stats.evictions) == (2, 1, 1)


def test_lfu_evicts_least_frequently_used_not_least_recent() -> None:
    async def run() -> MemoryVisionCache:
        cache = MemoryVisionCache("lfu", max_items=2)
        await cache.set("a", _result("A"))
        await cache.set("b", _result("B"))
        for _ in range(3):
            await cache.get("b")
        await cache.get("a")  # a is the most recent, but used once; b three times
        await cache.set("c", _result("C"))  # LRU would drop b; LFU drops a
        assert await cache.get("a") is None and await cache.get("b") is not None
        return cache

    cache = asyncio.run(run())
    assert cache.stats.evictions == 1 and len(cache) == 2


def test_ttl_expires_entries() -> None:
    now = [0.0]
    cache = MemoryVisionCache("lru", max_items=10, ttl_s=5, clock=lambda: now[0])
    asyncio.run(cache.set("a", _result("A")))
    now[0] = 4.9
    assert asyncio.run(cache.get("a")) is not None
    now[0] = 5.1
    assert asyncio.run(cache.get("a")) is None
    assert cache.stats.evictions == 1


def test_hits_are_copies_and_results_round_trip_through_json() -> None:
    cache = MemoryVisionCache()
    asyncio.run(cache.set("a", _result("A")))
    first = asyncio.run(cache.get("a"))
    first["description"] = "changed"
    assert asyncio.run(cache.get("a"))["description"] == "A"
    back = result_from_dict(_result("A"))
    assert back.boxes[0].label == "cat" and back.timings.steps == {"x": 1.0} and back.description == "A"


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_size_bound_holds(policy: str) -> None:
    cache = MemoryVisionCache(policy, max_items=5)  # type: ignore[arg-type]
    for i in range(20):
        asyncio.run(cache.set(str(i), _result(str(i))))
    assert len(cache) == 5 and cache.stats.evictions == 15
