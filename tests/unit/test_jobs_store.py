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
from flashvl.jobs.store import HOST, Claimed, JobStore, holder_is_dead

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
