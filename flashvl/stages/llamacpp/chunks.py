"""The body llama.cpp's server gets for a ``ChatRequest``, and what comes back in its chunks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from flashvl.errors import FlashvlError, StageUnavailable
from flashvl.stages.base import ChatRequest, Timings
from flashvl.stages.client_tools import call_schema, chosen_name, forced


def request_body(request: ChatRequest) -> dict[str, Any]:
    """llama.cpp's chat-completions body for ``request`` (always streamed; the prompt cache on)."""
    body: dict[str, Any] = {
        "messages": [m.to_openai() for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        "cache_prompt": True,
        "chat_template_kwargs": {"enable_thinking": request.enable_thinking},
    }
    if request.top_logprobs is not None:
        body |= {"logprobs": True, "top_logprobs": max(1, request.top_logprobs)}
    elif request.logprobs:
        # One alternative per token keeps chunks small; the chosen token's logprob comes with it.
        body |= {"logprobs": True, "top_logprobs": 1}
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = list(request.stop)
    if request.seed is not None:
        # Reproducible: the same seed gives the same answer only if the prompt is evaluated the same way
        # each time; a reused cached prefix is evaluated in other batch shapes (other rounding).
        body |= {"seed": request.seed, "cache_prompt": False}
    if request.json_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"schema": request.json_schema}}
    if request.tools and request.tool_choice != "none":
        # The chat template (jinja) shows the model the tools; llama.cpp parses the calls it writes in its
        # template's format. A forced call ("required" or a named tool; llama.cpp takes only strings) is
        # written under a JSON schema of the allowed calls, which any model follows.
        name = chosen_name(request.tool_choice)
        tools = [t for t in request.tools if name is None or (t.get("function") or {}).get("name") == name]
        body |= {"tools": tools, "tool_choice": "auto"}
        if request.top_logprobs is not None:
            raise FlashvlError(
                "unsupported_parameter", "logprobs with tools: llama.cpp does not report them; leave one out.", 400
            )
        body.pop("logprobs", None)  # llama.cpp refuses them with tools (no confidence for this answer)
        body.pop("top_logprobs", None)
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
        if forced(request.tool_choice):
            schema = call_schema(tools, request.tool_choice)
            body["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
    return body


@dataclass
class Piece:
    """What one stream chunk carried, extracted on the worker thread."""

    content: str = ""
    reasoning: str = ""
    logprobs: list[float] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)  # per token, OpenAI's shape
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI ``delta.tool_calls`` pieces


def openai_entry(entry: dict[str, Any], top: int) -> dict[str, Any]:
    """One token's log-probability as OpenAI returns it (llama.cpp adds an ``id``)."""

    def one(item: dict[str, Any]) -> dict[str, Any]:
        return {"token": item.get("token", ""), "logprob": item.get("logprob"), "bytes": item.get("bytes")}

    return one(entry) | {"top_logprobs": [one(alt) for alt in (entry.get("top_logprobs") or [])[:top]]}


def extract_piece(chunk: dict[str, Any], top: int | None = None) -> Piece:
    piece = Piece(usage=chunk.get("usage"), timings=chunk.get("timings"))
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        piece.content += delta.get("content") or ""
        piece.reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
        piece.tool_calls += delta.get("tool_calls") or []
        piece.finish_reason = choice.get("finish_reason") or piece.finish_reason
        for entry in (choice.get("logprobs") or {}).get("content") or []:
            logprob = entry.get("logprob")
            if isinstance(logprob, int | float) and math.isfinite(logprob):
                piece.logprobs.append(float(logprob))
            if top is not None:
                piece.entries.append(openai_entry(entry, top))
    return piece


def error_from_llama(stage: str, error: dict[str, Any], *, has_schema: bool) -> FlashvlError:
    """Map a llama.cpp error object (``{"code", "message", "type"}``) to a flashvl error."""
    message = str(error.get("message") or "unknown llama.cpp error")
    kind = error.get("type")
    status = int(error.get("code") or 500)
    if kind == "exceed_context_size_error":
        return FlashvlError(
            "context_length_exceeded",
            f"{message} (a slot holds {error.get('n_ctx', '?')} tokens; shorten the prompt)",
            400,
        )
    if status < 500:
        code = "invalid_json_schema" if has_schema and "schema" in message.lower() else "invalid_request"
        return FlashvlError(code, f"{stage}: {message}", 400)
    return StageUnavailable(stage, message)


def llama_timings(llama_timings: dict[str, Any], wall_seconds: float) -> Timings:
    """Seconds per step from llama.cpp's ``timings``; ``queue`` is the rest of the wall time
    (waiting for a slot, thread hand-offs). The token counts go with them: the prompt's tokens
    read from llama.cpp's cache (a reused prefix) and read anew, the generated ones, and with
    speculative decoding the drafted and accepted ones."""
    prompt_ms, predicted_ms = llama_timings.get("prompt_ms"), llama_timings.get("predicted_ms")
    if prompt_ms is None or predicted_ms is None:
        return Timings({"generate": wall_seconds})
    prompt, generate = float(prompt_ms) / 1000, float(predicted_ms) / 1000
    tokens = {
        "prompt_cached": llama_timings.get("cache_n"),
        "prompt_read": llama_timings.get("prompt_n"),
        "generated": llama_timings.get("predicted_n"),
        "drafted": llama_timings.get("draft_n"),
        "draft_accepted": llama_timings.get("draft_n_accepted"),
    }
    return Timings(
        {"queue": max(0.0, wall_seconds - prompt - generate), "prompt": prompt, "generate": generate},
        tokens={k: int(v) for k, v in tokens.items() if isinstance(v, int | float)},
    )
