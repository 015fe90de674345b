"""The llama.cpp language stage (see the package's docstring)."""

from __future__ import annotations

import asyncio
import math
import secrets
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flashvl.errors import FlashvlError, StageUnavailable
from flashvl.stages.base import ChatRequest, Generation, TextDelta, final_result
from flashvl.stages.client_tools import CallAssembler
from flashvl.stages.llamacpp.chunks import error_from_llama, extract_piece, llama_timings, request_body
from flashvl.stages.llamacpp.slots import SlotAffinity
from flashvl.stages.llamacpp.tools import with_client_tools

_END = object()


class LlamaCppLanguageStage:
    """A ``LanguageStage`` backed by llama.cpp's in-process server (continuous batching)."""

    def __init__(
        self,
        model_path: Path | None,
        *,
        model_dir: Path | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        slots: int = 2,
        ctx: int = 8192,
        threads: int = 0,
        name: str = "llamacpp",
        model_id: str | None = None,
        http_port: int = 0,
        http_api_key: str | None = None,
        prompt_cache_mib: int = 256,
        draft: bool = False,
        draft_model_path: Path | None = None,
        draft_max: int = 8,
        slot_affinity: bool = True,
        verbose: bool = False,
    ) -> None:
        # None: the bundled model, assembled from its pinned packages into ``model_dir`` at load.
        self.model_path = Path(model_path) if model_path is not None else None
        self.model_dir = model_dir
        self._progress = progress
        self.slots = slots
        self.ctx = ctx
        self.threads = threads
        self.name = name
        self.model_id = model_id or (self.model_path.stem if self.model_path else "bundled")
        self.http_port = http_port
        self.http_api_key = http_api_key or secrets.token_urlsafe(24)
        self.prompt_cache_mib = prompt_cache_mib
        # Speculative decoding: a small model of the same family drafts ``draft_max`` tokens per step and the
        # model checks them in one batch (greedy text is the model's own). None: the bundled 0.5B draft.
        self.draft = draft or draft_model_path is not None
        self.draft_model_path = Path(draft_model_path) if draft_model_path is not None else None
        self.draft_max = draft_max
        # Slot affinity: requests with one ``prefix_key`` (questions about one image) go to the slot that
        # read that prefix last, while it is idle; a new key takes the least recently used idle slot. So an
        # image's prompt survives ``slots - 1`` other images' requests in between (llama.cpp alone puts a
        # new request on the slot with the longest common prefix: the shared instructions make that any).
        self.slot_affinity = slot_affinity
        self._affinity = SlotAffinity(slots, enabled=slot_affinity)
        self.verbose = verbose
        self.supports_tools = True  # the client's tools (OpenAI ``tools``), through the chat template (jinja)
        self._server: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: dict[Future[None], threading.Event] = {}
        self._in_flight_lock = threading.Lock()  # worker threads remove their own entries
        self.load_seconds: float | None = None
        self._sha256: str | None = None  # the GGUF's content hash (fingerprint), set in load

    # ------------------------------------------------------------ lifecycle

    @property
    def loaded(self) -> bool:
        return self._server is not None

    @property
    def http_address(self) -> str | None:
        """llama.cpp's own loopback HTTP server (OpenAI API), or None before ``load``."""
        return self._server.listening_address if self._server is not None else None

    def _build_params(self) -> Any:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path)
        params.n_ctx = self.ctx
        params.n_parallel = self.slots
        params.cont_batching = True
        # The GGUF's own chat template, run as jinja (xllamacpp's default, made explicit): it shows the model the
        # client's tools and renders tool calls and results; llama.cpp parses the calls from its format.
        params.use_jinja = True
        params.cache_ram_mib = self.prompt_cache_mib
        params.endpoint_metrics = True
        params.verbosity = 3 if self.verbose else 2  # 2: warnings and errors, no per-request lines
        params.hostnames = ["127.0.0.1"]
        params.port = self.http_port
        params.api_keys = [self.http_api_key]
        if self.threads > 0:
            params.cpuparams.n_threads = self.threads
            params.cpuparams_batch.n_threads = self.threads
        if self.draft and self.draft_model_path is not None:
            spec = params.speculative
            spec.types = [xllamacpp.common_speculative_type.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
            spec.draft.mparams.path = str(self.draft_model_path)
            spec.draft.n_max = self.draft_max
            spec.draft.n_min = 0
            spec.draft.p_min = 0.0  # always draft n_max tokens (the 1.5B keeps only those it would pick)
            if self.threads > 0:
                spec.draft.cpuparams.n_threads = self.threads
                spec.draft.cpuparams_batch.n_threads = self.threads
        return params

    async def load(self) -> None:
        """Load the model and start llama.cpp's server loop (seconds; runs off the event loop)."""
        if self._server is not None:
            return
        if self.model_path is None:
            self.model_path = await asyncio.to_thread(self._assemble_bundled_model)
        if not self.model_path.is_file():
            raise StageUnavailable(self.name, f"model file not found: {self.model_path}")
        if self.draft and self.draft_model_path is None:
            self.draft_model_path = await asyncio.to_thread(self._assemble_draft_model)
        if self.draft_model_path is not None and not self.draft_model_path.is_file():
            raise StageUnavailable(self.name, f"draft model file not found: {self.draft_model_path}")

        await asyncio.to_thread(self._weights_sha256)

        def start() -> Any:
            import xllamacpp

            return xllamacpp.Server(self._build_params())

        started = time.perf_counter()
        try:
            server = await asyncio.to_thread(start)
        except (RuntimeError, ValueError) as exc:
            raise StageUnavailable(self.name, f"llama.cpp failed to load {self.model_path.name}: {exc}") from exc
        self.load_seconds = time.perf_counter() - started
        self._executor = ThreadPoolExecutor(max_workers=max(8, 4 * self.slots), thread_name_prefix=self.name)
        self._server = server

    def _assemble_bundled_model(self) -> Path:
        from flashvl.stages.brain_model import ensure_brain_model

        def report(done: int, total: int) -> None:
            if self._progress:
                self._progress("assembling language model", done, total)

        return Path(ensure_brain_model(self.model_dir or Path("~/.cache/flashvl/models"), report))

    def _assemble_draft_model(self) -> Path:
        from flashvl.stages.brain_model import ensure_draft_model

        def report(done: int, total: int) -> None:
            if self._progress:
                self._progress("assembling draft model", done, total)

        return Path(ensure_draft_model(self.model_dir or Path("~/.cache/flashvl/models"), report))

    async def close(self) -> None:
        """Cancel running generations, wait for their threads, then stop llama.cpp."""
        server, executor = self._server, self._executor
        self._server = None
        self._executor = None
        with self._in_flight_lock:
            in_flight = list(self._in_flight.items())
        for _, cancel in in_flight:
            cancel.set()
        pending = [asyncio.wrap_future(future) for future, _ in in_flight]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if executor is not None:
            executor.shutdown(wait=False)
        if server is not None:
            holder = [server]
            del server
            # The destructor joins llama.cpp's loop thread: keep it off the event loop.
            await asyncio.to_thread(holder.clear)

    def fingerprint(self) -> dict[str, Any]:
        """The GGUF's sha256 (and model id): not slots, context size, threads, ports or keys."""
        return {
            "class": type(self).__qualname__,
            "name": self.name,
            "model_id": self.model_id,
            "sha256": self._weights_sha256(),
        }

    def _weights_sha256(self) -> str:
        """The bundled model's pinned hash (assembly verifies it; a later start trusts its marker
        while the file keeps its size and mtime); any other file is hashed once per process."""
        if self._sha256 is None:
            from flashvl.stages.brain_model import BRAIN_MODEL_SHA256, verified_sha256
            from flashvl.stages.fingerprint import file_sha256

            if self.model_path is None:  # the bundled model, not assembled yet: it will be this one
                return BRAIN_MODEL_SHA256
            self._sha256 = verified_sha256(self.model_path) or file_sha256(self.model_path)
        return self._sha256

    def _forget(self, future: Future[None]) -> None:
        with self._in_flight_lock:
            self._in_flight.pop(future, None)

    def server_metrics(self) -> dict[str, float]:
        """llama.cpp's Prometheus counters (``llamacpp:n_decode_total``, ...), parsed."""
        if self._server is None:
            raise StageUnavailable(self.name, "not loaded")
        metrics: dict[str, float] = {}
        for line in self._server.handle_metrics().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition(" ")
                try:
                    metrics[key] = float(value)
                except ValueError:
                    continue
        return metrics

    # ------------------------------------------------------------ requests

    async def generate(self, request: ChatRequest) -> Generation:
        """The whole answer; the chunks cross to the event loop once, at the end."""
        return await final_result(self._events(request, live=False), Generation, self.name)

    def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | Generation]:
        """Yield text deltas, then the final ``Generation``. Closing early stops llama.cpp."""
        return self._events(request, live=True)

    def _events(self, request: ChatRequest, *, live: bool) -> AsyncIterator[TextDelta | Generation]:
        if request.tools and request.tool_choice != "none":
            return with_client_tools(self._run, request, live=live)
        return self._run(request, live=live)

    async def _run(self, request: ChatRequest, *, live: bool) -> AsyncGenerator[TextDelta | Generation, None]:
        server, executor = self._server, self._executor
        if server is None or executor is None:
            raise StageUnavailable(self.name, "the language model is not loaded")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        body = request_body(request)
        slot = self._affinity.take(request.prefix_key) if request.seed is None else None
        if slot is not None:
            body["id_slot"] = slot
        has_schema = request.json_schema is not None
        top = request.top_logprobs

        def deliver(item: Any) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone: nobody is listening
                return False
            return True

        held: list[Any] = []  # not live: the pieces wait here, on the worker thread

        def on_chunk(chunk: dict[str, Any]) -> bool:
            if cancel.is_set():
                return True
            item = chunk["error"] if isinstance(chunk.get("error"), dict) else extract_piece(chunk, top)
            if not live:
                held.append(item)
                return False
            return not deliver(item)

        def run() -> None:
            if cancel.is_set():
                self._affinity.free(slot)
                return
            try:
                server.handle_chat_completions(body, on_chunk)
            except ValueError as exc:  # llama.cpp rejected the request (e.g. an unusable schema)
                code = "invalid_json_schema" if has_schema else "invalid_request"
                held.append(FlashvlError(code, f"{self.name}: {exc}", 400))
            except Exception as exc:  # handed to the consumer, not swallowed
                held.append(StageUnavailable(self.name, f"llama.cpp failed: {exc}"))
            finally:
                self._affinity.free(slot)
            if held:
                deliver(held)
            deliver(_END)

        started = time.perf_counter()
        try:
            future = executor.submit(run)
        except RuntimeError:  # closed meanwhile
            self._affinity.free(slot)
            raise StageUnavailable(self.name, "the language model is not loaded") from None
        with self._in_flight_lock:
            self._in_flight[future] = cancel
        future.add_done_callback(self._forget)

        text: list[str] = []
        thinking: list[str] = []
        logprobs: list[float] = []
        entries: list[dict[str, Any]] = []
        finish_reason = "stop"
        usage: dict[str, Any] = {}
        reported: dict[str, Any] = {}  # llama.cpp's own timings, in its last chunk
        calls = CallAssembler()
        try:
            while (delivered := await queue.get()) is not _END:
                for item in delivered if isinstance(delivered, list) else [delivered]:
                    if isinstance(item, FlashvlError):
                        raise item
                    if isinstance(item, dict):
                        raise error_from_llama(self.name, item, has_schema=has_schema)
                    logprobs.extend(item.logprobs)
                    entries.extend(item.entries)
                    usage = item.usage or usage
                    reported = item.timings or reported
                    finish_reason = item.finish_reason or finish_reason
                    calls.feed(item.tool_calls)
                    if item.reasoning:
                        thinking.append(item.reasoning)
                        if live:
                            yield TextDelta(item.reasoning, kind="thinking")
                    if item.content:
                        text.append(item.content)
                        if live:
                            yield TextDelta(item.content, logprobs=item.entries if top is not None else None)
        finally:
            cancel.set()
        yield Generation(
            stage=self.name,
            text="".join(text),
            thinking="".join(thinking) or None,
            finish_reason=finish_reason,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            confidence=math.exp(sum(logprobs) / len(logprobs)) if logprobs else None,
            timings=llama_timings(reported, time.perf_counter() - started),
            logprobs=entries if top is not None else None,
            tool_calls=calls.calls() or None,
        )
