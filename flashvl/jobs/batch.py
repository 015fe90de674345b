"""``flashvl batch TASK DIR_OR_MANIFEST --out results.jsonl``: a resumable job run in-process.

The job id is derived from the source's absolute path and the task, so running the same command
again (after a crash, ``kill -9`` included) resumes the same job: finished items are not redone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from flashvl.jobs.export import to_csv, to_jsonl, write_atomically
from flashvl.jobs.store import JobStore
from flashvl.jobs.tasks import TaskContext, make_handler
from flashvl.jobs.worker import WorkerConfig, run_job

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}


class BatchInputError(ValueError):
    """The folder or manifest given to ``flashvl batch`` cannot be used; the message says why and where."""


def collect_items(source: Path) -> list[tuple[str, dict[str, Any]]]:
    """A folder (images under it, keyed by relative path), a JSONL manifest (``{"image", "key"?}`` per
    line) or a text manifest (one path per line; relative paths are relative to the manifest).
    Raises ``BatchInputError`` for a missing source, a bad manifest line, or no image at all."""
    if not source.exists():
        raise BatchInputError(f"{source}: no such folder or manifest file")
    if source.is_dir():
        found = sorted(p for p in source.rglob("*") if p.is_file())
        files = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            others = [str(p.relative_to(source)) for p in found]
            seen = f"; it holds {len(others)} other file(s): {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}"
            raise BatchInputError(
                f"{source}: no images to process (looked for {' '.join(sorted(IMAGE_SUFFIXES))}"
                f"{seen if others else ', and the folder is empty'})"
            )
        return [(str(p.relative_to(source)), {"image": str(p.resolve())}) for p in files]
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchInputError(
            f"{source}: cannot read the manifest ({exc}); give a folder or a text/JSONL manifest"
        ) from None
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BatchInputError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(entry.get("image"), str) or not entry["image"]:
                raise BatchInputError(
                    f'{source}:{number}: a manifest line needs an "image" (a path or URL), e.g. '
                    '{"image": "photos/a.jpg", "key": "a"}'
                )
        else:
            entry = {"image": line}
        ref = entry["image"]
        if "://" not in ref and not ref.startswith("data:") and not Path(ref).is_absolute():
            entry["image"] = str((source.parent / ref).resolve())
        items.append((str(entry.pop("key", ref)), entry))
    if not items:
        raise BatchInputError(f"{source}: the manifest lists no images (one path or JSON object a line)")
    return items


def default_job_id(source: Path, task: str) -> str:
    return f"{task}-{hashlib.sha1(f'{source.resolve()}|{task}'.encode()).hexdigest()[:12]}"


async def run_batch(
    store: JobStore,
    context: TaskContext,
    task: str,
    items: list[tuple[str, dict[str, Any]]],
    job_id: str,
    out: Path,
    *,
    config: WorkerConfig,
    csv_out: Path | None = None,
    show_progress: bool = True,
    source: Path | None = None,
) -> dict[str, Any]:
    """Add ``items`` to job ``job_id`` (nothing twice), work through it with a progress bar, write the
    results; the final progress. The caller (``flashvl batch``) builds the runtime and the store."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    created = await asyncio.to_thread(store.create_job, job_id, task, items, {"source": str(source)})
    print(f"job {job_id}: {created['total']} items ({created['added']} new)", file=sys.stderr)
    if not created["total"]:  # nothing will ever finish: say so instead of waiting
        raise BatchInputError(f"job {job_id} has no items")
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    console = Console(stderr=True)  # stdout is for results
    with Progress(*columns, console=console, disable=not show_progress, transient=False) as bar:
        bar_task = bar.add_task(f"{task} {job_id}", total=created["total"])

        def report(progress: dict[str, Any]) -> None:
            bar.update(
                bar_task,
                completed=progress["done"] + progress["parked"],
                description=f"{task}: {progress['done']} done, {progress['parked']} parked",
            )

        final = await run_job(store, job_id, make_handler(task, context), config, on_progress=report)
    rows = await asyncio.to_thread(store.results, job_id)
    write_atomically(out, to_jsonl(rows))
    if csv_out:
        write_atomically(csv_out, to_csv(rows))
    print(f"job {job_id}: {final['done']} done, {final['parked']} parked -> {out}", file=sys.stderr)
    return final
