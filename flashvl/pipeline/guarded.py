"""Guarded stage calls: every use case (VQA, captions, moderation, OCR, documents, batch items,
arbitration re-asks and votes) reaches a stage through one of these objects, never directly.

A guarded call is: the vision cache (vision) -> model-queue admission -> circuit breaker ->
deadline -> the stage -> per-stage metrics. It is the one place that decides a stage failed:

- ``GuardedVision.see``: the vision stage's result, or ``VisionDown``. A client's own mistake
  (a 4xx) is raised as it is and does not count against the stage.
- ``GuardedVision.stream``: a VLM's own answer, pieces then its ``Seen``; ``VisionDown`` if it
  fails before its first piece, ``StageUnavailable`` (a 503) if it fails after.
- ``GuardedLanguage.stream``: the language stage's pieces as they come (``live``) or none (the
  stage is asked for the whole answer), then its ``Generation``, or a ``Failure`` saying why.
- ``GuardedLanguage.generate``: the ``Generation``, or ``StageUnavailable``.

One vision cache: a stage whose work splits into question-independent observations and a cheap
reading of them (``ObservingVisionStage``, the offline pipeline) has its observations cached per
image + stage fingerprint + the parameters that change them, so a second question about an image
runs no model; other stages (VLMs) have whole answers cached per image + question + parameters.
Either way ``Seen.cache["vision"]`` says ``hit`` whenever earlier work was reused.

Cancellation (the client went away) releases the breaker's trial slot without counting a
failure, and closes the stage's stream, which stops its generation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flashvl.errors import FlashvlError, StageUnavailable
from flashvl.observability import get_logger
from flashvl.pipeline.admission import Admission
from flashvl.pipeline.cache.base import (
    VisionCache,
    observation_cache_key,
    result_from_dict,
    result_to_dict,
    vision_cache_key,
)
from flashvl.pipeline.resilience import CircuitBreaker, VisionDown
from flashvl.pipeline.types import StageRecord
from flashvl.stages.base import (
    ChatRequest,
    Generation,
    LanguageStage,
    ObservingVisionStage,
    StreamingVisionStage,
    TextDelta,
    Timings,
    VisionRequest,
    VisionResult,
    VisionStage,
    aclose,
)

RequestT = TypeVar("RequestT", ChatRequest, VisionRequest)
ResultT = TypeVar("ResultT", Generation, VisionResult)
log = get_logger("flashvl.stages")
StageObserver = Callable[[str, str, float], None]  # (role, backend, seconds) of each stage call that ran


@dataclass
class Failure:
    """The language stage gave no answer: why, and how many pieces had already gone out."""

    reason: str
    emitted: int


@dataclass
class Seen:
    """A vision result, how it was made (the stage record), and whether earlier work was reused."""

    result: VisionResult
    record: StageRecord
    cache: dict[str, Any] = field(default_factory=dict)  # {"vision": "hit"|"miss"|"off", "backend": ...}


def _admit(admission: Admission | None) -> AbstractAsyncContextManager[None]:
    return admission.slot() if admission is not None else nullcontext()


class GuardedVision:
    def __init__(
        self,
        stage: VisionStage,
        *,
        breaker: CircuitBreaker,
        timeout_s: float = 30.0,
        cache: VisionCache | None = None,
        admission: Admission | None = None,
        observe: StageObserver | None = None,
        role: str = "vision",
    ) -> None:
        self.stage = stage
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.role = role
        self.cache = cache
        self.admission = admission
        self._observe = observe

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def is_vlm(self) -> bool:
        return self.stage.is_vlm

    @property
    def streams(self) -> bool:
        """The stage can stream its own answer (a real VLM)."""
        return isinstance(self.stage, StreamingVisionStage)

    def _cache_info(self, hit: bool | None) -> dict[str, Any]:
        if self.cache is None or hit is None:
            return {"vision": "off", "backend": self.cache.name if self.cache is not None else None}
        return {"vision": "hit" if hit else "miss", "backend": self.cache.name}

    def _cacheable(self, request: VisionRequest) -> bool:
        # A VLM's sampled answer (temperature > 0) is one draw among many: caching it would freeze it.
        return self.cache is not None and not (self.stage.is_vlm and request.temperature)

    async def see(self, request: VisionRequest, *, role: str | None = None) -> Seen:
        start = time.perf_counter()
        stage = self.stage
        if isinstance(stage, ObservingVisionStage):
            result, hit = await self._see_observing(stage, request)
        else:
            result, hit = await self._see_whole(request)
        seconds = time.perf_counter() - start
        whole_answer_cached = hit and not isinstance(stage, ObservingVisionStage)
        steps = {"cache": seconds} if whole_answer_cached else result.timings.with_tokens()
        record = StageRecord(
            role or self.role, self.name, seconds, cached=bool(hit), steps=steps, replica=result.replica
        )
        return Seen(result, record, self._cache_info(hit if self._cacheable(request) else None))

    async def _see_whole(self, request: VisionRequest) -> tuple[VisionResult, bool]:
        key = vision_cache_key(self.stage, request) if self._cacheable(request) else None
        if self.cache is not None and key:
            cached = await self.cache.get(key)
            if cached is not None:
                return result_from_dict(cached), True
        result = await self._call(self.stage.see, request)
        if self.cache is not None and key:
            await self.cache.set(key, result_to_dict(result))
        return result, False

    async def _see_observing(self, stage: ObservingVisionStage, request: VisionRequest) -> tuple[VisionResult, bool]:
        key = None
        if self.cache is not None:
            key = observation_cache_key(stage, request.images, stage.observation_params(request))
        observed = await self.cache.get(key) if self.cache is not None and key else None
        hit = observed is not None
        if observed is None:
            observed = await self._call(stage.observe, request)
            if self.cache is not None and key:
                await self.cache.set(key, observed)
        try:  # reading observations is cheap and local; a failure here is the stage's
            result = await stage.interpret(request, observed)
        except Exception as exc:
            raise self._failed(exc) from exc
        if hit:  # the models did not run for this request: report only what did
            result.timings = Timings(
                {"observations_cached": 0.0, "interpret": result.timings.steps.get("interpret", 0.0)}
            )
        return result, hit

    async def _call(self, call: Callable[[VisionRequest], Awaitable[Any]], request: VisionRequest) -> Any:
        async with _admit(self.admission):
            if not self.breaker.allow():
                raise VisionDown(f"circuit open after {self.breaker.failures} failures")
            start = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout_s):
                    out = await call(request)
            except asyncio.CancelledError:
                self.breaker.release()
                raise
            except Exception as exc:
                raise self._failed(exc) from exc
            self.breaker.success()
        if self._observe:
            self._observe(self.role, self.name, time.perf_counter() - start)
        return out

    def _failed(self, exc: Exception) -> VisionDown:
        """Count a failure against the stage and say so; a client's own mistake (4xx) is re-raised."""
        if isinstance(exc, FlashvlError) and exc.status < 500:  # the request's fault, not the stage's
            self.breaker.release()
            raise exc
        if isinstance(exc, TimeoutError):
            self.breaker.failure("timeout")
            return VisionDown(f"timed out after {self.timeout_s:g}s")
        if isinstance(exc, FlashvlError):
            self.breaker.failure("unavailable")
            return VisionDown(exc.message)
        self.breaker.failure("error")
        # The detail (library paths, a traceback) goes to the server log only, never to the client.
        log.warning("stage_failed", role=self.role, stage=self.name, error=f"{type(exc).__name__}: {exc}"[:500])
        return VisionDown(f"the {self.role} stage failed ({type(exc).__name__})")

    async def stream(self, request: VisionRequest, *, live: bool) -> AsyncGenerator[TextDelta | Seen, None]:
        """A VLM's own answer (no deadline of its own: a long answer is bounded by the request's),
        from the cache when a greedy answer to the same question about the same image is there."""
        assert isinstance(self.stage, StreamingVisionStage)
        start = time.perf_counter()
        key = vision_cache_key(self.stage, request) if self._cacheable(request) else None
        cached = await self.cache.get(key) if self.cache is not None and key else None
        if cached is not None:
            seen = result_from_dict(cached)
            if seen.thinking:
                yield TextDelta(seen.thinking, kind="thinking")
            yield TextDelta(seen.answer if seen.answer is not None else seen.description)
            record = StageRecord(
                self.role,
                self.name,
                time.perf_counter() - start,
                cached=True,
                steps={"cache": 0.0},
                replica=seen.replica,
            )
            yield Seen(seen, record, self._cache_info(True))
            return
        result: VisionResult | None = None
        async with _admit(self.admission):
            async for event in self._stream_stage(self.stage, request, live):
                if isinstance(event, VisionResult):
                    result = event
                else:
                    yield event
        assert result is not None
        seconds = time.perf_counter() - start
        if self._observe:
            self._observe(self.role, self.name, seconds)
        if self.cache is not None and key:
            await self.cache.set(key, result_to_dict(result))
        record = StageRecord(self.role, self.name, seconds, steps=result.timings.with_tokens(), replica=result.replica)
        yield Seen(result, record, self._cache_info(False if key else None))

    async def _stream_stage(
        self, stage: StreamingVisionStage, request: VisionRequest, live: bool
    ) -> AsyncIterator[TextDelta | VisionResult]:
        if not self.breaker.allow():
            raise VisionDown(f"circuit open after {self.breaker.failures} failures")
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
            self.breaker.release()
            raise
        except Exception as exc:
            down = self._failed(exc)
            if emitted:  # part of the answer is out: no fallback can replace it now
                raise StageUnavailable(stage.name, f"the vision stage failed mid-answer: {down}") from exc
            raise down from exc
        finally:
            await aclose(stream)
        self.breaker.success()
        yield seen


class GuardedLanguage:
    def __init__(
        self,
        stage: LanguageStage,
        *,
        breaker: CircuitBreaker,
        timeout_s: float = 100.0,
        admission: Admission | None = None,
        observe: StageObserver | None = None,
        role: str = "language",
    ) -> None:
        self.stage = stage
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.admission = admission
        self._observe = observe
        self.role = role

    @property
    def name(self) -> str:
        return self.stage.name

    async def generate(self, request: ChatRequest) -> Generation:
        """The whole answer, or ``StageUnavailable`` (a client's own mistake, a 4xx, as it is)."""
        final: Generation | Failure | None = None
        async for event in self.stream(request, live=False):
            if isinstance(event, Generation | Failure):
                final = event
        if isinstance(final, Generation):
            return final
        reason = final.reason if final is not None else "no answer"
        raise StageUnavailable(
            self.name, f"{self.role} stage unavailable ({reason})", retry_after=self.breaker.retry_after() or 5.0
        )

    async def stream(
        self, request: ChatRequest, *, live: bool
    ) -> AsyncGenerator[TextDelta | Generation | Failure, None]:
        async with _admit(self.admission):
            async for event in self._stream_stage(request, live):
                yield event

    async def _stream_stage(self, request: ChatRequest, live: bool) -> AsyncIterator[TextDelta | Generation | Failure]:
        check_text(request)  # before the breaker: text a stage cannot even encode is the client's fault
        if not self.breaker.allow():
            yield Failure(f"circuit open after {self.breaker.failures} failures", 0)
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.timeout_s
        stream = self.stage.stream(request) if live else final_only(self.stage.generate, request)
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
                raise RuntimeError(f"{self.role} stage ended without a final Generation")
            self.breaker.success()
        except (asyncio.CancelledError, GeneratorExit):
            self.breaker.release()
            raise
        except FlashvlError as exc:
            if exc.status < 500:  # the request's fault (too long a prompt, a bad schema): not the stage's
                self.breaker.release()
                raise
            self.breaker.failure("unavailable")
            failure = f"{exc.code}: {exc.message}"[:200]
        except TimeoutError:
            self.breaker.failure("timeout")
            failure = f"timed out after {self.timeout_s:g}s"
        except Exception as exc:
            self.breaker.failure("error")
            log.warning("stage_failed", role=self.role, stage=self.name, error=f"{type(exc).__name__}: {exc}"[:500])
            failure = f"the {self.role} stage failed ({type(exc).__name__})"
        finally:
            await aclose(stream)  # cancels the generation if our consumer went away
        if final is not None and self._observe:
            self._observe(self.role, self.name, loop.time() - start)
        yield final if final is not None else Failure(failure or "no answer", emitted)


def check_text(request: ChatRequest) -> None:
    """Refuse text no stage can encode (a lone UTF-16 surrogate such as ``"\\ud800"`` in the JSON)."""
    for message in request.messages:
        try:
            message.content.encode("utf-8")
        except UnicodeEncodeError:
            raise FlashvlError(
                "invalid_text",
                f"A {message.role} message contains a lone UTF-16 surrogate, which is not text; send valid UTF-8.",
                400,
            ) from None


async def final_only(call: Callable[[RequestT], Awaitable[ResultT]], request: RequestT) -> AsyncIterator[ResultT]:
    """A stage's ``generate``/``see`` as a one-item stream (called only once the stream is read)."""
    yield await call(request)
