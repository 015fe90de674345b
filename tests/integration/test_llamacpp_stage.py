"""The llama.cpp language stage with the REAL Qwen2.5-Coder-1.5B Q4_K_M (no mocks).

One stage is loaded per module (a few seconds); generations are few, short and greedy.
Cancellation and batching are checked through llama.cpp's own token/decode counters,
not through wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from flashvl.errors import FlashvlError, StageUnavailable
from flashvl.stages.base import ChatMessage, ChatRequest, Generation, LanguageStage, TextDelta
from flashvl.stages.brain_model import BrainModelError, ensure_brain_model
from flashvl.stages.llamacpp import LlamaCppLanguageStage

pytestmark = pytest.mark.slow

SLOTS = 2
CTX = 4096  # 2048 tokens per slot
LONG_TASK = "Write a very long story about a dragon who learns to bake bread."


def ask(question: str, max_tokens: int = 16, **kwargs: object) -> ChatRequest:
    return ChatRequest([ChatMessage("user", question)], max_tokens=max_tokens, temperature=0, **kwargs)


@pytest.fixture(scope="module")
def model_path() -> Path:
    cache = Path(os.environ.get("FLASHVL_MODEL_DIR", "~/.cache/flashvl/models")).expanduser()
    try:
        return ensure_brain_model(cache)
    except BrainModelError as exc:
        pytest.skip(f"real brain model unavailable: {exc.message}")


@pytest.fixture(scope="module")
def stage(model_path: Path) -> Iterator[LlamaCppLanguageStage]:
    brain = LlamaCppLanguageStage(model_path, slots=SLOTS, ctx=CTX, model_id="qwen2.5-coder-1.5b-instruct")
    asyncio.run(brain.load())
    yield brain
    asyncio.run(brain.close())
    assert not brain.loaded


def wait_idle(stage: LlamaCppLanguageStage, deadline_s: float = 60.0) -> dict[str, float]:
    """Wait until llama.cpp reports no request in progress; return its counters then."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        metrics = stage.server_metrics()
        if metrics["llamacpp:requests_processing"] == 0:
            return metrics
        time.sleep(0.05)
    raise AssertionError("llama.cpp still busy: the request was not stopped")


def test_is_a_language_stage(stage: LlamaCppLanguageStage) -> None:
    assert isinstance(stage, LanguageStage)
    assert stage.model_id == "qwen2.5-coder-1.5b-instruct"


def test_generate_answers_with_usage_confidence_and_timings(stage: LlamaCppLanguageStage) -> None:
    result = asyncio.run(stage.generate(ask("What is the capital of France? Answer in one sentence.")))

    assert "Paris" in result.text
    assert result.stage == "llamacpp"
    assert result.finish_reason in {"stop", "length"}
    assert result.prompt_tokens > 10
    assert 0 < result.completion_tokens <= 16
    assert result.confidence is not None and 0.5 < result.confidence <= 1.0
    assert result.timings.steps["prompt"] > 0 and result.timings.steps["generate"] > 0


def test_confidence_is_skipped_when_logprobs_are_not_wanted(stage: LlamaCppLanguageStage) -> None:
    result = asyncio.run(stage.generate(ChatRequest([ChatMessage("user", "Say hi.")], max_tokens=4, logprobs=False)))
    assert result.text and result.confidence is None


def test_stream_yields_deltas_then_generation_without_blocking_the_loop(stage: LlamaCppLanguageStage) -> None:
    async def run() -> tuple[list[TextDelta | Generation], list[int]]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.002)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        items: list[TextDelta | Generation] = []
        ticks_at_item: list[int] = []
        async for item in stage.stream(ask("天空为什么是蓝色的？用一句话回答。", max_tokens=24)):
            items.append(item)
            ticks_at_item.append(ticks)
        ticking.cancel()
        return items, ticks_at_item

    items, ticks_at_item = asyncio.run(run())
    *deltas, final = items
    assert isinstance(final, Generation)
    assert deltas and all(isinstance(d, TextDelta) and d.kind == "answer" for d in deltas)
    assert "".join(d.text for d in deltas) == final.text
    assert any("\u4e00" <= ch <= "\u9fff" for ch in final.text)  # answered in Chinese
    # Other tasks ran between deltas: the stream did not hold the event loop.
    assert len(set(ticks_at_item)) > len(ticks_at_item) // 2


def test_json_schema_output_parses_and_obeys_the_schema(stage: LlamaCppLanguageStage) -> None:
    schema = {
        "type": "object",
        "properties": {
            "animal": {"type": "string", "enum": ["cat", "dog", "bird"]},
            "legs": {"type": "integer", "minimum": 0, "maximum": 8},
        },
        "required": ["animal", "legs"],
        "additionalProperties": False,
    }
    question = "A kitten is playing. Which animal is it and how many legs does it have? Reply in JSON."
    result = asyncio.run(stage.generate(ask(question, max_tokens=32, json_schema=schema)))

    parsed = json.loads(result.text)
    assert set(parsed) == {"animal", "legs"}
    assert parsed["animal"] == "cat"
    assert parsed["legs"] == 4


def test_closing_the_stream_stops_the_generation(stage: LlamaCppLanguageStage) -> None:
    before = wait_idle(stage)

    async def read_three_then_leave() -> int:
        seen = 0
        async with aclosing(stage.stream(ask(LONG_TASK, max_tokens=200))) as pieces:
            async for _ in pieces:
                seen += 1
                if seen == 3:
                    break
        return seen

    assert asyncio.run(read_three_then_leave()) == 3
    after = wait_idle(stage)
    predicted = after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"]
    assert 3 <= predicted < 20, f"{predicted} tokens predicted after closing at 3 of 200"


def test_generate_hands_the_answer_over_once_and_matches_the_stream(stage: LlamaCppLanguageStage) -> None:
    """``generate`` keeps llama.cpp's chunks on its worker thread: one hand-off to the event loop
    (plus the end marker) instead of one per token, and the same greedy answer as ``stream``."""
    request = ask("Count from 1 to 12, separated by spaces.", max_tokens=24)

    async def run() -> tuple[Generation, int, Generation, int]:
        loop = asyncio.get_running_loop()
        calls = 0
        original = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]  # counts hand-offs only
        whole = await stage.generate(request)
        whole_calls, calls = calls, 0
        streamed = [item async for item in stage.stream(request)]
        assert isinstance(streamed[-1], Generation)
        return whole, whole_calls, streamed[-1], calls

    whole, whole_calls, streamed, stream_calls = asyncio.run(run())
    assert whole.text == streamed.text and whole.completion_tokens == streamed.completion_tokens >= 8
    assert whole.confidence == pytest.approx(streamed.confidence, rel=1e-3)  # prompt cache: tiny float drift
    assert whole_calls == 2, f"generate handed over {whole_calls} times"
    assert stream_calls > whole.completion_tokens  # the stream hands over every token


def test_cancelling_generate_stops_the_generation(stage: LlamaCppLanguageStage) -> None:
    before = wait_idle(stage)

    async def start_then_cancel() -> None:
        task = asyncio.create_task(stage.generate(ask(LONG_TASK, max_tokens=200)))
        while stage.server_metrics()["llamacpp:n_decode_total"] < before["llamacpp:n_decode_total"] + 3:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(start_then_cancel())
    after = wait_idle(stage)
    decodes = after["llamacpp:n_decode_total"] - before["llamacpp:n_decode_total"]
    assert decodes < 25, f"{decodes} decode steps ran for a request cancelled after ~3 of 200 tokens"


def test_concurrent_requests_share_decode_steps(stage: LlamaCppLanguageStage) -> None:
    before = wait_idle(stage)

    async def both() -> list[Generation]:
        return list(
            await asyncio.gather(
                stage.generate(ask("Count from 1 to 30, separated by spaces.", max_tokens=16)),
                stage.generate(ask("List the English alphabet in capitals, separated by spaces.", max_tokens=16)),
            )
        )

    numbers, letters = asyncio.run(both())
    after = wait_idle(stage)
    assert numbers.text.replace(",", " ").split()[:3] == ["1", "2", "3"]
    assert letters.text.replace(",", " ").split()[:3] == ["A", "B", "C"]
    decodes = after["llamacpp:n_decode_total"] - before["llamacpp:n_decode_total"]
    # Run one after the other they would need at least one decode per generated token.
    assert decodes < numbers.completion_tokens + letters.completion_tokens


def test_prompt_longer_than_a_slot_is_refused(stage: LlamaCppLanguageStage) -> None:
    with pytest.raises(FlashvlError) as info:
        asyncio.run(stage.generate(ask("hello " * 3000)))
    assert info.value.code == "context_length_exceeded"
    assert info.value.status == 400


def test_unusable_schema_is_a_client_error(stage: LlamaCppLanguageStage) -> None:
    with pytest.raises(FlashvlError) as info:
        asyncio.run(stage.generate(ask("hi", max_tokens=4, json_schema={"type": "no-such-type"})))
    assert info.value.code == "invalid_json_schema"
    assert info.value.status == 400


def test_loopback_http_server_is_locked_by_the_api_key(stage: LlamaCppLanguageStage) -> None:
    address = stage.http_address
    assert address is not None and address.startswith("http://127.0.0.1:")
    body = json.dumps({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 2}).encode()

    def post(headers: dict[str, str]) -> int:
        request = urllib.request.Request(f"{address}/v1/chat/completions", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post({"Content-Type": "application/json"}) == 401
    authorised = {"Content-Type": "application/json", "Authorization": f"Bearer {stage.http_api_key}"}
    assert post(authorised) == 200


def test_unloaded_stage_is_unavailable(tmp_path: Path) -> None:
    brain = LlamaCppLanguageStage(tmp_path / "missing.gguf")
    with pytest.raises(StageUnavailable):
        asyncio.run(brain.generate(ask("hi")))
    with pytest.raises(StageUnavailable, match="not found"):
        asyncio.run(brain.load())
