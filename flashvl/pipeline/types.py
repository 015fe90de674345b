"""What goes into the pipeline (``Query``) and what comes out (``Answer``, ``StageRecord``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from flashvl.media.types import LoadedImage
from flashvl.stages.base import Box, ChatMessage, Task, ToolCall

Route = Literal["rule", "direct", "cascade", "vision-only", "text-only", "fallback"]
RequestedRoute = Literal["direct", "cascade", "auto"]
NOTICE_VISION_ONLY = {"zh": "当前仅提供图像描述", "en": "image description only"}


@dataclass
class Query:
    images: list[LoadedImage]
    question: str | None = None
    task: Task = "vqa"
    max_tokens: int = 256
    temperature: float = 0.2
    enable_thinking: bool = False
    max_pixels: int | None = None  # per-request cap on pixels the vision stage analyses
    messages: list[ChatMessage] | None = None  # earlier turns (OpenAI API), oldest first
    route: RequestedRoute | None = None  # None: the server's default (route_default)
    include_intermediate: bool = False  # return each stage's own output too
    # The caller reads pieces as they come (SSE). False: only the final answer counts, so stages
    # may skip per-token hand-offs (``Pipeline.answer`` sets it).
    live: bool = True
    # Token-probability confidence from the language stage (costs ~2% of a short answer's time).
    confidence: bool = True
    # Who asked (the authenticated principal's name, e.g. "key:app"); owner of a flagged answer's review item.
    principal: str | None = None
    # OpenAI sampling and output controls, passed to the model that writes the answer.
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    json_schema: dict[str, Any] | None = None  # constrain the answer to this JSON schema (response_format)
    top_logprobs: int | None = None  # None: no per-token log-probabilities; n: each token and its n alternatives
    system: str | None = None  # the client's system message on an image request (instructions for the answer)
    # The client's own tools (OpenAI ``tools``; the client runs them), for the language stage that writes the
    # answer; not the server's exact tools (``Pipeline.tools``).
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # On an image request: the turns after the last user message (the assistant's tool calls and the
    # ``tool`` results), appended to the cascade's prompt so the answer is written from the results.
    tool_turns: list[ChatMessage] | None = None

    @property
    def needs_language_model(self) -> bool:
        """The answer must come from a language model: JSON output, a client's system instructions, or the
        client's tools (and their results)."""
        return self.json_schema is not None or bool(self.system) or bool(self.tools) or bool(self.tool_turns)


@dataclass
class StageRecord:
    name: str  # "vision" | "language" | "vision-reask" | "voter"
    backend: str
    seconds: float
    cached: bool = False
    steps: dict[str, float] = field(default_factory=dict)
    replica: str | None = None  # where it ran (a Ray Serve replica); None: in this process

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "seconds": round(self.seconds, 4),
            "cached": self.cached,
            "steps": {k: round(v, 4) for k, v in self.steps.items()},
            "replica": self.replica,
        }


@dataclass
class Answer:
    text: str
    route: Route
    vision_stage: str | None
    language_stage: str | None
    confidence: float | None = None
    confidence_source: str | None = None
    stages: list[StageRecord] = field(default_factory=list)
    thinking: str | None = None
    boxes: list[Box] = field(default_factory=list)
    observations: dict[str, Any] | None = None
    description: str | None = None
    notice: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    route_decision: dict[str, Any] | None = None  # why this route: strategy, reason, score
    degraded: bool = False  # a stage was down or timed out; ``notice`` says what the answer lacks
    needs_review: bool = False
    review_reasons: list[str] = field(default_factory=list)
    review_id: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # {"vision": "hit" | "miss" | "off", "backend": ...}
    disclaimer: str | None = None
    intermediate: dict[str, Any] | None = None  # only when the query asked for it
    logprobs: list[dict[str, Any]] | None = None  # per-token log-probabilities (OpenAI's shape), when asked
    sources: list[dict[str, Any]] | None = None  # a knowledge-base answer's cited pages (flashvl/kb/)
    tools: list[dict[str, Any]] | None = None  # the language stage's tool calls: {name, arguments, result, seconds}
    tool_calls: list[ToolCall] | None = None  # calls of the client's tools (OpenAI ``tool_calls``)

    def usage(self) -> dict[str, int]:
        """Tokens of the stage call that wrote the answer (the vision stage's or the language stage's)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def meta(self) -> dict[str, Any]:
        """What every response says about how it was made (the API's ``ResponseMeta``, field for field)."""
        return {
            "route": self.route,
            "vision_stage": self.vision_stage,
            "language_stage": self.language_stage,
            "stages": [s.to_dict() for s in self.stages],
            "confidence": self.confidence,
            "confidence_source": self.confidence_source,
            "notice": self.notice,
            "route_decision": self.route_decision,
            "degraded": self.degraded,
            "needs_review": self.needs_review,
            "review_reasons": self.review_reasons,
            "review_id": self.review_id,
            "cache": self.cache,
            "disclaimer": self.disclaimer,
            "finish_reason": self.finish_reason,
            "usage": self.usage(),
            "intermediate": self.intermediate,
            "sources": self.sources,
            "tools": self.tools,
        }
