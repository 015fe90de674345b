"""Request and response bodies of every API, as pydantic models (they make the OpenAPI docs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from flashvl.pipeline.types import Answer

MAX_PROMPT_CHARS = 8000


class StageInfo(BaseModel):
    name: str = Field(description="Role: 'vision' or 'language'.")
    backend: str = Field(description="Which stage ran, e.g. 'offline-pipeline' (not a VLM) or 'llamacpp:...'.")
    seconds: float
    cached: bool = False
    steps: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Seconds per step inside the stage (a language stage: queue, prompt, generate), and for a "
            "language stage the token counts behind them: prompt_cached_tokens (prefix reused from "
            "llama.cpp's cache), prompt_read_tokens, generated_tokens (and drafted/draft_accepted_tokens)."
        ),
    )
    replica: str | None = Field(
        None,
        description="The replica that served this stage (--engine ray: node, deployment and replica id; "
        "for a cache hit, the one whose work was reused). null: the stage ran in the server's own process.",
    )


class Usage(BaseModel):
    """Tokens of the stage call that wrote the answer: the language stage's in the cascade and text-only
    routes, the vision stage's when it answered itself (0 for the offline pipeline, which generates none)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ResponseMeta(BaseModel):
    """How an answer was made: every response carries this (/infer and /caption at the top level,
    /api/predict and /v1/chat/completions under ``flashvl``). ``Answer.meta()`` fills it, field for
    field: an unknown key is an error, not a silently dropped field."""

    model_config = ConfigDict(extra="forbid")

    route: str = Field(description="rule | direct | cascade | vision-only | text-only | knowledge")
    vision_stage: str | None
    language_stage: str | None
    stages: list[StageInfo]
    confidence: float | None = Field(
        None,
        description=(
            "0-1. For 'cascade': geometric-mean probability of the language model's answer tokens. "
            "For 'rule': the score of the measurement the rule used (e.g. 1 - NSFW score when safe). "
            "For 'direct' offline descriptions: the top detector/classifier score. Null when unknown."
        ),
    )
    confidence_source: str | None = None
    notice: str | None = Field(None, description="Set when the answer is degraded, e.g. 'image description only'.")
    request_id: str | None = None
    route_decision: dict[str, Any] | None = Field(
        None, description="Why this route: {route, strategy (classifier|rules|override|default), reason}."
    )
    degraded: bool = Field(False, description="A stage was down or timed out; 'notice' says what is missing.")
    needs_review: bool = Field(False, description="The vision and language stages disagreed (see reasons).")
    review_reasons: list[str] = Field(default_factory=list)
    review_id: str | None = Field(None, description="The item under GET /review/{id} when needs_review.")
    cache: dict[str, Any] = Field(default_factory=dict, description="{'vision': hit|miss|off, 'backend'}.")
    disclaimer: str | None = Field(None, description="Appended to medical, financial and legal answers.")
    finish_reason: str = Field(
        "stop", description="Why the answering stage stopped: 'stop', or 'length' when cut at max_tokens."
    )
    usage: Usage = Field(default_factory=Usage)
    intermediate: dict[str, Any] | None = Field(
        None, description="Each stage's own output (vision description, language prompt/text, arbitration)."
    )
    sources: list[dict[str, Any]] | None = Field(
        None, description="With 'knowledge': the pages the answer cites (document, page, snippet, score)."
    )
    tools: list[dict[str, Any]] | None = Field(
        None,
        description="The exact tools the language stage used (calculate, solve, table, check_code): "
        "[{name, arguments, result, seconds}].",
    )

    @classmethod
    def of(cls, answer: Answer, request_id: str | None = None) -> ResponseMeta:
        return cls.model_validate(answer.meta() | {"request_id": request_id})


class ImageInfo(BaseModel):
    sha256: str
    width: int
    height: int
    format: str


class KnowledgeRef(BaseModel):
    """Answer from a knowledge-base collection (``flashvl/kb/``), citing its pages."""

    model_config = ConfigDict(extra="forbid")

    collection: str = Field(min_length=1, max_length=64)
    top_k: int = Field(4, ge=1, le=10, description="Pages retrieved and given to the language stage.")


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_url: str | None = Field(None, description="http(s) URL, data: URL, or file:// under the configured root.")
    image_base64: str | None = Field(None, description="Base64 image bytes, or a data:image/...;base64 URL.")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="The question, Chinese or English.")
    max_tokens: int | None = Field(None, ge=1, description="Answer length cap (tokens).")
    temperature: float | None = Field(None, ge=0, le=2)
    include_observations: bool = Field(False, description="Also return what the vision stage observed.")
    route: Literal["direct", "cascade", "auto"] | None = Field(
        None, description="Force the vision stage alone (direct), the cascade, or let the router decide (auto)."
    )
    include_intermediate: bool = Field(False, description="Also return each stage's own output.")
    max_pixels: int | None = Field(
        None, ge=65_536, description="Analyse the image downscaled to at most this many pixels."
    )
    knowledge: KnowledgeRef | None = Field(
        None,
        description="Answer from this knowledge-base collection, citing its pages (the image, if any, is "
        "searched by too); declined when nothing relevant is found.",
    )

    @model_validator(mode="after")
    def _one_image(self) -> InferRequest:
        # None is absent; "" is an image of 0 bytes (refused by the intake as empty_image)
        if self.image_url is not None and self.image_base64 is not None:
            raise ValueError("send exactly one of image_url or image_base64")
        if self.image_url is None and self.image_base64 is None and self.knowledge is None:
            raise ValueError("send exactly one of image_url or image_base64 (or knowledge, to ask a collection)")
        return self


class BoxOut(BaseModel):
    label: str
    score: float
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels of the original image.")
    box_1000: list[float] | None = Field(
        None, description="The VLM's own x1, y1, x2, y2 (GLM: 0-1000 of width and height); null otherwise."
    )


class InferResponse(ResponseMeta):
    text: str
    thinking: str | None = None
    boxes: list[BoxOut] = Field(default_factory=list)
    image: ImageInfo | None = None
    observations: dict[str, Any] | None = None


class CaptionResponse(ResponseMeta):
    caption: str
    image: ImageInfo
    boxes: list[BoxOut] = Field(default_factory=list)


class PredictRequest(BaseModel):
    """Gradio-style: ``{"data": [question, image]}``; the image a data: URL, http(s) URL or base64."""

    model_config = ConfigDict(extra="ignore")

    data: list[Any] = Field(min_length=2, max_length=2, description="[question, image]")

    @model_validator(mode="after")
    def _strings(self) -> PredictRequest:
        question, image = self.data
        if not isinstance(question, str) or not question.strip():
            raise ValueError("data[0] must be the question (a non-empty string)")
        if isinstance(image, dict):  # Gradio clients may send {"url": ...} or {"data": ...}
            image = image.get("url") or image.get("data") or image.get("path")
            self.data[1] = image
        if not isinstance(image, str) or not image:
            raise ValueError("data[1] must be the image as a data: URL, an http(s) URL or base64")
        if len(question) > MAX_PROMPT_CHARS:
            raise ValueError(f"data[0] is longer than {MAX_PROMPT_CHARS} characters")
        return self


class PredictResponse(BaseModel):
    data: list[str]
    is_generating: bool = False
    duration: float
    flashvl: ResponseMeta


class Limits(BaseModel):
    max_image_bytes: int
    max_image_pixels: int
    allowed_formats: list[str]
    max_tokens_limit: int
    max_images_per_request: int


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    stages: dict[str, str] = Field(description="Each stage: 'loading', 'ready' or 'failed: reason'.")
