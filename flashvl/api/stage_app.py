"""One stage as its own OpenAI-compatible service: ``flashvl serve --only vision|language``.

A gateway (a full ``flashvl serve``) reaches it with the ``openai:`` stage specs it already has,
``--vision openai:http://VISION:8080/v1#flashvl-vision`` and
``--language openai:http://LANGUAGE:8080/v1#flashvl-language``, so each stage can run (and scale) as
its own process, container or Kubernetes Deployment.

What it serves: ``POST /v1/chat/completions`` (streamed as SSE or whole), ``GET /v1/models``, and the
same ``/healthz``, ``/readyz`` and ``/metrics`` as the full server, behind the same security gate
(API keys / JWT, limits, the model queue). The stage is called through the runtime's guarded calls
(model queue, breaker, deadline, per-stage metrics), as in one process.

- ``language``: the messages go to the language stage as they are (system, user, assistant text);
  ``logprobs: true`` streams each token's log-probability (the gateway's cascade confidence),
  ``response_format`` constrains the output, ``max_tokens``/``temperature``/``top_p``/``stop``/``seed``
  are honoured.
- ``vision``: the last user message's images and text go to the vision stage; the answer is the
  stage's own answer to the question when it has one (a VLM's answer, or an exact rule of the offline
  pipeline: a count, a colour, the text), else its description of the image. No text asks for a
  caption. The stage's full result (description, observations, boxes) is in the response's
  ``flashvl`` field for clients that want it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from flashvl import __version__
from flashvl.api.app import add_http_layers, serving, startup_failed
from flashvl.api.auth import require_scope
from flashvl.api.deps import AppState, Ready, State
from flashvl.api.openai_schemas import ChatCompletionRequest, ImagePart, TextPart
from flashvl.api.openai_tools import chat_message, check_tools
from flashvl.api.routes import health
from flashvl.config import Settings
from flashvl.errors import FlashvlError, StageUnavailable
from flashvl.observability import Metrics, get_logger
from flashvl.pipeline.admission import ModelQueueCollector
from flashvl.pipeline.guarded import Failure
from flashvl.pipeline.resilience import VisionDown
from flashvl.runtime import Runtime
from flashvl.stages.base import ChatMessage, ChatRequest, Generation, TextDelta, VisionRequest

log = get_logger("flashvl.stage_app")
Role = Literal["vision", "language"]


def served_model(role: str) -> str:
    """The model name a gateway's ``openai:`` spec names: ``flashvl-vision`` / ``flashvl-language``."""
    return f"flashvl-{role}"


def create_stage_app(settings: Settings, role: Role, *, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """The app serving only the ``role`` stage (built from ``settings`` by the runtime)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            runtime = Runtime(settings, roles={role}, metrics=metrics)
            if role == "language" and runtime.language_stage is None:
                raise FlashvlError("bad_setting", "--only language needs a language stage (--language is 'none')", 500)
        except Exception as exc:
            raise startup_failed(exc, on_fatal) from None
        state = AppState(runtime, metrics)
        app.state.flashvl = state
        metrics.registry.register(ModelQueueCollector(lambda: runtime.admission))
        async with serving(state, runtime, on_fatal, only=role):
            yield

    app = FastAPI(
        title=f"flashvl {role} stage",
        version=__version__,
        description=f"The flashvl {role} stage as an OpenAI-compatible API.",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(_router(role))
    app.include_router(health.router)
    add_http_layers(app, settings, metrics)
    return app


def _router(role: Role) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_scope("infer"))])
    name = served_model(role)

    def card(state: AppState) -> dict[str, Any]:
        stage = state.runtime.vision_stage if role == "vision" else state.runtime.language_stage
        return {
            "id": name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "flashvl",
            "flashvl": {
                "role": role,
                "stage": getattr(stage, "name", None),
                "is_vlm": bool(getattr(stage, "is_vlm", False)),
            },
        }

    @router.get("/models")
    async def models(state: State) -> dict[str, Any]:
        """The one served model: this stage."""
        return {"object": "list", "data": [card(state)]}

    @router.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request, state: Ready) -> Any:
        """The stage's answer, as OpenAI chat completions (``stream`` as SSE)."""
        if body.model != name:
            raise FlashvlError(
                "model_not_found", f"The model `{body.model[:100]}` does not exist; this is {name}.", 404
            )
        events = await (_language(body, state) if role == "language" else _vision(body, state))
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.stream:
            first = await anext(events)  # a failure before the first piece is still an HTTP error
            return EventSourceResponse(
                _sse(events, first, completion_id, created, name, body), ping=15, sep="\n", headers=_no_buffering()
            )
        text: list[str] = []
        entries: list[dict[str, Any]] = []
        final: dict[str, Any] = {}
        async for event in events:
            if isinstance(event, TextDelta):
                text.append(event.text)
                entries.extend(event.logprobs or [])
            else:
                final = event
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
        if final.get("tool_calls"):  # the client's tools called: they run it and send the result back
            message = {"role": "assistant", "content": message["content"] or None, "tool_calls": final["tool_calls"]}
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": final.get("finish_reason", "stop")}
        if body.logprobs:
            choice["logprobs"] = {"content": entries}
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": name,
                "choices": [choice],
                "usage": final.get("usage"),
                "flashvl": final.get("flashvl"),
            }
        )

    return router


def _no_buffering() -> dict[str, str]:
    return {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _messages(body: ChatCompletionRequest) -> tuple[list[ChatMessage], list[str], str]:
    """(messages with the client's tool calls and results, image references of the last user message, its text)."""
    messages: list[ChatMessage] = []
    images: list[str] = []
    question = ""
    known_calls: set[str] = set()
    for message in body.messages:
        role = "system" if message.role == "developer" else message.role
        content = message.content
        if content is None and not message.tool_calls and role != "tool":
            continue
        content = content or ""
        if isinstance(content, str):
            text, refs = content, []
        else:
            text = "\n".join(p.text for p in content if isinstance(p, TextPart))
            refs = [p.image_url.url for p in content if isinstance(p, ImagePart)]
        messages.append(chat_message(message, role, text, known_calls))
        if role == "user":
            question, images = text, refs
    return messages, images, question


async def _language(body: ChatCompletionRequest, state: AppState) -> AsyncIterator[TextDelta | dict[str, Any]]:
    """The language stage's pieces, then a summary dict (finish reason, usage)."""
    guarded = state.runtime.language
    assert guarded is not None
    messages, images, _ = _messages(body)
    if images:
        raise FlashvlError("unsupported_parameter", "The language stage reads text only: send no image_url.", 400)
    if not any(m.content.strip() or m.tool_calls for m in messages):
        raise FlashvlError("empty_prompt", "The messages have no text.", 400)
    schema: dict[str, Any] | None = None
    if body.response_format is not None and body.response_format.type == "json_object":
        schema = {"type": "object"}
    elif body.response_format is not None and body.response_format.type == "json_schema":
        fmt = body.response_format.json_schema
        if fmt is None or fmt.schema_ is None:
            raise FlashvlError("invalid_json_schema", "response_format json_schema needs json_schema.schema.", 400)
        schema = fmt.schema_
    check_tools(body, guarded, schema)  # the client's tools: passed on, or refused (never dropped)
    limit = state.settings.max_tokens_limit
    max_tokens = body.max_completion_tokens or body.max_tokens or state.settings.max_tokens
    if max_tokens > limit:
        raise FlashvlError(
            "max_tokens_too_large", f"max_tokens {max_tokens} is over this server's limit of {limit}.", 400
        )
    request = ChatRequest(
        messages=messages,
        max_tokens=max_tokens,
        temperature=state.settings.temperature if body.temperature is None else body.temperature,
        top_p=body.top_p,
        stop=[body.stop] if isinstance(body.stop, str) else body.stop,
        json_schema=schema,
        enable_thinking=bool((body.chat_template_kwargs or {}).get("enable_thinking", False)),
        seed=body.seed,
        logprobs=body.logprobs,
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        tools=body.tools or None,
        tool_choice=body.tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
    )

    async def run() -> AsyncIterator[TextDelta | dict[str, Any]]:
        async for event in guarded.stream(request, live=True):
            if isinstance(event, TextDelta):
                yield event
            elif isinstance(event, Failure):
                raise StageUnavailable(guarded.name, f"language stage unavailable ({event.reason})", retry_after=5.0)
            elif isinstance(event, Generation):
                calls = [call.to_openai() for call in event.tool_calls or []]
                yield {
                    "finish_reason": "tool_calls" if calls else event.finish_reason,
                    "tool_calls": calls,
                    "usage": _usage(event.prompt_tokens, event.completion_tokens),
                    "flashvl": {"stage": event.stage, "confidence": event.confidence},
                }

    return run()


async def _vision(body: ChatCompletionRequest, state: AppState) -> AsyncIterator[TextDelta | dict[str, Any]]:
    """The vision stage's answer (or description) as one piece, then a summary dict."""
    if body.tools or any(m.role == "tool" or m.tool_calls for m in body.messages):
        raise FlashvlError(
            "tools_unsupported", "The vision stage does not call tools; send tools to the language stage.", 400
        )
    _, refs, question = _messages(body)
    if not refs:
        raise FlashvlError("empty_prompt", "The vision stage needs an image (an image_url part).", 400)
    if len(refs) > state.settings.max_images_per_request:
        raise FlashvlError(
            "too_many_images", f"At most {state.settings.max_images_per_request} images per request.", 400
        )
    images = [await state.intake.from_reference(ref) for ref in refs]
    request = VisionRequest(
        images=images,
        question=question.strip() or None,
        task="vqa" if question.strip() else "caption",
        max_pixels=body.max_pixels,
        enable_thinking=bool((body.chat_template_kwargs or {}).get("enable_thinking", False)),
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
    )
    try:
        seen = await state.runtime.vision.see(request)
    except VisionDown as exc:  # breaker open, timeout or failure: a 503 the gateway retries or degrades on
        raise StageUnavailable(state.runtime.vision.name, f"vision stage unavailable ({exc})", retry_after=5.0) from exc
    result = seen.result
    text = result.answer if result.answer is not None else result.description

    async def run() -> AsyncIterator[TextDelta | dict[str, Any]]:
        yield TextDelta(text)
        yield {
            "finish_reason": result.finish_reason,
            "usage": _usage(result.prompt_tokens, result.completion_tokens),
            "flashvl": {
                "stage": result.stage,
                "answer_source": result.answer_source,
                "description": result.description,
                "confidence": result.confidence,
                "boxes": [box.to_dict() for box in result.boxes],
                "observations": result.observations,
                "cache": seen.cache.get("vision"),
            },
        }

    return run()


async def _sse(
    events: AsyncIterator[TextDelta | dict[str, Any]],
    first: TextDelta | dict[str, Any],
    completion_id: str,
    created: int,
    model: str,
    body: ChatCompletionRequest,
) -> AsyncIterator[str]:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        return json.dumps(payload | extra, ensure_ascii=False)

    async def rest() -> AsyncIterator[TextDelta | dict[str, Any]]:
        yield first
        async for event in events:
            yield event

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    try:
        async for event in rest():
            if isinstance(event, TextDelta):
                delta = {"reasoning_content": event.text} if event.kind == "thinking" else {"content": event.text}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
                if body.logprobs and event.kind == "answer":
                    choice["logprobs"] = {"content": event.logprobs or []}
                yield chunk([choice])
            else:
                for index, call in enumerate(event.get("tool_calls") or []):  # each call whole, in one piece
                    piece = {"tool_calls": [{"index": index, **call}]}
                    yield chunk([{"index": 0, "delta": piece, "finish_reason": None}])
                yield chunk(
                    [{"index": 0, "delta": {}, "finish_reason": event.get("finish_reason", "stop")}],
                    flashvl=event.get("flashvl"),
                )
                if include_usage:
                    yield chunk([], usage=event.get("usage"))
    except FlashvlError as exc:  # headers are gone: report in-band (the gateway's client reads it)
        yield json.dumps({"error": exc.to_dict()})
    except Exception as exc:
        log.exception("stream_failed", error=type(exc).__name__)
        yield json.dumps({"error": {"code": "internal_error", "message": "The answer failed mid-stream."}})
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
    yield "[DONE]"
