"""OpenAI chat-completions request/response shapes (the subset flashvl serves)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from flashvl.api.schemas import MAX_PROMPT_CHARS, ResponseMeta, Usage


class ImageURL(BaseModel):
    url: str = Field(description="http(s) URL, data:image/...;base64 URL, or file:// under the configured root.")
    detail: str | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str = Field(max_length=MAX_PROMPT_CHARS)


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart | ImagePart] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # OpenAI clients send many optional fields; unknown ones are ignored, known ones checked.
    model_config = ConfigDict(extra="ignore")

    model: str = "flashvl"
    messages: list[Message] = Field(min_length=1, max_length=64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1, description="Only 1 is supported.")
    max_pixels: int | None = Field(
        None, ge=65_536, description="flashvl extension: analyse images downscaled to at most this many pixels."
    )
    route: Literal["direct", "cascade", "auto"] | None = Field(
        None, description="flashvl extension: direct (vision stage alone), cascade, or auto (the router)."
    )
    include_intermediate: bool = Field(False, description="flashvl extension: return each stage's own output.")
    logprobs: bool = Field(
        False,
        description="As in OpenAI, token probabilities cost time, so they are off unless asked: true fills "
        "flashvl.confidence from the language stage's token probabilities.",
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="{'enable_thinking': bool}, as vLLM/SGLang accept for GLM's thinking switch."
    )


class ChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: ChoiceMessage
    finish_reason: str = Field("stop", description="'stop', or 'length' when the answer was cut at max_tokens.")


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    flashvl: ResponseMeta


# ------------------------------------------------------------------ streaming (SSE ``data:`` payloads)


class ChunkDelta(BaseModel):
    """One piece of the answer; only the keys that are set are sent (as OpenAI does)."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None

    @model_serializer(mode="wrap")
    def _set_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta = Field(default_factory=ChunkDelta)
    finish_reason: str | None = None  # null until the last choice chunk


class ChatCompletionChunk(BaseModel):
    """A stream chunk: pieces of the answer; then one with ``finish_reason`` and ``flashvl``; then,
    with ``stream_options.include_usage``, one with no choices and the ``usage``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None
    flashvl: ResponseMeta | None = None

    @model_serializer(mode="wrap")
    def _no_empty_extras(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for key in ("usage", "flashvl"):
            if out.get(key) is None:
                out.pop(key, None)
        return out


class ErrorBody(BaseModel):
    code: str
    message: str
    type: str = "server_error"


class StreamError(BaseModel):
    """Sent in-band when a stream fails after its headers went out."""

    error: ErrorBody


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "flashvl"
    flashvl: dict[str, Any] = Field(default_factory=dict)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
