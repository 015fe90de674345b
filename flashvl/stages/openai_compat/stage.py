"""The OpenAI-compatible stage itself (see the package's docstring)."""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from flashvl.errors import StageUnavailable
from flashvl.media.types import LoadedImage
from flashvl.stages.base import (
    Box,
    ChatRequest,
    Generation,
    Relay,
    TextDelta,
    Timings,
    ToolCall,
    VisionRequest,
    VisionResult,
    final_result,
)
from flashvl.stages.client_tools import CallAssembler
from flashvl.stages.glm_output import StreamParser, parse_output, vlm_prompt
from flashvl.stages.openai_compat.upstream import stream_chunks, tokens, without_credentials


@dataclass
class _Streamed:
    """What an upstream stream amounted to, once it ended."""

    raw: str
    thinking: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    confidence: float | None
    timings: Timings
    tool_calls: list[ToolCall] | None = None


def image_url_for(image: LoadedImage, mode: str, max_pixels: int | None) -> str:
    """The ``image_url.url`` to send: the original URL (url mode, when there is one) or a data URL."""
    if mode == "url" and image.source_url and image.source_url.startswith(("http://", "https://")):
        return image.source_url
    picture = image.image
    if max_pixels and picture.width * picture.height > max_pixels:
        scale = math.sqrt(max_pixels / (picture.width * picture.height))
        picture = picture.resize((max(1, int(picture.width * scale)), max(1, int(picture.height * scale))))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


class OpenAICompatStage:
    """A ``LanguageStage`` (and, with ``role="vision"``, a ``StreamingVisionStage``) over HTTP."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        role: Literal["vision", "language"],
        api_key: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        retries: int = 2,
        image_mode: Literal["url", "base64"] = "base64",
        enable_thinking_kwarg: bool = True,
        name: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self.role = role
        self.is_vlm = role == "vision"
        self.name = name or f"openai:{model}"
        self._api_key = api_key
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.retries = retries
        self.image_mode = image_mode
        self.enable_thinking_kwarg = enable_thinking_kwarg
        self.supports_tools = role == "language"  # the client's tools go to the upstream as they are
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # no key in reprs or logs
        return f"OpenAICompatStage({self.base_url!r}, {self.model_id!r}, role={self.role!r})"

    def fingerprint(self) -> dict[str, Any]:
        """The upstream (base URL and model) and how it is asked (image mode, thinking switch).
        Never the API key; not the role, timeouts or retries."""
        from flashvl import __version__

        return {
            "class": type(self).__qualname__,
            "name": self.name,
            "model_id": self.model_id,
            "code": __version__,
            "base_url": without_credentials(self.base_url),
            "image_mode": self.image_mode,
            "enable_thinking_kwarg": self.enable_thinking_kwarg,
        }

    # ------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        """Open the connection pool. The upstream is not required to be up yet: failures show per request."""
        if self._client is None:
            headers = {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.AsyncClient(
                base_url=self.base_url, timeout=self.timeout, headers=headers, trust_env=False
            )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # ------------------------------------------------------------ HTTP

    def _body(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        enable_thinking: bool,
        stop: list[str] | None = None,
        seed: int | None = None,
        json_schema: dict[str, Any] | None = None,
        logprobs: bool = True,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if logprobs and not tools:  # (llama.cpp refuses logprobs with tools)
            body["logprobs"] = True  # for confidence; engines that lack it ignore it
        optional = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop": stop,
            "seed": seed,
        }
        body |= {k: v for k, v in optional.items() if v is not None}
        if json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": json_schema},
            }
        if self.enable_thinking_kwarg:
            body["chat_template_kwargs"] = {"enable_thinking": enable_thinking}
        if tools:
            body["tools"] = tools
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
            if parallel_tool_calls is not None:
                body["parallel_tool_calls"] = parallel_tool_calls
        return body

    async def _chunks(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """The upstream's stream chunks (``upstream.py``: retries while opening, never after)."""
        if self._client is None:
            raise StageUnavailable(self.name, "not loaded")
        async with aclosing(
            stream_chunks(self._client, body, name=self.name, base_url=self.base_url, retries=self.retries)
        ) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _run(self, body: dict[str, Any]) -> AsyncIterator[TextDelta | _Streamed]:
        """Yield ``TextDelta``s, then a ``_Streamed`` (raw text, the upstream's usage and finish reason)."""
        parser = StreamParser()
        thinking: list[str] = []
        logprobs: list[float] = []
        usage: dict[str, Any] = {}
        finish_reason = "stop"
        started = time.perf_counter()
        first_token_s: float | None = None
        calls = CallAssembler()
        async with aclosing(self._chunks(body)) as chunks:
            async for chunk in chunks:
                if isinstance(chunk.get("usage"), dict):  # with include_usage: the last chunk, no choices
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    finish_reason = choice.get("finish_reason") or finish_reason
                    for entry in (choice.get("logprobs") or {}).get("content") or []:
                        value = entry.get("logprob")
                        if isinstance(value, int | float) and math.isfinite(value):
                            logprobs.append(float(value))
                    calls.feed(delta.get("tool_calls"))
                    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
                    if reasoning or delta.get("content"):
                        first_token_s = first_token_s or time.perf_counter() - started
                    if reasoning:
                        thinking.append(reasoning)
                        yield TextDelta(reasoning, kind="thinking")
                    for kind, text in parser.feed(delta.get("content") or ""):
                        yield TextDelta(text, kind=kind)
        for kind, text in parser.flush():
            yield TextDelta(text, kind=kind)
        total = time.perf_counter() - started
        yield _Streamed(
            raw="".join(parser.raw),
            thinking="".join(thinking),
            prompt_tokens=tokens(usage.get("prompt_tokens")),
            completion_tokens=tokens(usage.get("completion_tokens")),
            finish_reason=finish_reason,
            confidence=math.exp(sum(logprobs) / len(logprobs)) if logprobs else None,
            timings=Timings({"first_token": first_token_s or total, "stream": total - (first_token_s or total)}),
            tool_calls=calls.calls() or None,
        )

    # ------------------------------------------------------------ language

    def stream(self, request: ChatRequest | VisionRequest) -> AsyncIterator[Any]:
        """Language: deltas then a ``Generation``. Vision: deltas then a ``VisionResult``."""
        if isinstance(request, VisionRequest):
            return self._stream_vision(request)
        return self._stream_chat(request)

    async def _stream_chat(self, request: ChatRequest) -> AsyncIterator[TextDelta | Generation]:
        body = self._body(
            [m.to_openai() for m in request.messages],
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            enable_thinking=request.enable_thinking,
            stop=request.stop,
            seed=request.seed,
            json_schema=request.json_schema,
            logprobs=request.logprobs,
            tools=request.tools,
            tool_choice=request.tool_choice,
            parallel_tool_calls=request.parallel_tool_calls,
        )
        run = Relay(self._run(body))
        async for delta in run:
            yield delta
        summary: _Streamed = run.final
        parsed = parse_output(summary.raw)
        thinking = "".join(filter(None, [summary.thinking, parsed.thinking])) or None
        yield Generation(
            stage=self.name,
            text=parsed.answer,
            thinking=thinking,
            finish_reason="tool_calls" if summary.tool_calls else summary.finish_reason,
            prompt_tokens=summary.prompt_tokens,
            completion_tokens=summary.completion_tokens,
            confidence=summary.confidence,
            timings=summary.timings,
            tool_calls=summary.tool_calls,
        )

    async def generate(self, request: ChatRequest) -> Generation:
        return await final_result(self._stream_chat(request), Generation, self.name)

    # ------------------------------------------------------------ vision

    async def _stream_vision(self, request: VisionRequest) -> AsyncIterator[TextDelta | VisionResult]:
        if not request.images:
            raise StageUnavailable(self.name, "a vision request needs an image")
        content: list[dict[str, Any]] = [
            {
                "type": "image_url",
                "image_url": {"url": image_url_for(img, self.image_mode, request.max_pixels)},
            }
            for img in request.images
        ]
        question = request.question or vlm_prompt(request.task)
        content.append({"type": "text", "text": question})
        body = self._body(
            [{"role": "user", "content": content}],
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=None,
            enable_thinking=request.enable_thinking,
        )
        run = Relay(self._run(body))
        async for delta in run:
            yield delta
        summary: _Streamed = run.final
        target = request.images[-1]
        parsed = parse_output(summary.raw, target.width, target.height)
        thinking = "".join(filter(None, [summary.thinking, parsed.thinking])) or None
        score = summary.confidence if summary.confidence is not None else 1.0
        yield VisionResult(
            stage=self.name,
            description=parsed.answer,
            answer=parsed.answer,
            answer_source="model",
            confidence=summary.confidence,
            thinking=thinking,
            boxes=[Box(b.label, score, *b.pixels, norm=b.norm) for b in parsed.boxes],
            observations={"upstream": self.base_url, "model": self.model_id},
            timings=summary.timings,
            prompt_tokens=summary.prompt_tokens,
            completion_tokens=summary.completion_tokens,
            finish_reason=summary.finish_reason,
        )

    async def see(self, request: VisionRequest) -> VisionResult:
        return await final_result(self._stream_vision(request), VisionResult, self.name)
