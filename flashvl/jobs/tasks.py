"""What a job's items are run through: ``moderate`` (full), ``safety`` (Open-NSFW only, fast), ``ocr``.

Each item's payload is ``{"image": REF}``; REF is anything media intake takes (http(s), data:,
file:// under ``--file-root``) and, from the CLI only, a local path.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashvl.jobs.worker import Handler, Outcome
from flashvl.media import MediaIntake
from flashvl.media.types import LoadedImage
from flashvl.pipeline.guarded import GuardedLanguage, GuardedVision
from flashvl.stages.base import VisionRequest
from flashvl.tasks.document import read_image
from flashvl.tasks.moderate import Signal, Thresholds, combine, moderate_image

TASKS = ("moderate", "safety", "ocr")


@dataclass
class TaskContext:
    settings: Any
    intake: MediaIntake
    vision: GuardedVision | None = None
    language: GuardedLanguage | None = None
    safety: GuardedVision | None = None  # Open-NSFW alone (the ``safety`` task)
    allow_paths: bool = False

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.settings.moderation_review_threshold, self.settings.moderation_block_threshold)


async def load_image(ctx: TaskContext, payload: dict[str, Any]) -> LoadedImage:
    ref = payload.get("image")
    if not isinstance(ref, str) or not ref:
        raise ValueError("item has no 'image' reference")
    if ctx.allow_paths and "://" not in ref and not ref.startswith("data:"):
        return await ctx.intake.from_path(Path(ref))
    return await ctx.intake.from_reference(ref)


async def _moderate(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    assert ctx.vision is not None, "the moderate task needs the vision stage"
    image = await load_image(ctx, payload)
    return await moderate_image(
        ctx.vision,
        ctx.language,
        image,
        thresholds=ctx.thresholds,
        language_mode=ctx.settings.moderation_language,
        language_weight=ctx.settings.moderation_language_weight,
    )


async def _safety(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    assert ctx.safety is not None, "the safety task needs the safety stage"
    image = await load_image(ctx, payload)
    seen = (await ctx.safety.see(VisionRequest([image], task="moderate"))).result
    score = float(seen.observations["safety"]["nsfw_score"])
    verdict = combine([Signal("adult", "safety_model", score, f"Open-NSFW score {score:.2f}")], ctx.thresholds)
    return verdict.to_dict() | {"nsfw_score": round(score, 4), "image": {"sha256": image.sha256}}


async def _ocr(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    assert ctx.vision is not None, "the ocr task needs the vision stage"
    image = await load_image(ctx, payload)
    document, _ = await read_image(ctx.vision, image)
    return document


def make_handler(task: str, ctx: TaskContext) -> Handler:
    """A micro-batch handler: items run concurrently (the vision stage queues its own calls, the
    language stage batches across its slots); one item's failure is its own outcome."""
    one = {"moderate": _moderate, "safety": _safety, "ocr": _ocr}.get(task)
    if one is None:
        raise ValueError(f"unknown task {task!r}: one of {', '.join(TASKS)}")

    async def handle(payloads: list[dict[str, Any]]) -> list[Outcome]:
        return list(await asyncio.gather(*(one(ctx, p) for p in payloads), return_exceptions=True))

    return handle


def needs(task: str) -> set[str]:
    """Which stages a task needs loaded."""
    return {"moderate": {"vision", "language"}, "ocr": {"vision"}, "safety": {"safety"}}[task]
