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

from flashvl.cli.commands import answer_one, kb_add, run_batch_command, run_eval_command
from flashvl.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, fail
from flashvl.cli.output import quiet_native_output
from flashvl.cli.parser import _parser, refuse_unknown
from flashvl.cli.serve import serve
from flashvl.config import Settings, SettingsError, settings_from_args

__all__ = ["_parser", "main", "quiet_native_output", "serve"]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)  # mistakes: argparse prints the short usage, exits 2
    if unknown:
        refuse_unknown(parser, args.command, unknown)
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
        return fail("invalid settings:" + "".join(f"\n  {line}" for line in lines), EXIT_USAGE)
    if args.command == "serve":
        with quiet_native_output(enabled=not args.verbose):  # llama.cpp's lines are not JSON
            return serve(settings, verbose=args.verbose)
    try:
        with quiet_native_output(enabled=not args.verbose):
            from flashvl.observability import configure_logging

            configure_logging(settings.log_level if args.verbose else "critical", tracebacks=args.verbose)
            return asyncio.run(_command(settings, args))
    except UsageError as exc:
        return fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_INTERRUPTED)


async def _command(settings: Settings, args: argparse.Namespace) -> int:
    from flashvl.errors import FlashvlError

    try:
        if args.command == "eval":
            return await run_eval_command(settings, args)
        if args.command == "batch":
            return await run_batch_command(settings, args)
        if args.command == "kb":
            return await kb_add(settings, args)
        return await answer_one(settings, args)
    except FlashvlError as exc:
        # the request's own mistakes (4xx: a file that is no image, too large, ...) and bad stage specs
        code = EXIT_USAGE if exc.status < 500 or exc.code == "bad_setting" else EXIT_FAILED
        return fail(f"{exc.code}: {exc.message}", code)
