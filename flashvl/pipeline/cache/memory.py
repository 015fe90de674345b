"""In-process LRU or LFU cache (cachetools), bounded by item count and time-to-live."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Literal

from cachetools import LFUCache, LRUCache

from flashvl.pipeline.cache.base import CacheStats


def _counting(base: type) -> type:
    """A cachetools class whose size evictions are counted (cachetools' documented popitem hook)."""

    class Counting(base):
        def __init__(self, maxsize: int, stats: CacheStats) -> None:
            super().__init__(maxsize)
            self._stats = stats

        def popitem(self) -> Any:
            item = super().popitem()
            self._stats.evictions += 1
            return item

    return Counting


_LRU = _counting(LRUCache)
_LFU = _counting(LFUCache)


class MemoryVisionCache:
    """Entries expire ``ttl_s`` after they were written; at ``max_items`` the least
    recently (LRU) or least frequently (LFU) used entry goes."""

    def __init__(
        self,
        policy: Literal["lru", "lfu"] = "lru",
        max_items: int = 1024,
        ttl_s: float = 3600.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.name = f"memory-{policy}"
        self.stats = CacheStats()
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._data = (_LFU if policy == "lfu" else _LRU)(max_items, self.stats)

    async def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and entry[0] <= self._clock():
                del self._data[key]
                self.stats.evictions += 1
                entry = None
            if entry is None:
                self.stats.misses += 1
                return None
            self.stats.hits += 1
        return json.loads(entry[1])  # a fresh copy: callers may change it without touching the entry

    async def set(self, key: str, value: dict[str, Any]) -> None:
        blob = json.dumps(value, ensure_ascii=False)  # stored as JSON: what Redis would hold, nothing shared
        with self._lock:
            self._data[key] = (self._clock() + self.ttl_s, blob)

    def __len__(self) -> int:
        return len(self._data)

    async def close(self) -> None:
        with self._lock:
            self._data.clear()
