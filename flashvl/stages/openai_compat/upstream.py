"""The HTTP side of an OpenAI-compatible upstream: open a streamed chat completion (retrying connection
errors and 408/429/5xx with exponential backoff, tenacity, only while opening), read its SSE chunks (or
one JSON completion from an upstream that ignored ``stream``), and turn failures into ``StageUnavailable``
(503 + Retry-After) or ``upstream_rejected`` (400)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from flashvl.errors import FlashvlError, StageUnavailable

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
REJECT_STATUSES = {400, 413, 422}


class Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


async def open_stream(
    client: httpx.AsyncClient, body: dict[str, Any], *, name: str, base_url: str, retries: int
) -> httpx.Response:
    """POST and return the streaming response once its status is 200, retrying what is retryable."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(retries + 1),
        wait=wait_exponential(multiplier=0.25, max=4),
        retry=retry_if_exception_type(Retryable),
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
                    raise Retryable(f"{type(exc).__name__}: {exc}") from exc
                if response.status_code == 200:
                    return response
                detail = (await response.aread())[:500].decode(errors="replace")
                await response.aclose()
                if response.status_code in RETRY_STATUSES:
                    raise Retryable(
                        f"HTTP {response.status_code}: {detail}",
                        retry_after_seconds(response.headers.get("retry-after")),
                    )
                if response.status_code in REJECT_STATUSES:
                    raise FlashvlError(
                        "upstream_rejected",
                        f"{name}: the upstream refused the request: {detail}",
                        400,
                    )
                raise StageUnavailable(name, f"upstream answered HTTP {response.status_code}: {detail}")
    except Retryable as exc:
        raise StageUnavailable(
            name,
            f"upstream {base_url} failed after {retries + 1} attempts: {exc}",
            retry_after=exc.retry_after or 5.0,
        ) from exc
    raise StageUnavailable(name, "no attempt was made")  # pragma: no cover - tenacity always tries


async def stream_chunks(
    client: httpx.AsyncClient, body: dict[str, Any], *, name: str, base_url: str, retries: int
) -> AsyncGenerator[dict[str, Any], None]:
    """The upstream's stream chunks (SSE ``data:`` JSON). Closing this closes the connection."""
    response = await open_stream(client, body, name=name, base_url=base_url, retries=retries)
    try:
        if response.headers.get("content-type", "").startswith("application/json"):
            # An upstream that ignored ``stream``: its one completion, read as one chunk.
            try:
                whole = json.loads(await response.aread())
            except json.JSONDecodeError as exc:
                raise StageUnavailable(name, "upstream sent invalid JSON") from exc
            if isinstance(whole, dict) and isinstance(whole.get("error"), dict):
                raise StageUnavailable(name, f"upstream error: {whole['error'].get('message')}")
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
                raise StageUnavailable(name, f"upstream error: {chunk['error'].get('message')}")
            yield chunk
    except httpx.HTTPError as exc:  # mid-stream: report, never retry
        raise StageUnavailable(name, f"upstream stream broke: {type(exc).__name__}: {exc}") from exc
    finally:
        await response.aclose()


def without_credentials(url: str) -> str:
    """``url`` without user:password@ and without a query string (where some upstreams take keys)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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


def tokens(value: Any) -> int:
    """A usage count as the upstream sent it (absent, null or malformed: 0)."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def retry_after_seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
