"""The review queue on SQLite: same behaviour as in memory, kept across a restart, bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashvl.config import Settings
from flashvl.pipeline.review_store import ReviewStore, SqliteReviewStore, build_review_store


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
