"""``POST /ocr`` (lines, text, tables) and ``POST /document/extract`` (key fields under a caller's schema)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field
from starlette.datastructures import UploadFile

from flashvl.api.auth import require_scope
from flashvl.api.deps import AppState, Ready, resolve_max_tokens
from flashvl.api.image_body import openapi_request_body, parse_image_request
from flashvl.api.routes.moderate import ImageInput, load_input, with_deadline
from flashvl.errors import FlashvlError
from flashvl.tasks.document import extract_fields, read_image, validate_schema

router = APIRouter(tags=["documents"], dependencies=[Depends(require_scope("infer"))])


class OcrRequest(ImageInput):
    tables: bool = Field(True, description="Rebuild a table from the line boxes when the page has one.")


class ExtractRequest(ImageInput):
    json_schema: dict[str, Any] = Field(
        alias="schema",
        description="JSON schema of the fields to extract; root {'type': 'object', 'properties'}.",
    )
    max_tokens: int | None = Field(None, ge=1)


async def _read(state: AppState, body: ImageInput, tables: bool, upload: UploadFile | None = None) -> dict[str, Any]:
    image = await load_input(state, body, upload)
    document, _ = await with_deadline(state, read_image(state.runtime.vision, image, tables=tables))
    return document


@router.post("/ocr", openapi_extra=openapi_request_body(OcrRequest))
async def ocr(request: Request, state: Ready) -> dict[str, Any]:
    """Text lines with boxes and confidences in reading order, the text, and rebuilt tables
    (rows, Markdown, CSV). JSON, or multipart with the image in a ``file`` part."""
    body, upload = await parse_image_request(request, OcrRequest)
    document = await _read(state, body, body.tables, upload)
    return document | {"request_id": getattr(request.state, "request_id", None)}


@router.post("/document/extract")
async def extract(body: ExtractRequest, request: Request, state: Ready) -> dict[str, Any]:
    """Key fields (e.g. invoice number, date, total) by the language stage, constrained to the caller's
    schema; ``grounded`` says which values occur in the OCR text."""
    settings = state.settings
    schema = validate_schema(
        body.json_schema,
        max_bytes=settings.document_schema_max_bytes,
        max_depth=settings.document_schema_max_depth,
    )
    language = state.runtime.language
    if language is None:
        raise FlashvlError(
            "language_required",
            "Key-field extraction needs the language stage (the server runs with --language none).",
            400,
        )
    max_tokens = resolve_max_tokens(state, body.max_tokens)
    document = await _read(state, body, tables=True)
    extracted = await with_deadline(state, extract_fields(language, document["text"], schema, max_tokens=max_tokens))
    document["stages"].append({"name": "language", "backend": language.name, "seconds": extracted.pop("seconds")})
    return extracted | {
        "text": document["text"],
        "lines": document["lines"],
        "stages": document["stages"],
        "image": document["image"],
        "request_id": getattr(request.state, "request_id", None),
    }
