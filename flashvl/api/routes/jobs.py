"""Batch jobs over HTTP: submit a JSONL of requests, watch progress, export results (JSONL or CSV).

The queue is the configured job store (SQLite file by default); a worker inside the server works
through it and resumes unfinished jobs when the server starts again (after ``kill -9`` too).

Every route needs the ``batch`` scope. A job belongs to the principal that submitted it: others
get 404 ``job_not_found`` for it (as for an id that does not exist, so ids do not leak), except
principals with ``admin``, who see every job. Store calls run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse

from flashvl.api.auth import Caller, require_scope
from flashvl.api.deps import State
from flashvl.errors import FlashvlError
from flashvl.jobs.export import to_csv, to_jsonl
from flashvl.jobs.service import JobService
from flashvl.jobs.store import JobConflict
from flashvl.jobs.tasks import TASKS
from flashvl.security.auth import Principal

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_scope("batch"))])
MAX_ITEMS = 100_000


def _service(request: Request) -> JobService:
    service = request.app.state.flashvl.runtime.jobs  # opened by the app's lifespan (flashvl/runtime.py)
    if service is None:
        raise FlashvlError("jobs_unavailable", "The job queue is not open.", 503, retry_after=5)
    return service


def parse_items(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """JSONL, one ``{"image": REF, "key"?: str}`` per line; the key defaults to the line's sha256."""
    items, seen = [], set()
    try:
        text = body.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise FlashvlError("invalid_request", f"the body is not UTF-8 (byte {exc.start})", 422) from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FlashvlError("invalid_request", f"line {number}: not JSON ({exc.msg})", 422) from None
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise FlashvlError("invalid_request", f"line {number}: needs an 'image' string", 422)
        key = str(entry.pop("key", "") or hashlib.sha256(line.strip().encode()).hexdigest()[:24])
        if key in seen:
            raise FlashvlError("invalid_request", f"line {number}: key {key!r} repeats an earlier line", 422)
        seen.add(key)
        items.append((key, {"image": entry["image"]}))
    if not items:
        raise FlashvlError("invalid_request", 'no items: send JSONL, one {"image": ...} per line', 422)
    if len(items) > MAX_ITEMS:
        raise FlashvlError("invalid_request", f"{len(items)} items; at most {MAX_ITEMS} per submission", 422)
    return items


def _visible_to(caller: Principal) -> str | None:
    """Whose jobs the caller sees: its own, or everyone's (None) with ``admin``."""
    return None if caller.has("admin") else caller.name


async def _job(service: JobService, job_id: str, caller: Principal) -> dict[str, Any]:
    """The job, if it exists and the caller may see it; else 404 (never 403: ids do not leak)."""
    job = await asyncio.to_thread(service.store.get_job, job_id)
    owner = _visible_to(caller)
    if job is None or (owner is not None and job.get("owner") != owner):
        raise FlashvlError("job_not_found", f"no job {job_id}", 404)
    return job


@router.post("/jobs", status_code=202)
async def submit(
    request: Request,
    state: State,
    caller: Caller,
    task: Literal["moderate", "safety", "ocr"] = "moderate",
    job_id: str | None = Query(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"),
) -> dict[str, Any]:
    """Body: JSONL (``{"image": URL|data:|file://, "key"?}`` per line). Same ``job_id`` and keys: nothing is
    added twice. The job belongs to the caller; a ``job_id`` another principal holds is a 409. Returns the
    job id and counts."""
    if task not in TASKS:
        raise FlashvlError("invalid_request", f"task must be one of {TASKS}", 422)
    items = await asyncio.to_thread(parse_items, await request.body())
    service = _service(request)
    job_id = job_id or f"{task}-{uuid.uuid4().hex[:16]}"
    try:
        counts = await asyncio.to_thread(
            service.store.create_job, job_id, task, items, {"submitted_by": "api"}, caller.name
        )
    except JobConflict as exc:
        raise FlashvlError("job_conflict", str(exc), 409) from None
    service.wake.set()
    return {
        "job_id": job_id,
        "task": task,
        **counts,
        "progress": f"/jobs/{job_id}",
        "results": f"/jobs/{job_id}/results",
    }


@router.get("/jobs")
async def list_jobs(
    request: Request, caller: Caller, limit: int = Query(50, ge=1, le=500, description="At most this many.")
) -> dict[str, Any]:
    """The caller's jobs, newest first, each with its progress (every principal's jobs with ``admin``)."""
    service = _service(request)

    def collect() -> list[dict[str, Any]]:
        jobs = service.store.list_jobs(_visible_to(caller), limit)
        return [_summary(job) | service.store.progress(job["job_id"]) for job in jobs]

    jobs = await asyncio.to_thread(collect)
    return {"jobs": jobs, "count": len(jobs)}


@router.get("/jobs/{job_id}")
async def progress(job_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    """Counts of done, parked, queued and taken items; ``finished`` once nothing is left to do."""
    service = _service(request)
    job = await _job(service, job_id, caller)
    return _summary(job) | await asyncio.to_thread(service.store.progress, job_id)


@router.get("/jobs/{job_id}/results", response_class=PlainTextResponse)
async def results(
    job_id: str, request: Request, caller: Caller, format: Literal["jsonl", "csv"] = "jsonl"
) -> PlainTextResponse:
    """Finished items so far (done with their result, parked with their error), as JSONL or CSV."""
    service = _service(request)
    await _job(service, job_id, caller)
    rows = await asyncio.to_thread(service.store.results, job_id)
    if format == "csv":
        return PlainTextResponse(await asyncio.to_thread(to_csv, rows), media_type="text/csv")
    return PlainTextResponse(await asyncio.to_thread(to_jsonl, rows), media_type="application/x-ndjson")


def _summary(job: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": job["job_id"], "task": job["task"], "owner": job.get("owner"), "created": job.get("created")}
