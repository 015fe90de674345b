"""Client-defined tools (OpenAI ``tool_calls``) as the stages read them, and what an ``openai:`` upstream's
whole (non-streamed) answer carries: ``reasoning`` (vLLM's newer name) as well as ``reasoning_content``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from flashvl.stages.base import ChatMessage, ChatRequest, Generation, TextDelta, ToolCall
from flashvl.stages.client_tools import (
    CallAssembler,
    answered_before,
    call_schema,
    may_be_call,
    parse_text_calls,
)
from flashvl.stages.llamacpp import LlamaCppLanguageStage
from flashvl.stages.llamacpp.chunks import request_body
from flashvl.stages.openai_compat import OpenAICompatStage, completion_as_chunk

NAMES = ["get_weather"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_calls_written_as_text_are_read() -> None:
    for text in (
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '```json\n{\n  "name": "get_weather",\n  "arguments": {"city": "Paris"}\n}\n```',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        '{{"name": "get_weather", "arguments": {"city": "Paris"}}}',  # Qwen's template shows the format as {{}}
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
    ):
        calls = parse_text_calls(text, NAMES)
        assert calls is not None and len(calls) == 1, text
        assert calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
        assert calls[0].id.startswith("call_")
    two = parse_text_calls(
        '[{"name": "get_weather", "arguments": {"city": "A"}}, {"name": "get_weather", "arguments": {"city": "B"}}]',
        NAMES,
    )
    assert two is not None and [json.loads(c.arguments)["city"] for c in two] == ["A", "B"]


def test_text_that_is_no_call_stays_text() -> None:
    for text in (
        "It is sunny in Paris.",
        '{"name": "delete_everything", "arguments": {}}',  # not a defined tool
        '{"city": "Paris"}',
        '{"name": "get_weather", "arguments": {"city": "Paris"}} and more',
        "",
    ):
        assert parse_text_calls(text, NAMES) is None, text


def test_held_back_only_while_it_could_be_a_call() -> None:
    assert all(may_be_call(t) for t in ("", "  ", "{", "``", "```json", "<tool", "<tool_call>", "["))
    assert not any(may_be_call(t) for t in ("It", "The answer", "<b>", "1"))


def test_stream_pieces_assemble_into_calls() -> None:
    assembler = CallAssembler()
    assembler.feed([{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather"}}])
    assembler.feed([{"index": 0, "function": {"arguments": '{"city": '}}])
    assembler.feed([{"index": 0, "function": {"arguments": '"Paris"}'}}])
    assembler.feed([{"index": 1, "id": "call_b", "function": {"name": "get_weather", "arguments": "{}"}}])
    calls = assembler.calls()
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_weather", "{}"),
    ]


def test_forced_call_schema_and_repeated_calls() -> None:
    other = {"type": "function", "function": {"name": "other"}}
    schema = call_schema([WEATHER, other], {"type": "function", "function": {"name": "get_weather"}})
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert len(call_schema([WEATHER, other], "required")["anyOf"]) == 2
    asked = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    messages = [
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "", tool_calls=[asked]),
        ChatMessage("tool", "17.3 C", tool_call_id="call_1"),
    ]
    assert answered_before([ToolCall("call_2", "get_weather", '{"city":"Paris"}')], messages)
    assert not answered_before([ToolCall("call_2", "get_weather", '{"city": "Rome"}')], messages)
    assert messages[1].to_openai() == {"role": "assistant", "content": None, "tool_calls": [asked.to_openai()]}
    assert messages[2].to_openai() == {"role": "tool", "content": "17.3 C", "tool_call_id": "call_1"}


def _whole_answer_stage(answer: dict[str, Any], seen: list[dict[str, Any]]) -> OpenAICompatStage:
    """An ``openai:`` stage whose upstream ignores ``stream`` and answers with one JSON completion, in
    vLLM's newer shape (``reasoning``). A mock transport on purpose: vLLM cannot run here; a real upstream
    (a second flashvl server) is exercised in tests/integration/test_openai_tools.py."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=answer)

    stage = OpenAICompatStage("http://upstream.test/v1", "m", role="language", retries=0)
    stage._client = httpx.AsyncClient(base_url=stage.base_url, transport=httpx.MockTransport(handler))
    return stage


def test_upstream_whole_answer_reasoning_field_is_read() -> None:
    answer = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Four.", "reasoning": "2 + 2 is 4."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3},
    }
    assert completion_as_chunk(answer)["choices"][0]["delta"]["reasoning"] == "2 + 2 is 4."
    stage = _whole_answer_stage(answer, [])
    result = asyncio.run(stage.generate(ChatRequest([ChatMessage("user", "2 + 2?")])))
    assert (result.text, result.thinking, result.completion_tokens) == ("Four.", "2 + 2 is 4.", 3)
    older = {"choices": [{"message": {"content": "Four.", "reasoning_content": "sum"}, "finish_reason": "stop"}]}
    result = asyncio.run(_whole_answer_stage(older, []).generate(ChatRequest([ChatMessage("user", "2 + 2?")])))
    assert result.thinking == "sum"


def test_upstream_gets_tools_and_returns_calls() -> None:
    call = {"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    answer = {
        "choices": [
            {"message": {"role": "assistant", "content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}
        ]
    }
    seen: list[dict[str, Any]] = []
    stage = _whole_answer_stage(answer, seen)
    earlier = ToolCall("call_0", "get_weather", '{"city": "Paris"}')
    request = ChatRequest(
        [
            ChatMessage("user", "Weather in Paris, then Oslo?"),
            ChatMessage("assistant", "", tool_calls=[earlier]),
            ChatMessage("tool", '{"temperature_c": 17.3}', tool_call_id="call_0"),
        ],
        tools=[WEATHER],
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    result = asyncio.run(stage.generate(request))
    assert result.finish_reason == "tool_calls" and result.text == ""
    assert result.tool_calls == [ToolCall("call_x", "get_weather", '{"city": "Oslo"}')]
    sent = seen[0]
    assert sent["tools"] == [WEATHER] and sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False
    assert sent["messages"][1]["tool_calls"] == [earlier.to_openai()]
    assert sent["messages"][2] == {"role": "tool", "content": '{"temperature_c": 17.3}', "tool_call_id": "call_0"}


def test_llamacpp_request_body_with_tools() -> None:
    other = {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}
    ask = [ChatMessage("user", "Weather in Paris?")]
    plain = request_body(ChatRequest(ask))
    assert "tools" not in plain and plain["messages"] == [{"role": "user", "content": "Weather in Paris?"}]
    auto = request_body(ChatRequest(ask, tools=[WEATHER, other], tool_choice="auto"))
    assert auto["tools"] == [WEATHER, other] and auto["tool_choice"] == "auto" and "response_format" not in auto
    assert "logprobs" not in auto  # llama.cpp refuses token probabilities with tools
    named = request_body(
        ChatRequest(ask, tools=[WEATHER, other], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    )
    assert named["tools"] == [WEATHER] and named["tool_choice"] == "auto"  # llama.cpp takes only string choices
    schema = named["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["name"] == {"const": "get_weather"}
    none = request_body(ChatRequest(ask, tools=[WEATHER], tool_choice="none"))
    assert "tools" not in none and "response_format" not in none


class _Scripted(LlamaCppLanguageStage):
    """The tool handling of the llama.cpp stage over scripted model outputs (one per attempt)."""

    def __init__(self, *outputs: list[str]) -> None:
        super().__init__(None)
        self.outputs = list(outputs)
        self.asked: list[ChatRequest] = []

    async def _run(self, request: ChatRequest, *, live: bool) -> Any:  # type: ignore[override]
        self.asked.append(request)
        pieces = self.outputs.pop(0)
        for piece in pieces if live else []:
            yield TextDelta(piece)
        yield Generation(stage="scripted", text="".join(pieces))


def _collect(stage: LlamaCppLanguageStage, request: ChatRequest) -> tuple[list[str], Generation]:
    async def run() -> tuple[list[str], Generation]:
        texts, final = [], None
        async for event in stage.stream(request):
            if isinstance(event, TextDelta):
                texts.append(event.text)
            else:
                final = event
        assert isinstance(final, Generation)
        return texts, final

    return asyncio.run(run())


def test_llamacpp_streams_text_and_holds_back_calls() -> None:
    ask = [ChatMessage("user", "Weather in Paris?")]
    prose = _Scripted(["It ", "is ", "sunny."])
    texts, final = _collect(prose, ChatRequest(ask, tools=[WEATHER]))
    assert texts == ["It ", "is ", "sunny."] and final.tool_calls is None and final.text == "It is sunny."
    call = _Scripted(["```json\n", '{"name": "get_weather", ', '"arguments": {"city": "Paris"}}', "\n```"])
    texts, final = _collect(call, ChatRequest(ask, tools=[WEATHER]))
    assert texts == [] and final.finish_reason == "tool_calls" and final.text == ""
    assert final.tool_calls is not None and json.loads(final.tool_calls[0].arguments) == {"city": "Paris"}


def test_llamacpp_repeated_call_is_answered_without_tools() -> None:
    asked = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    messages = [
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", "", tool_calls=[asked]),
        ChatMessage("tool", '{"temperature_c": 17.3}', tool_call_id="call_1"),
    ]
    stage = _Scripted(['{"name": "get_weather", "arguments": {"city": "Paris"}}'], ["It is ", "17.3 C."])
    texts, final = _collect(stage, ChatRequest(messages, tools=[WEATHER], tool_choice="auto"))
    assert texts == ["It is ", "17.3 C."] and final.tool_calls is None
    assert [r.tool_choice for r in stage.asked] == ["auto", "none"]
