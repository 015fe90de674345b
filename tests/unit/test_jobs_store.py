"""The job stores, SQLite and a real redis-server (started here on a free loopback port), same contract."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flashvl.jobs.export import to_csv
from flashvl.jobs.redis_store import RedisJobStore
from flashvl.jobs.sqlite_store import SqliteJobStore
from flashvl.jobs.store import HOST, Claimed, JobConflict, JobStore, holder_is_dead

ITEMS = [(f"k{i:02d}", {"image": f"img{i}.png"}) for i in range(10)]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    port = _free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(folder),
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        made: JobStore = SqliteJobStore(tmp_path / "jobs.sqlite3")
    else:
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        made = RedisJobStore(url)
    yield made
    made.close()


def test_create_is_idempotent_by_key(store: JobStore) -> None:
    assert store.create_job("j", "safety", ITEMS) == {"added": 10, "total": 10}
    assert store.create_job("j", "safety", [*ITEMS[:5], ("new", {"image": "x"})]) == {"added": 1, "total": 11}
    assert store.get_job("j")["task"] == "safety"
    assert store.get_job("missing") is None
    assert store.open_jobs() == ["j"]


def test_each_item_is_taken_once_and_completed_once(store: JobStore) -> None:
    store.create_job("j", "safety", ITEMS)
    first = store.claim("j", 4, lease_s=60)
    second = store.claim("j", 100, lease_s=60)
    assert [c.key for c in first] == ["k00", "k01", "k02", "k03"]
    assert {c.key for c in first}.isdisjoint(c.key for c in second) and len(second) == 6
    assert store.claim("j", 100, lease_s=60) == []
    for item in first + second:
        assert store.complete(item, {"n": item.key})
    assert not store.complete(first[0], {"n": "again"})  # a second completion is refused
    progress = store.progress("j")
    assert (progress["done"], progress["finished"]) == (10, True)
    rows = store.results("j")
    assert [r["key"] for r in rows] == [k for k, _ in ITEMS]
    assert rows[0]["result"] == {"n": "k00"}
    assert store.open_jobs() == []


def test_an_expired_lease_moves_to_a_new_holder_and_the_old_one_cannot_finish(store: JobStore) -> None:
    store.create_job("j", "safety", ITEMS[:1])
    old = store.claim("j", 1, lease_s=0.05)[0]
    time.sleep(0.1)
    new = store.claim("j", 1, lease_s=60)[0]
    assert new.key == old.key and new.token != old.token
    assert not store.complete(old, {"by": "old"})
    assert store.fail(old, "late", 3, 0.0) == "stale"
    assert store.complete(new, {"by": "new"})
    assert store.results("j")[0]["result"] == {"by": "new"}


def test_failures_retry_with_backoff_then_park_with_their_error(store: JobStore) -> None:
    store.create_job("j", "safety", ITEMS[:2])
    bad, good = store.claim("j", 2, lease_s=60)
    assert store.fail(bad, "boom 1", max_attempts=3, backoff_s=0.2) == "retry"
    assert store.complete(good, {"ok": True})
    assert store.claim("j", 5, lease_s=60) == []  # not due until the backoff passes
    time.sleep(0.25)
    again = store.claim("j", 5, lease_s=60)
    assert [c.key for c in again] == [bad.key]
    assert store.fail(again[0], "boom 2", max_attempts=3, backoff_s=0.01) == "retry"  # next delay 0.02 s
    time.sleep(0.05)
    last = store.claim("j", 5, lease_s=60)[0]
    assert store.fail(last, "boom 3", max_attempts=3, backoff_s=0.01) == "parked"
    progress = store.progress("j")
    assert (progress["done"], progress["parked"], progress["finished"]) == (1, 1, True)
    parked = [r for r in store.results("j") if r["status"] == "parked"]
    assert parked == [{"key": bad.key, "status": "parked", "failures": 3, "result": None, "error": "boom 3"}]
    assert to_csv(store.results("j")).splitlines()[0] == "key,status,failures,error,ok"


def test_items_of_a_dead_local_process_are_released_at_once(store: JobStore) -> None:
    store.create_job("j", "safety", ITEMS[:3])
    taken = store.claim("j", 3, lease_s=3600)
    dead = subprocess.Popen(["true"])
    dead.wait()
    # Pretend a process that has exited held two of them (tokens are host:pid:random).
    ghost = f"{HOST}:{dead.pid}:deadbeef"
    assert holder_is_dead(ghost) and not holder_is_dead(taken[0].token)
    _reassign(store, [taken[0], taken[1]], ghost)
    assert store.release_orphans("j") == 2
    assert sorted(c.key for c in store.claim("j", 5, lease_s=60)) == ["k00", "k01"]
    assert store.complete(taken[2], {})


def _reassign(store: JobStore, items: list[Claimed], token: str) -> None:
    """Test-only: rewrite the lease token, as if another process had taken the items."""
    if isinstance(store, SqliteJobStore):
        store._db.executemany("UPDATE items SET token = ? WHERE key = ?", [(token, c.key) for c in items])
    else:
        for c in items:
            store._redis.hset(store._k(c.job_id, "token"), c.key, token)


def test_a_job_belongs_to_its_owner_and_another_owner_cannot_add_to_it(store: JobStore) -> None:
    assert store.create_job("j", "safety", ITEMS[:2], owner="key:a") == {"added": 2, "total": 2}
    assert store.get_job("j")["owner"] == "key:a"
    assert store.create_job("j", "safety", ITEMS[:3], owner="key:a") == {"added": 1, "total": 3}
    with pytest.raises(JobConflict, match="taken") as refused:
        store.create_job("j", "ocr", [("x", {"image": "x"})], owner="key:b")
    assert "safety" not in str(refused.value)  # another owner's job does not say what it holds
    with pytest.raises(JobConflict, match="safety"):
        store.create_job("j", "ocr", [("x", {"image": "x"})], owner="key:a")
    assert store.progress("j")["total"] == 3  # nothing was added by the refused calls
    # A local command (no owner: ``flashvl batch`` on the store itself) may add to it.
    assert store.create_job("j", "safety", [("local", {"image": "y"})]) == {"added": 1, "total": 4}
    assert store.get_job("j")["owner"] == "key:a"


def test_jobs_are_listed_per_owner_newest_first(store: JobStore) -> None:
    for job_id, owner in [("a1", "key:a"), ("b1", "key:b"), ("a2", "key:a"), ("local", None)]:
        store.create_job(job_id, "safety", ITEMS[:1], owner=owner)
        time.sleep(0.01)
    assert [j["job_id"] for j in store.list_jobs("key:a")] == ["a2", "a1"]
    assert [j["job_id"] for j in store.list_jobs("key:b")] == ["b1"]
    assert store.list_jobs("key:nobody") == []
    assert [j["job_id"] for j in store.list_jobs()] == ["local", "a2", "b1", "a1"]
    assert [j["job_id"] for j in store.list_jobs(limit=2)] == ["local", "a2"]
    assert [j["job_id"] for j in store.list_jobs("key:a", limit=1)] == ["a2"]
    assert {j["owner"] for j in store.list_jobs()} == {"key:a", "key:b", None}


OLD_SCHEMA = """
CREATE TABLE jobs (job_id TEXT PRIMARY KEY, task TEXT NOT NULL, options TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE items (
    job_id TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued', token TEXT, lease_until REAL, next_at REAL NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, claims INTEGER NOT NULL DEFAULT 0,
    result TEXT, error TEXT, finished REAL, PRIMARY KEY (job_id, key));
"""


def test_a_sqlite_file_from_before_owners_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO jobs VALUES ('old', 'safety', '{}', 1.0)")
        db.execute("INSERT INTO items (job_id, key, seq, payload) VALUES ('old', 'k', 0, '{\"image\": \"x\"}')")
    store = SqliteJobStore(path)
    assert store.get_job("old") == {"job_id": "old", "task": "safety", "options": {}, "created": 1.0, "owner": None}
    assert store.open_jobs() == ["old"] and store.progress("old")["queued"] == 1
    store.create_job("new", "ocr", ITEMS[:1], owner="key:a")
    assert [j["job_id"] for j in store.list_jobs()] == ["new", "old"]
    assert [j["job_id"] for j in store.list_jobs("key:a")] == ["new"]
    store.close()
    again = SqliteJobStore(path)  # opening a migrated file again changes nothing
    assert again.get_job("new")["owner"] == "key:a"
    again.close()
