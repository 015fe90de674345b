"""The review queue in this process's memory (``--review-store memory``): gone with the process."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from flashvl.pipeline.review.base import ReviewItem


@dataclass
class MemoryReviewStore:
    """Flagged answers awaiting a person, newest last; bounded (oldest dropped)."""

    max_items: int = 1000
    thumbnails: bool = True  # whether flagged answers keep a thumbnail of their image (--review-thumbnails)
    _items: OrderedDict[str, ReviewItem] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **fields: Any) -> ReviewItem:
        item = ReviewItem(id=uuid.uuid4().hex[:16], created=time.time(), **fields)
        with self._lock:
            self._items[item.id] = item
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return item

    def list(self, status: str | None = None) -> list[ReviewItem]:
        with self._lock:
            return [i for i in self._items.values() if status is None or i.status == status]

    def get(self, item_id: str) -> ReviewItem | None:
        return self._items.get(item_id)

    def resolve(
        self,
        item_id: str,
        verdict: str,
        corrected_answer: str | None = None,
        note: str | None = None,
        resolved_by: str | None = None,
    ) -> ReviewItem | None:
        with self._lock:
            item = self._items.get(item_id)
            if item is None:
                return None
            item.mark_resolved(verdict, corrected_answer, note, resolved_by)
            return item
