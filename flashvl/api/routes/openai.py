"""OpenAI-compatible /v1/chat/completions (with image_url parts) and /v1/models."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from flashvl.api.deps import AppState, Ready, State, answer_query, meta, record_answer, resolve_max_tokens
from flashvl.api.openai_schemas import ChatCompletion, ChatCompletionRequest, ImagePart, ModelList, TextPart
from flashvl.errors import FlashvlError
from flashvl.observability import get_logger
from flashvl.pipeline.service import Answer, Query
from flashvl.stages.base import ChatMessage, TextDelta

router = APIRouter(prefix="/v1", tags=["openai"])
log = get_logger("flashvl.openai")


def served_model_name(state: AppState) -> str:
    return "flashvl"


@router.get("/models", response_model=ModelList)
async def list_models(state: State) -> dict[str, Any]:
    """The one served model, with the stages behind it."""
    pipeline = state.pipeline
    return {
        "object": "list",
        "data": [
            {
                "id": served_model_name(state),
                "object": "model",
                "created": int(time.time()),
                "owned_by": "flashvl",
                "flashvl": {
                    "vision_stage": pipeline.vision.name,
                    "vision_is_vlm": pipeline.vision.is_vlm,
                    "language_stage": pipeline.language.name if pipeline.language else None,
                },
            }
        ],
    }


async def _build_query(body: ChatCompletionRequest, state: AppState) -> Query:
    images = []
    history: list[ChatMessage] = []
    question = ""
    for message in body.messages:
        role = "system" if message.role == "developer" else message.role
        content = message.content
        if content is None:
            continue
        texts = [content] if isinstance(content, str) else [p.text for p in content if isinstance(p, TextPart)]
        if not isinstance(content, str):
            for part in content:
                if isinstance(part, ImagePart):
                    if len(images) >= state.settings.max_images_per_request:
                        raise FlashvlError(
                            "too_many_images",
                            f"At most {state.settings.max_images_per_request} images per request.",
                            400,
                        )
                    images.append(part.image_url.url)
        text = "\n".join(texts)
        history.append(ChatMessage(role, text))  # type: ignore[arg-type]
        if role == "user":
            question = text
    if not question.strip() and not images:
        raise FlashvlError("empty_prompt", "The last user message has no text and no image.", 400)
    # Limits are checked (above) before any image is fetched or decoded (below).
    loaded = [await state.intake.from_reference(url) for url in images]
    kwargs = body.chat_template_kwargs or {}
    return Query(
        images=loaded,
        question=question or None,
        max_tokens=resolve_max_tokens(state, body.max_completion_tokens or body.max_tokens),
        temperature=state.settings.temperature if body.temperature is None else body.temperature,
        enable_thinking=bool(kwargs.get("enable_thinking", False)),
        max_pixels=body.max_pixels,
        messages=None if loaded else history,
        route=body.route,
        include_intermediate=body.include_intermediate,
        confidence=body.logprobs or body.include_intermediate,
    )


@router.post("/chat/completions", response_model=ChatCompletion)
async def chat_completions(body: ChatCompletionRequest, request: Request, state: Ready) -> Any:
    """OpenAI chat completions; images as ``image_url`` parts (URL or data: URL); ``stream`` as SSE."""
    query = await _build_query(body, state)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = body.model or served_model_name(state)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _stream(request, state, query, completion_id, created, model, include_usage)
        return EventSourceResponse(events, ping=15, sep="\n")
    answer = await answer_query(request, state, query)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": answer.finish_reason,
                "message": {"role": "assistant", "content": answer.text, "reasoning_content": answer.thinking},
            }
        ],
        "usage": _usage(answer),
        "flashvl": meta(request, answer),
    }


def _usage(answer: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


async def _stream(
    request: Request,
    state: AppState,
    query: Query,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        } | extra
        return json.dumps(body, ensure_ascii=False)

    yield chunk({"role": "assistant", "content": ""})
    events = state.pipeline.stream(query)
    try:
        async with asyncio.timeout(state.settings.request_timeout_s):
            async for event in events:
                if isinstance(event, TextDelta):
                    key = "reasoning_content" if event.kind == "thinking" else "content"
                    yield chunk({key: event.text})
                elif isinstance(event, Answer):
                    record_answer(request, state, event, query)
                    yield chunk({}, event.finish_reason, flashvl=meta(request, event))
                    if include_usage:
                        yield json.dumps(
                            {
                                "id": completion_id,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": _usage(event),
                            }
                        )
    except TimeoutError:
        state.metrics.errors.labels("request_timeout").inc()
        yield json.dumps(
            {"error": {"code": "request_timeout", "message": "The answer took too long.", "type": "server_error"}}
        )
    except FlashvlError as exc:
        state.metrics.errors.labels(exc.code).inc()
        yield json.dumps({"error": exc.to_dict()})
    except Exception as exc:  # headers are gone: report in-band, log the detail server-side
        log.exception("stream_failed", error=type(exc).__name__)
        state.metrics.errors.labels("internal_error").inc()
        yield json.dumps(
            {"error": {"code": "internal_error", "message": "The answer failed mid-stream.", "type": "server_error"}}
        )
    finally:
        await events.aclose()
    yield "[DONE]"
