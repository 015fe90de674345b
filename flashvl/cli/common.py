"""What every command shares: exit codes, the user's mistakes, and the one-line error on stderr."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A mistake the user can fix (a missing file, a folder where an image was expected)."""


def fail(message: str, code: int) -> int:
    print(f"flashvl: {message}", file=sys.stderr)
    return code
