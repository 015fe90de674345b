"""The seed endpoints: /infer, /caption and /api/predict."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from flashvl.api.auth import Caller, require_scope
from flashvl.api.deps import Ready, answer_query, meta, resolve_max_tokens
from flashvl.api.image_body import openapi_request_body, parse_image_request
from flashvl.api.routes.kb import grounded
from flashvl.api.routes.moderate import ImageInput, load_input
from flashvl.api.schemas import (
    BoxOut,
    CaptionResponse,
    ImageInfo,
    InferRequest,
    InferResponse,
    PredictRequest,
    PredictResponse,
)
from flashvl.media.types import LoadedImage
from flashvl.pipeline.service import Answer, Query

router = APIRouter(tags=["seed"], dependencies=[Depends(require_scope("infer"))])


def _image_info(image: LoadedImage) -> ImageInfo:
    return ImageInfo(sha256=image.sha256, width=image.width, height=image.height, format=image.format)


def _boxes(answer: Answer) -> list[BoxOut]:
    return [BoxOut.model_validate(box.to_dict()) for box in answer.boxes]


@router.post("/infer", response_model=InferResponse, response_model_exclude_none=False)
async def infer(body: InferRequest, request: Request, state: Ready, caller: Caller) -> InferResponse:
    """Answer a question about one image (URL or base64)."""
    max_tokens = resolve_max_tokens(state, body.max_tokens)
    if body.knowledge is not None:  # a grounded answer from a knowledge-base collection (flashvl/kb/)
        picture = None
        if body.image_url or body.image_base64 is not None:
            picture = await state.intake.from_reference(body.image_url or body.image_base64 or "")
        found = await grounded(
            state,
            caller,
            body.knowledge.collection,
            body.prompt,
            top_k=body.knowledge.top_k,
            image=picture,
            max_tokens=max_tokens,
        )
        found.pop("answered")
        return InferResponse(
            **found,
            request_id=getattr(request.state, "request_id", None),
            image=_image_info(picture) if picture is not None else None,
        )
    if body.image_url:
        image = await state.intake.from_reference(body.image_url)
    else:
        image = await state.intake.from_base64(body.image_base64 or "")
    query = Query(
        images=[image],
        question=body.prompt,
        max_tokens=max_tokens,
        max_pixels=body.max_pixels,
        route=body.route,
        include_intermediate=body.include_intermediate,
        temperature=state.settings.temperature if body.temperature is None else body.temperature,
        principal=caller.name,
    )
    answer = await answer_query(request, state, query)
    return InferResponse(
        **dict(meta(request, answer)),
        text=answer.text,
        thinking=answer.thinking,
        boxes=_boxes(answer),
        image=_image_info(image),
        observations=answer.observations if body.include_observations else None,
    )


class CaptionRequest(ImageInput):
    """``/caption``'s JSON body: the image alone (multipart: the ``file`` part)."""


@router.post("/caption", response_model=CaptionResponse, openapi_extra=openapi_request_body(CaptionRequest))
async def caption(request: Request, state: Ready, caller: Caller) -> CaptionResponse:
    """Caption an image: multipart with the image in a ``file`` part, or JSON ``image_url`` / ``image_base64``."""
    body, upload = await parse_image_request(request, CaptionRequest)
    image = await load_input(state, body, upload)
    answer = await answer_query(request, state, Query(images=[image], task="caption", principal=caller.name))
    return CaptionResponse(
        **dict(meta(request, answer)), caption=answer.text, image=_image_info(image), boxes=_boxes(answer)
    )


@router.post("/api/predict", response_model=PredictResponse)
async def predict(body: PredictRequest, request: Request, state: Ready, caller: Caller) -> PredictResponse:
    """Gradio-style ``{"data": [question, image]}`` -> ``{"data": [answer]}``."""
    start = time.perf_counter()
    question, reference = body.data
    image = await state.intake.from_reference(reference)
    query = Query(
        images=[image],
        question=question,
        max_tokens=state.settings.max_tokens,
        temperature=state.settings.temperature,
        principal=caller.name,
    )
    answer = await answer_query(request, state, query)
    return PredictResponse(
        data=[answer.text], duration=round(time.perf_counter() - start, 4), flashvl=meta(request, answer)
    )
