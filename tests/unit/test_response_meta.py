"""One definition of the response metadata, and stream chunks as typed models."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from flashvl.api.openai_schemas import ChatCompletion, ChatCompletionChunk, ChunkChoice, ChunkDelta
from flashvl.api.schemas import CaptionResponse, InferResponse, PredictResponse, ResponseMeta
from flashvl.pipeline.types import Answer, StageRecord


def answer() -> Answer:
    return Answer(
        "A cup.",
        "direct",
        "glm4v:tiny",
        None,
        stages=[StageRecord("vision", "glm4v:tiny", 0.5)],
        prompt_tokens=40,
        completion_tokens=3,
        finish_reason="length",
    )


def test_answer_meta_fills_response_meta_field_for_field() -> None:
    assert set(answer().meta()) | {"request_id"} == set(ResponseMeta.model_fields)
    meta = ResponseMeta.of(answer(), "req-1")
    assert meta.finish_reason == "length" and meta.request_id == "req-1"
    assert meta.usage.model_dump() == {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}


def test_an_unknown_metadata_key_is_an_error_not_dropped() -> None:
    with pytest.raises(ValidationError):
        ResponseMeta.model_validate(answer().meta() | {"surprise": 1})


def test_every_answering_response_uses_the_one_model() -> None:
    assert issubclass(InferResponse, ResponseMeta) and issubclass(CaptionResponse, ResponseMeta)
    assert PredictResponse.model_fields["flashvl"].annotation is ResponseMeta
    assert ChatCompletion.model_fields["flashvl"].annotation is ResponseMeta


def test_stream_chunks_send_only_what_is_set() -> None:
    first = ChatCompletionChunk(
        id="c", created=1, model="m", choices=[ChunkChoice(delta=ChunkDelta(role="assistant", content=""))]
    )
    assert json.loads(first.model_dump_json()) == {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        ],
    }
    piece = ChatCompletionChunk(id="c", created=1, model="m", choices=[ChunkChoice(delta=ChunkDelta(content="杯子"))])
    assert '"delta":{"content":"杯子"}' in piece.model_dump_json()  # UTF-8, not \\u escapes
    meta = ResponseMeta.of(answer())
    last = json.loads(
        ChatCompletionChunk(
            id="c", created=1, model="m", choices=[ChunkChoice(finish_reason="length")], flashvl=meta
        ).model_dump_json()
    )
    assert (
        last["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
        and "usage" not in last
    )
    assert last["flashvl"]["notice"] is None  # nulls inside the metadata stay
    usage = json.loads(ChatCompletionChunk(id="c", created=1, model="m", usage=meta.usage).model_dump_json())
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 43 and "flashvl" not in usage
