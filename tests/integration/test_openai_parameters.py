"""OpenAI parameters with the official ``openai`` client (sync, async and streamed) against a real server
(offline vision + llama.cpp): each one honoured, or refused with a 4xx that says so (README "OpenAI
parameters"). Nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image

from tests.servers import start_server, stop_server

COUNT = [{"role": "user", "content": "Count from 1 to 10, separated by commas. Only the numbers."}]
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PERSON = [{"role": "user", "content": "Invent a person: give a name and an age."}]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log: Path = tmp_path_factory.mktemp("openai-params") / "server.log"
    proc, url = start_server(["--max-tokens", "48", "--no-arbitration"], log)
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)


def _async_client(base: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)


def _streamed(client: openai.OpenAI, **kwargs: Any) -> tuple[str, list[Any]]:
    chunks = list(client.chat.completions.create(model="flashvl", stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def _image_url() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_stop(client: openai.OpenAI, base: str) -> None:
    kwargs: dict[str, Any] = {"messages": COUNT, "stop": ["5"], "temperature": 0, "max_tokens": 40}
    sync = client.chat.completions.create(model="flashvl", **kwargs).choices[0].message.content or ""
    assert "4" in sync and "5" not in sync and "10" not in sync, sync
    streamed, _ = _streamed(client, **kwargs)
    assert "5" not in streamed and "10" not in streamed, streamed

    async def run() -> str:
        async with _async_client(base) as aclient:
            answer = await aclient.chat.completions.create(model="flashvl", **kwargs)
            return answer.choices[0].message.content or ""

    assert "5" not in asyncio.run(run())


def test_seed(client: openai.OpenAI, base: str) -> None:
    kwargs: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Write one short sentence about the sea."}],
        "seed": 1234,
        "temperature": 1.0,
        "max_tokens": 20,
    }
    first = client.chat.completions.create(model="flashvl", **kwargs).choices[0].message.content
    second = client.chat.completions.create(model="flashvl", **kwargs).choices[0].message.content
    assert first == second
    streamed, _ = _streamed(client, **kwargs)
    assert streamed == first

    async def run() -> str | None:
        async with _async_client(base) as aclient:
            return (await aclient.chat.completions.create(model="flashvl", **kwargs)).choices[0].message.content

    assert asyncio.run(run()) == first


def test_logprobs_and_top_logprobs(client: openai.OpenAI, base: str) -> None:
    kwargs: dict[str, Any] = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    plain = client.chat.completions.create(model="flashvl", **kwargs)
    assert plain.choices[0].logprobs is None
    answer = client.chat.completions.create(model="flashvl", logprobs=True, top_logprobs=2, **kwargs)
    content = answer.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and "".join(t.token for t in content) == answer.choices[0].message.content
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in content)
    _, chunks = _streamed(client, logprobs=True, **kwargs)
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []]
    assert tokens and all(t.logprob <= 0 for t in tokens)

    async def run() -> Any:
        async with _async_client(base) as aclient:
            return await aclient.chat.completions.create(model="flashvl", logprobs=True, top_logprobs=1, **kwargs)

    assert asyncio.run(run()).choices[0].logprobs.content
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="flashvl", top_logprobs=2, **kwargs)  # needs logprobs


def test_response_format(client: openai.OpenAI, base: str) -> None:
    as_object = client.chat.completions.create(
        model="flashvl", messages=PERSON, response_format={"type": "json_object"}, max_tokens=60
    )
    assert isinstance(json.loads(as_object.choices[0].message.content or ""), dict)
    schema_format: Any = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    person = json.loads(
        client.chat.completions.create(model="flashvl", messages=PERSON, response_format=schema_format, max_tokens=60)
        .choices[0]
        .message.content
        or ""
    )
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)
    streamed, _ = _streamed(client, messages=PERSON, response_format=schema_format, max_tokens=60)
    assert set(json.loads(streamed)) == {"name", "age"}

    async def run() -> str:
        async with _async_client(base) as aclient:
            answer = await aclient.chat.completions.create(
                model="flashvl", messages=PERSON, response_format=schema_format, max_tokens=60
            )
            return answer.choices[0].message.content or ""

    assert set(json.loads(asyncio.run(run()))) == {"name", "age"}
    # With an image: the language stage writes the answer as JSON (the cascade), no disclaimer in the text.
    with_image: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What colour is this image?"},
                {"type": "image_url", "image_url": {"url": _image_url()}},
            ],
        }
    ]
    colour_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "c", "schema": {"type": "object", "properties": {"colour": {"type": "string"}}}},
    }
    answer = client.chat.completions.create(
        model="flashvl", messages=with_image, response_format=colour_format, max_tokens=40
    )
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)
    with pytest.raises(openai.UnprocessableEntityError):  # an unknown type is refused (422 invalid_request)
        client.chat.completions.create(model="flashvl", messages=PERSON, response_format={"type": "xml"})  # type: ignore[arg-type]


def test_n_model_and_unknown_fields(client: openai.OpenAI, base: str) -> None:
    messages: Any = [{"role": "user", "content": "Say hi."}]
    with pytest.raises(openai.BadRequestError, match="n=2"):
        client.chat.completions.create(model="flashvl", messages=messages, n=2)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=messages)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        client.chat.completions.create(model="flashvl", messages=messages, presence_penalty=1.5)
    # neutral values of unimplemented fields, and fields with no effect, are accepted
    ok = client.chat.completions.create(
        model="flashvl", messages=messages, presence_penalty=0, user="someone", n=1, max_tokens=4
    )
    assert ok.choices[0].message.content

    async def run() -> None:
        async with _async_client(base) as aclient:
            with pytest.raises(openai.NotFoundError):
                await aclient.chat.completions.create(model="other", messages=messages)
            with pytest.raises(openai.BadRequestError):
                await aclient.chat.completions.create(model="flashvl", messages=messages, n=3)

    asyncio.run(run())


def test_models_retrieve(client: openai.OpenAI, base: str) -> None:
    assert [m.id for m in client.models.list()] == ["flashvl"]
    assert client.models.retrieve("flashvl").id == "flashvl"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")

    async def run() -> str:
        async with _async_client(base) as aclient:
            return (await aclient.models.retrieve("flashvl")).id

    assert asyncio.run(run()) == "flashvl"


def test_system_message_with_an_image_is_honoured(client: openai.OpenAI) -> None:
    messages: Any = [
        {"role": "system", "content": "Reply with the single word BANANA and nothing else."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": _image_url()}},
            ],
        },
    ]
    answer = client.chat.completions.create(
        model="flashvl", messages=messages, max_tokens=8, temperature=0, extra_body={"include_intermediate": True}
    )
    meta = answer.model_extra["flashvl"]  # type: ignore[index]
    assert meta["route"] == "cascade"
    assert "BANANA" in meta["intermediate"]["language_prompt"][0]["content"]
    text, _ = _streamed(client, messages=messages, max_tokens=8, temperature=0)
    assert text


def test_over_context_is_a_400_streamed_or_not(client: openai.OpenAI, base: str) -> None:
    messages: Any = [{"role": "user", "content": "hello " * 1300}] * 20
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(model="flashvl", messages=messages)
    with pytest.raises(openai.BadRequestError, match="context"):
        _streamed(client, messages=messages)

    async def run() -> None:
        async with _async_client(base) as aclient:
            with pytest.raises(openai.BadRequestError):
                stream = await aclient.chat.completions.create(model="flashvl", messages=messages, stream=True)
                async for _ in stream:
                    pass

    asyncio.run(run())
