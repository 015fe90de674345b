"""The model queue shared in Redis: one bounded FIFO for every process on it (ingress replicas,
several ``flashvl serve``), with the ``Admission`` interface of the per-process ``ModelGate``.

Keys (under ``prefix``, default ``flashvl:model-queue``; give each app sharing a Redis its own):

- ``:holders``: zset, a slot holder's random token -> the end of its lease (Redis server time, ms);
- ``:waiting``: zset, a waiter's token -> its arrival number (``:seq``, INCR): the FIFO;
- ``:waiting-lease``: zset, a waiter's token -> the end of its lease.

Every state change is one Lua script, atomic on the server, and every time is the server's own
(``TIME``), so machines' clocks do not matter. A holder renews its lease every third of
``lease_s`` while it holds the slot; a process that dies holding one (or waiting) stops renewing
and its slot (or place) is taken back once the lease runs out. A caller is granted a slot when
fewer than ``max_concurrent`` are held and nobody waits, or when it is among the first
``max_concurrent - held`` waiters: first come, first served across processes. A release hands
the slot straight to the oldest waiter and publishes its token on ``:wake`` (its process wakes
that waiter alone); waiters also poll (backoff up to ``poll_s``), since a lease that runs out
publishes nothing. The limits are each process's own settings, passed on each
call: no per-process value is kept in a shared key.

Redis unreachable: the request goes through this process's own ``ModelGate`` (the same limits,
counted in this process alone), and so do the requests of the next ``DOWN_S`` seconds (no request
waits on a dead Redis twice in a row); a warning is logged; nothing fails because Redis did.
Redis Cluster: put the prefix in braces (``{flashvl:model-queue}``) so the keys share a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio as redis_async

from flashvl.observability import get_logger
from flashvl.pipeline.admission import ModelGate, server_busy

log = get_logger("flashvl.admission")
DOWN_S = 5.0  # once Redis did not answer, the local gate is used this long before Redis is tried again

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# Take back expired holders' slots and expired waiters' places. KEYS: holders, waiting, waiting-lease.
_PURGE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, w in ipairs(gone) do redis.call('ZREM', KEYS[2], w) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
"""
# KEYS: holders, waiting, waiting-lease, seq. ARGV: token, max_concurrent, max_queue, hold lease ms,
# wait lease ms. -> {state (1 granted, 0 waiting, -1 queue full), waiting, held}
_ACQUIRE = (
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    + _NOW
    + _PURGE
    + """
local token = ARGV[1]
local hold_until = now + tonumber(ARGV[4])
local held = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], token) then
  redis.call('ZADD', KEYS[1], hold_until, token)
  return {1, redis.call('ZCARD', KEYS[2]), held}
end
local free = tonumber(ARGV[2]) - held
local rank = redis.call('ZRANK', KEYS[2], token)
if not rank then
  local queued = redis.call('ZCARD', KEYS[2])
  if free > 0 and queued == 0 then
    redis.call('ZADD', KEYS[1], hold_until, token)
    return {1, 0, held + 1}
  end
  if queued >= tonumber(ARGV[3]) then return {-1, queued, held} end
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), token)
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), token)
  return {0, queued + 1, held}
end
if rank < free then
  redis.call('ZREM', KEYS[2], token)
  redis.call('ZREM', KEYS[3], token)
  redis.call('ZADD', KEYS[1], hold_until, token)
  return {1, redis.call('ZCARD', KEYS[2]), held + 1}
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), token)
return {0, redis.call('ZCARD', KEYS[2]), held}
"""
)
# Give a slot back, or leave the queue (whichever the token holds); hand each free slot to the
# oldest waiter at once (it holds it until its place would have run out, then its own lease) and
# publish that waiter's token. KEYS: holders, waiting, waiting-lease. ARGV: token, wake channel,
# max_concurrent.
_RELEASE = (
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    + _NOW
    + _PURGE
    + """
local n = redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if n == 0 then return 0 end
local free = tonumber(ARGV[3]) - redis.call('ZCARD', KEYS[1])
while free > 0 do
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #head == 0 then break end
  local waiter = head[1]
  local until_ = tonumber(redis.call('ZSCORE', KEYS[3], waiter) or (now + 5000))
  redis.call('ZREM', KEYS[2], waiter)
  redis.call('ZREM', KEYS[3], waiter)
  redis.call('ZADD', KEYS[1], until_, waiter)
  redis.call('PUBLISH', ARGV[2], waiter)
  free = free - 1
end
return n
"""
)
# Extend a held slot's lease; 0 when the slot was already taken back. KEYS: holders. ARGV: token, ms.
_RENEW = (
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    + _NOW
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)
# Live waiters and holders (read only). KEYS: holders, waiting-lease.
_COUNTS = (
    _NOW
    + """
return {redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf'), redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')}
"""
)


class _Unreachable(Exception):
    """Redis did not answer: this request uses the process's own gate."""


class RedisModelGate:
    """A bounded FIFO in front of the model stages, shared by every process on one Redis."""

    def __init__(
        self,
        url: str,
        max_concurrent: int,
        max_queue: int,
        queue_timeout_s: float,
        *,
        prefix: str = "flashvl:model-queue",
        lease_s: float = 15.0,
        poll_s: float = 0.25,
    ) -> None:
        self.url = url
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.prefix = prefix
        self.lease_s = lease_s
        self.poll_s = poll_s
        self._keys = [f"{prefix}:holders", f"{prefix}:waiting", f"{prefix}:waiting-lease", f"{prefix}:seq"]
        self._channel = f"{prefix}:wake"
        self._local = ModelGate(max_concurrent, max_queue, queue_timeout_s)  # while Redis is unreachable
        self._waiting = 0
        self._holding = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._redis: redis_async.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._listener: asyncio.Task[None] | None = None
        self._wakers: dict[str, asyncio.Event] = {}  # a waiting token -> set when a slot is handed to it
        self._sync: redis.Redis | None = None
        self._counts_script: Any = None
        self._warned_at = 0.0
        self._down_until = 0.0  # after Redis failed, requests use the local gate until then

    # ------------------------------------------------------------ the Admission interface

    @property
    def queued(self) -> int:
        return self._waiting + self._local.queued

    @property
    def active(self) -> int:
        return self._holding + self._local.active

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        token = uuid.uuid4().hex
        shared = time.monotonic() >= self._down_until  # Redis failed just now: do not wait on it again
        if shared:
            try:
                await self._acquire(token)
            except _Unreachable:
                shared = False
        if not shared:
            async with self._local.slot():
                yield
            return
        self._holding += 1
        renewer = asyncio.create_task(self._renew(token), name="flashvl-model-slot-lease")
        try:
            yield
        finally:
            self._holding -= 1
            renewer.cancel()
            await self._leave(token)

    # ------------------------------------------------------------ shared counts (metrics)

    def shared_counts(self) -> tuple[int, int] | None:
        """(waiting, held) across every process on this queue, or None when Redis does not answer.
        Synchronous (a Prometheus scrape), with a short timeout; not tried while Redis is known down."""
        if time.monotonic() < self._down_until:
            return None
        try:
            if self._sync is None:
                self._sync = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
                self._counts_script = self._sync.register_script(_COUNTS)
            waiting, held = self._counts_script(keys=[self._keys[0], self._keys[2]])
            return int(waiting), int(held)
        except (redis.RedisError, OSError):
            self._down_until = time.monotonic() + DOWN_S
            return None

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
            self._listener = None
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None
        if self._sync is not None:
            with contextlib.suppress(Exception):
                self._sync.close()
            self._sync = None

    # ------------------------------------------------------------ internals

    def _client(self) -> redis_async.Redis:
        """One client per event loop (an asyncio connection belongs to the loop that opened it)."""
        loop = asyncio.get_running_loop()
        if self._redis is None or self._loop is not loop:
            self._loop = loop
            self._redis = redis_async.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
            self._scripts = {
                name: self._redis.register_script(source)
                for name, source in (("acquire", _ACQUIRE), ("release", _RELEASE), ("renew", _RENEW))
            }
            self._listener = None
            self._wakers = {}
        return self._redis

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        self._client()
        try:
            return await self._scripts[name](keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            now = time.monotonic()
            self._down_until = now + DOWN_S
            if now - self._warned_at > 30:  # at most one line per 30 s while Redis is away
                self._warned_at = now
                log.warning("model_queue_redis_unreachable", prefix=self.prefix, error=f"{type(exc).__name__}: {exc}")
            raise _Unreachable from exc

    async def _try(self, token: str) -> int:
        state, _, _ = await self._script(
            "acquire",
            self._keys,
            [
                token,
                self.max_concurrent,
                self.max_queue,
                int(self.lease_s * 1000),
                int(max(5.0, self.poll_s * 20) * 1000),  # a waiter's place: many polls long
            ],
        )
        return int(state)

    async def _acquire(self, token: str) -> None:
        """Hold a slot for ``token``, or raise 503 (queue full, wait too long) or ``_Unreachable``."""
        state = await self._try(token)
        if state == 1:
            return
        if state == -1:
            raise server_busy(
                f"The model queue is full ({self.max_queue} waiting); retry shortly.", self.queue_timeout_s
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.queue_timeout_s
        delay = 0.005
        self._waiting += 1
        wake = self._wakers[token] = asyncio.Event()
        try:
            self._listen()
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise server_busy(
                        f"Waited {self.queue_timeout_s:g} s for a model slot; retry shortly.", self.queue_timeout_s
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(delay, remaining))
                wake.clear()
                delay = min(delay * 2, self.poll_s)
                state = await self._try(token)
                if state == 1:
                    return
                if state == -1:  # our place ran out (this process stalled) and the queue is full now
                    raise server_busy(
                        f"The model queue is full ({self.max_queue} waiting); retry shortly.", self.queue_timeout_s
                    )
        except BaseException:  # timed out, cancelled, or Redis went away: give the place (or slot) back
            await self._leave(token)
            raise
        finally:
            self._waiting -= 1
            self._wakers.pop(token, None)

    async def _leave(self, token: str) -> None:
        """Release a slot or leave the queue; shielded, so a cancelled caller still gives it back.
        If Redis does not answer, the lease gives it back."""
        release = asyncio.ensure_future(
            self._script("release", self._keys[:3], [token, self._channel, self.max_concurrent])
        )
        with contextlib.suppress(BaseException):
            await asyncio.shield(release)
        if not release.done():
            release.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def _renew(self, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                renewed = await self._script("renew", self._keys[:1], [token, int(self.lease_s * 1000)])
            except _Unreachable:
                continue
            if not renewed:
                log.warning("model_queue_lease_lost", prefix=self.prefix, lease_s=self.lease_s)
                return

    def _listen(self) -> None:
        """Start the wake-up subscriber of this loop (once)."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._subscribe(self._client()), name="flashvl-model-queue-wake")

    async def _subscribe(self, client: redis_async.Redis) -> None:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:  # a slot was handed to this token
                    data = message.get("data")
                    wake = self._wakers.get(data.decode() if isinstance(data, bytes) else str(data))
                    if wake is not None:
                        wake.set()
        except (redis.RedisError, OSError):
            pass  # the waiters still poll; the next wait starts a new subscriber
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


__all__ = ["RedisModelGate"]
