"""Workers: take items in micro-batches, run the task's handler, record each outcome atomically."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from flashvl.errors import FlashvlError
from flashvl.jobs.store import JobStore
from flashvl.observability import get_logger

Outcome = dict[str, Any] | BaseException
Handler = Callable[[list[dict[str, Any]]], Awaitable[list[Outcome]]]
ProgressCallback = Callable[[dict[str, Any]], None]
log = get_logger("flashvl.jobs")


@dataclass(frozen=True)
class WorkerConfig:
    batch_size: int = 8
    lease_s: float = 300.0
    max_attempts: int = 3
    backoff_s: float = 2.0
    idle_poll_s: float = 0.5

    @classmethod
    def from_settings(cls, settings: Any) -> WorkerConfig:
        return cls(
            settings.jobs_batch_size,
            settings.jobs_lease_s,
            settings.jobs_max_attempts,
            settings.jobs_backoff_s,
        )


def describe_error(error: BaseException) -> str:
    if isinstance(error, FlashvlError):
        return f"{error.code}: {error.message}"
    return f"{type(error).__name__}: {error}"


def is_permanent(error: BaseException) -> bool:
    """A refusal that the same item can never get past (bad image, SSRF refusal, file outside the root):
    a 4xx other than 408/429. Retrying it only wastes attempts; it is parked at once."""
    return isinstance(error, FlashvlError) and 400 <= error.status < 500 and error.status not in (408, 429)


async def process_batch(store: JobStore, job_id: str, handler: Handler, config: WorkerConfig) -> int:
    """Take one micro-batch and finish it; how many items were taken (0: nothing due now)."""
    batch = await asyncio.to_thread(store.claim, job_id, config.batch_size, config.lease_s)
    if not batch:
        return 0
    try:
        outcomes = await handler([item.payload for item in batch])
    except Exception as exc:  # the handler itself broke: every item of the batch failed with it
        outcomes = [exc] * len(batch)
    for item, outcome in zip(batch, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            attempts = 1 if is_permanent(outcome) else config.max_attempts
            state = await asyncio.to_thread(store.fail, item, describe_error(outcome), attempts, config.backoff_s)
            log.info("job_item_failed", job=job_id, key=item.key, outcome=state, error=describe_error(outcome))
        elif not await asyncio.to_thread(store.complete, item, outcome):
            log.warning("job_item_lease_lost", job=job_id, key=item.key)
    return len(batch)


async def run_job(
    store: JobStore,
    job_id: str,
    handler: Handler,
    config: WorkerConfig,
    on_progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Work on ``job_id`` until every item is done or parked (or ``stop`` is set); the final progress."""
    await asyncio.to_thread(store.release_orphans, job_id)
    while stop is None or not stop.is_set():
        taken = await process_batch(store, job_id, handler, config)
        progress = await asyncio.to_thread(store.progress, job_id)
        if on_progress:
            on_progress(progress)
        if progress["finished"]:
            return progress
        if not taken:  # waiting on a retry's backoff, or on items another worker holds
            await asyncio.to_thread(store.release_orphans, job_id)
            await asyncio.sleep(config.idle_poll_s)
    return await asyncio.to_thread(store.progress, job_id)
