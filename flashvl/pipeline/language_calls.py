"""The language side of the pipeline: the cascade's prompt (observations, what nobody observed, the
client's tools or the server's exact tools' results) and the ``ChatRequest`` a query makes. Functions of a
``Pipeline``; ``service.py`` decides when each is called, and the guarded language calls (``guarded.py``)
hold admission, breaker and deadline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flashvl.pipeline import tool_use
from flashvl.pipeline.prompts import cascade_messages
from flashvl.pipeline.types import Query, StageRecord
from flashvl.stages.base import ChatMessage, ChatRequest, VisionResult

if TYPE_CHECKING:
    from flashvl.pipeline.service import Pipeline

# Added to the cascade's instructions when the client defined tools (theirs, not the server's exact tools).
CLIENT_TOOLS_HINT = {
    "en": "The client also gave you tools. When the question needs something the observations cannot tell but a "
    "tool can (a price, the weather, a record), call that tool, with arguments taken from the observations.",
    "zh": "客户端还提供了工具。当问题需要观察结果无法给出、而工具可以给出的信息(价格、天气、记录等)时,"
    "调用该工具,参数取自观察结果。",
}


async def cascade_prompt(
    pipeline: Pipeline, query: Query, seen: VisionResult, base: dict[str, Any], lang: str
) -> tuple[list[ChatMessage], list[StageRecord], list[tool_use.ToolCall]]:
    """The cascade's messages, the records of the calls made for them (a tool plan) and the server's
    exact tool calls (their results are in the last message)."""
    assert pipeline.language is not None and query.question
    ocr_text = "\n".join(line["text"] for line in seen.observations.get("text", {}).get("lines", []))
    unmeasured = seen.observations.get("not_observed")
    messages = cascade_messages(query.question, seen.description, ocr_text, lang, unmeasured)  # type: ignore[arg-type]
    if query.system and messages and messages[0].role == "system":  # the client's instructions come last
        messages[0] = ChatMessage("system", f"{messages[0].content}\n\n{query.system}")
    records, calls = list[StageRecord](), list[tool_use.ToolCall]()
    if query.tools and query.tool_choice != "none" and messages and messages[-1].role == "user":
        # After the question (the prompt's prefix, instructions and observations, stays the same per image).
        messages[-1] = ChatMessage("user", f"{messages[-1].content}\n\n{CLIENT_TOOLS_HINT[lang]}")
    if query.tool_turns:  # the client's tool calls and their results: the answer is written from them
        messages += query.tool_turns
    # The server's exact tools first (not with the client's own tools: the client's calls come back to it).
    if pipeline.tools and query.json_schema is None and not query.tools and not query.tool_turns:
        calls, plan = await tool_use.use_tools(
            pipeline.language, query.question, seen.observations, ocr_text, lang, timeout=pipeline.tool_timeout_s
        )
        records += [plan] if plan is not None else []
        if calls:
            base["tools"] = [call.to_dict() for call in calls]
            results = tool_use.describe_results(calls, lang)
            messages[-1] = tool_use.with_results(messages[-1], results, query.question, lang)
    return messages, records, calls


def chat_request(query: Query, messages: list[ChatMessage], prefix_key: str | None = None) -> ChatRequest:
    """What the language stage is asked, with the query's settings."""
    return ChatRequest(
        messages=messages,
        max_tokens=query.max_tokens,
        temperature=query.temperature,
        enable_thinking=query.enable_thinking,
        logprobs=query.confidence,
        top_p=query.top_p,
        stop=query.stop,
        seed=query.seed,
        json_schema=query.json_schema,
        top_logprobs=query.top_logprobs,
        prefix_key=prefix_key,
        tools=query.tools,
        tool_choice=query.tool_choice,
        parallel_tool_calls=query.parallel_tool_calls,
    )
