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

from flashvl.stages.openai_compat.stage import OpenAICompatStage, image_url_for
from flashvl.stages.openai_compat.upstream import completion_as_chunk

__all__ = ["OpenAICompatStage", "completion_as_chunk", "image_url_for"]
