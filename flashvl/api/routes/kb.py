"""The knowledge base over HTTP (``flashvl/kb/``): collections, indexing, search, grounded answers.

Scopes: ``kb:read`` (list, search, ask, page images) and ``kb:write`` (index, delete, grant; implies
read). A collection belongs to the principal that first indexed into it; another principal sees it
only when granted (``POST /kb/{collection}/grants``); ``admin`` sees all. Unknown and foreign
collections both answer 404, so names do not leak.
"""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from flashvl.api.auth import Caller, require_scope
from flashvl.api.deps import Ready, resolve_max_tokens
from flashvl.api.routes.moderate import with_deadline
from flashvl.errors import FlashvlError
from flashvl.kb.service import Who
from flashvl.media.types import LoadedImage
from flashvl.security.auth import Principal

read = [Depends(require_scope("kb:read"))]
write = [Depends(require_scope("kb:write"))]
router = APIRouter(tags=["knowledge"])
MAX_FILES = 64


def who(principal: Principal) -> Who:
    return Who(principal.name, admin="admin" in principal.scopes)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | None = Field(None, max_length=2000, description="Words or a question, Chinese or English.")
    image_base64: str | None = Field(None, description="A screenshot to search by (base64 or data: URL).")
    image_url: str | None = Field(None, description="A screenshot to search by, through the safe URL intake.")
    top_k: int = Field(5, ge=1, le=50)
    documents: list[str] | None = Field(None, description="Only these documents (file names or ids).")
    since: datetime | float | None = Field(None, description="Only pages uploaded at or after (ISO time or epoch s).")
    until: datetime | float | None = Field(None, description="Only pages uploaded at or before.")


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(4, ge=1, le=10)
    max_tokens: int | None = Field(None, ge=1)


class AddUrlsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(min_length=1, max_length=MAX_FILES, description="http(s) or data: URLs of images.")


class GrantRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principal: str = Field(min_length=1, max_length=128, description="e.g. 'key:bob' or 'jwt:alice'.")


def _epoch(value: datetime | float | None) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    return value.timestamp()


@router.get("/kb", dependencies=read)
async def collections(state: Ready, caller: Caller) -> dict[str, Any]:
    """The collections this caller owns or was granted."""
    return {"collections": await state.runtime.kb.collections(who(caller))}


@router.post("/kb/{collection}/documents", dependencies=write)
async def add_documents(collection: str, request: Request, state: Ready, caller: Caller) -> dict[str, Any]:
    """Index images or PDFs: multipart with one or many ``files`` parts, or JSON ``{"urls": [...]}`` (fetched
    through the same SSRF-safe intake as every image). A file already in the collection (same bytes) is
    skipped."""
    kb = state.runtime.kb
    caller_is = who(caller)
    results = []
    if request.headers.get("content-type", "").startswith("multipart/"):
        form = await request.form(max_files=MAX_FILES)
        uploads = [part for part in form.getlist("files") if isinstance(part, UploadFile)]
        if not uploads:
            raise FlashvlError("no_files", "Send the images or PDFs as multipart parts named 'files'.", 400)
        for upload in uploads:
            data = await upload.read(state.settings.kb_max_file_bytes + 1)
            name = (upload.filename or "upload").rsplit("/", 1)[-1][:200]
            results.append(await with_deadline(state, kb.add(collection, name, data, caller_is)))
    else:
        try:
            body = AddUrlsRequest.model_validate(json.loads(await request.body() or b"{}"))
        except (ValueError, json.JSONDecodeError) as exc:
            message = f"Expected multipart 'files' or JSON {{'urls': [...]}}: {exc}"
            raise FlashvlError("invalid_request", message, 422) from None
        for url in body.urls:
            image = await state.intake.from_reference(url)
            data = _png(image)  # the decoded, checked image (the intake keeps no raw bytes)
            name = url if not url.startswith("data:") else f"data-{image.sha256[:12]}.png"
            results.append(await with_deadline(state, kb.add(collection, name[:200], data, caller_is)))
    return {"collection": collection, "documents": results}


def _png(image: LoadedImage) -> bytes:
    buffer = io.BytesIO()
    image.image.save(buffer, format="PNG")
    return buffer.getvalue()


@router.get("/kb/{collection}/documents", dependencies=read)
async def list_documents(collection: str, state: Ready, caller: Caller) -> dict[str, Any]:
    return {"collection": collection, "documents": await state.runtime.kb.documents(collection, who(caller))}


@router.delete("/kb/{collection}/documents/{document_id}", dependencies=write)
async def delete_document(collection: str, document_id: str, state: Ready, caller: Caller) -> dict[str, Any]:
    """Remove a document and every record derived from it (pages, text, vectors, hashes, images)."""
    removed = await state.runtime.kb.delete_document(collection, document_id, who(caller))
    if not removed:
        raise FlashvlError("document_not_found", "No such document in this collection.", 404)
    return {"deleted": document_id, "pages_removed": removed}


@router.post("/kb/{collection}/grants", dependencies=write)
async def grant(collection: str, body: GrantRequest, state: Ready, caller: Caller) -> dict[str, Any]:
    """Let another principal read (search, ask) this collection."""
    await state.runtime.kb.grant(collection, body.principal, who(caller))
    return {"collection": collection, "granted": body.principal}


@router.post("/kb/{collection}/search", dependencies=read)
async def search(collection: str, request: Request, state: Ready, caller: Caller) -> dict[str, Any]:
    """Hybrid search: JSON ``{"query", "top_k", "documents", "since", "until"}`` (and/or ``image_base64`` /
    ``image_url``), or multipart with an ``image`` part and ``query`` / ``top_k`` fields."""
    image: LoadedImage | None = None
    if request.headers.get("content-type", "").startswith("multipart/"):
        form = await request.form(max_files=1)
        upload = form.get("image")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if "documents" in fields:
            fields["documents"] = json.loads(fields["documents"])
        body = SearchRequest.model_validate(fields)
        if isinstance(upload, UploadFile):
            image = await state.intake.from_upload(upload)
    else:
        try:
            body = SearchRequest.model_validate_json(await request.body() or b"{}")
        except ValueError as exc:
            raise FlashvlError("invalid_request", str(exc).splitlines()[0], 422) from None
        if body.image_base64 or body.image_url:
            image = await state.intake.from_reference(body.image_url or body.image_base64 or "")
    found = await with_deadline(
        state,
        state.runtime.kb.search(
            collection,
            who(caller),
            query=body.query,
            image=image,
            top_k=body.top_k,
            documents=body.documents,
            since=_epoch(body.since),
            until=_epoch(body.until),
        ),
    )
    return found | {"request_id": getattr(request.state, "request_id", None)}


@router.post("/kb/{collection}/ask", dependencies=read)
async def ask(collection: str, body: AskRequest, request: Request, state: Ready, caller: Caller) -> dict[str, Any]:
    """A grounded answer from this collection's pages, with its sources (also: ``/infer`` with
    ``"knowledge"``)."""
    answer = await with_deadline(
        state,
        state.runtime.kb.answer(
            collection,
            who(caller),
            body.question,
            top_k=body.top_k,
            max_tokens=resolve_max_tokens(state, body.max_tokens),
        ),
    )
    return answer | {"request_id": getattr(request.state, "request_id", None)}


@router.get("/kb/{collection}/documents/{document_id}/pages/{page}/image", dependencies=read)
async def page_image(collection: str, document_id: str, page: int, state: Ready, caller: Caller) -> Response:
    """The stored page image (PNG), to show a hit with its matching lines highlighted."""
    data = await state.runtime.kb.page_image(collection, document_id, page, who(caller))
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


async def grounded(
    state: Ready,
    caller: Principal,
    collection: str,
    question: str,
    *,
    top_k: int,
    image: LoadedImage | None,
    max_tokens: int,
) -> dict[str, Any]:
    """A grounded answer for ``/infer`` and ``/v1/chat/completions`` with ``"knowledge"``, as
    ``ResponseMeta`` fields plus ``text`` and ``sources`` (route ``knowledge``)."""
    if not caller.has("kb:read"):
        raise FlashvlError("insufficient_scope", "Answering from a knowledge base needs the 'kb:read' scope.", 403)
    runtime = state.runtime
    answer = await with_deadline(
        state,
        runtime.kb.answer(collection, who(caller), question, top_k=top_k, image=image, max_tokens=max_tokens),
    )
    usage = answer.get("usage") or {}
    return {
        "route": "knowledge",
        "vision_stage": runtime.vision.name,
        "language_stage": runtime.language.name if runtime.language is not None else None,
        "stages": [{"name": s["name"], "backend": s["backend"], "seconds": s["seconds"]} for s in answer["stages"]],
        "confidence": answer.get("confidence"),
        "confidence_source": "language_token_probability" if answer.get("confidence") is not None else None,
        "notice": answer.get("notice"),
        "finish_reason": answer.get("finish_reason", "stop"),
        "usage": {
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
        },
        "text": answer["text"],
        "sources": answer["sources"],
        "answered": answer["answered"],
    }
