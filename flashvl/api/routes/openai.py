"""OpenAI-compatible /v1/chat/completions (with image_url parts) and /v1/models."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse

from flashvl.api.auth import Caller, require_scope
from flashvl.api.deps import AppState, Ready, State, answer_query, meta, record_answer, resolve_max_tokens
from flashvl.api.openai_schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceMessage,
    ChunkChoice,
    ChunkDelta,
    ErrorBody,
    ImagePart,
    ModelList,
    StreamError,
    TextPart,
    Usage,
)
from flashvl.api.schemas import ResponseMeta
from flashvl.errors import FlashvlError
from flashvl.observability import get_logger
from flashvl.pipeline.service import Answer, Query
from flashvl.stages.base import ChatMessage, TextDelta

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_scope("infer"))])
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
    images: list[str] = []
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
        history.append(ChatMessage(role, text))
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
async def chat_completions(body: ChatCompletionRequest, request: Request, state: Ready, caller: Caller) -> Any:
    """OpenAI chat completions; images as ``image_url`` parts (URL or data: URL); ``stream`` as SSE."""
    query = await _build_query(body, state)
    query.principal = caller.name
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = body.model or served_model_name(state)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _stream(request, state, query, completion_id, created, model, include_usage)
        return EventSourceResponse(events, ping=15, sep="\n")
    answer = await answer_query(request, state, query)
    info = meta(request, answer)
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=model,
        choices=[
            Choice(
                finish_reason=info.finish_reason,
                message=ChoiceMessage(content=answer.text, reasoning_content=answer.thinking),
            )
        ],
        usage=info.usage,
        flashvl=info,
    )


async def _stream(
    request: Request,
    state: AppState,
    query: Query,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    def chunk(
        choices: list[ChunkChoice] | None = None, usage: Usage | None = None, flashvl: ResponseMeta | None = None
    ) -> str:
        return ChatCompletionChunk(
            id=completion_id, created=created, model=model, choices=choices or [], usage=usage, flashvl=flashvl
        ).model_dump_json()

    def error(body: ErrorBody) -> str:
        return StreamError(error=body).model_dump_json()

    yield chunk(choices=[ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])
    events = state.pipeline.stream(query)
    try:
        async with asyncio.timeout(state.settings.request_timeout_s):
            async for event in events:
                if isinstance(event, TextDelta):
                    delta = (
                        ChunkDelta(reasoning_content=event.text)
                        if event.kind == "thinking"
                        else ChunkDelta(content=event.text)
                    )
                    yield chunk(choices=[ChunkChoice(delta=delta)])
                elif isinstance(event, Answer):
                    record_answer(request, state, event, query)
                    info = meta(request, event)
                    yield chunk(choices=[ChunkChoice(finish_reason=info.finish_reason)], flashvl=info)
                    if include_usage:
                        yield chunk(usage=info.usage)
    except TimeoutError:
        state.metrics.errors.labels("request_timeout").inc()
        yield error(ErrorBody(code="request_timeout", message="The answer took too long."))
    except FlashvlError as exc:
        state.metrics.errors.labels(exc.code).inc()
        yield error(ErrorBody.model_validate(exc.to_dict()))
    except Exception as exc:  # headers are gone: report in-band, log the detail server-side
        log.exception("stream_failed", error=type(exc).__name__)
        state.metrics.errors.labels("internal_error").inc()
        yield error(ErrorBody(code="internal_error", message="The answer failed mid-stream."))
    finally:
        await events.aclose()
    yield "[DONE]"
