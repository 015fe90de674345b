"""A real ``flashvl serve`` process for a test, as (process, base URL): ``from tests.servers import ...``
(not from a conftest: a second conftest.py elsewhere in the tree would shadow the name)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from flashvl import testing
from flashvl.testing import stop_server

__all__ = ["start_server", "stop_server"]


def start_server(
    extra_args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """Start ``flashvl serve`` as a real process and wait until /readyz says ready."""
    server = testing.start_server(extra_args, log_path, env)
    return server.proc, server.base
