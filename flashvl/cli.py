"""Command line: ``flashvl serve | ask | caption | eval | batch``.

Every settings field is a flag of each command (see ``flashvl serve --help``)
and a ``FLASHVL_*`` environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from flashvl import __version__
from flashvl.config import Settings, add_settings_arguments, settings_from_args


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        from flashvl.jobs.batch import run_batch

        return asyncio.run(
            run_batch(
                settings,
                args.task,
                args.source,
                args.out,
                csv_out=args.csv,
                job_id=args.job_id,
                show_progress=not args.no_progress,
            )
        )
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


async def load_pipeline(settings: Settings):
    """Build and load the stages with a progress display on stderr."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from flashvl.pipeline.service import Pipeline
    from flashvl.stages.registry import StageBuilder

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=None,
    ) as progress:
        task = progress.add_task("loading vision models", total=None)
        stages = StageBuilder(settings)
        vision = stages.vision()
        await vision.load()

        def report(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        progress.update(task, description="loading language model", total=None)
        language = await stages.language(report)
        if language is not None:
            progress.update(task, description="loading language model", total=None)
            await language.load()
        pipeline = Pipeline.from_settings(settings, vision, language)
        if settings.arbitration_voter:
            progress.update(task, description="loading the arbitration voter", total=None)
            pipeline.voter = await stages.voter(report)
    return pipeline


async def _in_process(settings: Settings, args: argparse.Namespace) -> int:
    from flashvl.errors import FlashvlError
    from flashvl.media import MediaIntake
    from flashvl.pipeline.service import Answer, Query

    needs_language = args.command == "ask"
    if not needs_language:
        settings = settings.model_copy(update={"language": "none"})
    intake = MediaIntake(settings)
    try:
        image = await intake.from_path(args.image)
        pipeline = await load_pipeline(settings)
        query = Query(
            images=[image],
            question=getattr(args, "question", None),
            task="vqa" if needs_language else "caption",
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
        )
        start = time.perf_counter()
        answer: Answer = await pipeline.answer(query)
        elapsed = time.perf_counter() - start
    except FlashvlError as exc:
        print(f"flashvl: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await intake.aclose()
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
    for stage in (pipeline.vision, pipeline.language):
        if stage is not None:
            await stage.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
