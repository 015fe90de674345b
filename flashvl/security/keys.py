"""``flashvl keys new NAME --scopes infer,batch``: make an API key.

Prints the key (give it to the client; it is shown once and never stored) and the entry to
configure (``name:scope+scope:sha256``), which holds only the key's sha256. ``--append-to FILE``
also adds the entry to an ``api_keys_file`` (created owner-only), so the key works after the
server restarts. ``--json`` prints both as one JSON object, for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from flashvl.security.auth import make_key, parse_key_entry

SCOPE_HELP = (
    "Comma-separated scopes: infer (model routes), batch (/jobs), review (/review), "
    "admin (all of them, every principal's jobs, /metrics). Default: infer."
)


def add_keys_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``keys`` command on the ``flashvl`` parser."""
    keys = commands.add_parser("keys", help="Make API keys.", description="Make API keys.")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    new = key_commands.add_parser(
        "new",
        help="Print a new API key and the entry to configure (its sha256).",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    new.add_argument("name", help="The key's name: logged per request, and the owner of the jobs it submits.")
    new.add_argument("--scopes", default="infer", help=SCOPE_HELP)
    new.add_argument("--append-to", type=Path, default=None, metavar="FILE", help="Also add the entry to this file.")
    new.add_argument("--json", action="store_true", help='Print {"name", "scopes", "key", "entry"} as JSON.')


def run_keys(args: argparse.Namespace) -> int:
    try:
        key, entry = make_key(args.name, args.scopes)
        if args.append_to is not None:
            append_entry(args.append_to, entry)
    except ValueError as exc:
        print(f"flashvl keys: {exc}", file=sys.stderr)
        return 2
    if args.json:
        scopes = sorted(parse_key_entry(entry).scopes)
        print(json.dumps({"name": args.name, "scopes": scopes, "key": key, "entry": entry}))
        return 0
    print(f"key (give to the client, shown once): {key}")
    print(f"entry (put in api_keys or api_keys_file): {entry}")
    if args.append_to is not None:
        print(f"added to {args.append_to} (restart the server to load it)")
    return 0


def append_entry(path: Path, entry: str) -> None:
    """Add an entry to an api_keys_file (made owner-only if new); refuses a name the file already has."""
    name = parse_key_entry(entry).name
    lead = ""
    if path.exists():
        text = path.read_text()
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        if name in {parse_key_entry(line).name for line in lines if line}:
            raise ValueError(f"{path} already has a key named {name!r}")
        lead = "\n" if text and not text.endswith("\n") else ""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(f"{lead}{entry}\n")
