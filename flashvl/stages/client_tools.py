"""Client-defined tools (OpenAI ``tools`` / ``tool_calls``) as language stages see them.

Shared by the llama.cpp stage and the ``openai:`` client: reading streamed ``tool_calls`` deltas into
whole calls, and reading calls a model wrote as text. Small models often answer a tool request with
the call as plain JSON (``{"name": ..., "arguments": {...}}``, in a ```json fence, or inside Hermes
``<tool_call>`` tags that the engine did not parse); those are read as calls when they name a tool the
client defined. These are the client's tools (the client runs them), not the server's own exact
tools in ``flashvl/tools/``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from flashvl.stages.base import ChatMessage, ToolCall

_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_CALL_STARTS = ("{", "[", "```", "<tool_call>")


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def tool_names(tools: list[dict[str, Any]] | None) -> list[str]:
    return [str((tool.get("function") or {}).get("name")) for tool in tools or []]


def chosen_name(tool_choice: str | dict[str, Any] | None) -> str | None:
    """The tool a ``{"type": "function", "function": {"name": ...}}`` choice forces, else None."""
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        return str(name) if name is not None else None
    return None


def forced(tool_choice: str | dict[str, Any] | None) -> bool:
    """The model must call a tool: ``"required"`` or a named function."""
    return tool_choice == "required" or chosen_name(tool_choice) is not None


def call_schema(tools: list[dict[str, Any]], tool_choice: str | dict[str, Any] | None) -> dict[str, Any]:
    """A JSON schema whose instances are exactly one call ``{"name", "arguments"}`` of an allowed tool
    (grammar-constrained decoding writes a forced call this way)."""
    name = chosen_name(tool_choice)
    options = []
    for tool in tools:
        function = tool.get("function") or {}
        if name is not None and function.get("name") != name:
            continue
        parameters = function.get("parameters") or {"type": "object"}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": function.get("name")}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def may_be_call(text: str) -> bool:
    """Whether text that has begun so could still turn out to be a call written as text (so it is held
    back from a stream until that is known)."""
    head = text.lstrip()
    return not head or any(head.startswith(s) or s.startswith(head) for s in _CALL_STARTS)


def _objects(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if text.startswith("{{") and text.endswith("}}"):  # Qwen's template shows the format as {{...}}
        try:
            return json.loads(text[1:-1])
        except json.JSONDecodeError:
            pass
    return None


def parse_text_calls(text: str, names: list[str]) -> list[ToolCall] | None:
    """Calls of the tools ``names`` written as the whole of ``text``, or None when it is not that."""
    body = text.strip()
    if not body:
        return None
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    tagged = _TAGGED.findall(body) if body.startswith("<tool_call>") else []
    candidates = [_loads(part) for part in tagged] if tagged else [_loads(body)]
    calls: list[ToolCall] = []
    for candidate in candidates:
        for obj in _objects(candidate):
            if not isinstance(obj, dict) or obj.get("name") not in names:
                return None
            arguments = obj.get("arguments", obj.get("parameters", {}))
            if isinstance(arguments, str):
                arguments = _loads(arguments)
            if not isinstance(arguments, dict):
                return None
            calls.append(ToolCall(new_call_id(), str(obj["name"]), json.dumps(arguments, ensure_ascii=False)))
    return calls or None


def answered_before(calls: list[ToolCall], messages: list[ChatMessage]) -> bool:
    """Every call repeats one (same tool, same arguments) that the conversation already has a result for:
    a small model calling again instead of reading the result."""
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    seen = set()
    for message in messages:
        for call in message.tool_calls or []:
            if call.id in answered:
                seen.add((call.name, _canonical(call.arguments)))
    return bool(calls) and all((call.name, _canonical(call.arguments)) in seen for call in calls)


def _canonical(arguments: str) -> str:
    value = _loads(arguments)
    return json.dumps(value, sort_keys=True) if value is not None else arguments


@dataclass
class CallAssembler:
    """Whole calls from OpenAI stream ``delta.tool_calls`` pieces (by ``index``: the id, the name, and the
    arguments in pieces)."""

    parts: dict[int, dict[str, Any]] = field(default_factory=dict)

    def feed(self, deltas: list[dict[str, Any]] | None) -> None:
        for position, delta in enumerate(deltas or []):
            index = delta.get("index", position)
            part = self.parts.setdefault(int(index) if isinstance(index, int) else position, {"arguments": ""})
            if delta.get("id"):
                part["id"] = delta["id"]
            function = delta.get("function") or {}
            if function.get("name"):
                part.setdefault("name", function["name"])  # a call's name comes whole, once
            if isinstance(function.get("arguments"), str):
                part["arguments"] += function["arguments"]
            elif isinstance(function.get("arguments"), dict):  # some engines send an object
                part["arguments"] += json.dumps(function["arguments"], ensure_ascii=False)

    def calls(self) -> list[ToolCall]:
        return [
            ToolCall(part.get("id") or new_call_id(), part.get("name", ""), part["arguments"] or "{}")
            for _, part in sorted(self.parts.items())
            if part.get("name")
        ]
