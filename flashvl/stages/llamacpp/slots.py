"""Slot affinity: requests with one ``prefix_key`` (questions about one image) go to the llama.cpp slot
that read that prefix last, while it is idle; a new key takes the least recently used idle slot. So an
image's prompt survives ``slots - 1`` other images' requests in between (llama.cpp alone puts a new
request on the slot with the longest common prefix: the shared instructions make that any)."""

from __future__ import annotations

import threading
from collections import OrderedDict


class SlotAffinity:
    def __init__(self, slots: int, *, enabled: bool = True) -> None:
        self.slots = slots
        self.enabled = enabled
        self._slot_of: OrderedDict[str, int] = OrderedDict()  # prefix key -> slot, least recently used first
        self._busy = [0] * slots
        self._lock = threading.Lock()

    def take(self, key: str | None) -> int | None:
        """The slot for a request with prefix ``key`` (None: llama.cpp chooses)."""
        if key is None or not self.enabled or self.slots < 2:
            return None
        with self._lock:
            slot = self._slot_of.get(key)
            if slot is not None and self._busy[slot] == 0:
                self._slot_of.move_to_end(key)
            else:
                idle = [s for s in range(self.slots) if self._busy[s] == 0]
                if not idle:
                    return None  # every slot is busy: the first to come free takes it
                owned = set(self._slot_of.values())
                free = [s for s in idle if s not in owned]
                slot = free[0] if free else next(s for s in self._slot_of.values() if s in idle)
                for old in [k for k, s in self._slot_of.items() if s == slot]:
                    del self._slot_of[old]
                self._slot_of[key] = slot
            self._busy[slot] += 1
            return slot

    def free(self, slot: int | None) -> None:
        if slot is not None:
            with self._lock:
                self._busy[slot] -= 1
