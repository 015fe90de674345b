"""Batch jobs over HTTP: submit a JSONL of requests, watch progress, export results (JSONL or CSV).

The queue is the configured job store (SQLite file by default); a worker inside the server works
through it and resumes unfinished jobs when the server starts again (after ``kill -9`` too).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import PlainTextResponse

from flashvl.api.deps import State
from flashvl.errors import FlashvlError
from flashvl.jobs.export import to_csv, to_jsonl
from flashvl.jobs.service import JobService
from flashvl.jobs.store import store_from_settings
from flashvl.jobs.tasks import TASKS
from flashvl.jobs.worker import WorkerConfig

router = APIRouter(tags=["jobs"])
MAX_ITEMS = 100_000


async def start_jobs(app: FastAPI, state: Any) -> None:
    """Open the store and start the in-server worker (called from the app's lifespan)."""
    store = store_from_settings(state.settings)
    app.state.jobs = JobService(store, state, WorkerConfig.from_settings(state.settings))
    if state.settings.jobs_worker:
        app.state.jobs.start()


async def stop_jobs(app: FastAPI) -> None:
    service = getattr(app.state, "jobs", None)
    if service is not None:
        await service.stop()


def _service(request: Request) -> JobService:
    service = getattr(request.app.state, "jobs", None)
    if service is None:
        raise FlashvlError("jobs_unavailable", "The job queue is not open.", 503, retry_after=5)
    return service


def parse_items(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """JSONL, one ``{"image": REF, "key"?: str}`` per line; the key defaults to the line's sha256."""
    items, seen = [], set()
    for number, line in enumerate(body.decode("utf-8", errors="strict").splitlines(), 1):
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


@router.post("/jobs", status_code=202)
async def submit(
    request: Request,
    state: State,
    task: Literal["moderate", "safety", "ocr"] = "moderate",
    job_id: str | None = Query(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"),
) -> dict[str, Any]:
    """Body: JSONL (``{"image": URL|data:|file://, "key"?}`` per line). Same ``job_id`` and keys: nothing is
    added twice. Returns the job id and counts."""
    if task not in TASKS:
        raise FlashvlError("invalid_request", f"task must be one of {TASKS}", 422)
    items = parse_items(await request.body())
    service = _service(request)
    job_id = job_id or f"{task}-{uuid.uuid4().hex[:16]}"
    job = service.store.get_job(job_id)
    if job is not None and job["task"] != task:
        raise FlashvlError("job_conflict", f"job {job_id} exists with task {job['task']!r}", 409)
    counts = service.store.create_job(job_id, task, items, {"submitted_by": "api"})
    service.wake.set()
    return {
        "job_id": job_id,
        "task": task,
        **counts,
        "progress": f"/jobs/{job_id}",
        "results": f"/jobs/{job_id}/results",
    }


@router.get("/jobs/{job_id}")
async def progress(job_id: str, request: Request) -> dict[str, Any]:
    """Counts of done, parked, queued and taken items; ``finished`` once nothing is left to do."""
    service = _service(request)
    job = service.store.get_job(job_id)
    if job is None:
        raise FlashvlError("job_not_found", f"no job {job_id}", 404)
    return {"job_id": job_id, "task": job["task"], **service.store.progress(job_id)}


@router.get("/jobs/{job_id}/results", response_class=PlainTextResponse)
async def results(job_id: str, request: Request, format: Literal["jsonl", "csv"] = "jsonl") -> PlainTextResponse:
    """Finished items so far (done with their result, parked with their error), as JSONL or CSV."""
    service = _service(request)
    if service.store.get_job(job_id) is None:
        raise FlashvlError("job_not_found", f"no job {job_id}", 404)
    rows = service.store.results(job_id)
    if format == "csv":
        return PlainTextResponse(to_csv(rows), media_type="text/csv")
    return PlainTextResponse(to_jsonl(rows), media_type="application/x-ndjson")
