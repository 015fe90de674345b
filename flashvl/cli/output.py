"""The terminal while models load and answer: native libraries' output hidden, spinners and progress on
stderr (stdout carries only the answer), and a started runtime that names a stage that failed to load."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from flashvl.config import Settings

if TYPE_CHECKING:
    from flashvl.runtime import Runtime


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


_active_status: list[Any] = []  # the one spinner on screen; a nested step (a lazy load) relabels it


@contextlib.contextmanager
def spinner(text: str) -> Iterator[None]:
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

        runtime = Runtime(settings, roles=roles or ROLES, progress=report, lazy=lazy, loading=spinner)
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
