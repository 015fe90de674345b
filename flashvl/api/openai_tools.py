"""The client's own tools on the OpenAI chat API (``tools``, ``tool_choice``, ``tool_calls``, ``role: "tool"``):
checked once for the full API (``routes/openai.py``) and a stage served alone (``stage_app.py``). The
client runs its tools; these are not the server's exact tools (``flashvl/tools/``)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from flashvl.api.openai_schemas import MAX_TOOLS, MAX_TOOLS_JSON_BYTES, TOOL_CHOICE, TOOLS, ChatCompletionRequest
from flashvl.api.openai_schemas import Message as OpenAIMessage
from flashvl.errors import FlashvlError
from flashvl.pipeline.guarded import GuardedLanguage
from flashvl.stages.base import ChatMessage, ToolCall


def invalid(code: str, message: str) -> FlashvlError:
    return FlashvlError(code, message[:500], 400)


def check_tools(body: ChatCompletionRequest, language: GuardedLanguage | None, schema: dict[str, Any] | None) -> None:
    """The client's tools: well formed, bounded, a ``tool_choice`` that names one of them, and a language
    stage that can call them (never dropped silently)."""
    uses_tools = any(m.role == "tool" or m.tool_calls for m in body.messages)
    if body.tools:
        try:
            tools = TOOLS.validate_python(body.tools)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise invalid("invalid_tools", f"tools[{where}]: {first['msg']}") from None
        if len(tools) > MAX_TOOLS:
            raise invalid("invalid_tools", f"At most {MAX_TOOLS} tools per request ({len(tools)} sent).")
        if len(json.dumps(body.tools)) > MAX_TOOLS_JSON_BYTES:
            raise invalid("invalid_tools", f"The tool definitions are over {MAX_TOOLS_JSON_BYTES} bytes of JSON.")
        names = [tool.function.name for tool in tools]
        if len(set(names)) != len(names):
            raise invalid("invalid_tools", "Two tools have the same name.")
        for tool in tools:
            parameters = tool.function.parameters
            if parameters is not None and parameters.get("type", "object") != "object":
                raise invalid(
                    "invalid_tools", f"tools: `{tool.function.name}` parameters must be a JSON schema of type object."
                )
        uses_tools = True
    if body.tool_choice is not None:
        try:
            choice = TOOL_CHOICE.validate_python(body.tool_choice)
        except ValidationError:
            raise invalid(
                "invalid_tool_choice",
                "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}.",
            ) from None
        named = None if isinstance(choice, str) else choice.function.name
        if named is not None and named not in {(t.get("function") or {}).get("name") for t in body.tools or []}:
            raise invalid("invalid_tool_choice", f"tool_choice names `{named[:64]}`, which is not one of the tools.")
        if choice not in ("none", "auto") and not body.tools:  # ("auto" without tools: nothing to choose)
            raise invalid("invalid_tool_choice", f"tool_choice {json.dumps(body.tool_choice)[:80]} needs tools.")
    if not uses_tools:
        return
    if body.knowledge is not None:
        raise invalid("unsupported_parameter", "tools and tool messages cannot be combined with knowledge.")
    if schema is not None and body.tools:
        raise invalid("unsupported_parameter", "tools cannot be combined with a JSON response_format.")
    if language is None:
        raise invalid(
            "tools_unsupported",
            "tools and tool messages need a language stage, and this server has none (--language none); "
            "serve with --language llamacpp or --language openai:<url>#<model>.",
        )
    if not getattr(language.stage, "supports_tools", False):
        raise invalid(
            "tools_unsupported",
            f"This server's language stage ({language.name}) cannot call the client's tools; serve with "
            "--language llamacpp or --language openai:<url>#<model>.",
        )


def chat_message(message: OpenAIMessage, role: str, text: str, known_calls: set[str]) -> ChatMessage:
    """A message as the language stage takes it, with its tool calls or the call it answers."""
    if role == "tool":
        if message.tool_call_id is None or message.tool_call_id not in known_calls:
            raise invalid(
                "invalid_request",
                "A tool message must answer a call of an earlier assistant message (tool_call_id names its id).",
            )
        return ChatMessage("tool", text, tool_call_id=message.tool_call_id)
    if role == "assistant" and message.tool_calls:
        calls = [ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls]
        known_calls.update(call.id for call in calls)
        return ChatMessage("assistant", text, tool_calls=calls)
    return ChatMessage(role, text)  # type: ignore[arg-type]
