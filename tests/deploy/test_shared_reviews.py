"""The review queue in a real ``redis-server`` (``--review-store redis``): two stores stand for two
processes on different machines; what one adds, the other lists, gets and resolves, with every
field (owner, resolution, resolved_by, the thumbnail's bytes); the bound drops the oldest; two apps
with their own prefixes do not see each other's items."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flashvl.pipeline.review.factory import build_review_store
from flashvl.pipeline.review.redis import RedisReviewStore
from flashvl.testing import start_redis


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    proc, url = start_redis()
    yield url
    proc.kill()
    proc.wait()


def _flag(store: RedisReviewStore, n: int, **extra: object) -> str:
    fields: dict[str, object] = {
        "question": f"q{n}",
        "answer": f"a{n}",
        "description": f"d{n}",
        "reasons": ["color mismatch"],
        "image_sha256": [f"{n:064x}"],
        "route": "cascade",
        "owner": "alice",
    }
    return store.add(**(fields | extra)).id


def test_reviews_are_shared_between_processes(redis_url: str) -> None:
    one = RedisReviewStore(redis_url, max_items=3, prefix="t:reviews")
    two = RedisReviewStore(redis_url, max_items=3, prefix="t:reviews")
    thumbnail = b"RIFF\x00\x00\x00\x00WEBP" + bytes(range(256))
    first = _flag(one, 1, thumbnail=thumbnail)
    second = _flag(two, 2, owner=None)
    seen = two.get(first)
    assert seen is not None and seen.question == "q1" and seen.owner == "alice" and seen.reasons == ["color mismatch"]
    assert seen.thumbnail == thumbnail  # bytes, beside the JSON
    assert [item.id for item in one.list()] == [first, second]
    assert [item.id for item in two.list("open")] == [first, second]

    resolved = two.resolve(first, "correct", corrected_answer="blue", note="checked", resolved_by="rita")
    assert resolved is not None and resolved.status == "resolved"
    again = one.get(first)
    assert again is not None and again.status == "resolved" and again.resolved_by == "rita"
    assert again.resolution is not None and again.resolution["corrected_answer"] == "blue"
    assert again.thumbnail == thumbnail
    assert [item.id for item in one.list("resolved")] == [first]
    assert [item.id for item in one.list("open")] == [second]
    assert one.get(second) is not None and one.get(second).owner is None  # type: ignore[union-attr]
    assert two.resolve("nope", "correct") is None and two.get("nope") is None

    later = [_flag(one, n) for n in (3, 4)]  # bounded: 3 items, the oldest goes (with its thumbnail)
    assert [item.id for item in two.list()] == [second, *later]
    assert one.get(first) is None and one.list("resolved") == []
    other_app = RedisReviewStore(redis_url, prefix="t:other-app")
    assert other_app.list() == []
    for store in (one, two, other_app):
        store.close()


def test_build_review_store_redis(redis_url: str, tmp_path: Path) -> None:
    store = build_review_store("redis", tmp_path / "unused.sqlite3", 10, True, redis_url, "t:built")
    assert isinstance(store, RedisReviewStore) and store.thumbnails and store.max_items == 10
    store.close()
    assert not (tmp_path / "unused.sqlite3").exists()
    with pytest.raises(ValueError, match="--review-redis-url"):
        build_review_store("redis", tmp_path / "x.sqlite3", 10, True, "")
