"""A generic dynamic batcher: one request per call outside, batches inside.

- ``submit(payload)`` prepares the payload on a thread pool (off the event loop),
  then queues it. A collector task takes the first waiting job and, only while more
  are on their way (being prepared, or the last batch's clients not back yet), waits
  at most ``max_wait_s`` for them (up to ``max_batch``); a lone request starts at
  once. It hands the batch to
  ``run_batch`` on ONE worker thread (the model is not re-entrant). While a batch
  runs, new jobs queue up; the next batch takes them at once.
- Each job has its own asyncio queue: ``run_batch`` calls ``job.emit(item)`` from the
  worker thread and the item reaches that job's consumer only, so a row's tokens
  can never reach another request.
- Closing the consumer's iterator sets ``job.cancelled``: a queued job is dropped
  before it runs, a running one is stopped by ``run_batch`` at its next step.

Nothing here knows about models: ``prepare`` and ``run_batch`` are given.
"""

from __future__ import annotations

import asyncio
import queue as thread_queue
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

P = TypeVar("P")  # what a caller submits
R = TypeVar("R")  # what ``prepare`` makes of it

# While requests are still being preprocessed, or the last batch's clients have not all come back,
# wait up to this many times max_wait_s for them, polling in small steps. Otherwise the collector never
# waits longer than max_wait_s.
PREPARING_GRACE = 5
PREPARING_STEP_S = 0.003
_END = object()


@dataclass
class Job(Generic[R]):
    """One request inside the batcher."""

    prepared: R
    loop: asyncio.AbstractEventLoop
    submitted_at: float = 0.0  # loop time when submit() was called
    live: bool = True  # the consumer reads pieces as they come; False: only the end result counts
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: Any) -> None:
        """Hand ``item`` to this job's consumer (thread-safe; dropped once cancelled)."""
        if self.cancelled.is_set():
            return
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening
            self.cancelled.set()

    def end(self) -> None:
        """This job is done (its consumer returns now, while the batch may go on; thread-safe)."""
        self.emit(_END)


class DynamicBatcher(Generic[P, R]):
    def __init__(
        self,
        prepare: Callable[[P], R],
        run_batch: Callable[[list[Job[R]]], None],
        *,
        max_batch: int = 8,
        max_wait_s: float = 0.01,
        prepare_threads: int = 2,
        prepare_initializer: Callable[[], None] | None = None,
        worker_initializer: Callable[[], None] | None = None,
        name: str = "batcher",
        continuous: bool = False,
    ) -> None:
        self._prepare = prepare
        self._run_batch = run_batch
        # Continuous: while a batch runs, jobs that arrive are handed to it (``run_batch(jobs, join)``:
        # ``join(n)`` returns up to n of them, from the worker thread, between decode steps).
        self.continuous = continuous
        self._joining: thread_queue.SimpleQueue[Job[R]] = thread_queue.SimpleQueue()
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._preparing = 0  # payloads submitted but still in preprocessing
        self.name = name
        self._prepare_pool = ThreadPoolExecutor(
            prepare_threads, thread_name_prefix=f"{name}-prep", initializer=prepare_initializer
        )
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-gen", initializer=worker_initializer)
        self._queue: asyncio.Queue[Job[R]] | None = None
        self._collector: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[int], None]] = []
        self.batch_sizes: list[int] = []  # every batch run, in order (bounded below)

    def add_listener(self, callback: Callable[[int], None]) -> None:
        """Called with each batch's size (e.g. a Prometheus histogram's ``observe``)."""
        self._listeners.append(callback)

    def _ensure_started(self) -> asyncio.Queue[Job[R]]:
        if self._queue is None or self._collector is None or self._collector.done():
            self._queue = asyncio.Queue()
            self._collector = asyncio.get_running_loop().create_task(self._collect(self._queue))
        return self._queue

    async def submit(self, payload: P, *, live: bool = True) -> AsyncGenerator[Any, None]:
        """Yield what ``run_batch`` emits for this payload (an emitted exception is raised).

        ``live=False`` tells ``run_batch`` (``job.live``) that only the end result is wanted, so it
        can skip per-step pieces: each one would wake the event loop while the model computes."""
        loop = asyncio.get_running_loop()
        submitted_at = loop.time()
        self._preparing += 1
        try:
            prepared = await loop.run_in_executor(self._prepare_pool, self._prepare, payload)
        finally:
            self._preparing -= 1
        job: Job[R] = Job(prepared, loop, submitted_at, live=live)
        queue = self._ensure_started()
        queue.put_nowait(job)
        try:
            while (item := await job.queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled.set()

    async def _collect(self, queue: asyncio.Queue[Job[R]]) -> None:
        loop = asyncio.get_running_loop()
        # The last batch: its size, and when it started. Its clients' next requests are submitted after
        # that start (usually right after their answer ends), so they are the ones worth a short wait.
        returning, last_start = 0, 0.0
        while True:
            batch = [await queue.get()]
            start = loop.time()
            deadline = start + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                came_back = sum(1 for job in batch if job.submitted_at >= last_start)
                expecting = self._preparing > 0 or came_back < returning
                if not expecting:
                    break  # nobody else is on the way: waiting would only add latency
                remaining = deadline - loop.time()
                if remaining <= 0 and expecting and loop.time() < start + PREPARING_GRACE * self.max_wait_s:
                    # The last batch's clients usually send their next request right away; wait a few ms
                    # more for them (bounded) instead of starting a half batch and leaving them the next.
                    remaining = PREPARING_STEP_S
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    continue  # re-check: the deadline has passed, but the grace may still apply
            batch = [job for job in batch if not job.cancelled.is_set()]
            if not batch:
                continue
            self.batch_sizes.append(len(batch))
            del self.batch_sizes[:-10_000]
            for listener in self._listeners:
                listener(len(batch))
            returning, last_start = len(batch), loop.time()
            try:
                running = loop.run_in_executor(self._worker, self._guarded_run, batch)
            except RuntimeError:  # the executor was shut down (close): stop collecting
                for job in batch:
                    job.emit(_END)
                return
            if self.continuous:
                await self._feed(queue, running)
            await running

    async def _feed(self, queue: asyncio.Queue[Job[R]], running: asyncio.Future[None]) -> None:
        """While a continuous batch runs, hand it the jobs that arrive; what it did not take goes back
        to the head of the queue."""
        while not running.done():
            getter: asyncio.Future[Any] = asyncio.ensure_future(queue.get())
            await asyncio.wait([running, getter], return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                self._joining.put(getter.result())
            else:
                getter.cancel()
        left: list[Job[R]] = []
        while True:
            try:
                left.append(self._joining.get_nowait())
            except thread_queue.Empty:
                break
        while not queue.empty():
            left.append(queue.get_nowait())
        for job in left:
            queue.put_nowait(job)

    def _join(self, joined: list[Job[R]], most: int) -> list[Job[R]]:
        """Up to ``most`` jobs that arrived while the batch runs (worker thread; cancelled ones skipped)."""
        taken: list[Job[R]] = []
        while len(taken) < most:
            try:
                job = self._joining.get_nowait()
            except thread_queue.Empty:
                break
            if job.cancelled.is_set():
                job.emit(_END)
                continue
            taken.append(job)
        joined.extend(taken)
        return taken

    def _guarded_run(self, batch: list[Job[R]]) -> None:
        joined: list[Job[R]] = []  # continuous: the jobs that joined the running batch
        try:
            if self.continuous:
                self._run_batch(batch, lambda most: self._join(joined, most))  # type: ignore[call-arg]
            else:
                self._run_batch(batch)
        except BaseException as exc:  # every job of a failed batch gets the error, none hangs
            for job in batch + joined:
                job.emit(exc)
        finally:
            for job in batch + joined:
                job.emit(_END)

    async def close(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait().emit(_END)
        self._worker.shutdown(wait=False, cancel_futures=True)
        self._prepare_pool.shutdown(wait=False, cancel_futures=True)
