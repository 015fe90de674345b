"""Stages by name: the one place that maps a setting like ``--vision offline`` to a class.

Specs (``--vision`` / ``--language``):

- ``offline``: the offline pipeline (vision only).
- ``llamacpp``: the bundled brain (or ``language_model_path``) on llama.cpp (language only; default).
- ``none``: no language stage.
- ``glm4v:<folder or hub id>``: GLM-4.xV in-process (transformers; extra ``glm``). Vision and language.
- ``openai:<base_url>#<model>``: any OpenAI-compatible server. Vision and language.

A ``StageBuilder`` builds the stages one ``Settings`` names, unloaded (``load`` is the runtime's
job). The same ``glm4v`` spec for two roles (vision, language, arbitration voter) gives ONE
instance (one model in memory, one batcher); an ``openai`` spec gives one small HTTP client per
role, each built for its role (nothing is changed on a stage after it is built). Whoever runs a
pipeline (``flashvl/runtime.py``) owns its builder: nothing is kept at module level. Adding a
backend means one module and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.stages.base import LanguageStage, VisionStage

Progress = Callable[[str, int, int], None]  # (what, done, total)
BUNDLED_BRAIN = "qwen2.5-coder-1.5b-instruct-q4_k_m"
VISION_CHOICES = "offline, glm4v:<folder or hub id>, openai:<base_url>#<model>"
LANGUAGE_CHOICES = "llamacpp, none, glm4v:<folder or hub id>, openai:<base_url>#<model>"


def _bad(kind: str, spec: str, choices: str, why: str = "") -> FlashvlError:
    return FlashvlError("bad_setting", f"{kind} stage {spec!r}{': ' + why if why else ''}; choose: {choices}", 500)


def parse_openai_spec(spec: str) -> tuple[str, str]:
    """``openai:http://host:8000/v1#model`` -> (base_url, model)."""
    rest = spec.removeprefix("openai:")
    base_url, sep, model = rest.rpartition("#")
    if not sep or not base_url.startswith(("http://", "https://")) or not model:
        raise ValueError("write openai:<http(s) base URL>#<model name>, e.g. openai:http://127.0.0.1:8000/v1#glm")
    return base_url.rstrip("/"), model


class StageBuilder:
    """Builds the stages of one ``Settings``; a spec named for two roles yields one shared instance."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engines: dict[Any, Any] = {}  # spec (glm4v, llamacpp) or (spec, role) (openai) -> stage

    def vision(self) -> VisionStage:
        spec = self.settings.vision
        if spec == "offline":
            from flashvl.stages.offline.stage import OfflineVisionStage

            return OfflineVisionStage.from_settings(self.settings)
        try:
            stage = _engine(self.settings, spec, "vision", self._engines)
        except ValueError as exc:
            raise _bad("vision", spec, VISION_CHOICES, str(exc)) from exc
        if stage is None:
            raise _bad("unknown vision", spec, VISION_CHOICES)
        return stage

    def language(self, spec: str | None = None, progress: Progress | None = None) -> LanguageStage | None:
        """The language stage (``spec``: another one than ``settings.language``, e.g. the voter's).
        The bundled llama.cpp model is assembled (seconds, once per machine) when it loads."""
        settings = self.settings
        spec = spec or settings.language
        if spec == "none":
            return None
        if spec != "llamacpp":
            try:
                stage = _engine(settings, spec, "language", self._engines)
            except ValueError as exc:
                raise _bad("language", spec, LANGUAGE_CHOICES, str(exc)) from exc
            if stage is None:
                raise _bad("unknown language", spec, LANGUAGE_CHOICES)
            return stage
        cached = self._engines.get(spec)
        if cached is not None:  # the voter may be the language stage itself
            return cached
        from flashvl.stages.llamacpp import LlamaCppLanguageStage

        path = settings.language_model_path
        stage = LlamaCppLanguageStage(
            Path(path) if path else None,
            model_dir=settings.model_dir,
            progress=progress,
            slots=settings.language_slots,
            ctx=settings.language_ctx,
            threads=settings.language_threads,
            prompt_cache_mib=settings.language_prompt_cache_mib,
            slot_affinity=settings.language_slot_affinity,
            draft=settings.language_draft,
            draft_max=settings.language_draft_max,
            name=f"llamacpp:{path.stem if path else BUNDLED_BRAIN}",
            model_id=path.stem if path else BUNDLED_BRAIN,
        )
        self._engines[spec] = stage
        return stage

    def voter(self, progress: Progress | None = None) -> LanguageStage | None:
        """The arbitration voter (``arbitration_voter``), or None when there is none."""
        spec = self.settings.arbitration_voter
        if not spec:
            return None
        if spec == "none":
            raise FlashvlError("bad_setting", "arbitration_voter must name a language stage, not 'none'", 500)
        return self.language(spec, progress)


def _engine(settings: Settings, spec: str, role: Literal["vision", "language"], engines: dict[Any, Any]) -> Any | None:
    """A glm4v/openai stage for ``spec``, shared between roles through ``engines``; None if not one."""
    if spec.startswith("glm4v:"):
        if spec in engines:  # one model in memory serves every role
            return engines[spec]
        from flashvl.stages.glm4v.stage import Glm4vStage

        ref = spec.removeprefix("glm4v:")
        if not ref:
            raise ValueError("write glm4v:<folder or hub id>, e.g. glm4v:zai-org/GLM-4.6V-Flash")
        stage: Any = Glm4vStage(
            ref,
            device=settings.glm_device,
            dtype=settings.glm_dtype,
            threads=settings.glm_threads,
            max_batch=settings.batch_max_size,
            prepare_threads=settings.batch_prepare_threads,
            batch_wait_ms=settings.batch_wait_ms,
            continuous=settings.batch_continuous,
            max_pixels=settings.glm_max_pixels,
            default_max_tokens=settings.max_tokens,
            top_p=settings.glm_top_p,
            allow_download=settings.glm_allow_download,
        )
        engines[spec] = stage
    elif spec.startswith("openai:"):
        from flashvl.stages.openai_compat import OpenAICompatStage

        if (spec, role) in engines:  # the voter shares the language role's client
            return engines[(spec, role)]
        base_url, model = parse_openai_spec(spec)
        key_value = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        stage = OpenAICompatStage(
            base_url,
            model,
            role=role,
            api_key=key_value,
            timeout_s=settings.upstream_timeout_s,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            retries=settings.upstream_retries,
            image_mode=settings.upstream_image_mode,
            enable_thinking_kwarg=settings.upstream_thinking_kwarg,
        )
        engines[(spec, role)] = stage
    else:
        return None
    return stage
