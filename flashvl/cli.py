"""Command line: ``flashvl serve | ask | caption | eval | batch | keys``.

Every settings field is a flag of each command (see ``flashvl serve --help``)
and a ``FLASHVL_*`` environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from flashvl import __version__
from flashvl.config import Settings, add_settings_arguments, settings_from_args

if TYPE_CHECKING:
    from flashvl.runtime import Runtime


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashvl", description="Serve image question answering.")
    parser.add_argument("--version", action="version", version=f"flashvl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--config",
            type=Path,
            default=None,
            help="TOML or JSON file of settings (flat keys as below). [env FLASHVL_CONFIG]",
        )
        add_settings_arguments(sub)
        return sub

    command("serve", "Start the HTTP service (web page at /, APIs, /metrics).")
    ask = command("ask", "Answer a question about an image, in-process (no server).")
    ask.add_argument("image", type=Path)
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="Print the whole answer as JSON.")
    cap = command("caption", "Caption an image, in-process (no server).")
    cap.add_argument("image", type=Path)
    cap.add_argument("--json", action="store_true", help="Print the whole answer as JSON.")
    ev = command("eval", "Run the evaluation set and print a strict score.")
    ev.add_argument("--out", type=Path, default=None, help="Write per-item results as JSONL here.")
    batch = command("batch", "Run a durable, resumable batch job over a folder or manifest of images.")
    batch.add_argument("task", choices=["moderate", "safety", "ocr"], help="What to run on each image.")
    batch.add_argument("source", type=Path, help="Folder of images, or manifest (JSONL or a path a line).")
    batch.add_argument("--out", type=Path, required=True, help="Results as JSONL (written at the end).")
    batch.add_argument("--csv", type=Path, default=None, help="Also write the results as CSV here.")
    batch.add_argument("--job-id", default=None, help="Job id (default: from source+task; rerun resumes).")
    batch.add_argument("--no-progress", action="store_true", help="No progress bar.")
    dev = commands.add_parser("dev", help="Developer tools.", description="Developer tools.")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    tiny = dev_commands.add_parser(
        "tiny-glm4v",
        help="Write a tiny random GLM-4.6V-architecture model folder (offline; for tests).",
        description="Write a tiny random GLM-4.6V-architecture model folder (offline; for tests). "
        "Serve it with --vision glm4v:DIR --language glm4v:DIR. Needs the 'glm' extra.",
    )
    tiny.add_argument("dir", type=Path)
    tiny.add_argument(
        "--scripted",
        action="store_true",
        help="Answer every prompt with one fixed GLM-format reply (thinking, answer, a box).",
    )
    tiny.add_argument("--seed", type=int, default=0)
    from flashvl.security.keys import add_keys_command

    add_keys_command(commands)  # flashvl keys new NAME --scopes infer,batch
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "keys":
        from flashvl.security.keys import run_keys

        return run_keys(args)
    if args.command == "dev":
        from flashvl.stages.glm4v.tiny import build_tiny_glm4v

        print(build_tiny_glm4v(args.dir, seed=args.seed, scripted=args.scripted))
        return 0
    try:
        settings = settings_from_args(args)
    except Exception as exc:  # settings errors are the user's to fix: say which
        print(f"flashvl: invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(settings)
    if args.command == "eval":
        from flashvl.eval.runner import run_eval

        return asyncio.run(run_eval(settings, args.out))
    if args.command == "batch":
        return asyncio.run(_batch(settings, args))
    return asyncio.run(_in_process(settings, args))


def serve(settings: Settings) -> int:
    import uvicorn

    from flashvl.api.app import create_app
    from flashvl.observability import configure_logging, get_logger
    from flashvl.security.startup import serve_refusal

    refusal = serve_refusal(settings)
    if refusal:
        print(f"flashvl: {refusal}", file=sys.stderr)
        return 2
    if settings.insecure_no_auth_on_public_interface:
        print(
            "flashvl: WARNING: --insecure-no-auth-on-public-interface: serving with NO authentication.", file=sys.stderr
        )
    configure_logging(settings.log_level)
    get_logger("flashvl").info(
        "starting", host=settings.host, port=settings.port, vision=settings.vision, language=settings.language
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )
    return 0


@asynccontextmanager
async def started_runtime(settings: Settings, roles: set[str] | None = None) -> AsyncIterator[Runtime]:
    """A started runtime with a progress display on stderr while the models load; closed on exit.
    Raises ``FlashvlError`` naming the stage when one fails to load."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from flashvl.errors import FlashvlError
    from flashvl.runtime import ROLES, Runtime

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=True
    ) as progress:
        task = progress.add_task("loading models", total=None)

        def report(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        runtime = Runtime(settings, roles=roles or ROLES, progress=report)
        try:
            await runtime.start()
        except BaseException:
            await runtime.close()
            raise
    failed = {role: status for role, status in runtime.stage_status.items() if status != "ready"}
    try:
        if failed:
            raise FlashvlError("stage_failed", f"a stage failed to load: {failed}", 503)
        yield runtime
    finally:
        await runtime.close()


async def _in_process(settings: Settings, args: argparse.Namespace) -> int:
    from flashvl.errors import FlashvlError
    from flashvl.pipeline.types import Answer, Query
    from flashvl.runtime import ANSWER_ROLES

    needs_language = args.command == "ask"
    roles = set(ANSWER_ROLES) if needs_language else {"vision"}
    try:
        async with started_runtime(settings, roles) as runtime:
            image = await runtime.intake.from_path(args.image)
            query = Query(
                images=[image],
                question=getattr(args, "question", None),
                task="vqa" if needs_language else "caption",
                max_tokens=settings.max_tokens,
                temperature=settings.temperature,
            )
            start = time.perf_counter()
            answer: Answer = await runtime.pipeline.answer(query)
            elapsed = time.perf_counter() - start
    except FlashvlError as exc:
        print(f"flashvl: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
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
    return 0


async def _batch(settings: Settings, args: argparse.Namespace) -> int:
    from flashvl.errors import FlashvlError
    from flashvl.jobs.backends import store_from_settings
    from flashvl.jobs.batch import collect_items, default_job_id, run_batch
    from flashvl.jobs.tasks import needs
    from flashvl.jobs.worker import WorkerConfig

    items = collect_items(args.source)
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
    except FlashvlError as exc:
        print(f"flashvl: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
