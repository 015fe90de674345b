"""OpenAI-compatible /v1/chat/completions (with image_url parts) and /v1/models."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
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
    ChoiceLogprobs,
    ChoiceMessage,
    ChunkChoice,
    ChunkDelta,
    ChunkFunction,
    ChunkToolCall,
    ErrorBody,
    ImagePart,
    ModelCard,
    ModelList,
    ResponseToolCall,
    StreamError,
    StreamMeta,
    TextPart,
    Usage,
    unsupported_fields,
)
from flashvl.api.openai_tools import chat_message, check_tools
from flashvl.api.routes.kb import grounded
from flashvl.api.schemas import ResponseMeta
from flashvl.errors import FlashvlError
from flashvl.observability import get_logger
from flashvl.pipeline.service import Answer, Query
from flashvl.stages.base import ChatMessage, TextDelta

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_scope("infer"))])
log = get_logger("flashvl.openai")


def served_model_name(state: AppState) -> str:
    return "flashvl"


def _model_card(state: AppState) -> dict[str, Any]:
    pipeline = state.pipeline
    return {
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


def _model_not_found(model: str) -> FlashvlError:
    # As vLLM answers: 404 for a model this server does not serve (GET /v1/models lists the names).
    return FlashvlError("model_not_found", f"The model `{model[:100]}` does not exist (see GET /v1/models).", 404)


@router.get("/models", response_model=ModelList)
async def list_models(state: State) -> dict[str, Any]:
    """The one served model, with the stages behind it."""
    return {"object": "list", "data": [_model_card(state)]}


@router.get("/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, state: State) -> dict[str, Any]:
    """One served model; 404 ``model_not_found`` for any other name."""
    if model_id != served_model_name(state):
        raise _model_not_found(model_id)
    return _model_card(state)


def _check_parameters(body: ChatCompletionRequest, state: AppState) -> None:
    """Every OpenAI parameter is honoured or refused: nothing is dropped silently."""
    if body.model != served_model_name(state):
        raise _model_not_found(body.model)
    if extra := unsupported_fields(body):
        raise FlashvlError(
            "unsupported_parameter",
            f"Not supported by this server: {', '.join(extra)[:300]}. Leave them out (README: OpenAI parameters).",
            400,
        )
    if body.n != 1:
        raise FlashvlError("unsupported_parameter", f"n={body.n}: this server returns one choice (n=1) only.", 400)
    if body.top_logprobs is not None and not body.logprobs:
        raise FlashvlError("invalid_request", "top_logprobs needs logprobs: true.", 400)
    schema = _json_schema(body)
    if schema is not None and len(json.dumps(schema)) > state.settings.document_schema_max_bytes:
        raise FlashvlError(
            "invalid_json_schema",
            f"The JSON schema is larger than {state.settings.document_schema_max_bytes} bytes.",
            400,
        )
    check_tools(body, state.pipeline.language, schema)


def _json_schema(body: ChatCompletionRequest) -> dict[str, Any] | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise FlashvlError("invalid_json_schema", "response_format json_schema needs json_schema.schema.", 400)
    return fmt.json_schema.schema_


async def _knowledge(
    body: ChatCompletionRequest,
    request: Request,
    state: AppState,
    caller: Any,
    query: Query,
    completion_id: str,
    created: int,
) -> Any:
    """``"knowledge": {"collection", "top_k"}``: the answer from the collection's pages; ``flashvl.sources``
    names them. Streamed, it comes as one piece (the grounded answer is written under a JSON schema)."""
    assert body.knowledge is not None
    found = await grounded(
        state,
        caller,
        body.knowledge.collection,
        query.question or "",
        top_k=body.knowledge.top_k,
        image=query.images[0] if query.images else None,
        max_tokens=query.max_tokens or state.settings.max_tokens,
    )
    text = found.pop("text")
    found.pop("answered")
    info = ResponseMeta.model_validate(found | {"request_id": getattr(request.state, "request_id", None)})
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def pieces() -> AsyncIterator[str]:
            def chunk(**fields: Any) -> str:
                return ChatCompletionChunk(
                    id=completion_id, created=created, model=body.model, **fields
                ).model_dump_json()

            yield chunk(choices=[ChunkChoice(delta=ChunkDelta(role="assistant", content=text))])
            yield chunk(choices=[ChunkChoice(finish_reason=info.finish_reason)], flashvl=info)
            if include_usage:
                yield chunk(usage=info.usage)
            yield "[DONE]"

        return EventSourceResponse(pieces(), ping=15, sep="\n")
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=body.model,
        choices=[Choice(finish_reason=info.finish_reason, message=ChoiceMessage(content=text))],
        usage=info.usage,
        flashvl=info,
    )


async def _build_query(body: ChatCompletionRequest, state: AppState) -> Query:
    _check_parameters(body, state)
    images: list[str] = []
    history: list[ChatMessage] = []
    question = ""
    known_calls: set[str] = set()
    last_user = -1
    for message in body.messages:
        role = "system" if message.role == "developer" else message.role
        content = message.content
        if content is None and not message.tool_calls and role != "tool":
            continue
        content = content or ""
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
        history.append(chat_message(message, role, text, known_calls))
        if role == "user":
            question = text
            last_user = len(history) - 1
    if not question.strip() and not images:
        raise FlashvlError("empty_prompt", "The last user message has no text and no image.", 400)
    # Limits are checked (above) before any image is fetched or decoded (below).
    loaded = [await state.intake.from_reference(url) for url in images]
    kwargs = body.chat_template_kwargs or {}
    system = "\n\n".join(m.content for m in history if m.role == "system" and m.content.strip())
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
        top_p=body.top_p,
        stop=[body.stop] if isinstance(body.stop, str) else body.stop,
        seed=body.seed,
        json_schema=_json_schema(body),
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        system=system if loaded else None,  # text-only requests carry their system messages in ``messages``
        tools=body.tools or None,
        tool_choice=body.tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
        # An image request's prompt is the cascade's: the client's tool calls and results after the question
        # are added to it (text-only requests carry them in ``messages``).
        tool_turns=[m for m in history[last_user + 1 :] if m.role in ("assistant", "tool")] or None if loaded else None,
    )


@router.post("/chat/completions", response_model=ChatCompletion)
async def chat_completions(body: ChatCompletionRequest, request: Request, state: Ready, caller: Caller) -> Any:
    """OpenAI chat completions; images as ``image_url`` parts (URL or data: URL); ``stream`` as SSE."""
    query = await _build_query(body, state)
    query.principal = caller.name
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = body.model
    if body.knowledge is not None:  # a grounded answer from a knowledge-base collection (flashvl/kb/)
        return await _knowledge(body, request, state, caller, query, completion_id, created)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        # Until the first piece, a failure (a prompt over the context, a busy queue) is still an HTTP error
        # with its own status: the SSE headers go out only once the answer has started.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + state.settings.request_timeout_s
        events = state.pipeline.stream(query)
        try:
            async with asyncio.timeout_at(deadline):
                first = await anext(events)
        except TimeoutError:
            await events.aclose()
            raise FlashvlError("request_timeout", "The answer took too long to start.", 504, retry_after=5) from None
        except BaseException:
            await events.aclose()
            raise
        stream = _stream(request, state, query, completion_id, created, model, include_usage, events, first, deadline)
        return EventSourceResponse(stream, ping=15, sep="\n")
    answer = await answer_query(request, state, query)
    info = meta(request, answer)
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=model,
        choices=[
            Choice(
                finish_reason="tool_calls" if answer.tool_calls else info.finish_reason,
                message=ChoiceMessage(
                    content=answer.text or None if answer.tool_calls else answer.text,
                    reasoning_content=answer.thinking,
                    tool_calls=[ResponseToolCall.model_validate(c.to_openai()) for c in answer.tool_calls]
                    if answer.tool_calls
                    else None,
                ),
                logprobs=_logprobs(query, answer.logprobs),
            )
        ],
        usage=info.usage,
        flashvl=info,
    )


def _logprobs(query: Query, entries: list[dict[str, Any]] | None) -> ChoiceLogprobs | None:
    """OpenAI's ``choices[].logprobs`` when asked: the language stage's tokens (empty when no language
    model wrote the answer, e.g. a rule answer)."""
    if query.top_logprobs is None:
        return None
    return ChoiceLogprobs.model_validate({"content": entries or []})


async def _stream(
    request: Request,
    state: AppState,
    query: Query,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
    events: AsyncGenerator[TextDelta | Answer, None],
    first: TextDelta | Answer,
    deadline: float,
) -> AsyncIterator[str]:
    def chunk(
        choices: list[ChunkChoice] | None = None, usage: Usage | None = None, flashvl: ResponseMeta | None = None
    ) -> str:
        return ChatCompletionChunk(
            id=completion_id, created=created, model=model, choices=choices or [], usage=usage, flashvl=flashvl
        ).model_dump_json()

    def error(body: ErrorBody) -> str:
        return StreamError(error=body).model_dump_json()

    async def rest() -> AsyncIterator[TextDelta | Answer]:
        yield first
        async for event in events:
            yield event

    yield chunk(choices=[ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])
    try:
        async with asyncio.timeout_at(deadline):
            async for event in rest():
                if isinstance(event, TextDelta):
                    delta = (
                        ChunkDelta(reasoning_content=event.text)
                        if event.kind == "thinking"
                        else ChunkDelta(content=event.text)
                    )
                    logprobs = _logprobs(query, event.logprobs) if event.kind == "answer" else None
                    yield chunk(choices=[ChunkChoice(delta=delta, logprobs=logprobs)])
                elif isinstance(event, Answer):
                    record_answer(request, state, event, query)
                    info = meta(request, event)
                    boxes = [box.to_dict() for box in event.boxes]
                    with_boxes = StreamMeta.model_validate(info.model_dump() | {"boxes": boxes})
                    for index, call in enumerate(event.tool_calls or []):  # each call whole, in one piece
                        piece = ChunkToolCall(
                            index=index,
                            id=call.id,
                            type="function",
                            function=ChunkFunction(name=call.name, arguments=call.arguments),
                        )
                        yield chunk(choices=[ChunkChoice(delta=ChunkDelta(tool_calls=[piece]))])
                    finish = "tool_calls" if event.tool_calls else info.finish_reason
                    yield chunk(choices=[ChunkChoice(finish_reason=finish)], flashvl=with_boxes)
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
