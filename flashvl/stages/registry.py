"""Stages by name: the one place that maps a setting like ``--vision offline`` to a class.

Adding a backend means one new module in ``stages/`` and one entry here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.stages.base import LanguageStage, VisionStage

Progress = Callable[[str, int, int], None]  # (what, done, total)
BUNDLED_BRAIN = "qwen2.5-coder-1.5b-instruct-q4_k_m"


def build_vision(settings: Settings) -> VisionStage:
    if settings.vision == "offline":
        from flashvl.stages.offline.stage import OfflineVisionStage

        return OfflineVisionStage.from_settings(settings)
    raise FlashvlError("bad_setting", f"unknown vision stage {settings.vision!r}; choose: offline", 500)


async def build_language(settings: Settings, progress: Progress | None = None) -> LanguageStage | None:
    """Build (and for llama.cpp, first assemble the model file of) the language stage."""
    if settings.language == "none":
        return None
    if settings.language != "llamacpp":
        raise FlashvlError("bad_setting", f"unknown language stage {settings.language!r}; choose: llamacpp, none",
                           500)
    from flashvl.stages.llamacpp import LlamaCppLanguageStage

    path = settings.language_model_path
    model_id = path.stem if path else BUNDLED_BRAIN
    if path is None:
        from flashvl.stages.brain_model import ensure_brain_model

        def report(done: int, total: int) -> None:
            if progress:
                progress("assembling language model", done, total)

        path = await asyncio.to_thread(ensure_brain_model, settings.model_dir, report)
    return LlamaCppLanguageStage(
        Path(path), slots=settings.language_slots, ctx=settings.language_ctx, threads=settings.language_threads,
        name=f"llamacpp:{model_id}", model_id=model_id,
    )
