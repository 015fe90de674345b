"""``Glm4vStage``: GLM-4.6V-Flash in-process (transformers), as vision and as language stage.

One instance serves both roles (``--vision glm4v:DIR --language glm4v:DIR`` share it):
``stream(VisionRequest)`` answers about images, ``stream(ChatRequest)`` answers text.
Every request goes through one ``DynamicBatcher``: concurrent requests (images or not,
thinking on or off, each with its own temperature and length) are generated together.

torch and transformers are imported only in ``load`` (the ``glm`` extra).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

from flashvl.errors import StageUnavailable
from flashvl.stages.base import (
    Box,
    ChatRequest,
    Generation,
    Relay,
    TextDelta,
    Timings,
    VisionRequest,
    VisionResult,
    final_result,
)
from flashvl.stages.glm4v.batcher import DynamicBatcher
from flashvl.stages.glm_output import StreamParser, parse_output, vlm_prompt


class Glm4vStage:
    """A ``StreamingVisionStage`` and a ``LanguageStage`` backed by one GLM-4.xV model."""

    is_vlm = True

    def __init__(
        self,
        model_ref: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        threads: int = 0,
        max_batch: int = 8,
        batch_wait_ms: float = 10.0,
        prepare_threads: int = 0,
        max_pixels: int = 1_003_520,
        default_max_tokens: int = 256,
        top_p: float = 0.6,
        allow_download: bool = False,
        name: str | None = None,
        continuous: bool = True,
    ) -> None:
        self.model_ref = model_ref
        local = Path(model_ref).expanduser()
        self.model_id = local.name if local.is_dir() else model_ref
        self.name = name or f"glm4v:{self.model_id}"
        self.device_setting = device
        self.dtype_setting = dtype
        self.max_pixels = max_pixels
        self.default_max_tokens = default_max_tokens
        self.top_p = top_p
        self.allow_download = allow_download
        self.device: str | None = None
        self.dtype: Any = None
        self.load_seconds: float | None = None
        self._weights: dict[str, Any] | None = None  # hub revision or content hash, set in load
        self._model: Any = None
        self._processor: Any = None
        self._continuous: Any = None  # the ContinuousEngine (continuous batching), set in load
        self._load_lock = asyncio.Lock()
        self.threads = threads or default_threads()  # the generating thread's intra-op threads
        self._batcher: DynamicBatcher[dict[str, Any], Any] = DynamicBatcher(
            self._prepare,
            self._run_batch,
            max_batch=max_batch,
            max_wait_s=batch_wait_ms / 1000,
            prepare_threads=prepare_threads or min(8, max(2, default_threads())),
            prepare_initializer=_one_torch_thread,
            worker_initializer=self._all_torch_threads,
            name="glm4v",
            continuous=continuous,
        )

    # ------------------------------------------------------------ lifecycle

    @property
    def loaded(self) -> bool:
        return self._model is not None

    async def load(self) -> None:
        """Load processor and weights (idempotent: the vision and language roles share one instance)."""
        async with self._load_lock:
            if self._model is None:
                started = time.perf_counter()
                await asyncio.to_thread(self._load_sync)
                self.load_seconds = time.perf_counter() - started

    def _load_sync(self) -> None:
        try:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            from flashvl.stages.glm4v import engine
        except ImportError as exc:
            raise StageUnavailable(
                self.name, f"needs the 'glm' extra (pip install 'flashvl[glm]'): {exc}", retry_after=60
            ) from exc
        device = engine.choose_device(self.device_setting)
        dtype = engine.choose_dtype(device, self.dtype_setting)
        local = Path(self.model_ref).expanduser()
        ref = str(local) if local.is_dir() else self.model_ref
        options = {"local_files_only": not self.allow_download}
        try:
            processor = AutoProcessor.from_pretrained(ref, **options)
            model = AutoModelForImageTextToText.from_pretrained(ref, dtype=dtype, **options)
        except OSError as exc:
            hint = "" if self.allow_download else " (downloads are off: set glm_allow_download or give a folder)"
            raise StageUnavailable(self.name, f"cannot load {ref!r}{hint}: {exc}", retry_after=60) from exc
        processor.tokenizer.padding_side = "left"
        self._processor = processor
        self._model = model.to(device).eval()
        self.device, self.dtype = device, dtype
        if self._batcher.continuous:
            from flashvl.stages.glm4v.continuous import ContinuousEngine

            self._continuous = ContinuousEngine(
                self._model,
                processor.tokenizer,
                device=device,
                dtype=dtype,
                max_rows=self._batcher.max_batch,
            )
        self._weights = _identify_weights(local if local.is_dir() else None, self.model_ref, model.config)

    def fingerprint(self) -> dict[str, Any]:
        """The weights (hub revision, or a hash of the folder's files taken at load), the resolved
        dtype and the settings that change answers (pixel cap, top_p, default answer length).
        Not the device, threads, batch sizes or load time."""
        from flashvl import __version__

        weights = self._weights
        if weights is None:  # not loaded yet: what the folder holds now (hashed once per process)
            local = Path(self.model_ref).expanduser()
            weights = _identify_weights(local if local.is_dir() else None, self.model_ref, None)
        return {
            "class": type(self).__qualname__,
            "name": self.name,
            "model_id": self.model_id,
            "code": __version__,
            "weights": weights,
            "dtype": str(self.dtype) if self.dtype is not None else self.dtype_setting,
            "max_pixels": self.max_pixels,
            "top_p": self.top_p,
            "default_max_tokens": self.default_max_tokens,
        }

    async def close(self) -> None:
        await self._batcher.close()
        self._model = self._continuous = None

    def add_batch_listener(self, callback: Callable[[int], None]) -> None:
        """``callback(batch_size)`` after each batch forms (the app feeds a histogram with it)."""
        self._batcher.add_listener(callback)

    @property
    def batch_sizes(self) -> list[int]:
        return list(self._batcher.batch_sizes)

    # ------------------------------------------------------------ batcher hooks (worker threads)

    def _all_torch_threads(self) -> None:
        """The generating thread's intra-op threads, set explicitly: torch gives a new thread the
        count last set anywhere in the process, and preprocessing threads set 1."""
        import torch

        torch.set_num_threads(self.threads)

    def _prepare(self, payload: dict[str, Any]) -> Any:
        from flashvl.stages.glm4v import engine

        return engine.prepare(self._processor, **payload)

    def _run_batch(self, jobs: list[Any], join: Callable[[int], list[Any]] | None = None) -> None:
        from flashvl.stages.glm4v import engine

        if self._continuous is not None:  # rows join between decode steps and leave when done
            self._continuous.run(jobs, join)
            return
        engine.run_batch(self._model, self._processor.tokenizer, jobs, device=str(self.device), dtype=self.dtype)

    # ------------------------------------------------------------ requests

    async def _run(
        self,
        messages: list[dict[str, Any]],
        *,
        enable_thinking: bool,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        live: bool,
    ) -> AsyncIterator[Any]:
        """Yield ``TextDelta`` pieces (parsed; none unless ``live``), then the row's ``RowDone``."""
        if self._model is None:
            raise StageUnavailable(self.name, "the model is not loaded")
        payload = {
            "messages": messages,
            "enable_thinking": enable_thinking,
            "max_tokens": max_tokens or self.default_max_tokens,
            "temperature": 0.0 if temperature is None else temperature,
            "top_p": self.top_p if top_p is None else top_p,
        }
        parser = StreamParser()
        done = None
        async with aclosing(self._batcher.submit(payload, live=live)) as items:
            async for item in items:
                if hasattr(item, "finish_reason"):
                    done = item
                    continue
                for kind, text in parser.feed(item.text):
                    yield TextDelta(text, kind=kind)
        for kind, text in parser.flush():
            yield TextDelta(text, kind=kind)
        if done is None:
            raise StageUnavailable(self.name, "generation ended without a result")
        yield done

    def stream(self, request: VisionRequest | ChatRequest) -> AsyncIterator[Any]:
        """Vision: deltas then a ``VisionResult``. Language: deltas then a ``Generation``."""
        if isinstance(request, ChatRequest):
            return self._stream_chat(request)
        return self._stream_vision(request)

    async def _stream_vision(
        self, request: VisionRequest, *, live: bool = True
    ) -> AsyncIterator[TextDelta | VisionResult]:
        if not request.images:
            raise StageUnavailable(self.name, "a vision request needs an image")
        started = time.perf_counter()
        max_pixels = min(request.max_pixels or self.max_pixels, self.max_pixels)
        question = request.question or vlm_prompt(request.task)
        from flashvl.stages.glm4v.engine import downscale  # torch is loaded by now

        content: list[dict[str, Any]] = [
            {"type": "image", "image": downscale(image.image, max_pixels)} for image in request.images
        ]
        content.append({"type": "text", "text": question})
        run = Relay(
            self._run(
                [{"role": "user", "content": content}],
                enable_thinking=request.enable_thinking,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=None,
                live=live,
            )
        )
        async for delta in run:
            yield delta
        done = run.final
        # Boxes are 0-1000 of the image the model saw, i.e. of the original (the aspect is kept).
        target = request.images[-1]
        parsed = parse_output(done.text, target.width, target.height)
        score = done.confidence if done.confidence is not None else 1.0
        boxes = [Box(b.label, score, *b.pixels, norm=b.norm) for b in parsed.boxes]
        yield VisionResult(
            stage=self.name,
            description=parsed.answer,
            answer=parsed.answer,
            answer_source="model",
            confidence=done.confidence,
            thinking=parsed.thinking,
            boxes=boxes,
            observations={
                "batch_size": done.batch_size,
                "boxes_1000": [list(b.norm) for b in parsed.boxes],
            },
            timings=Timings(
                {
                    "queue": done.queue_s,
                    "prompt": done.prompt_s,
                    "generate": done.generate_s - done.prompt_s,
                    "total": time.perf_counter() - started,
                },
                tokens=_token_counts(done),
            ),
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
            finish_reason=done.finish_reason,
        )

    async def see(self, request: VisionRequest) -> VisionResult:
        """The whole answer; no per-token pieces are handed over while it is generated."""
        return await final_result(self._stream_vision(request, live=False), VisionResult, self.name)

    async def _stream_chat(self, request: ChatRequest, *, live: bool = True) -> AsyncIterator[TextDelta | Generation]:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        run = Relay(
            self._run(
                messages,
                enable_thinking=request.enable_thinking,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                live=live,
            )
        )
        async for delta in run:
            yield delta
        done = run.final
        parsed = parse_output(done.text)
        yield Generation(
            stage=self.name,
            text=parsed.answer,
            thinking=parsed.thinking,
            finish_reason=done.finish_reason,
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
            confidence=done.confidence,
            timings=Timings(
                {"queue": done.queue_s, "prompt": done.prompt_s, "generate": done.generate_s - done.prompt_s},
                tokens=_token_counts(done),
            ),
        )

    async def generate(self, request: ChatRequest) -> Generation:
        """The whole answer; no per-token pieces are handed over while it is generated."""
        return await final_result(self._stream_chat(request, live=False), Generation, self.name)


def _identify_weights(folder: Path | None, model_ref: str, config: Any) -> dict[str, Any]:
    """What the weights are: the hub commit when they come from a Hugging Face cache snapshot
    (a commit never changes), else the sha256 of every file in the folder."""
    from flashvl.stages.fingerprint import folder_sha256, hub_snapshot

    snapshot = hub_snapshot(folder) if folder is not None else None
    if snapshot is not None:
        return {"repo": snapshot[0], "revision": snapshot[1]}
    if folder is None:  # a hub id, loaded from the local cache: transformers knows the commit
        return {"repo": model_ref, "revision": getattr(config, "_commit_hash", None)}
    return {"sha256": folder_sha256(folder)}


def _one_torch_thread() -> None:
    """Preprocessing threads use one intra-op thread each: several requests are prepared side by
    side without their thread teams fighting the generating thread for cores."""
    import torch

    torch.set_num_threads(1)


def default_threads() -> int:
    """OMP_NUM_THREADS if set, else every core this process may use."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _token_counts(done: Any) -> dict[str, int]:
    """A row's token counts as the language stage reports them (no prefix is reused across requests)."""
    return {"prompt_cached": 0, "prompt_read": done.prompt_tokens, "generated": done.completion_tokens}
