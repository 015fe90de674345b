"""The arbitration policy: re-ask the vision stage, let a third stage vote, else flag for review."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from flashvl.pipeline import arbitration as arb
from flashvl.pipeline.resilience import VisionDown
from flashvl.pipeline.review.base import make_thumbnail
from flashvl.pipeline.types import Answer, Query, StageRecord
from flashvl.stages.base import ChatMessage, ChatRequest, VisionResult

if TYPE_CHECKING:
    from flashvl.pipeline.service import Pipeline


async def arbitrate(pipeline: Pipeline, query: Query, seen: VisionResult, final: Answer, lang: str) -> None:
    """Check the brain against the eyes; re-ask, vote, or flag for review."""
    assert pipeline.arbiter is not None
    conflicts = await asyncio.to_thread(
        pipeline.arbiter.check, seen.observations, seen.description, final.text, query.question
    )
    report: dict[str, Any] = {"conflicts": [c.__dict__ for c in conflicts], "reask": [], "vote": None}
    open_conflicts = []
    for conflict in conflicts:
        question = arb.targeted_question(conflict, lang) if pipeline.reask else None
        if question is None:
            open_conflicts.append(conflict)
            continue
        try:
            looked = await pipeline.see(query, question, role="vision-reask")
        except VisionDown:
            open_conflicts.append(conflict)
            continue
        reseen = looked.result
        final.stages.append(looked.record)
        reply = reseen.answer or reseen.description
        supports = arb.reask_supports_answer(conflict, reply, final.text)
        report["reask"].append({"question": question, "answer": reply, "supports_language_stage": supports})
        if not supports:
            conflict.detail += f"; re-asked the vision stage '{question}': '{reply[:160]}'"
            open_conflicts.append(conflict)
    if open_conflicts and pipeline.voter is not None:
        report["vote"] = agreed = await vote(pipeline, seen.description, final.text, final)
        if agreed:
            open_conflicts = []
    if all(c.kind == "low_similarity" for c in open_conflicts):
        # Similarity alone is weak evidence: the threshold was calibrated on short descriptions, and
        # real offline descriptions (colours, safety lines) score lower against correct answers.
        report["similarity_only"] = bool(open_conflicts)
        open_conflicts = []
    if open_conflicts:
        final.needs_review = True
        final.review_reasons = [f"{c.kind}: {c.detail}" for c in open_conflicts]
        image = query.images[0].image if query.images and pipeline.reviews.thumbnails else None
        item = await asyncio.to_thread(  # thumbnail and the SQLite review store's write: off the event loop
            lambda: pipeline.reviews.add(
                question=query.question,
                answer=final.text,
                description=seen.description,
                reasons=final.review_reasons,
                image_sha256=[i.sha256 for i in query.images],
                route=final.route,
                owner=query.principal,
                thumbnail=make_thumbnail(image) if image is not None else None,
            )
        )
        final.review_id = item.id
    if final.intermediate is not None:
        final.intermediate["arbitration"] = report


async def vote(pipeline: Pipeline, description: str, answer: str, final: Answer) -> bool:
    """A third stage judges whether the answer agrees with the observations (True: it does)."""
    assert pipeline.voter is not None
    prompt = (
        f"Observations of an image:\n{description}\n\nProposed answer:\n{answer}\n\n"
        "Does the proposed answer agree with the observations? "
        'Reply as JSON: {"agrees": true} or {"agrees": false}.'
    )
    start = time.perf_counter()
    try:  # guarded: admission, the voter's own breaker and deadline
        generation = await pipeline.voter.generate(
            ChatRequest([ChatMessage("user", prompt)], max_tokens=16, temperature=0.0, json_schema=VOTE_SCHEMA)
        )
    except Exception:
        return False
    final.stages.append(
        StageRecord("voter", pipeline.voter.name, time.perf_counter() - start, replica=generation.replica)
    )
    return parse_vote(generation.text)


VOTE_SCHEMA = {"type": "object", "properties": {"agrees": {"type": "boolean"}}, "required": ["agrees"]}


def parse_vote(text: str) -> bool:
    """The voter's verdict: JSON ``{"agrees": bool}`` (constrained output), or a plain yes/no word."""
    try:
        value = json.loads(text)
        if isinstance(value, dict) and isinstance(value.get("agrees"), bool):
            return value["agrees"]
    except ValueError:
        pass
    return text.strip().lower().startswith(("yes", "是"))
