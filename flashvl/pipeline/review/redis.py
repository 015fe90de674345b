"""The review queue in Redis (``--review-store redis``): shared by every process and machine on it,
with the interface of ``SqliteReviewStore`` (``add``, ``list``, ``get``, ``resolve``, ``close``) and
the same bound (the oldest item goes first once there are ``max_items``).

Keys (under ``prefix``, default ``flashvl:reviews``; give each app sharing a Redis its own):
``:items`` (hash: id -> the item's JSON, written by ``dump_item`` so every field
flows through), ``:thumbnails`` (hash: id -> the thumbnail's bytes, when the item has one),
``:order`` (zset: id -> arrival number, from ``:seq``) and ``:status:<status>`` (zset per status,
same scores). Adding (with the trim) is one Lua script; resolving is a WATCH transaction, retried
if another process changed the item meanwhile.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis

from flashvl.pipeline.review.base import ReviewItem, dump_item, load_item

STATUSES = ("open", "resolved")

# KEYS: items, thumbnails, order, seq, status:<item's status>, status:open, status:resolved.
# ARGV: id, JSON, max_items, thumbnail ('' for none), has thumbnail (1|0).
_ADD = """
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[5] == '1' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[4]) end
redis.call('ZADD', KEYS[3], seq, ARGV[1])
redis.call('ZADD', KEYS[5], seq, ARGV[1])
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[3])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[3], 0, over - 1)
  for _, id in ipairs(old) do
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[6], id)
    redis.call('ZREM', KEYS[7], id)
  end
end
return seq
"""
# KEYS: the order zset (all, or one status), items, thumbnails. -> {id, JSON, thumbnail or false, ...}
_LIST = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  local item = redis.call('HGET', KEYS[2], id)
  if item then
    table.insert(out, item)
    table.insert(out, redis.call('HGET', KEYS[3], id))
  end
end
return out
"""


class RedisReviewStore:
    """The review queue in Redis, shared by every process that reaches it."""

    def __init__(
        self, url: str, max_items: int = 1000, thumbnails: bool = True, prefix: str = "flashvl:reviews"
    ) -> None:
        self.url = url
        self.max_items = max_items
        self.thumbnails = thumbnails
        self.prefix = prefix
        self._items = f"{prefix}:items"
        self._thumbs = f"{prefix}:thumbnails"
        self._order = f"{prefix}:order"
        self._seq = f"{prefix}:seq"
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._add = self._redis.register_script(_ADD)
        self._list = self._redis.register_script(_LIST)

    def _status(self, status: str) -> str:
        return f"{self.prefix}:status:{status}"

    def add(self, **fields: Any) -> ReviewItem:
        item = ReviewItem(id=uuid.uuid4().hex[:16], created=time.time(), **fields)
        thumbnail = item.thumbnail
        self._add(
            keys=[
                self._items,
                self._thumbs,
                self._order,
                self._seq,
                self._status(item.status),
                *(self._status(s) for s in STATUSES),
            ],
            args=[item.id, dump_item(item), self.max_items, thumbnail or b"", int(thumbnail is not None)],
        )
        return item

    def list(self, status: str | None = None) -> list[ReviewItem]:
        order = self._order if status is None else self._status(status)
        flat = self._list(keys=[order, self._items, self._thumbs])
        return [_item(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def get(self, item_id: str) -> ReviewItem | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(self._items, item_id)
        pipe.hget(self._thumbs, item_id)
        text, thumbnail = pipe.execute()
        return _item(text, thumbnail) if text is not None else None

    def resolve(
        self,
        item_id: str,
        verdict: str,
        corrected_answer: str | None = None,
        note: str | None = None,
        resolved_by: str | None = None,
    ) -> ReviewItem | None:
        resolved: list[ReviewItem | None] = [None]

        def change(pipe: Any) -> None:  # redis.client.Pipeline, WATCHing the item
            text = pipe.hget(self._items, item_id)  # before multi(): read at once
            if text is None:
                resolved[0] = None
                return
            thumbnail, seq = pipe.hget(self._thumbs, item_id), pipe.zscore(self._order, item_id)
            item = _item(text, thumbnail)
            before = item.status
            item.mark_resolved(verdict, corrected_answer, note, resolved_by)
            pipe.multi()
            pipe.hset(self._items, item_id, dump_item(item))
            pipe.zrem(self._status(before), item_id)
            if seq is not None:
                pipe.zadd(self._status(item.status), {item_id: seq})
            resolved[0] = item

        self._redis.transaction(change, self._items)
        return resolved[0]

    def close(self) -> None:
        self._redis.close()


def _item(text: bytes | str, thumbnail: bytes | None) -> ReviewItem:
    return load_item(text.decode() if isinstance(text, bytes) else text, thumbnail or None)


__all__ = ["RedisReviewStore"]
