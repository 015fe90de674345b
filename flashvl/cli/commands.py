"""The in-process commands: ``ask``, ``caption``, ``eval``, ``batch`` and ``kb add``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from flashvl.cli.common import EXIT_FAILED, EXIT_OK, UsageError
from flashvl.cli.output import spinner, started_runtime
from flashvl.config import Settings


async def kb_add(settings: Settings, args: argparse.Namespace) -> int:
    """``flashvl kb add``: one progress line per file on stderr, a summary on stdout."""
    from rich.console import Console
    from rich.progress import Progress

    from flashvl.kb.commands import add_paths, collect
    from flashvl.kb.service import Who
    from flashvl.runtime import Runtime

    try:
        paths = collect(args.sources)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    if not paths:
        raise UsageError("no image or PDF to index in " + ", ".join(map(str, args.sources)))
    async with Runtime(settings, roles={"vision"}) as runtime:
        with Progress(disable=args.no_progress, console=Console(stderr=True)) as progress:
            task = progress.add_task(f"indexing into {args.collection}", total=len(paths))

            def done(path: Path, result: dict[str, Any]) -> None:
                progress.advance(task)
                if result["status"] == "failed":
                    progress.console.print(f"{path}: {result['error']}", style="red")

            counts = await add_paths(runtime.kb, args.collection, paths, Who(args.principal), done)
    print(json.dumps({"collection": args.collection, **counts}))
    return EXIT_FAILED if counts["failed"] else EXIT_OK


def image_path(path: Path, command: str) -> Path:
    """Refuse a missing file or a folder before any model loads."""
    if path.is_dir():
        hint = f"flashvl batch ... {path} --out results.jsonl" if command == "caption" else "one image file"
        raise UsageError(f"{path} is a folder; 'flashvl {command}' takes one image file (for a folder: {hint})")
    if not path.exists():
        raise UsageError(f"{path}: no such image file")
    return path


async def answer_one(settings: Settings, args: argparse.Namespace) -> int:
    from flashvl.pipeline.types import Answer, Query
    from flashvl.runtime import ANSWER_ROLES

    needs_language = args.command == "ask"
    image_path(args.image, args.command)
    roles = set(ANSWER_ROLES) if needs_language else {"vision"}
    # ``ask``: the language model (and the voter) load only when the route needs them.
    lazy = frozenset({"language", "voter"}) if needs_language else frozenset()
    async with started_runtime(settings, roles, lazy=lazy) as runtime:
        image = await runtime.intake.from_path(args.image)
        query = Query(
            images=[image],
            question=getattr(args, "question", None),
            task="vqa" if needs_language else "caption",
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
        )
        start = time.perf_counter()
        with spinner("answering"):
            answer: Answer = await runtime.pipeline.answer(query)
        elapsed = time.perf_counter() - start
    if args.json:
        print(
            json.dumps(
                {"text": answer.text, **answer.meta(), "seconds": round(elapsed, 3)}, ensure_ascii=False, indent=2
            )
        )
    else:
        print(answer.text)
        stages = ", ".join(f"{s.name}={s.backend} {s.seconds:.2f}s" for s in answer.stages)
        print(f"[route {answer.route}; {stages}]" + (f" [{answer.notice}]" if answer.notice else ""), file=sys.stderr)
    return EXIT_OK


async def run_eval_command(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flashvl.eval.runner import run_eval

    # One live display at a time: the loading display (started_runtime) ends before this bar starts.
    columns = [TextColumn("answering {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    bar = Progress(*columns, console=Console(stderr=True), transient=True)
    task = bar.add_task("", total=None)

    def on_item(done: int, total: int, item_id: str) -> None:
        if done == 0:
            bar.start()
        bar.update(task, completed=done, total=total, description=item_id)
        if done == total:
            bar.stop()

    def start(s: Settings, roles: frozenset[str]) -> Any:
        return started_runtime(s, roles)

    try:
        only = [part.strip() for part in args.select.split(",")] if getattr(args, "select", None) else None
        return await run_eval(
            settings,
            args.out,
            ids=only,
            start=start,
            on_item=on_item,
            save_baseline=getattr(args, "save_baseline", None),
            compare_to=getattr(args, "compare", None),
            max_drop=getattr(args, "max_drop", 0.1),
        )
    finally:
        bar.stop()


async def run_batch_command(settings: Settings, args: argparse.Namespace) -> int:
    from flashvl.jobs.backends import store_from_settings
    from flashvl.jobs.batch import BatchInputError, collect_items, default_job_id, run_batch
    from flashvl.jobs.tasks import needs
    from flashvl.jobs.worker import WorkerConfig

    try:
        items = collect_items(args.source)
    except BatchInputError as exc:
        raise UsageError(f"batch: {exc}") from None
    roles = needs(args.task)
    if "language" in roles and (settings.language == "none" or settings.moderation_language == "never"):
        roles = roles - {"language"}
    store = store_from_settings(settings)
    try:
        async with started_runtime(settings, roles) as runtime:
            await run_batch(
                store,
                runtime.job_context(allow_paths=True),
                args.task,
                items,
                args.job_id or default_job_id(args.source, args.task),
                args.out,
                config=WorkerConfig.from_settings(settings),
                csv_out=args.csv,
                show_progress=not args.no_progress,
                source=args.source,
            )
    finally:
        store.close()
    return EXIT_OK
