"""Any OpenAI-compatible `/v1/chat/completions` server as a stage (vLLM, SGLang, llama.cpp, Ollama, ...).

- Streaming is passed through: upstream ``content`` deltas become answer ``TextDelta``s,
  ``reasoning_content`` (vLLM/SGLang with ``--reasoning-parser glm45``; llama.cpp) becomes
  ``kind="thinking"``. Raw ``<think>``/``<answer>``/box tags in ``content`` (an engine without a
  reasoning parser) are split the same way the in-process GLM stage splits them.
- Retries with exponential backoff (tenacity) happen only while opening the stream
  (connection errors, 408/429/5xx): once the first byte of an answer has arrived, a failure
  is reported, never retried (the client may already have shown half an answer).
- Every upstream failure is a ``StageUnavailable`` (503 + Retry-After), except a 400/413/422
  for a request the upstream found invalid (``upstream_rejected``, 400).
- Images go as base64 data URLs (downscaled to ``max_pixels`` first), or in ``url`` mode as the
  original http(s) URL when the image came from one.
- GLM's thinking switch goes as ``chat_template_kwargs: {"enable_thinking": ...}``.
- The client's tools (``tools``, ``tool_choice``, ``parallel_tool_calls``, assistant ``tool_calls`` and
  ``role: "tool"`` messages) go through unchanged; the upstream's ``tool_calls`` (streamed pieces or
  whole) come back as ``Generation.tool_calls``. Thinking is read from ``reasoning_content`` or
  ``reasoning`` (vLLM's newer name), streamed or not; an upstream that answers a stream request
  with one JSON completion is read too.
The API key is sent as a bearer token and never logged.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from flashvl.errors import FlashvlError, StageUnavailable
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
from flashvl.stages.glm_output import StreamParser, parse_output

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
REJECT_STATUSES = {400, 413, 422}
TASK_PROMPTS = {
    "caption": "Describe this image in one or two sentences.",
    "ocr": "Read all the text in this image.",
    "moderate": "Is this image safe for work? Answer yes or no, then say why.",
}


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


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


def _without_credentials(url: str) -> str:
    """``url`` without user:password@ and without a query string (where some upstreams take keys)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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
            "base_url": _without_credentials(self.base_url),
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

    async def _open(self, body: dict[str, Any]) -> httpx.Response:
        """POST and return the streaming response once its status is 200, retrying what is retryable."""
        client = self._client
        if client is None:
            raise StageUnavailable(self.name, "not loaded")
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=0.25, max=4),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        response = await client.send(
                            client.build_request("POST", "/chat/completions", json=body), stream=True
                        )
                    except httpx.TransportError as exc:  # connect/read errors before any answer byte
                        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
                    if response.status_code == 200:
                        return response
                    detail = (await response.aread())[:500].decode(errors="replace")
                    await response.aclose()
                    if response.status_code in RETRY_STATUSES:
                        raise _Retryable(
                            f"HTTP {response.status_code}: {detail}",
                            _retry_after(response.headers.get("retry-after")),
                        )
                    if response.status_code in REJECT_STATUSES:
                        raise FlashvlError(
                            "upstream_rejected",
                            f"{self.name}: the upstream refused the request: {detail}",
                            400,
                        )
                    raise StageUnavailable(self.name, f"upstream answered HTTP {response.status_code}: {detail}")
        except _Retryable as exc:
            raise StageUnavailable(
                self.name,
                f"upstream {self.base_url} failed after {self.retries + 1} attempts: {exc}",
                retry_after=exc.retry_after or 5.0,
            ) from exc
        raise StageUnavailable(self.name, "no attempt was made")  # pragma: no cover - tenacity always tries

    async def _chunks(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """The upstream's stream chunks (SSE ``data:`` JSON). Closing this closes the connection."""
        response = await self._open(body)
        try:
            if response.headers.get("content-type", "").startswith("application/json"):
                # An upstream that ignored ``stream``: its one completion, read as one chunk.
                try:
                    whole = json.loads(await response.aread())
                except json.JSONDecodeError as exc:
                    raise StageUnavailable(self.name, "upstream sent invalid JSON") from exc
                if isinstance(whole, dict) and isinstance(whole.get("error"), dict):
                    raise StageUnavailable(self.name, f"upstream error: {whole['error'].get('message')}")
                yield completion_as_chunk(whole if isinstance(whole, dict) else {})
                return
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError:
                    continue
                if isinstance(chunk.get("error"), dict):
                    raise StageUnavailable(self.name, f"upstream error: {chunk['error'].get('message')}")
                yield chunk
        except httpx.HTTPError as exc:  # mid-stream: report, never retry
            raise StageUnavailable(self.name, f"upstream stream broke: {type(exc).__name__}: {exc}") from exc
        finally:
            await response.aclose()

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
            prompt_tokens=_tokens(usage.get("prompt_tokens")),
            completion_tokens=_tokens(usage.get("completion_tokens")),
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
        question = request.question or TASK_PROMPTS.get(request.task, TASK_PROMPTS["caption"])
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


def completion_as_chunk(completion: dict[str, Any]) -> dict[str, Any]:
    """A whole (non-streamed) chat completion as one stream chunk: each choice's ``message`` as its
    ``delta`` (``content``, ``reasoning_content`` or ``reasoning``, ``tool_calls``), with the usage."""
    choices = []
    for choice in completion.get("choices") or []:
        message = dict(choice.get("message") or {})
        message["tool_calls"] = [
            call | {"index": call.get("index", i)} for i, call in enumerate(message.get("tool_calls") or [])
        ]
        choices.append(
            {"delta": message, "finish_reason": choice.get("finish_reason"), "logprobs": choice.get("logprobs")}
        )
    chunk: dict[str, Any] = {"choices": choices}
    if isinstance(completion.get("usage"), dict):
        chunk["usage"] = completion["usage"]
    return chunk


def _tokens(value: Any) -> int:
    """A usage count as the upstream sent it (absent, null or malformed: 0)."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
