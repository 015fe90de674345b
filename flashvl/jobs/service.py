"""The job worker inside the server: resumes unfinished jobs at start, then picks up new ones."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from flashvl.jobs.store import JobStore
from flashvl.jobs.tasks import TaskContext, make_handler
from flashvl.jobs.worker import WorkerConfig, run_job
from flashvl.observability import get_logger

log = get_logger("flashvl.jobs")


class JobService:
    """One background task working through open jobs, oldest first, once the stages are ready."""

    def __init__(
        self,
        store: JobStore,
        context: TaskContext,
        config: WorkerConfig,
        *,
        ready: Callable[[], bool] = lambda: True,
        poll_s: float = 0.5,
    ) -> None:
        self.store = store
        self.context = context  # the guarded stage calls items run through
        self.config = config
        self.ready = ready
        self.poll_s = poll_s
        self.wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await asyncio.to_thread(self.store.close)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.ready():
                await asyncio.sleep(self.poll_s)
                continue
            try:
                jobs = await asyncio.to_thread(self.store.open_jobs)
                for job_id in jobs:
                    job = await asyncio.to_thread(self.store.get_job, job_id)
                    if job is None:
                        continue
                    await run_job(
                        self.store,
                        job_id,
                        make_handler(job["task"], self.context),
                        self.config,
                        stop=self._stop,
                    )
            except Exception:  # keep serving: a broken job must not stop the others
                log.exception("job_worker_error")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_s)
