"""The runtime: the one place that turns ``Settings`` into a working flashvl, starts it and closes it.

It builds, once and in order: media intake, the stages (unloaded), the vision cache, the
model-queue admission gate, one circuit breaker per stage role, the guarded stage calls
(``pipeline/guarded.py``) that every use case goes through, the shared text embedder, the
router and arbiter, the review store, the pipeline, and (on request) the job queue and its
worker. Nothing is patched after it is built. The HTTP app, every CLI command, ``eval``, batch
jobs and the benchmarks all use it, so they all serve the same thing.

Dependencies point one way: api / cli / eval -> runtime -> jobs -> tasks -> pipeline -> stages
-> media / text -> config / errors / observability (checked by ``make lint``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from flashvl.config import Settings
from flashvl.jobs.backends import store_from_settings
from flashvl.jobs.service import JobService
from flashvl.jobs.store import JobStore
from flashvl.jobs.tasks import TaskContext
from flashvl.jobs.worker import WorkerConfig
from flashvl.media import MediaIntake
from flashvl.observability import Metrics, get_logger
from flashvl.pipeline.admission import Admission, ModelGate
from flashvl.pipeline.arbitration import Arbiter
from flashvl.pipeline.cache.factory import build_cache
from flashvl.pipeline.disclaimers import DomainClassifier
from flashvl.pipeline.embedding import Embedder
from flashvl.pipeline.guarded import GuardedLanguage, GuardedVision
from flashvl.pipeline.resilience import CircuitBreaker
from flashvl.pipeline.review.factory import build_review_store
from flashvl.pipeline.router.base import Router
from flashvl.pipeline.router.rules import KeywordRouter
from flashvl.pipeline.service import Pipeline
from flashvl.stages.base import LanguageStage, VisionStage
from flashvl.stages.lazy import LoadOnFirstUse
from flashvl.stages.registry import Progress, StageBuilder

if TYPE_CHECKING:
    from flashvl.kb.service import KnowledgeBase

log = get_logger("flashvl.runtime")
ROLES = frozenset({"vision", "language", "voter", "safety"})
ANSWER_ROLES = frozenset({"vision", "language", "voter"})  # what answering questions needs
LOADS_ON_FIRST_USE = "loads on first use"  # the status of a ``lazy`` role until it is used


class Runtime:
    """Everything one flashvl process runs, built from ``settings``.

    ``roles`` narrows which stages are built (a caption needs no language model, a safety batch
    no vision pipeline); ``metrics`` receives per-stage latencies and batch sizes.

    ``stages`` hands in stage objects already built elsewhere, by role ("vision", "language",
    "voter"), instead of building them from the settings: ``flashvl/deploy`` passes stand-ins that
    reach Ray Serve deployments. They are guarded exactly like built ones, so the pipeline does not
    know where a stage runs.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        roles: frozenset[str] | set[str] = ROLES,
        metrics: Metrics | None = None,
        progress: Progress | None = None,
        lazy: frozenset[str] | set[str] = frozenset(),
        loading: Callable[[str], AbstractContextManager[Any]] | None = None,
        stages: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.roles = frozenset(roles)
        self.lazy = frozenset(lazy)
        self.metrics = metrics
        self.progress = progress
        self.intake = MediaIntake(settings)
        builder = StageBuilder(settings)
        given = dict(stages or {})
        self.vision_stage: VisionStage = given["vision"] if "vision" in given else builder.vision()
        self.language_stage: LanguageStage | None = None
        if "language" in roles:
            self.language_stage = given["language"] if "language" in given else builder.language(progress=progress)
        wants_voter = "voter" in roles and settings.arbitration and "language" in roles
        self.voter_stage: LanguageStage | None = None
        if wants_voter:
            self.voter_stage = given["voter"] if "voter" in given else builder.voter(progress)
        # ``lazy`` roles load on first use (``flashvl ask``: a rule's answer needs no language model);
        # a stage that is also the vision stage (one glm4v model) loads at start with it.
        if "language" in self.lazy and self.language_stage is not None and self.language_stage is not self.vision_stage:
            self.language_stage = LoadOnFirstUse(self.language_stage, loading=loading)
        if "voter" in self.lazy and self.voter_stage is not None and self.voter_stage is not self.vision_stage:
            self.voter_stage = LoadOnFirstUse(self.voter_stage, loading=loading)
        self.safety_stage: VisionStage | None = None
        if "safety" in roles:  # Open-NSFW alone, for the fast ``safety`` batch task
            from flashvl.stages.offline.safety import SafetyOnlyStage

            self.safety_stage = SafetyOnlyStage(settings.vision_threads)

        self.cache = build_cache(settings)
        self.admission = self._admission()
        self.vision = self._guard_vision(self.vision_stage, "vision")
        self.language = self._guard_language(self.language_stage, "language")
        self.voter = self._guard_language(self.voter_stage, "voter")
        self.safety = self._guard_vision(self.safety_stage, "safety") if self.safety_stage is not None else None
        self.embedder = Embedder()  # one for the router, the arbiter and the disclaimers, loaded on first use
        self.reviews = build_review_store(
            settings.review_store,
            settings.review_sqlite_path,
            settings.review_max_items,
            settings.review_thumbnails,
            settings.review_redis_url,
            settings.review_redis_prefix,
        )
        self.pipeline = Pipeline(
            self.vision,
            self.language,
            router=self._router(),
            route_default=settings.route_default,
            direct_without_vlm=settings.router_direct_without_vlm,
            arbiter=Arbiter(settings.arbitration_similarity_threshold, embed=self.embedder)
            if settings.arbitration
            else None,
            reask=settings.arbitration_reask,
            voter=self.voter,
            reviews=self.reviews,
            disclaimers={"zh": settings.disclaimer_zh, "en": settings.disclaimer_en} if settings.disclaimers else None,
            domain_classifier=DomainClassifier(self.embedder) if settings.disclaimers else None,
            tools=settings.tools,
            tool_timeout_s=settings.tool_timeout_s,
        )
        self.stage_status: dict[str, str] = {}
        self.load_seconds: dict[str, float] = {}  # per role, once loaded (the server's "ready" line)
        self.jobs: JobService | None = None

    # ------------------------------------------------------------ building

    def _admission(self) -> Admission:
        """The model queue: this process's own, or one shared in Redis (``--model-queue-redis-url``)."""
        settings = self.settings
        if settings.model_queue_redis_url:
            from flashvl.pipeline.admission_redis import RedisModelGate

            return RedisModelGate(
                settings.model_queue_redis_url,
                settings.model_max_concurrent,
                settings.model_max_queue,
                settings.model_queue_timeout_s,
                prefix=settings.model_queue_redis_prefix,
                lease_s=settings.model_queue_lease_s,
            )
        return ModelGate(settings.model_max_concurrent, settings.model_max_queue, settings.model_queue_timeout_s)

    def _breaker(self, role: str) -> CircuitBreaker:
        return CircuitBreaker(role, self.settings.breaker_failures, self.settings.breaker_reset_s)

    def _guard_vision(self, stage: VisionStage, role: str) -> GuardedVision:
        return GuardedVision(
            stage,
            breaker=self._breaker(role),
            timeout_s=self.settings.vision_timeout_s,
            cache=self.cache,
            admission=self.admission,
            observe=self._observe_stage,
            role=role,
        )

    def _guard_language(self, stage: LanguageStage | None, role: str) -> GuardedLanguage | None:
        if stage is None:
            return None
        return GuardedLanguage(
            stage,
            breaker=self._breaker(role),
            timeout_s=self.settings.language_timeout_s,
            admission=self.admission,
            observe=self._observe_stage,
            role=role,
        )

    def _router(self) -> Router:
        settings = self.settings
        if settings.router == "classifier":
            from flashvl.pipeline.router.classifier import ClassifierRouter

            return ClassifierRouter(embedder=self.embedder)
        return KeywordRouter(settings.router_keywords_zh or None, settings.router_keywords_en or None)

    def _observe_stage(self, role: str, backend: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.stage_latency.labels(role, backend).observe(seconds)

    def stages(self) -> dict[str, Any]:
        """The built stages by role (one object may serve two roles)."""
        named = {
            "vision": self.vision_stage if "vision" in self.roles else None,
            "language": self.language_stage,
            "voter": self.voter_stage,
            "safety": self.safety_stage,
        }
        return {role: stage for role, stage in named.items() if stage is not None}

    # ------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        status = self.stage_status
        return bool(status) and all(value == "ready" for value in status.values())

    async def start(self) -> None:
        """Load every stage (vision first); each role's status is kept for /readyz. A stage that
        fails to load is reported as failed; the others still load."""
        stages = self.stages()
        for role in stages:
            self.stage_status[role] = "loading"
        loaded: list[int] = []
        for role, stage in stages.items():
            if isinstance(stage, LoadOnFirstUse):
                self.stage_status[role] = LOADS_ON_FIRST_USE
                continue
            began = time.perf_counter()
            try:
                await stage.load()
            except Exception as exc:
                self.stage_status[role] = f"failed: {type(exc).__name__}: {exc}"
                log.exception("stage_load_failed", stage=role)
                continue
            if id(stage) not in loaded:  # one engine may serve two roles: count its batches once
                self._watch_batches(stage)
                loaded.append(id(stage))
            self.stage_status[role] = "ready"
            self.load_seconds[role] = round(time.perf_counter() - began, 3)
            log.info("stage_loaded", stage=role, backend=stage.name, seconds=self.load_seconds[role])

    def _watch_batches(self, stage: object) -> None:
        """Feed ``flashvl_batch_size`` from stages that batch in-process (``add_batch_listener``)."""
        add_listener: Callable[[Callable[[float], None]], None] | None = getattr(stage, "add_batch_listener", None)
        if add_listener is not None and self.metrics is not None:
            add_listener(self.metrics.batch_size.labels(getattr(stage, "name", "stage")).observe)

    @functools.cached_property
    def kb(self) -> KnowledgeBase:
        """The knowledge base (``flashvl/kb/``): its store from the settings (``kb_store``), built on first
        use; OCR and descriptions through the guarded vision stage, answers through the guarded language
        stage, vectors from the shared embedder."""
        from flashvl.kb.service import KnowledgeBase, build_store

        return KnowledgeBase(
            build_store(self.settings),
            self.settings,
            vision=self.vision,
            language=self.language,
            embedder=self.embedder,
        )

    def job_context(self, *, allow_paths: bool = False) -> TaskContext:
        """What batch items run through: the guarded stage calls."""
        use_language = self.settings.moderation_language != "never"
        return TaskContext(
            self.settings,
            self.intake,
            vision=self.vision,
            language=self.language if use_language else None,
            safety=self.safety,
            allow_paths=allow_paths,
        )

    def open_jobs(self, store: JobStore | None = None) -> JobService:
        """The job queue (the settings' store) and its worker, not yet started."""
        self.jobs = JobService(
            store or store_from_settings(self.settings),
            self.job_context(),
            WorkerConfig.from_settings(self.settings),
            ready=lambda: self.ready,
        )
        return self.jobs

    async def close(self) -> None:
        """Stop the job worker, close every stage once, the cache, the stores and intake."""
        if self.jobs is not None:
            await self.jobs.stop()
        closed: set[int] = set()
        for stage in self.stages().values():
            if id(stage) in closed:
                continue
            closed.add(id(stage))
            with contextlib.suppress(Exception):
                await stage.close()
        if self.cache is not None:
            with contextlib.suppress(Exception):
                await self.cache.close()
        close_admission = getattr(self.admission, "aclose", None)
        if close_admission is not None:
            with contextlib.suppress(Exception):
                await close_admission()
        close_reviews = getattr(self.reviews, "close", None)
        if close_reviews is not None:
            await asyncio.to_thread(close_reviews)
        if "kb" in self.__dict__:  # built (cached_property) only if used
            await self.kb.close()
        await self.intake.aclose()

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
