"""Stage calls under a deadline and a circuit breaker: the one place that decides a stage failed.

- ``see``: the vision stage's result, or ``VisionDown`` (a client's own mistake, a 4xx,
  is raised as it is and does not count against the stage).
- ``see_streaming``: a VLM's pieces, then its ``VisionResult``; ``VisionDown`` if it fails
  before its first piece, ``StageUnavailable`` (a 503) if it fails after.
- ``generate``: the language stage's pieces as they come (``live``) or none (the stage is
  asked for the whole answer), then its ``Generation``, or a ``Failure`` saying why; the
  caller decides what to say instead.

Cancellation (the client went away) releases the breaker's trial slot without counting a
failure, and closes the stage's stream, which stops its generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from flashvl.errors import FlashvlError, StageUnavailable
from flashvl.pipeline.resilience import CircuitBreaker, VisionDown
from flashvl.stages.base import (
    ChatRequest,
    Generation,
    LanguageStage,
    StreamingVisionStage,
    TextDelta,
    VisionRequest,
    VisionResult,
    VisionStage,
)

RequestT = TypeVar("RequestT", ChatRequest, VisionRequest)
ResultT = TypeVar("ResultT", Generation, VisionResult)


@dataclass
class Failure:
    """The language stage gave no answer: why, and how many pieces had already gone out."""

    reason: str
    emitted: int


async def see(stage: VisionStage, breaker: CircuitBreaker, timeout_s: float, request: VisionRequest) -> VisionResult:
    if not breaker.allow():
        raise VisionDown(f"circuit open after {breaker.failures} failures")
    try:
        async with asyncio.timeout(timeout_s):
            seen = await stage.see(request)
    except asyncio.CancelledError:
        breaker.release()
        raise
    except Exception as exc:
        raise _vision_failed(breaker, exc) from exc
    breaker.success()
    return seen


async def see_streaming(
    stage: StreamingVisionStage, breaker: CircuitBreaker, request: VisionRequest, *, live: bool
) -> AsyncIterator[TextDelta | VisionResult]:
    """A VLM's own answer (no deadline of its own: a long answer is bounded by the request's)."""
    if not breaker.allow():
        raise VisionDown(f"circuit open after {breaker.failures} failures")
    stream = stage.stream(request) if live else final_only(stage.see, request)
    emitted = 0
    try:
        seen: VisionResult | None = None
        async for event in stream:
            if isinstance(event, VisionResult):
                seen = event
            else:
                emitted += 1
                yield event
        if seen is None:
            raise RuntimeError("the vision stage ended without a result")
    except (asyncio.CancelledError, GeneratorExit):
        breaker.release()
        raise
    except Exception as exc:
        down = _vision_failed(breaker, exc)
        if emitted:  # part of the answer is out: no fallback can replace it now
            raise StageUnavailable(stage.name, f"the vision stage failed mid-answer: {down}") from exc
        raise down from exc
    finally:
        await stream.aclose()
    breaker.success()
    yield seen


def _vision_failed(breaker: CircuitBreaker, exc: Exception) -> VisionDown:
    """Count a failure against the stage and say so; a client's own mistake (4xx) is re-raised."""
    if isinstance(exc, FlashvlError) and exc.status < 500:  # the request's fault, not the stage's
        breaker.release()
        raise exc
    breaker.failure()
    if isinstance(exc, FlashvlError):
        return VisionDown(exc.message)
    return VisionDown(f"{type(exc).__name__}: {exc}"[:200])


async def generate(
    stage: LanguageStage, breaker: CircuitBreaker, timeout_s: float, request: ChatRequest, *, live: bool
) -> AsyncIterator[TextDelta | Generation | Failure]:
    if not breaker.allow():
        yield Failure(f"circuit open after {breaker.failures} failures", 0)
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    stream = stage.stream(request) if live else final_only(stage.generate, request)
    final: Generation | None = None
    emitted = 0
    failure: str | None = None
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            try:
                event = await asyncio.wait_for(anext(stream), remaining)
            except StopAsyncIteration:
                break
            if isinstance(event, Generation):
                final = event
            else:
                emitted += 1
                yield event
        if final is None:
            raise RuntimeError("language stage ended without a final Generation")
        breaker.success()
    except (asyncio.CancelledError, GeneratorExit):
        breaker.release()
        raise
    except Exception as exc:
        breaker.failure()
        failure = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        await stream.aclose()  # cancels the generation if our consumer went away
    yield final if final is not None else Failure(failure or "no answer", emitted)


async def final_only(call: Callable[[RequestT], Awaitable[ResultT]], request: RequestT) -> AsyncIterator[ResultT]:
    """A stage's ``generate``/``see`` as a one-item stream (called only once the stream is read)."""
    yield await call(request)
