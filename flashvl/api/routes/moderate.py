"""``POST /moderate``: a structured verdict for one image (taxonomy in flashvl/tasks/moderate.py)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from starlette.datastructures import UploadFile

from flashvl.api.auth import require_scope
from flashvl.api.deps import AppState, Ready
from flashvl.api.image_body import openapi_request_body, parse_image_request
from flashvl.errors import FlashvlError
from flashvl.media.types import LoadedImage
from flashvl.tasks.moderate import CATEGORIES, Thresholds, moderate_image

router = APIRouter(tags=["moderation"], dependencies=[Depends(require_scope("infer"))])


class ImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_url: str | None = Field(None, description="http(s) URL, data: URL, or file:// under the configured root.")
    image_base64: str | None = Field(None, description="Base64 image bytes, or a data:image/...;base64 URL.")

    @model_validator(mode="after")
    def _one_image(self, info: ValidationInfo) -> ImageInput:
        # None is absent; "" is an image of 0 bytes (refused by the intake as empty_image)
        given = (self.image_url is not None) + (self.image_base64 is not None)
        if isinstance(info.context, dict) and info.context.get("upload"):  # multipart: the file part
            given += 1
        if given != 1:
            raise ValueError("give exactly one image: image_url, image_base64, or a multipart 'file' part")
        return self


class CategoryThreshold(BaseModel):
    review: float = Field(ge=0, le=1)
    block: float = Field(ge=0, le=1)


class ModerateRequest(ImageInput):
    review_threshold: float | None = Field(None, ge=0, le=1, description="Override the server's review threshold.")
    block_threshold: float | None = Field(None, ge=0, le=1, description="Override the server's block threshold.")
    category_thresholds: dict[str, CategoryThreshold] = Field(
        default_factory=dict, description="Per-category overrides."
    )
    use_language: Literal["always", "text", "never"] | None = Field(
        None, description="When to ask the language stage (default: the server's --moderation-language)."
    )

    @model_validator(mode="after")
    def _known_categories(self) -> ModerateRequest:
        unknown = set(self.category_thresholds) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown categories {sorted(unknown)}; known: {list(CATEGORIES)}")
        return self


class ModerationCategory(BaseModel):
    category: str = Field(description=" | ".join(CATEGORIES))
    score: float
    level: Literal["review", "block"]
    raised_by: list[str] = Field(
        description="Signals that raised it: safety_model, imagenet, coco, ocr_rules, language"
    )
    signals: list[dict[str, Any]]


class ModerateResponse(BaseModel):
    is_sensitive: bool
    categories: list[ModerationCategory]
    confidence: float = Field(description="Flagged: the top category's score. Passed: 1 - the strongest score seen.")
    suggestion: Literal["pass", "review", "block"]
    reasons: list[str]
    flagged_lines: list[dict[str, Any]] = Field(
        default_factory=list,
        description="OCR lines that raise a text rule on their own: box (pixels), categories, masked evidence.",
    )
    stages: list[dict[str, Any]]
    image: dict[str, Any]
    cache: dict[str, Any] = Field(default_factory=dict, description="Whether earlier work on this image was reused.")
    request_id: str | None = None


async def load_input(state: AppState, body: ImageInput, upload: UploadFile | None = None) -> LoadedImage:
    if upload is not None:
        try:
            return await state.intake.from_upload(upload)
        finally:
            await upload.close()  # its spooled temporary file; parse_image_request read it from the form
    if body.image_url:
        return await state.intake.from_reference(body.image_url)
    return await state.intake.from_base64(body.image_base64 or "")


async def with_deadline(state: AppState, work: Any) -> Any:
    try:
        async with asyncio.timeout(state.settings.request_timeout_s):
            return await work
    except TimeoutError:
        raise FlashvlError(
            "request_timeout", f"Took longer than {state.settings.request_timeout_s:g}s.", 504, retry_after=5
        ) from None


@router.post("/moderate", response_model=ModerateResponse, openapi_extra=openapi_request_body(ModerateRequest))
async def moderate(request: Request, state: Ready) -> dict[str, Any]:
    """Is this image sensitive, in which categories, raised by which signals; pass / review / block.
    JSON, or multipart with the image in a ``file`` part and the options as form fields."""
    body, upload = await parse_image_request(request, ModerateRequest)
    settings = state.settings
    thresholds = Thresholds(
        body.review_threshold if body.review_threshold is not None else settings.moderation_review_threshold,
        body.block_threshold if body.block_threshold is not None else settings.moderation_block_threshold,
        {name: (t.review, t.block) for name, t in body.category_thresholds.items()},
    )
    image = await load_input(state, body, upload)
    mode = body.use_language or settings.moderation_language
    result = await with_deadline(
        state,
        moderate_image(
            state.runtime.vision,
            state.runtime.language if mode != "never" else None,
            image,
            thresholds=thresholds,
            language_mode=mode,
            language_weight=settings.moderation_language_weight,
        ),
    )
    return result | {"request_id": getattr(request.state, "request_id", None)}
