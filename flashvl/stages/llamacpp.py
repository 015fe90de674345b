"""The offline brain: a GGUF model run in-process by llama.cpp's own server (xllamacpp).

xllamacpp runs llama.cpp's C++ server inside this process: ``n_parallel`` slots with
continuous batching, prompt caching and JSON-schema constrained decoding. Its
``handle_chat_completions(body, callback)`` blocks the calling thread and calls
``callback(chunk_dict)`` for every OpenAI-style stream chunk; returning ``True``
from the callback ends the stream, and llama.cpp then cancels the task and frees
the slot. Each request therefore runs on a worker thread, its chunks are bridged
to the event loop with ``call_soon_threadsafe``, and closing the ``stream``
iterator sets a flag that the next callback returns.

``generate`` (nobody reads the pieces as they come) keeps the chunks on the worker
thread and hands them over once, at the end: no event-loop wake-up per token, so
the Python side takes no CPU from llama.cpp's threads while it decodes (on a
2-core machine that alone was ~5% of a short answer's latency).

Limit: the flag is seen only when the next chunk arrives, so a request that is
still waiting for a slot or processing its prompt stops after its first token.

llama.cpp's server also always listens on a loopback HTTP port (random unless
``http_port`` is set). It is locked with a random API key unless one is given;
``http_address``/``http_api_key`` expose both for benchmarks against the same engine.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flashvl.errors import FlashvlError, StageUnavailable
from flashvl.stages.base import ChatRequest, Generation, TextDelta, Timings, final_result
from flashvl.stages.client_tools import (
    CallAssembler,
    answered_before,
    call_schema,
    chosen_name,
    forced,
    may_be_call,
    parse_text_calls,
    tool_names,
)

_END = object()


@dataclass
class _Piece:
    """What one stream chunk carried, extracted on the worker thread."""

    content: str = ""
    reasoning: str = ""
    logprobs: list[float] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)  # per token, OpenAI's shape
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI ``delta.tool_calls`` pieces


def _openai_entry(entry: dict[str, Any], top: int) -> dict[str, Any]:
    """One token's log-probability as OpenAI returns it (llama.cpp adds an ``id``)."""

    def one(item: dict[str, Any]) -> dict[str, Any]:
        return {"token": item.get("token", ""), "logprob": item.get("logprob"), "bytes": item.get("bytes")}

    return one(entry) | {"top_logprobs": [one(alt) for alt in (entry.get("top_logprobs") or [])[:top]]}


def _extract_piece(chunk: dict[str, Any], top: int | None = None) -> _Piece:
    piece = _Piece(usage=chunk.get("usage"), timings=chunk.get("timings"))
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        piece.content += delta.get("content") or ""
        piece.reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
        piece.tool_calls += delta.get("tool_calls") or []
        piece.finish_reason = choice.get("finish_reason") or piece.finish_reason
        for entry in (choice.get("logprobs") or {}).get("content") or []:
            logprob = entry.get("logprob")
            if isinstance(logprob, int | float) and math.isfinite(logprob):
                piece.logprobs.append(float(logprob))
            if top is not None:
                piece.entries.append(_openai_entry(entry, top))
    return piece


def _error_from_llama(stage: str, error: dict[str, Any], *, has_schema: bool) -> FlashvlError:
    """Map a llama.cpp error object (``{"code", "message", "type"}``) to a flashvl error."""
    message = str(error.get("message") or "unknown llama.cpp error")
    kind = error.get("type")
    status = int(error.get("code") or 500)
    if kind == "exceed_context_size_error":
        return FlashvlError(
            "context_length_exceeded",
            f"{message} (a slot holds {error.get('n_ctx', '?')} tokens; shorten the prompt)",
            400,
        )
    if status < 500:
        code = "invalid_json_schema" if has_schema and "schema" in message.lower() else "invalid_request"
        return FlashvlError(code, f"{stage}: {message}", 400)
    return StageUnavailable(stage, message)


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
        self._slot_of: OrderedDict[str, int] = OrderedDict()  # prefix key -> slot, least recently used first
        self._slot_busy = [0] * slots
        self._slot_lock = threading.Lock()
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

    def _take_slot(self, key: str | None) -> int | None:
        """The slot for a request with prefix ``key`` (None: llama.cpp chooses)."""
        if key is None or not self.slot_affinity or self.slots < 2:
            return None
        with self._slot_lock:
            slot = self._slot_of.get(key)
            if slot is not None and self._slot_busy[slot] == 0:
                self._slot_of.move_to_end(key)
            else:
                idle = [s for s in range(self.slots) if self._slot_busy[s] == 0]
                if not idle:
                    return None  # every slot is busy: the first to come free takes it
                owned = set(self._slot_of.values())
                free = [s for s in idle if s not in owned]
                slot = free[0] if free else next(s for s in self._slot_of.values() if s in idle)
                for old in [k for k, s in self._slot_of.items() if s == slot]:
                    del self._slot_of[old]
                self._slot_of[key] = slot
            self._slot_busy[slot] += 1
            return slot

    def _free_slot(self, slot: int | None) -> None:
        if slot is not None:
            with self._slot_lock:
                self._slot_busy[slot] -= 1

    def _request_body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": [m.to_openai() for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
            "cache_prompt": True,
            "chat_template_kwargs": {"enable_thinking": request.enable_thinking},
        }
        if request.top_logprobs is not None:
            body |= {"logprobs": True, "top_logprobs": max(1, request.top_logprobs)}
        elif request.logprobs:
            # One alternative per token keeps chunks small; the chosen token's logprob comes with it.
            body |= {"logprobs": True, "top_logprobs": 1}
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            # Reproducible: the same seed gives the same answer only if the prompt is evaluated the same way
            # each time; a reused cached prefix is evaluated in other batch shapes (other rounding).
            body |= {"seed": request.seed, "cache_prompt": False}
        if request.json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"schema": request.json_schema}}
        if request.tools and request.tool_choice != "none":
            # The chat template (jinja) shows the model the tools; llama.cpp parses the calls it writes in its
            # template's format. A forced call ("required" or a named tool; llama.cpp takes only strings) is
            # written under a JSON schema of the allowed calls, which any model follows.
            name = chosen_name(request.tool_choice)
            tools = [t for t in request.tools if name is None or (t.get("function") or {}).get("name") == name]
            body |= {"tools": tools, "tool_choice": "auto"}
            if request.top_logprobs is not None:
                raise FlashvlError(
                    "unsupported_parameter", "logprobs with tools: llama.cpp does not report them; leave one out.", 400
                )
            body.pop("logprobs", None)  # llama.cpp refuses them with tools (no confidence for this answer)
            body.pop("top_logprobs", None)
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
            if forced(request.tool_choice):
                schema = call_schema(tools, request.tool_choice)
                body["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
        return body

    async def generate(self, request: ChatRequest) -> Generation:
        """The whole answer; the chunks cross to the event loop once, at the end."""
        return await final_result(self._events(request, live=False), Generation, self.name)

    def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | Generation]:
        """Yield text deltas, then the final ``Generation``. Closing early stops llama.cpp."""
        return self._events(request, live=True)

    def _events(self, request: ChatRequest, *, live: bool) -> AsyncIterator[TextDelta | Generation]:
        if request.tools and request.tool_choice != "none":
            return self._with_tools(request, live=live)
        return self._run(request, live=live)

    async def _with_tools(self, request: ChatRequest, *, live: bool) -> AsyncIterator[TextDelta | Generation]:
        """An answer that may be calls of the client's tools (``Generation.tool_calls``).

        Calls llama.cpp parsed come as they are; a call the model wrote as text (plain or fenced JSON,
        Hermes tags) is read as one when it names a defined tool, so streamed text is held back while it
        could still be one. A model that only repeats a call whose result the conversation already has
        (small models do) is asked once more without the tools, to answer from the result.
        """
        names = tool_names(request.tools)
        attempts = [request]
        if not forced(request.tool_choice) and any(m.role == "tool" for m in request.messages):
            attempts.append(replace(request, tool_choice="none"))
        for attempt in attempts:
            held: list[TextDelta] = []
            passing = False  # the text is an answer, not a call: pieces go out as they come
            final: Generation | None = None
            async with aclosing(self._run(attempt, live=live)) as events:
                async for event in events:
                    if isinstance(event, Generation):
                        final = event
                    elif passing or event.kind == "thinking":
                        yield event
                    else:
                        held.append(event)
                        if not may_be_call("".join(d.text for d in held)):
                            passing = True
                            for delta in held:
                                yield delta
                            held = []
            assert final is not None
            calls = final.tool_calls
            if not calls and not passing and final.finish_reason != "length":
                calls = parse_text_calls(final.text, names)
                if calls:
                    final.text = ""
            if calls and not passing and attempt is not attempts[-1] and answered_before(calls, request.messages):
                continue
            if calls and request.parallel_tool_calls is False:
                calls = calls[:1]
            if calls:
                final.tool_calls, final.finish_reason = calls, "tool_calls"
            else:
                final.tool_calls = None
                for delta in held:
                    yield delta
            yield final
            return

    async def _run(self, request: ChatRequest, *, live: bool) -> AsyncGenerator[TextDelta | Generation, None]:
        server, executor = self._server, self._executor
        if server is None or executor is None:
            raise StageUnavailable(self.name, "the language model is not loaded")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        body = self._request_body(request)
        slot = self._take_slot(request.prefix_key) if request.seed is None else None
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
            item = chunk["error"] if isinstance(chunk.get("error"), dict) else _extract_piece(chunk, top)
            if not live:
                held.append(item)
                return False
            return not deliver(item)

        def run() -> None:
            if cancel.is_set():
                self._free_slot(slot)
                return
            try:
                server.handle_chat_completions(body, on_chunk)
            except ValueError as exc:  # llama.cpp rejected the request (e.g. an unusable schema)
                code = "invalid_json_schema" if has_schema else "invalid_request"
                held.append(FlashvlError(code, f"{self.name}: {exc}", 400))
            except Exception as exc:  # handed to the consumer, not swallowed
                held.append(StageUnavailable(self.name, f"llama.cpp failed: {exc}"))
            finally:
                self._free_slot(slot)
            if held:
                deliver(held)
            deliver(_END)

        started = time.perf_counter()
        try:
            future = executor.submit(run)
        except RuntimeError:  # closed meanwhile
            self._free_slot(slot)
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
        llama_timings: dict[str, Any] = {}
        calls = CallAssembler()
        try:
            while (delivered := await queue.get()) is not _END:
                for item in delivered if isinstance(delivered, list) else [delivered]:
                    if isinstance(item, FlashvlError):
                        raise item
                    if isinstance(item, dict):
                        raise _error_from_llama(self.name, item, has_schema=has_schema)
                    logprobs.extend(item.logprobs)
                    entries.extend(item.entries)
                    usage = item.usage or usage
                    llama_timings = item.timings or llama_timings
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
            timings=_timings(llama_timings, time.perf_counter() - started),
            logprobs=entries if top is not None else None,
            tool_calls=calls.calls() or None,
        )


def _timings(llama_timings: dict[str, Any], wall_seconds: float) -> Timings:
    """Seconds per step from llama.cpp's ``timings``; ``queue`` is the rest of the wall time
    (waiting for a slot, thread hand-offs). The token counts go with them: the prompt's tokens
    read from llama.cpp's cache (a reused prefix) and read anew, the generated ones, and with
    speculative decoding the drafted and accepted ones."""
    prompt_ms, predicted_ms = llama_timings.get("prompt_ms"), llama_timings.get("predicted_ms")
    if prompt_ms is None or predicted_ms is None:
        return Timings({"generate": wall_seconds})
    prompt, generate = float(prompt_ms) / 1000, float(predicted_ms) / 1000
    tokens = {
        "prompt_cached": llama_timings.get("cache_n"),
        "prompt_read": llama_timings.get("prompt_n"),
        "generated": llama_timings.get("predicted_n"),
        "drafted": llama_timings.get("draft_n"),
        "draft_accepted": llama_timings.get("draft_n_accepted"),
    }
    return Timings(
        {"queue": max(0.0, wall_seconds - prompt - generate), "prompt": prompt, "generate": generate},
        tokens={k: int(v) for k, v in tokens.items() if isinstance(v, int | float)},
    )
