"""The two stage roles: a vision stage ("eyes") and a language stage ("brain").

A stage is an object built from settings, with a small async interface and no
module-level state, so that the same class can live in-process, behind HTTP, or
in another worker (Ray Serve later) without changes.

Design points that later backends rely on:
- streaming: ``stream`` yields ``TextDelta`` pieces; ``generate``/``see`` are
  the one-shot forms. Closing the async iterator (the client went away) must
  cancel the work behind it.
- batching lives *inside* a stage (a batcher coalescing concurrent calls); the
  interface stays one request per call, so callers never change.
- per-stage timing: every result carries ``timings`` (seconds per step).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from flashvl.errors import StageUnavailable
from flashvl.media.types import LoadedImage

Task = Literal["vqa", "caption", "ocr", "moderate"]


@dataclass
class Timings:
    """Seconds spent per named step, in the order they ran; ``tokens``: token counts that explain
    them (a language stage's ``prompt_cached``, ``prompt_read``, ``generated``), not in ``total``."""

    steps: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.steps.values())

    def with_tokens(self) -> dict[str, float]:
        """The steps, then the token counts as ``<name>_tokens`` (what a response's ``stages[].steps`` show)."""
        return self.steps | {f"{name}_tokens": count for name, count in self.tokens.items()}


@dataclass
class Box:
    """An axis-aligned box in pixel coordinates of the original image."""

    label: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float
    # A VLM's own coordinates (GLM: 0-1000 of width and height), kept next to the pixels.
    norm: tuple[float, float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "score": round(self.score, 4),
            "box": [round(self.x1, 1), round(self.y1, 1), round(self.x2, 1), round(self.y2, 1)],
        }
        if self.norm is not None:
            out["box_1000"] = [round(v, 1) for v in self.norm]
        return out


# ---------------------------------------------------------------- vision


@dataclass
class VisionRequest:
    images: list[LoadedImage]
    question: str | None = None
    task: Task = "vqa"
    max_pixels: int | None = None
    enable_thinking: bool = False
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass
class VisionResult:
    """What the eyes saw.

    ``description`` is always present: a plain-language account of the image
    that a language stage (or a human) can read. ``answer`` is set only when
    the stage answered the question itself (a VLM, or an exact rule of the
    offline pipeline); ``answer_source`` then says how ("model", "rule:colour").
    A stage that generated text reports its tokens and why it stopped (``finish_reason``:
    "stop", or "length" when cut at ``max_tokens``) as ``Generation`` does; others leave 0.
    """

    stage: str
    description: str
    observations: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None
    answer_source: str | None = None
    confidence: float | None = None
    thinking: str | None = None
    boxes: list[Box] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    replica: str | None = None  # the replica that made it, when the stage runs elsewhere (Ray Serve)


@runtime_checkable
class VisionStage(Protocol):
    """The eyes. ``is_vlm`` tells the pipeline whether ``answer`` can be trusted
    for free-form questions (a real VLM) or only for what rules answer exactly."""

    name: str
    model_id: str
    is_vlm: bool

    async def load(self) -> None: ...

    async def close(self) -> None: ...

    async def see(self, request: VisionRequest) -> VisionResult: ...

    def fingerprint(self) -> dict[str, Any]:
        """What determines this stage's output, as plain JSON values: the class, the model id,
        the weights' revision or file hash, and the parameters that change what it answers
        (thresholds, pixel caps, sampling defaults). Equal for two processes serving the same
        model the same way, so a shared cache can hit across them; different whenever an
        answer could differ. Never secrets (API keys) and never per-process values (load
        time, thread counts, slots, pids, ports, batch sizes, timeouts). Hashes are computed
        once (in ``load``), not per call.
        """
        ...


@runtime_checkable
class StreamingVisionStage(VisionStage, Protocol):
    """A vision stage that can stream its own answer (a real VLM).

    ``stream`` yields ``TextDelta`` pieces (``kind="thinking"`` for thinking
    text), then the final ``VisionResult`` last. Closing the iterator early
    cancels generation.
    """

    def stream(self, request: VisionRequest) -> AsyncIterator[TextDelta | VisionResult]: ...


@runtime_checkable
class ObservingVisionStage(VisionStage, Protocol):
    """A vision stage whose work splits into question-independent observations (the expensive
    part: every model run once per image) and a cheap reading of them for one request (rules,
    a description in the question's language). The pipeline caches the observations per image,
    so a second question about the same image runs no model. ``see`` is both steps at once.
    """

    def observation_params(self, request: VisionRequest) -> dict[str, Any]:
        """What of the request changes the observations (e.g. the pixel cap), for the cache key."""
        ...

    async def observe(self, request: VisionRequest) -> dict[str, Any]:
        """The observations of ``request.images[0]`` as JSON-able data."""
        ...

    async def interpret(self, request: VisionRequest, observed: dict[str, Any]) -> VisionResult:
        """The result for ``request`` from observations ``observe`` made (maybe in another process)."""
        ...


# ---------------------------------------------------------------- language


@dataclass
class ToolCall:
    """A call of a tool the client defined (OpenAI ``tool_calls``): the client runs it and sends the result
    back as a ``role="tool"`` message. Not the server's own exact tools (``flashvl/tools/``)."""

    id: str
    name: str
    arguments: str  # a JSON object, as text (OpenAI's ``function.arguments``)

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class ChatMessage:
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall] | None = None  # an assistant turn that called client tools
    tool_call_id: str | None = None  # a ``tool`` turn: the call it answers

    def to_openai(self) -> dict[str, Any]:
        """The message as OpenAI's chat API takes it (what llama.cpp and upstreams are sent)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [call.to_openai() for call in self.tool_calls]
            out["content"] = self.content or None
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass
class ChatRequest:
    messages: list[ChatMessage]
    max_tokens: int = 256
    temperature: float = 0.2
    top_p: float | None = None
    stop: list[str] | None = None
    json_schema: dict[str, Any] | None = None
    enable_thinking: bool = False
    seed: int | None = None
    logprobs: bool = True  # token probabilities, for ``Generation.confidence`` (costs a little time)
    top_logprobs: int | None = None  # None: no per-token entries; n: each token with its n best alternatives
    # Requests with the same key share a long prompt prefix (the cascade: an image's observations); a stage
    # with slots keeps them on one slot so the prefix is read once (llama.cpp: slot affinity).
    prefix_key: str | None = None
    # Tools the client defined (OpenAI ``tools``: ``{"type": "function", "function": {name, description,
    # parameters}}``), validated by the API; the answer may then be ``Generation.tool_calls`` instead of text.
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None  # "none" | "auto" | "required" | {"type": "function", ...}
    parallel_tool_calls: bool | None = None


@dataclass
class TextDelta:
    """One streamed piece. ``kind`` separates visible text from thinking."""

    text: str
    kind: Literal["answer", "thinking"] = "answer"
    logprobs: list[dict[str, Any]] | None = None  # this piece's tokens (OpenAI's shape), when asked for


@dataclass
class Generation:
    """A finished generation.

    ``confidence`` is the geometric-mean probability the model gave to the
    tokens it produced (exp of the mean token log-probability), or None when the
    backend does not report log-probabilities.
    """

    stage: str
    text: str
    thinking: str | None = None
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    confidence: float | None = None
    timings: Timings = field(default_factory=Timings)
    logprobs: list[dict[str, Any]] | None = None  # per-token entries when ``ChatRequest.top_logprobs`` was set
    replica: str | None = None  # the replica that made it, when the stage runs elsewhere (Ray Serve)
    tool_calls: list[ToolCall] | None = None  # the client's tools the model called (finish_reason "tool_calls")


@runtime_checkable
class LanguageStage(Protocol):
    """The brain: text in, text out, optionally constrained by a JSON schema."""

    name: str
    model_id: str

    async def load(self) -> None: ...

    async def close(self) -> None: ...

    async def generate(self, request: ChatRequest) -> Generation: ...

    def fingerprint(self) -> dict[str, Any]:
        """What determines this stage's output; see ``VisionStage.fingerprint``."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | Generation]:
        """Yield ``TextDelta`` pieces, then the final ``Generation`` last.

        Closing the iterator early cancels the generation.
        """
        ...


ResultT = TypeVar("ResultT", "VisionResult", "Generation")


class Relay:
    """Iterate a stream of pieces that ends in one result: ``async for delta in relay`` yields the
    ``TextDelta`` pieces; the last other item (the result) is left in ``relay.final``."""

    def __init__(self, stream: AsyncIterator[Any]) -> None:
        self._stream = stream
        self.final: Any = None

    async def __aiter__(self) -> AsyncIterator[TextDelta]:
        async for event in self._stream:
            if isinstance(event, TextDelta):
                yield event
            else:
                self.final = event


async def final_result(stream: AsyncIterator[Any], kind: type[ResultT], stage: str) -> ResultT:
    """Drain a stage's stream and return its final result (``see``/``generate`` from ``stream``).

    The stream is closed either way, so an abandoned call cancels its generation.
    """
    try:
        async for event in stream:
            if isinstance(event, kind):
                return event
    finally:
        await aclose(stream)
    raise StageUnavailable(stage, "the stream ended without a result")


async def aclose(stream: AsyncIterator[Any]) -> None:
    """Close a stage's stream (an async generator: closing it cancels the work behind it)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
