"""Client-defined tools on ``/v1/chat/completions`` with the official ``openai`` client, against real servers
(offline vision + the bundled llama.cpp brain; a second flashvl server with ``--language openai:`` in front
of the first): forced and ``auto`` calls, the round trip with ``role: "tool"`` results, streamed
``delta.tool_calls``, an image request whose call is written from what the vision stage saw, the
passthrough to an ``openai:`` upstream, and 400s for invalid tools or a server that cannot call them.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from PIL import Image

from tests.servers import start_server, stop_server

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city"],
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER_PARAMETERS},
}
PRICE = {
    "type": "function",
    "function": {
        "name": "get_price",
        "description": "The price of a drink or dish at our cafe, by its name",
        "parameters": {
            "type": "object",
            "properties": {"item": {"type": "string", "description": "what to price, e.g. 'tea'"}},
            "required": ["item"],
        },
    },
}
PARIS = [{"role": "user", "content": "What's the temperature in Paris right now?"}]
FORCE_WEATHER = {"type": "function", "function": {"name": "get_weather"}}
# A 2-core machine shared with other work can take minutes per answer: the test is about tools, not speed.
PATIENT = ["--language-timeout-s", "300", "--request-timeout-s", "300"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_server(
        [*PATIENT, "--max-tokens", "64", "--no-arbitration"], tmp_path_factory.mktemp("tools") / "server.log"
    )
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)


def _call(completion: Any) -> Any:
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None and len(choice.message.tool_calls) == 1, choice.message
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    return call


def test_forced_call_arguments_match_the_schema(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="flashvl", messages=PARIS, tools=[WEATHER, PRICE], tool_choice=FORCE_WEATHER, temperature=0
    )
    call = _call(completion)
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather"
    jsonschema.validate(arguments, WEATHER_PARAMETERS)
    assert "paris" in arguments["city"].lower()


def test_streamed_call_assembles_from_deltas(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="flashvl", messages=PARIS, tools=[WEATHER], tool_choice="required", temperature=0, stream=True
        )
    )
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for piece in choice.delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                call["name"] += (piece.function.name or "") if piece.function else ""
                call["arguments"] += (piece.function.arguments or "") if piece.function else ""
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    assert list(calls) == [0] and calls[0]["id"] and calls[0]["name"] == "get_weather"
    arguments = json.loads(calls[0]["arguments"])
    jsonschema.validate(arguments, WEATHER_PARAMETERS)
    whole = _call(
        client.chat.completions.create(
            model="flashvl", messages=PARIS, tools=[WEATHER], tool_choice="required", temperature=0
        )
    )
    assert json.loads(whole.function.arguments) == arguments  # greedy: the same call, whole or streamed


def test_auto_round_trip_answers_from_the_tool_result(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="flashvl", messages=PARIS, tools=[WEATHER], tool_choice="auto", temperature=0
    )
    call = _call(first)
    assert call.function.name == "get_weather"
    result = {"city": "Paris", "temperature_c": 17.3}  # a number only the tool knew
    follow_up = [
        *PARIS,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)},
    ]
    final = client.chat.completions.create(model="flashvl", messages=follow_up, tools=[WEATHER], temperature=0)
    choice = final.choices[0]
    assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
    assert "17.3" in (choice.message.content or ""), choice.message.content
    chunks = list(
        client.chat.completions.create(model="flashvl", messages=follow_up, tools=[WEATHER], temperature=0, stream=True)
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "17.3" in streamed, streamed  # a text answer under tools streams as text
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (
        ["stop"],
        ["length"],
    )


def _coffee_url() -> str:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.coffee()).save(buf, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def test_image_call_is_written_from_what_the_vision_stage_saw(client: openai.OpenAI) -> None:
    ask = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _coffee_url()}},
                {"type": "text", "text": "How much does the drink in this photo cost at our cafe?"},
            ],
        }
    ]
    first = client.chat.completions.create(
        model="flashvl",
        messages=ask,
        tools=[PRICE],
        tool_choice="required",
        temperature=0,
        extra_body={"include_intermediate": True},
    )
    call = _call(first)
    assert call.function.name == "get_price" and json.loads(call.function.arguments)["item"]
    meta = first.model_extra["flashvl"]
    assert meta["route"] == "cascade" and meta["vision_stage"] == "offline-pipeline"
    assert "espresso" in meta["intermediate"]["vision"]["description"]  # what the eyes saw, with the call
    follow_up = [
        *ask,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"price": "4.35 EUR"})},
    ]
    final = client.chat.completions.create(model="flashvl", messages=follow_up, tools=[PRICE], temperature=0)
    assert final.choices[0].finish_reason in ("stop", "length") and not final.choices[0].message.tool_calls
    assert "4.35" in (final.choices[0].message.content or ""), final.choices[0].message.content
    assert final.model_extra["flashvl"]["route"] == "cascade"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"tools": [{"type": "retrieval"}]}, "tools[0"),
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "name"),
        ({"tools": [{"type": "function", "function": {"name": "has spaces"}}]}, "tools[0.function.name]"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
            "type object",
        ),
        ({"tools": [WEATHER, WEATHER]}, "same name"),
        ({"tools": [{"type": "function", "function": {"name": f"t{i}"}} for i in range(33)]}, "At most 32"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "description": "x" * 4000}}] * 1},
            None,  # within bounds: not refused (the model may still answer in text)
        ),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "`nope`"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice must be"),
        ({"tool_choice": "required"}, "needs tools"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [WEATHER], "logprobs": True}, "logprobs"),  # llama.cpp gives none with tools
    ],
)
def test_invalid_tools_are_400(client: openai.OpenAI, kwargs: dict[str, Any], says: str | None) -> None:
    if says is None:
        kwargs = kwargs | {"tool_choice": "none", "max_tokens": 2}
        client.chat.completions.create(model="flashvl", messages=PARIS, **kwargs)
        return
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="flashvl", messages=PARIS, **kwargs)
    assert says in raised.value.message, raised.value.message


def test_tool_message_must_answer_a_call(client: openai.OpenAI) -> None:
    messages = [*PARIS, {"role": "tool", "tool_call_id": "call_never_made", "content": "17"}]
    with pytest.raises(openai.BadRequestError, match="tool message must answer"):
        client.chat.completions.create(model="flashvl", messages=messages, tools=[WEATHER])


@pytest.fixture(scope="module")
def downstream(base: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second flashvl server whose language stage is the first server, as an ``openai:`` upstream."""
    proc, url = start_server(
        [*PATIENT, "--upstream-timeout-s", "300", "--language", f"openai:{base}/v1#flashvl", "--max-tokens", "64"],
        tmp_path_factory.mktemp("tools-downstream") / "server.log",
    )
    yield url
    stop_server(proc)


def test_openai_upstream_gets_tools_and_returns_its_calls(downstream: str) -> None:
    client = openai.OpenAI(base_url=f"{downstream}/v1", api_key="unused", max_retries=0, timeout=300)
    completion = client.chat.completions.create(
        model="flashvl", messages=PARIS, tools=[WEATHER, PRICE], tool_choice=FORCE_WEATHER, temperature=0
    )
    call = _call(completion)  # only the upstream knows the tools: its call came back
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)
    assert completion.model_extra["flashvl"]["language_stage"] == "openai:flashvl"
    follow_up = [
        *PARIS,
        completion.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 17.3})},
    ]
    final = client.chat.completions.create(
        model="flashvl", messages=follow_up, tools=[WEATHER], tool_choice="none", temperature=0
    )
    assert "17.3" in (final.choices[0].message.content or ""), final.choices[0].message.content


def test_tools_refused_without_a_language_stage_that_calls_them(tmp_path: Path) -> None:
    proc, url = start_server(["--language", "none"], tmp_path / "server.log")
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(openai.BadRequestError, match="--language none"):
            client.chat.completions.create(model="flashvl", messages=PARIS, tools=[WEATHER])
    finally:
        stop_server(proc)


def test_a_language_stage_served_alone_calls_tools(tmp_path: Path) -> None:
    """``flashvl serve --only language`` (what a gateway's ``openai:`` language spec reaches) takes the
    client's tools and returns its calls, streamed or not; the vision stage alone refuses them."""
    proc, url = start_server([*PATIENT, "--only", "language", "--max-tokens", "64"], tmp_path / "language.log")
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        completion = client.chat.completions.create(
            model="flashvl-language", messages=PARIS, tools=[WEATHER], tool_choice=FORCE_WEATHER, temperature=0
        )
        call = _call(completion)
        assert call.function.name == "get_weather" and completion.choices[0].finish_reason == "tool_calls"
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)
        stream = client.chat.completions.create(
            model="flashvl-language",
            messages=PARIS,
            tools=[WEATHER],
            tool_choice=FORCE_WEATHER,
            temperature=0,
            stream=True,
        )
        pieces = [c.choices[0] for c in stream if c.choices]
        streamed = [p.delta.tool_calls[0] for p in pieces if p.delta.tool_calls]
        assert [s.function.name for s in streamed] == ["get_weather"] and pieces[-1].finish_reason == "tool_calls"
        with pytest.raises(openai.BadRequestError, match="not one of the tools"):
            client.chat.completions.create(
                model="flashvl-language",
                messages=PARIS,
                tools=[WEATHER],
                tool_choice={"type": "function", "function": {"name": "nope"}},
            )
    finally:
        stop_server(proc)
