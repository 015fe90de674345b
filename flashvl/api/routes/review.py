"""Answers flagged by arbitration (``needs_review``): list them, read one, resolve it.

Only principals with the ``review`` scope (the human reviewers, and ``admin``) see these routes:
the items hold other clients' questions and answers. Each item names the principal whose
request was flagged (``owner``) and, once resolved, the reviewer who resolved it (``resolved_by``);
unless the server runs with ``--no-review-thumbnails``, it keeps a small thumbnail of the image too
(``has_thumbnail``; the bytes come from ``GET /review/{id}/thumbnail``, same scope, never in the JSON).
The stores are SQLite or in-memory; their calls run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from flashvl.api.auth import Caller, require_scope
from flashvl.api.deps import State
from flashvl.errors import FlashvlError
from flashvl.pipeline.review.base import thumbnail_type

router = APIRouter(prefix="/review", tags=["review"], dependencies=[Depends(require_scope("review"))])


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["accept", "reject", "corrected"] = Field(
        description="accept: the answer stands; reject: it was wrong; corrected: see corrected_answer."
    )
    corrected_answer: str | None = Field(None, max_length=8000)
    note: str | None = Field(None, max_length=2000)


@router.get("")
async def list_reviews(
    state: State,
    status: Literal["open", "resolved", "all"] = "open",
    limit: int = Query(1000, ge=1, le=1000, description="At most this many items (the queue keeps 1000 by default)."),
    offset: int = Query(0, ge=0, description="Skip this many (paging)."),
    reason: str | None = Query(None, max_length=200, description="Only items with a reason containing this."),
) -> dict[str, Any]:
    """Flagged answers, oldest first (``status``: open, resolved or all; ``reason``: a substring of one of
    the reasons). ``count`` is how many match before paging; ``counts`` the queue's open and resolved totals
    (for the web page's live badges)."""

    def collect() -> tuple[list[Any], list[Any]]:
        everything = state.pipeline.reviews.list(None)
        wanted = [item for item in everything if status == "all" or item.status == status]
        if reason:
            needle = reason.casefold()
            wanted = [item for item in wanted if any(needle in str(r).casefold() for r in item.reasons)]
        return everything, wanted

    everything, wanted = await asyncio.to_thread(collect)
    page = wanted[offset : offset + limit]
    counts = {"open": sum(item.status == "open" for item in everything)}
    counts["resolved"] = len(everything) - counts["open"]
    return {
        "items": [item.to_dict() for item in page],
        "count": len(wanted),
        "offset": offset,
        "limit": limit,
        "counts": counts,
    }


@router.get("/{item_id}")
async def get_review(item_id: str, state: State) -> dict[str, Any]:
    item = await asyncio.to_thread(state.pipeline.reviews.get, item_id)
    if item is None:
        raise FlashvlError("not_found", f"No review item {item_id!r}.", 404)
    return item.to_dict()


@router.get(
    "/{item_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/webp": {}}, "description": "The flagged image, at most 160 px a side."}},
)
async def get_review_thumbnail(item_id: str, state: State) -> Response:
    """The thumbnail kept with a flagged answer (WebP, a few KB); 404 when the item is gone or has none
    (thumbnails off, or no image). ``Cache-Control: private, no-store``: no cache keeps it."""
    item = await asyncio.to_thread(state.pipeline.reviews.get, item_id)
    if item is None or item.thumbnail is None:
        raise FlashvlError("not_found", f"No thumbnail for review item {item_id!r}.", 404)
    return Response(
        item.thumbnail,
        media_type=thumbnail_type(item.thumbnail),
        headers={"Cache-Control": "private, no-store"},
    )


@router.post("/{item_id}/resolve")
async def resolve_review(item_id: str, body: Resolution, state: State, caller: Caller) -> dict[str, Any]:
    """Record a person's verdict on a flagged answer, and who gave it (``resolved_by``)."""
    if body.verdict == "corrected" and not body.corrected_answer:
        raise FlashvlError("invalid_request", "verdict 'corrected' needs corrected_answer.", 422)
    item = await asyncio.to_thread(
        state.pipeline.reviews.resolve, item_id, body.verdict, body.corrected_answer, body.note, caller.name
    )
    if item is None:
        raise FlashvlError("not_found", f"No review item {item_id!r}.", 404)
    return item.to_dict()
