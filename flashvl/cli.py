"""Command line: ``flashvl serve | ask | caption | eval | batch | keys | dev``.

Every settings field is a ``FLASHVL_*`` environment variable, and a flag of the commands that use
it (``flashvl COMMAND --help`` lists that command's; each option names its commands when not all).

Exit codes: 0 done; 1 a model or stage failed (to build, load or answer); 2 a usage mistake
(unknown flag, bad setting, missing or unusable input file or folder); 130 interrupted.
Native libraries' console output (llama.cpp, ONNX Runtime) and info logs are hidden unless
``--verbose``; errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flashvl import __version__
from flashvl.config import Settings, SettingsError, add_settings_arguments, settings_from_args

if TYPE_CHECKING:
    from flashvl.runtime import Runtime

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
IMAGE_HELP = "Image file: JPEG, PNG, WebP, BMP or GIF (first frame)."
BATCH_SOURCE_HELP = (
    "A folder (its images, searched recursively) or a manifest: a text file with one image path or URL "
    'a line, or JSONL with {"image": PATH_OR_URL, "key": ID} a line ("key" optional, default the path; '
    "relative paths are relative to the manifest; '#' lines are comments)."
)


class UsageError(Exception):
    """A mistake the user can fix (a missing file, a folder where an image was expected)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashvl", description="Serve image question answering.")
    parser.add_argument("--version", action="version", version=f"flashvl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, usage: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, usage=usage)
        sub.add_argument(
            "--config",
            type=Path,
            default=None,
            help="TOML or JSON file of settings (flat keys as below). [env FLASHVL_CONFIG]",
        )
        sub.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="Show info logs (with tracebacks) and native libraries' output (llama.cpp, ONNX Runtime).",
        )
        add_settings_arguments(sub, name)
        return sub

    command("serve", "Start the HTTP service (web page at /, APIs, /metrics).", "flashvl serve [options]")
    ask = command(
        "ask",
        "Answer a question about an image, in-process (no server). The language model loads only if "
        "the question needs it.",
        "flashvl ask [options] IMAGE QUESTION",
    )
    ask.add_argument("image", type=Path, metavar="IMAGE", help=IMAGE_HELP)
    ask.add_argument("question", metavar="QUESTION", help="The question, in quotes (Chinese or English).")
    ask.add_argument("--json", action="store_true", help="Print the whole answer as JSON.")
    cap = command("caption", "Caption an image, in-process (no server).", "flashvl caption [options] IMAGE")
    cap.add_argument("image", type=Path, metavar="IMAGE", help=IMAGE_HELP)
    cap.add_argument("--json", action="store_true", help="Print the whole answer as JSON.")
    ev = command("eval", "Run the evaluation set and print a strict score.", "flashvl eval [options]")
    ev.add_argument("--out", type=Path, default=None, help="Write per-item results as JSONL here.")
    ev.add_argument("--save-baseline", type=Path, default=None, help="Write this run's scores as a baseline (JSON).")
    ev.add_argument(
        "--compare", type=Path, default=None, metavar="BASELINE", help="Print what changed; exit 1 on a regression."
    )
    ev.add_argument("--max-drop", type=float, default=0.1, help="Regression threshold per category (share, 0-1).")
    ev.add_argument("--select", default=None, help="Comma-separated item ids, or kinds (e.g. tools,unobserved).")
    batch = command(
        "batch",
        "Run a durable, resumable batch job over a folder or manifest of images.",
        "flashvl batch [options] {moderate,safety,ocr} SOURCE --out RESULTS.jsonl",
    )
    batch.add_argument("task", choices=["moderate", "safety", "ocr"], help="What to run on each image.")
    batch.add_argument("source", type=Path, metavar="SOURCE", help=BATCH_SOURCE_HELP)
    batch.add_argument("--out", type=Path, required=True, help="Results as JSONL (written at the end).")
    batch.add_argument("--csv", type=Path, default=None, help="Also write the results as CSV here.")
    batch.add_argument("--job-id", default=None, help="Job id (default: from source+task; rerun resumes).")
    batch.add_argument("--no-progress", action="store_true", help="No progress bar.")
    kb = command(
        "kb",
        "Knowledge base: index images and PDFs into a collection (resumable; a file already indexed is skipped).",
        "flashvl kb [options] add COLLECTION DIR_OR_FILE...",
    )
    kb.add_argument("action", choices=["add"], help="add: index the files (images, PDFs) into COLLECTION.")
    kb.add_argument("collection", metavar="COLLECTION", help="Collection name (letters, digits, _ - .).")
    kb.add_argument(
        "sources", nargs="+", type=Path, metavar="DIR_OR_FILE", help="Files, or folders searched recursively."
    )
    kb.add_argument(
        "--principal", default="cli", help="Owner of a new collection (default 'cli'; 'key:NAME' for a key's)."
    )
    kb.add_argument("--no-progress", action="store_true", help="No progress bar.")
    dev = commands.add_parser("dev", help="Developer tools.", description="Developer tools.")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    tiny = dev_commands.add_parser(
        "tiny-glm4v",
        help="Write a tiny random GLM-4.6V-architecture model folder (offline; for tests).",
        description="Write a tiny random GLM-4.6V-architecture model folder (offline; for tests). "
        "Serve it with --vision glm4v:DIR --language glm4v:DIR. Needs the 'glm' extra.",
    )
    tiny.add_argument("dir", type=Path, help="Folder to write the model into.")
    tiny.add_argument(
        "--scripted",
        action="store_true",
        help="Answer every prompt with one fixed GLM-format reply (thinking, answer, a box).",
    )
    tiny.add_argument("--seed", type=int, default=0)
    from flashvl.security.keys import add_keys_command

    add_keys_command(commands)  # flashvl keys new NAME --scopes infer,batch
    return parser


def _refuse_unknown(parser: argparse.ArgumentParser, command: str, unknown: list[str]) -> None:
    """Exit 2 with the command's short usage; a flag of another command says which commands take it."""
    from flashvl.config import commands_of

    actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    sub: argparse.ArgumentParser = actions[0].choices[command] if actions else parser
    problems = []
    for word in unknown:
        name = word.removeprefix("--").partition("=")[0].replace("-", "_")
        if word.startswith("--") and name in Settings.model_fields:
            problems.append(
                f"{word.partition('=')[0]} is an option of {', '.join(commands_of(name))}, not of {command}"
            )
        else:
            problems.append(f"unrecognized argument {word!r}")
    sub.error("; ".join(problems))


def _fail(message: str, code: int) -> int:
    print(f"flashvl: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)  # mistakes: argparse prints the short usage, exits 2
    if unknown:
        _refuse_unknown(parser, args.command, unknown)
    if args.command == "keys":
        from flashvl.security.keys import run_keys

        return run_keys(args)
    if args.command == "dev":
        from flashvl.stages.glm4v.tiny import build_tiny_glm4v

        print(build_tiny_glm4v(args.dir, seed=args.seed, scripted=args.scripted))
        return EXIT_OK
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:  # settings errors are the user's to fix: each line names its source
        lines = str(exc).splitlines()
        return _fail("invalid settings:" + "".join(f"\n  {line}" for line in lines), EXIT_USAGE)
    if args.command == "serve":
        with quiet_native_output(enabled=not args.verbose):  # llama.cpp's lines are not JSON
            return serve(settings, verbose=args.verbose)
    try:
        with quiet_native_output(enabled=not args.verbose):
            from flashvl.observability import configure_logging

            configure_logging(settings.log_level if args.verbose else "critical", tracebacks=args.verbose)
            return asyncio.run(_command(settings, args))
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)


async def _command(settings: Settings, args: argparse.Namespace) -> int:
    from flashvl.errors import FlashvlError

    try:
        if args.command == "eval":
            return await _eval(settings, args)
        if args.command == "batch":
            return await _batch(settings, args)
        if args.command == "kb":
            return await _kb(settings, args)
        return await _in_process(settings, args)
    except FlashvlError as exc:
        # the request's own mistakes (4xx: a file that is no image, too large, ...) and bad stage specs
        code = EXIT_USAGE if exc.status < 500 or exc.code == "bad_setting" else EXIT_FAILED
        return _fail(f"{exc.code}: {exc.message}", code)


async def _kb(settings: Settings, args: argparse.Namespace) -> int:
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


@contextlib.contextmanager
def quiet_native_output(enabled: bool = True) -> Iterator[None]:
    """Send what native code writes to file descriptors 1 and 2 (llama.cpp's load log and its "this is
    probably a bug in the model" warning, ONNX Runtime's) to /dev/null, while Python's own
    ``sys.stdout`` / ``sys.stderr`` keep writing to the real ones."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    old_streams = sys.stdout, sys.stderr
    streams = [
        io.TextIOWrapper(os.fdopen(saved[fd], "wb", buffering=0, closefd=False), write_through=True, encoding="utf-8")
        for fd in (1, 2)
    ]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stdout, sys.stderr = streams[0], streams[1]
        for fd in (1, 2):
            os.dup2(devnull, fd)
        yield
    finally:
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)
        sys.stdout, sys.stderr = old_streams


def serve(settings: Settings, *, verbose: bool = False) -> int:
    import logging

    import uvicorn

    from flashvl.api.app import create_app
    from flashvl.api.http_protocol import uvicorn_options
    from flashvl.api.stage_app import create_stage_app
    from flashvl.observability import configure_logging, get_logger
    from flashvl.security.startup import serve_refusal

    refusal = serve_refusal(settings)
    if refusal:
        return _fail(refusal, EXIT_USAGE)
    if settings.insecure_no_auth_on_public_interface:
        print(
            "flashvl: WARNING: --insecure-no-auth-on-public-interface: serving with NO authentication.", file=sys.stderr
        )
    if settings.engine == "ray" and settings.only != "all":
        return _fail("--only serves one stage in this process; it does not combine with --engine ray", EXIT_USAGE)
    if settings.engine == "ray":  # a Ray Serve application: ingress + one deployment per stage role
        try:
            from flashvl.deploy.ray import launch
        except ImportError as exc:
            return _fail(f"--engine ray needs the 'ray' extra (pip install 'flashvl[ray]'): {exc}", EXIT_USAGE)
        return launch(settings)
    configure_logging(settings.log_level)
    # The lifespan logs a failed build as one ``startup_failed`` line; Starlette also hands uvicorn the
    # traceback text of that exception, which would print as one more (multi-line) error.
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: verbose or "StartupFailed" not in str(record.getMessage())
    )
    get_logger("flashvl").info(
        "starting", host=settings.host, port=settings.port, vision=settings.vision, language=settings.language
    )
    causes: list[str] = []

    def fatal(cause: str) -> None:  # a stage could not be built or loaded: stop, exit non-zero
        causes.append(cause)
        server.should_exit = True

    config = uvicorn.Config(
        create_app(settings, on_fatal=fatal)
        if settings.only == "all"
        else create_stage_app(settings, settings.only, on_fatal=fatal),  # one stage, OpenAI-compatible
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        **uvicorn_options(settings),  # head size and deadline, keep-alive, connection cap
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits 3 when the lifespan failed to start
        if not causes:
            return int(exc.code) if isinstance(exc.code, int) else EXIT_FAILED
    # the cause is already logged, as one ``startup_failed`` JSON line (every line of ``serve`` is JSON)
    return EXIT_FAILED if causes else EXIT_OK


_active_status: list[Any] = []  # the one spinner on screen; a nested step (a lazy load) relabels it


@contextlib.contextmanager
def _spinner(text: str) -> Iterator[None]:
    """A spinner on stderr for a step that may take seconds (shown only on a terminal). A step inside
    another one (the language model loading while answering) relabels the spinner for its duration."""
    from rich.console import Console

    if _active_status:
        status, before = _active_status[-1], _active_status[-1].status
        status.update(text)
        try:
            yield
        finally:
            status.update(before)
        return
    with Console(stderr=True).status(text) as status:
        _active_status.append(status)
        try:
            yield
        finally:
            _active_status.pop()


@asynccontextmanager
async def started_runtime(
    settings: Settings, roles: set[str] | frozenset[str] | None = None, *, lazy: frozenset[str] = frozenset()
) -> AsyncIterator[Runtime]:
    """A started runtime with a progress display on stderr while the models load; closed on exit.
    ``lazy`` roles load on first use, with a spinner. Raises ``FlashvlError`` naming the stage when
    one fails to load."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from flashvl.errors import FlashvlError
    from flashvl.runtime import LOADS_ON_FIRST_USE, ROLES, Runtime

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),  # stdout carries only the answer
        transient=True,
    ) as progress:
        task = progress.add_task("loading models", total=None)

        def report(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        runtime = Runtime(settings, roles=roles or ROLES, progress=report, lazy=lazy, loading=_spinner)
        try:
            await runtime.start()
        except BaseException:
            await runtime.close()
            raise
    failed = {
        role: status for role, status in runtime.stage_status.items() if status not in ("ready", LOADS_ON_FIRST_USE)
    }
    try:
        if failed:
            causes = "; ".join(f"{role}: {status.removeprefix('failed: ')}" for role, status in failed.items())
            raise FlashvlError("stage_failed", f"a stage failed to load ({causes})", 503)
        yield runtime
    finally:
        await runtime.close()


def _image_path(path: Path, command: str) -> Path:
    """Refuse a missing file or a folder before any model loads."""
    if path.is_dir():
        hint = f"flashvl batch ... {path} --out results.jsonl" if command == "caption" else "one image file"
        raise UsageError(f"{path} is a folder; 'flashvl {command}' takes one image file (for a folder: {hint})")
    if not path.exists():
        raise UsageError(f"{path}: no such image file")
    return path


async def _in_process(settings: Settings, args: argparse.Namespace) -> int:
    from flashvl.pipeline.types import Answer, Query
    from flashvl.runtime import ANSWER_ROLES

    needs_language = args.command == "ask"
    _image_path(args.image, args.command)
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
        with _spinner("answering"):
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


async def _eval(settings: Settings, args: argparse.Namespace) -> int:
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


async def _batch(settings: Settings, args: argparse.Namespace) -> int:
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


if __name__ == "__main__":
    raise SystemExit(main())
