"""OpenAI chat-completions request/response shapes (the subset flashvl serves)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, TypeAdapter, model_serializer

from flashvl.api.schemas import MAX_PROMPT_CHARS, BoxOut, KnowledgeRef, ResponseMeta, Usage


class ImageURL(BaseModel):
    url: str = Field(description="http(s) URL, data:image/...;base64 URL, or file:// under the configured root.")
    detail: str | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str = Field(max_length=MAX_PROMPT_CHARS)


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


# Client-defined tools (OpenAI ``tools``): the model may answer with calls of them, which the client runs.
MAX_TOOLS = 32  # tools per request
MAX_TOOLS_JSON_BYTES = 32_768  # the tool definitions together, as JSON (they are part of the prompt)
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # as OpenAI accepts function names


class FunctionCall(BaseModel):
    name: str = Field(max_length=64)
    arguments: str = Field(description="The arguments as a JSON object, in text.")


class MessageToolCall(BaseModel):
    """A call in an assistant message (``message.tool_calls``; sent back by the client in a follow-up)."""

    id: str = Field(max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] | list[TextPart | ImagePart] | None = None
    tool_calls: list[MessageToolCall] | None = Field(
        None, max_length=MAX_TOOLS, description="An assistant message's calls of the client's tools."
    )
    tool_call_id: str | None = Field(None, max_length=256, description="A tool message: the call it answers.")


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TOOL_NAME)
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] | None = Field(None, description="A JSON schema of the arguments (an object).")
    strict: bool | None = None


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDefinition


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    class Function(BaseModel):
        name: str

    type: Literal["function"]
    function: Function


TOOLS = TypeAdapter(list[ToolDefinition])
TOOL_CHOICE = TypeAdapter(Literal["none", "auto", "required"] | NamedToolChoice)


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field("answer", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


# OpenAI fields accepted that change nothing here (metadata, storage).
NO_EFFECT_FIELDS = frozenset({"user", "metadata", "store", "service_tier"})


class ChatCompletionRequest(BaseModel):
    # OpenAI clients send many optional fields: the ones below are honoured; any other field is refused
    # with 400 ``unsupported_parameter`` unless it is unset/neutral (null, false, 0, empty) or in
    # ``NO_EFFECT_FIELDS`` (see ``unsupported_fields``).
    model_config = ConfigDict(extra="allow")

    model: str = "flashvl"
    messages: list[Message] = Field(min_length=1, max_length=64)
    knowledge: KnowledgeRef | None = Field(
        None, description="flashvl extension: answer from this knowledge-base collection, citing its pages."
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, description="Only 1 is supported (more is a 400 unsupported_parameter).")
    stop: str | list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        None, max_length=4, description="Up to 4 sequences where generation stops (not included in the answer)."
    )
    seed: int | None = Field(
        None, ge=-(2**63), le=2**63 - 1, description="Sampling seed: the same seed and request give the same answer."
    )
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="With logprobs: true, the most likely alternatives per token (0-20)."
    )
    response_format: ResponseFormat | None = Field(
        None,
        description="json_object or json_schema: the answer is JSON (grammar-constrained by llama.cpp; passed "
        "to OpenAI-compatible upstreams). Needs a language stage.",
    )
    max_pixels: int | None = Field(
        None, ge=65_536, description="flashvl extension: analyse images downscaled to at most this many pixels."
    )
    route: Literal["direct", "cascade", "auto"] | None = Field(
        None, description="flashvl extension: direct (vision stage alone), cascade, or auto (the router)."
    )
    include_intermediate: bool = Field(False, description="flashvl extension: return each stage's own output.")
    logprobs: bool = Field(
        False,
        description="As in OpenAI, token probabilities cost time, so they are off unless asked: true returns "
        "choices[].logprobs.content (the language stage's tokens) and fills flashvl.confidence.",
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="{'enable_thinking': bool}, as vLLM/SGLang accept for GLM's thinking switch."
    )
    # Checked by the route (a 400 naming what is wrong): see ``ToolDefinition`` and ``NamedToolChoice``.
    tools: list[dict[str, Any]] | None = Field(
        None,
        description=f"Functions the model may call (at most {MAX_TOOLS}, {MAX_TOOLS_JSON_BYTES} bytes of JSON): "
        "[{'type': 'function', 'function': {'name', 'description', 'parameters'}}]. The client runs the calls "
        "and sends the results back as role 'tool' messages. Needs a language stage that can call tools.",
    )
    tool_choice: str | dict[str, Any] | None = Field(
        None,
        description="'none', 'auto' (the default with tools), 'required', or {'type': 'function', 'function': "
        "{'name': ...}} (a defined tool).",
    )
    parallel_tool_calls: bool | None = Field(None, description="Whether the model may call several tools at once.")


def unsupported_fields(body: ChatCompletionRequest) -> list[str]:
    """Fields flashvl does not implement that the request sets to something other than a neutral value."""
    neutral: tuple[object, ...] = (None, False, 0, 0.0, "", [], {}, "none", "auto")
    return sorted(
        key
        for key, value in (body.model_extra or {}).items()
        if key not in NO_EFFECT_FIELDS and not any(value == n and type(value) is type(n) for n in neutral)
    )


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="The answer; null when the model called tools instead.")
    reasoning_content: str | None = None
    tool_calls: list[ResponseToolCall] | None = Field(
        default=None, description="Calls of the client's tools (finish_reason 'tool_calls'); absent otherwise."
    )

    @model_serializer(mode="wrap")
    def _calls_only_when_made(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if out.get("tool_calls") is None:
            out.pop("tool_calls", None)
        return out


class Choice(BaseModel):
    index: int = 0
    message: ChoiceMessage
    finish_reason: str = Field(
        "stop",
        description="'stop', 'length' when the answer was cut at max_tokens, or 'tool_calls' when the model "
        "called the client's tools.",
    )
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    flashvl: ResponseMeta


# ------------------------------------------------------------------ streaming (SSE ``data:`` payloads)


class ChunkFunction(BaseModel):
    name: str | None = None
    arguments: str = ""


class ChunkToolCall(BaseModel):
    """A piece of a tool call in a stream: ``index`` says which call; the first piece of a call has its
    ``id``, ``type`` and ``function.name``, later ones add to ``function.arguments``."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ChunkFunction

    @model_serializer(mode="wrap")
    def _set_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if out["function"].get("name") is None:
            out["function"].pop("name")
        return {k: v for k, v in out.items() if v is not None}


class ChunkDelta(BaseModel):
    """One piece of the answer; only the keys that are set are sent (as OpenAI does)."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ChunkToolCall] | None = None

    @model_serializer(mode="wrap")
    def _set_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta = Field(default_factory=ChunkDelta)
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None  # null until the last choice chunk


class StreamMeta(ResponseMeta):
    """The last choice chunk's ``flashvl``: the response metadata plus where things are in the image
    (detector boxes for the offline pipeline, a VLM's own boxes for GLM), for the web page to draw."""

    boxes: list[BoxOut] = Field(default_factory=list)


class ChatCompletionChunk(BaseModel):
    """A stream chunk: pieces of the answer; then one with ``finish_reason`` and ``flashvl``; then,
    with ``stream_options.include_usage``, one with no choices and the ``usage``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None
    flashvl: StreamMeta | ResponseMeta | None = None

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
