"""The job queue's one interface, and what both backends share.

Guarantees (both backends):
- idempotent by item key: adding a key a job already holds changes nothing;
- an item is *taken* under a lease token; only the holder of the current token can finish it,
  and finishing is one atomic step (state + result), so an item ends ``done`` exactly once even
  when a worker dies (kill -9) between computing and recording;
- a lease that outlives its worker returns the item to the queue (after ``lease_s``, or at once
  when a worker on the same host sees the holder's process is gone);
- a failing item is retried after ``backoff_s * 2**(failures-1)`` (capped), then parked with its
  error after ``max_attempts`` failures, while the other items go on;
- a job remembers the principal that created it (``owner``, None for local commands): adding to
  a job id that another owner (or another task) holds is refused atomically (``JobConflict``).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

MAX_BACKOFF_S = 300.0
HOST = socket.gethostname()


@dataclass(frozen=True)
class Claimed:
    job_id: str
    key: str
    payload: dict[str, Any]
    token: str


class JobConflict(ValueError):
    """The job id is taken: by another task, or by another owner."""


def new_token() -> str:
    """``host:pid:random``: lets a worker on the same host tell that the holder's process is gone."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def holder_is_dead(token: str) -> bool:
    """True only when the token's holder ran on this host and its process no longer exists."""
    host, _, rest = token.partition(":")
    pid_text = rest.partition(":")[0]
    if host != HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def check_claim(job_id: str, task: str, owner: str | None, held_task: str, held_owner: str | None) -> None:
    """Raise JobConflict unless ``owner`` may add ``task`` items to a job held as ``held_task`` by ``held_owner``.

    Another owner's job says only that the id is taken (not its task: ids do not leak what they hold).
    """
    if owner is not None and held_owner != owner:
        raise JobConflict(f"job id {job_id!r} is taken; choose another, or leave job_id out")
    if held_task != task:
        raise JobConflict(f"job {job_id} exists with task {held_task!r}")


def retry_delay(backoff_s: float, failures: int) -> float:
    return min(MAX_BACKOFF_S, backoff_s * 2 ** max(0, failures - 1))


class JobStore(Protocol):
    """A durable queue of jobs, each a set of items keyed by a caller's key."""

    def create_job(
        self,
        job_id: str,
        task: str,
        items: list[tuple[str, dict[str, Any]]],
        options: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> dict[str, int]:
        """Create the job if new and add the items whose keys it does not hold yet: ``{"added", "total"}``.

        Raises ``JobConflict`` (adding nothing) when the job exists with another task, or, when
        ``owner`` is given, with another owner.
        """
        ...

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        """``{"job_id", "task", "options", "created", "owner"}`` or None."""
        ...

    def list_jobs(self, owner: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Jobs as ``get_job`` returns them, newest first; only ``owner``'s when given."""
        ...

    def open_jobs(self) -> list[str]:
        """Jobs with items still queued or taken."""
        ...

    def claim(self, job_id: str, limit: int, lease_s: float) -> list[Claimed]:
        """Take up to ``limit`` items that are due (or whose lease ran out) under a fresh token."""
        ...

    def complete(self, item: Claimed, result: dict[str, Any]) -> bool:
        """Record the result if ``item.token`` still holds the lease; False if someone else owns it now."""
        ...

    def fail(self, item: Claimed, error: str, max_attempts: int, backoff_s: float) -> str:
        """``"retry"`` (queued again after backoff), ``"parked"``, or ``"stale"`` (lease lost)."""
        ...

    def release_orphans(self, job_id: str) -> int:
        """Return items whose holder process is dead (same host) to the queue; how many."""
        ...

    def progress(self, job_id: str) -> dict[str, Any]:
        """``{"total", "done", "parked", "queued", "taken", "finished"}``."""
        ...

    def results(self, job_id: str) -> list[dict[str, Any]]:
        """Finished items: ``{"key", "status": "done"|"parked", "failures", "result", "error"}``."""
        ...

    def close(self) -> None: ...
