"""The review queue on SQLite: same behaviour as in memory, kept across a restart, bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashvl.config import Settings
from flashvl.pipeline.review.factory import build_review_store
from flashvl.pipeline.review.memory import MemoryReviewStore as ReviewStore
from flashvl.pipeline.review.sqlite import SqliteReviewStore


def flagged(n: int) -> dict:
    return {
        "question": f"q{n}",
        "answer": f"a{n}",
        "description": "a cat on a sofa",
        "reasons": ["object not seen: dog"],
        "image_sha256": ["0" * 64],
        "route": "cascade",
    }


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_add_list_get_resolve_and_the_bound(kind: str, tmp_path: Path) -> None:
    store = build_review_store(kind, tmp_path / "reviews.sqlite3", max_items=3)
    items = [store.add(**flagged(n)) for n in range(5)]
    assert [i.question for i in store.list()] == ["q2", "q3", "q4"]  # the oldest two went first
    assert store.get(items[0].id) is None and store.get(items[4].id).answer == "a4"
    resolved = store.resolve(items[3].id, "reject", corrected_answer="a cat", note="no dog")
    assert resolved.status == "resolved" and resolved.resolution["corrected_answer"] == "a cat"
    assert [i.question for i in store.list("open")] == ["q2", "q4"]
    assert [i.question for i in store.list("resolved")] == ["q3"]
    assert store.resolve("nope", "accept") is None


def test_sqlite_items_outlive_the_process_that_wrote_them(tmp_path: Path) -> None:
    path = tmp_path / "reviews.sqlite3"
    first = SqliteReviewStore(path)
    kept = first.add(**flagged(1))
    first.resolve(kept.id, "accept")
    first.close()
    again = SqliteReviewStore(path)  # a restarted server, or another worker on the same file
    (item,) = again.list()
    assert item.id == kept.id and item.status == "resolved" and item.reasons == ["object not seen: dog"]


def test_settings_choose_the_store(tmp_path: Path) -> None:
    assert isinstance(build_review_store("memory", tmp_path / "x", 10), ReviewStore)
    with pytest.raises(ValueError, match="review_store"):
        Settings(review_store="postgres")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_items_name_their_owner_and_who_resolved_them(kind: str, tmp_path: Path) -> None:
    store = build_review_store(kind, tmp_path / "reviews.sqlite3", max_items=10)
    item = store.add(**flagged(1), owner="key:app")
    assert store.get(item.id).owner == "key:app" and store.get(item.id).resolved_by is None
    resolved = store.resolve(item.id, "corrected", corrected_answer="a cat", note="no dog", resolved_by="key:alice")
    assert resolved.resolved_by == "key:alice" and resolved.to_dict()["owner"] == "key:app"
    again = store.get(item.id)
    assert (again.owner, again.resolved_by, again.status) == ("key:app", "key:alice", "resolved")


def test_sqlite_items_from_before_owners_still_load(tmp_path: Path) -> None:
    import json
    import sqlite3

    path = tmp_path / "reviews.sqlite3"
    SqliteReviewStore(path).close()
    old = {"id": "old1", "created": 1.0, **flagged(1), "status": "open", "resolution": None}
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO reviews (id, status, item) VALUES ('old1', 'open', ?)", (json.dumps(old),))
    store = SqliteReviewStore(path)
    assert store.get("old1").owner is None
    assert store.resolve("old1", "accept", resolved_by="key:alice").resolved_by == "key:alice"


def test_a_flagged_answer_records_whose_request_it_was() -> None:
    import asyncio
    from types import SimpleNamespace

    from flashvl.pipeline.arbitration import Conflict
    from flashvl.pipeline.arbitration_policy import arbitrate
    from flashvl.pipeline.types import Answer, Query

    class Contradicts:
        def check(
            self, observations: dict, description: str, answer: str, question: str | None = None
        ) -> list[Conflict]:
            return [Conflict("named_object", "dog", "the vision stage saw no dog")]

    reviews = ReviewStore(thumbnails=False)  # the stand-in image has no pixels to make a thumbnail of
    pipeline = SimpleNamespace(arbiter=Contradicts(), reask=False, voter=None, reviews=reviews)
    image = SimpleNamespace(sha256="0" * 64)
    query = Query([image], "What is on the sofa?", principal="key:app")  # type: ignore[list-item]
    seen = SimpleNamespace(observations={}, description="a cat on a sofa")
    final = Answer("A dog.", "cascade", "offline", "scripted")
    asyncio.run(arbitrate(pipeline, query, seen, final, "en"))  # type: ignore[arg-type]
    assert final.needs_review and final.review_id
    item = pipeline.reviews.get(final.review_id)
    assert item.owner == "key:app" and item.question == "What is on the sofa?"
