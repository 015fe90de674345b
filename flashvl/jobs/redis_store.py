"""The job store on Redis: each state change is one Lua script (atomic on the server).

Keys per job (prefix ``flashvl:job:<id>:``): ``meta`` (hash: task, options, created, owner),
``payload`` (key -> JSON), ``seq`` (key -> order), ``ready`` (zset, score = due time), ``taken``
(zset, score = lease end), ``token``, ``failures``, ``errors``, ``done`` (key -> result JSON),
``parked`` (key -> error). Durability is Redis's own (AOF ``appendfsync everysec`` or stricter is
recommended for a queue).

Across jobs: ``flashvl:jobs`` (set of every job id) and ``flashvl:jobs:owner:<principal>`` (zset of
that principal's job ids, score = creation time) for listing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import redis

from flashvl.jobs.store import MAX_BACKOFF_S, Claimed, check_claim, holder_is_dead, new_token

JOBS = "flashvl:jobs"
OWNER_JOBS = "flashvl:jobs:owner:"

# Create the job's meta if new, else return what it holds: one step, so two callers racing for one
# job id never both own it. -> {created (1|0), task, owner ('' for none), created time}
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'task', ARGV[1], 'options', ARGV[2], 'created', ARGV[3])
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'owner', ARGV[4]) end
  return {1, ARGV[1], ARGV[4], ARGV[3]}
end
local held = redis.call('HMGET', KEYS[1], 'task', 'owner', 'created')
return {0, held[1] or '', held[2] or '', held[3] or '0'}
"""

_ADD = """
local added = 0
local base = redis.call('HLEN', KEYS[1])
for i = 1, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], base + added)
    redis.call('ZADD', KEYS[3], 0, ARGV[i])
    added = added + 1
  end
end
return added
"""
_CLAIM = """
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, key in ipairs(expired) do
  redis.call('ZREM', KEYS[2], key)
  redis.call('ZADD', KEYS[1], 0, key)
end
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, key in ipairs(keys) do
  redis.call('ZREM', KEYS[1], key)
  redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), key)
  redis.call('HSET', KEYS[3], key, ARGV[4])
  table.insert(out, key)
  table.insert(out, redis.call('HGET', KEYS[4], key))
end
return out
"""
_COMPLETE = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] or not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1
"""
_FAIL = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] or not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 'stale'
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
local failures = redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
if failures >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
  return 'parked'
end
local delay = tonumber(ARGV[6]) * 2 ^ (failures - 1)
if delay > tonumber(ARGV[7]) then delay = tonumber(ARGV[7]) end
redis.call('ZADD', KEYS[6], tonumber(ARGV[5]) + delay, ARGV[1])
return 'retry'
"""
_RELEASE = """
local count = 0
for i = 1, #ARGV do
  local keys = redis.call('HKEYS', KEYS[2])
  for _, key in ipairs(keys) do
    if redis.call('HGET', KEYS[2], key) == ARGV[i] then
      redis.call('HDEL', KEYS[2], key)
      redis.call('ZREM', KEYS[1], key)
      redis.call('ZADD', KEYS[3], 0, key)
      count = count + 1
    end
  end
end
return count
"""


class RedisJobStore:
    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._create = self._redis.register_script(_CREATE)
        self._add = self._redis.register_script(_ADD)
        self._claim = self._redis.register_script(_CLAIM)
        self._complete = self._redis.register_script(_COMPLETE)
        self._fail = self._redis.register_script(_FAIL)
        self._release = self._redis.register_script(_RELEASE)

    @staticmethod
    def _k(job_id: str, name: str) -> str:
        return f"flashvl:job:{job_id}:{name}"

    def create_job(
        self,
        job_id: str,
        task: str,
        items: list[tuple[str, dict[str, Any]]],
        options: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> dict[str, int]:
        k = self._k
        _, held_task, held_owner, created = self._create(
            keys=[k(job_id, "meta")], args=[task, json.dumps(options or {}), str(time.time()), owner or ""]
        )
        check_claim(job_id, task, owner, held_task, held_owner or None)
        self._redis.sadd(JOBS, job_id)
        if held_owner:
            self._redis.zadd(OWNER_JOBS + held_owner, {job_id: float(created)})
        added = 0
        for start in range(0, len(items), 500):
            args: list[str] = []
            for key, payload in items[start : start + 500]:
                args += [key, json.dumps(payload)]
            added += int(self._add(keys=[k(job_id, "payload"), k(job_id, "seq"), k(job_id, "ready")], args=args))
        return {"added": added, "total": int(self._redis.hlen(k(job_id, "payload")))}

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        return _job(job_id, self._redis.hgetall(self._k(job_id, "meta")))

    def list_jobs(self, owner: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if owner is not None:
            ids = [str(j) for j in self._redis.zrevrange(OWNER_JOBS + owner, 0, limit - 1)]
        else:
            ids = [str(j) for j in self._redis.smembers(JOBS)]
        pipe = self._redis.pipeline()
        for job_id in ids:
            pipe.hgetall(self._k(job_id, "meta"))
        jobs = [job for job in map(_job, ids, pipe.execute()) if job is not None]
        return sorted(jobs, key=lambda job: (-job["created"], job["job_id"]))[:limit]

    def open_jobs(self) -> list[str]:
        return sorted(str(j) for j in self._redis.smembers(JOBS) if not self.progress(str(j))["finished"])

    def claim(self, job_id: str, limit: int, lease_s: float) -> list[Claimed]:
        now = time.time()
        token = new_token()
        flat = self._claim(
            keys=[
                self._k(job_id, "ready"),
                self._k(job_id, "taken"),
                self._k(job_id, "token"),
                self._k(job_id, "payload"),
            ],
            args=[now, limit, now + lease_s, token],
        )
        return [Claimed(job_id, flat[i], json.loads(flat[i + 1]), token) for i in range(0, len(flat), 2)]

    def complete(self, item: Claimed, result: dict[str, Any]) -> bool:
        k = self._k
        return bool(
            self._complete(
                keys=[k(item.job_id, "taken"), k(item.job_id, "token"), k(item.job_id, "done")],
                args=[item.key, item.token, json.dumps(result, ensure_ascii=False)],
            )
        )

    def fail(self, item: Claimed, error: str, max_attempts: int, backoff_s: float) -> str:
        k, j = self._k, item.job_id
        return str(
            self._fail(
                keys=[
                    k(j, "taken"),
                    k(j, "token"),
                    k(j, "failures"),
                    k(j, "errors"),
                    k(j, "parked"),
                    k(j, "ready"),
                ],
                args=[item.key, item.token, error, max_attempts, time.time(), backoff_s, MAX_BACKOFF_S],
            )
        )

    def release_orphans(self, job_id: str) -> int:
        tokens = {str(t) for t in self._redis.hvals(self._k(job_id, "token"))}
        dead = [t for t in tokens if holder_is_dead(t)]
        if not dead:
            return 0
        return int(
            self._release(
                keys=[self._k(job_id, "taken"), self._k(job_id, "token"), self._k(job_id, "ready")], args=dead
            )
        )

    def progress(self, job_id: str) -> dict[str, Any]:
        k = self._k
        pipe = self._redis.pipeline()
        for name in ("payload", "done", "parked"):
            pipe.hlen(k(job_id, name))
        pipe.zcard(k(job_id, "ready"))
        pipe.zcard(k(job_id, "taken"))
        total, done, parked, queued, taken = pipe.execute()
        return {
            "total": total,
            "done": done,
            "parked": parked,
            "queued": queued,
            "taken": taken,
            "finished": total > 0 and queued + taken == 0,
        }

    def results(self, job_id: str) -> list[dict[str, Any]]:
        k = self._k
        done = self._redis.hgetall(k(job_id, "done"))
        parked = self._redis.hgetall(k(job_id, "parked"))
        failures = self._redis.hgetall(k(job_id, "failures"))
        order = self._redis.hgetall(k(job_id, "seq"))
        rows = [
            {
                "key": key,
                "status": "done",
                "failures": int(failures.get(key, 0)),
                "result": json.loads(value),
                "error": None,
            }
            for key, value in done.items()
        ]
        rows += [
            {
                "key": key,
                "status": "parked",
                "failures": int(failures.get(key, 0)),
                "result": None,
                "error": value,
            }
            for key, value in parked.items()
        ]
        return sorted(rows, key=lambda row: int(order.get(row["key"], 0)))

    def close(self) -> None:
        self._redis.close()


def _job(job_id: str, meta: Mapping[Any, Any]) -> dict[str, Any] | None:
    if not meta or "task" not in meta:
        return None
    return {
        "job_id": job_id,
        "task": meta["task"],
        "options": json.loads(meta.get("options", "{}")),
        "created": float(meta.get("created", 0)),
        "owner": meta.get("owner") or None,
    }
