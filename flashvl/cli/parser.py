"""The argument parser: one sub-command per verb, every setting a flag of the commands that use it."""

from __future__ import annotations

import argparse
from pathlib import Path

from flashvl import __version__
from flashvl.config import Settings, add_settings_arguments

IMAGE_HELP = "Image file: JPEG, PNG, WebP, BMP or GIF (first frame)."
BATCH_SOURCE_HELP = (
    "A folder (its images, searched recursively) or a manifest: a text file with one image path or URL "
    'a line, or JSONL with {"image": PATH_OR_URL, "key": ID} a line ("key" optional, default the path; '
    "relative paths are relative to the manifest; '#' lines are comments)."
)


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


def refuse_unknown(parser: argparse.ArgumentParser, command: str, unknown: list[str]) -> None:
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
