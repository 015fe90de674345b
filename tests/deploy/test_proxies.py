"""Handle-backed stages (flashvl/deploy/proxies.py) against a stage server in this process, through a
stand-in with Ray Serve's handle interface: the runtime guards them like local stages, results say
which replica made them, a lost replica is retried once, a closed stream cancels the replica's
work, the replica's exceptions keep their meaning, and one trace spans ingress, call and replica."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flashvl.config import Settings
from flashvl.deploy.proxies import RemoteLanguage, RemoteObservingVision, RemoteStreamingVision
from flashvl.deploy.server import StageServer
from flashvl.deploy.shared_state import shared_state_notes, shared_state_problems
from flashvl.deploy.tracing import client_span
from flashvl.errors import FlashvlError
from flashvl.media.types import LoadedImage
from flashvl.pipeline.types import Query
from flashvl.runtime import Runtime
from flashvl.stages.base import ChatRequest, Generation, TextDelta, Timings, VisionRequest, VisionResult

EXPORTER = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(_provider)


class ActorDiedError(Exception):
    """Named like Ray's: what a call to a replica that died raises."""


class Eyes:
    name, model_id, is_vlm = "eyes", "eyes-1", False

    def __init__(self) -> None:
        self.observed = 0

    async def load(self) -> None: ...

    async def close(self) -> None: ...

    def fingerprint(self) -> dict[str, Any]:
        return {"class": "Eyes", "model_id": self.model_id}

    def observation_params(self, request: VisionRequest) -> dict[str, Any]:
        return {"max_pixels": request.max_pixels}

    async def observe(self, request: VisionRequest) -> dict[str, Any]:
        self.observed += 1
        return {"objects": ["cat"], "timings": {"detect": 0.01}}

    async def interpret(self, request: VisionRequest, observed: dict[str, Any]) -> VisionResult:
        return VisionResult(self.name, f"a photo of a {observed['objects'][0]}", timings=Timings({"interpret": 0.0}))

    async def see(self, request: VisionRequest) -> VisionResult:
        return await self.interpret(request, await self.observe(request))


class _Streaming:
    """What the streaming stand-ins share: pieces, a delay between them, and whether they were cancelled."""

    def __init__(self, pieces: int = 3, delay: float = 0.0) -> None:
        self.pieces, self.delay = pieces, delay
        self.cancelled = False

    async def load(self) -> None: ...

    async def close(self) -> None: ...

    def fingerprint(self) -> dict[str, Any]:
        return {"class": type(self).__name__}


class Brain(_Streaming):
    name, model_id = "brain", "brain-1"

    async def generate(self, request: ChatRequest) -> Generation:
        if request.messages[0].content == "bad":
            raise FlashvlError("prompt_too_long", "too long", 400)
        return Generation(self.name, "The cat sits.")

    async def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | Generation]:
        try:
            for i in range(self.pieces):
                await asyncio.sleep(self.delay)
                yield TextDelta(f"piece{i} ")
            yield Generation(self.name, "The cat sits.")
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled = True
            raise


class Responses:
    """Like Serve's DeploymentResponseGenerator: async-iterable, ``cancel()`` stops the replica's generator."""

    def __init__(self, gen: AsyncIterator[Any]) -> None:
        self.gen = gen
        self.cancelled = False

    def __aiter__(self) -> Responses:
        return self

    async def __anext__(self) -> Any:
        return await self.gen.__anext__()

    def cancel(self) -> None:
        self.cancelled = True
        asyncio.get_running_loop().create_task(self.gen.aclose())  # type: ignore[attr-defined]


class Handle:
    """A DeploymentHandle stand-in over StageServers ("replicas"), round robin; ``die`` next calls fail."""

    def __init__(self, servers: list[StageServer], stream: bool = False, shared: dict[str, Any] | None = None) -> None:
        self.servers, self.streaming = servers, stream
        self.shared = shared if shared is not None else {"next": 0, "die": 0, "streams": []}

    def options(self, stream: bool = False) -> Handle:
        return Handle(self.servers, stream, self.shared)

    def __getattr__(self, method: str) -> Any:
        handle = self

        class Method:
            def remote(self, *args: Any) -> Any:
                server = handle.servers[handle.shared["next"] % len(handle.servers)]
                handle.shared["next"] += 1
                if handle.shared["die"]:
                    handle.shared["die"] -= 1
                    if handle.streaming:
                        return Responses(_raise_async(ActorDiedError("the replica died")))
                    return _raise(ActorDiedError("the replica died"))
                if handle.streaming:
                    responses = Responses(getattr(server, method)(*args))
                    handle.shared["streams"].append(responses)
                    return responses
                return getattr(server, method)(*args)

        return Method()


async def _raise(exc: Exception) -> Any:
    raise exc


async def _raise_async(exc: Exception) -> AsyncIterator[Any]:
    raise exc
    yield  # pragma: no cover


def _image() -> LoadedImage:
    return LoadedImage(Image.new("RGB", (8, 8)), hashlib.sha256(b"x").hexdigest(), "PNG", 8, 8, 1, "upload")


def _settings(**kw: Any) -> Settings:
    base = {"router": "rules", "arbitration": False, "disclaimers": False, "review_store": "memory", "language": "none"}
    return Settings(**(base | kw))


def _servers(stage_factory: Any, role: str, n: int) -> list[StageServer]:
    servers = []
    for i in range(n):
        server = StageServer(_settings(), role, stage=stage_factory())
        server.replica = f"{role}#r{i}"
        servers.append(server)
    return servers


async def _runtime(brain: Any = Brain) -> tuple[Runtime, Handle, Handle]:
    vision_handle = Handle(_servers(Eyes, "vision", 2))
    language_handle = Handle(_servers(brain, "language", 2))
    stages = {
        "vision": RemoteObservingVision(vision_handle, Eyes()),
        "language": RemoteLanguage(language_handle, "language", name="brain", model_id="brain"),
    }
    runtime = Runtime(_settings(), roles={"vision", "language"}, stages=stages)
    for stage in stages.values():
        await stage.load()
    return runtime, vision_handle, language_handle


def _query(question: str = "Why is the cat here?") -> Query:
    return Query(images=[_image()], question=question, route="cascade", live=False)


def test_runtime_guards_remote_stages_and_answers_say_where_they_ran() -> None:
    async def run() -> None:
        runtime, _, _ = await _runtime()
        assert runtime.vision.stage.fingerprint() == {"class": "Eyes", "model_id": "eyes-1"}  # the replica's own
        answer = await runtime.pipeline.answer(_query())
        assert answer.text.startswith("The cat sits") and answer.route == "cascade"
        replicas = {s.name: s.replica for s in answer.stages}
        assert replicas["vision"] in {"vision#r0", "vision#r1"}
        assert replicas["language"] in {"language#r0", "language#r1"}
        assert all("replica" in s.to_dict() for s in answer.stages)
        again = await runtime.pipeline.answer(_query())  # observations from the cache: no replica ran models
        assert again.cache["vision"] == "hit"
        await runtime.close()

    asyncio.run(run())


def test_lost_replica_is_retried_once_then_degrades() -> None:
    async def run() -> None:
        runtime, vision, language = await _runtime()
        vision.shared["die"] = 1
        answer = await runtime.pipeline.answer(_query())
        assert not answer.degraded and answer.stages[0].replica  # retried on the other replica
        language.shared["die"] = 2  # both tries lost: a labelled, degraded answer, not an error
        answer = await runtime.pipeline.answer(_query("Why is the dog here?"))
        assert answer.degraded and answer.route == "vision-only"
        await runtime.close()

    asyncio.run(run())


def test_client_error_in_replica_stays_the_clients() -> None:
    async def run() -> None:
        _, _, language = await _runtime()
        remote = RemoteLanguage(language, "language", name="b", model_id="b")
        with pytest.raises(FlashvlError) as caught:
            await remote.generate(_chat("bad"))
        assert caught.value.status == 400

    asyncio.run(run())


def _chat(text: str) -> ChatRequest:
    from flashvl.stages.base import ChatMessage

    return ChatRequest([ChatMessage("user", text)])


def test_closing_a_stream_cancels_the_replicas_generation() -> None:
    async def run() -> None:
        brains: list[Brain] = []

        def slow() -> Brain:
            brains.append(Brain(pieces=50, delay=0.01))
            return brains[-1]

        handle = Handle(_servers(slow, "language", 1))
        remote = RemoteLanguage(handle, "language", name="b", model_id="b")
        stream = remote.stream(_chat("hi"))
        first = await anext(stream)
        assert isinstance(first, TextDelta)
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        assert handle.shared["streams"][0].cancelled and brains[0].cancelled

    asyncio.run(run())


class Vlm(_Streaming):
    """A VLM (a ``StreamingVisionStage``): its answer comes in pieces, then the whole result."""

    name, model_id, is_vlm = "vlm", "vlm-1", True

    async def see(self, request: VisionRequest) -> VisionResult:
        return VisionResult(self.name, "a cat", answer="A cat.")

    async def stream(self, request: VisionRequest) -> AsyncIterator[TextDelta | VisionResult]:
        try:
            for i in range(self.pieces):
                await asyncio.sleep(self.delay)
                yield TextDelta(f"cat{i} ")
            yield VisionResult(self.name, "a cat", answer="A cat.")
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled = True
            raise


def test_a_vlm_stream_flows_through_the_vision_handle_and_a_client_leaving_cancels_it() -> None:
    """Through the guarded call (model queue, breaker) as the pipeline uses it: the VLM's pieces come
    from a vision replica, the result names it; a reader that leaves after the first piece stops the
    replica's generation and gives its model slot back."""

    async def run() -> None:
        vlms: list[Vlm] = []

        def vlm() -> Vlm:
            vlms.append(Vlm(pieces=40, delay=0.01))
            return vlms[-1]

        handle = Handle(_servers(vlm, "vision", 2))
        remote = RemoteStreamingVision(handle, name="vlm", model_id="vlm-1", is_vlm=True)
        runtime = Runtime(_settings(vision_cache="none"), roles={"vision"}, stages={"vision": remote})
        await remote.load()
        request = VisionRequest([_image()], "What is it?")
        events = [event async for event in runtime.vision.stream(request, live=True)]
        pieces = [e for e in events if isinstance(e, TextDelta)]
        seen = events[-1]
        assert len(pieces) == 40 and "".join(p.text for p in pieces).startswith("cat0 cat1")
        assert seen.result.answer == "A cat." and seen.record.replica == "vision#r1"  # (info went to r0)
        assert runtime.admission.active == 0

        stream = runtime.vision.stream(request, live=True)
        first = await anext(stream)
        assert isinstance(first, TextDelta) and runtime.admission.active == 1
        await stream.aclose()  # the client went away
        await asyncio.sleep(0.05)
        assert handle.shared["streams"][-1].cancelled and vlms[0].cancelled  # round robin: r0 again
        assert not vlms[1].cancelled and runtime.admission.active == 0
        await runtime.close()

    asyncio.run(run())


def test_one_trace_from_request_to_replica() -> None:
    async def run() -> None:
        runtime, _, _ = await _runtime()
        EXPORTER.clear()
        with client_span("flashvl.request") as root:
            await runtime.pipeline.answer(_query("Why is the bird here?"))
        spans = EXPORTER.get_finished_spans()
        names = {s.name for s in spans}
        assert {"flashvl.stage.vision.observe", "flashvl.replica.vision.observe"} <= names
        assert {"flashvl.stage.language.generate", "flashvl.replica.language.generate"} <= names
        trace_id = root.get_span_context().trace_id
        assert {s.context.trace_id for s in spans} == {trace_id}
        by_id = {s.context.span_id: s for s in spans}
        replica = next(s for s in spans if s.name == "flashvl.replica.vision.observe")
        assert replica.parent is not None and by_id[replica.parent.span_id].name == "flashvl.stage.vision.observe"
        assert replica.attributes and str(replica.attributes["flashvl.replica"]).startswith("vision#r")
        await runtime.close()

    asyncio.run(run())


def test_more_than_one_ingress_replica_needs_shared_state() -> None:
    assert shared_state_problems(_settings(ingress_replicas="1")) == []
    problems = shared_state_problems(_settings(ingress_replicas="2", review_store="memory"))
    text = "\n".join(problems)
    assert "--vision-cache redis" in text and "--rate-limit-storage redis://" in text and "--review-store" in text
    assert "--model-queue-redis-url" in text  # the model queue is one queue, or per replica
    shared = _settings(
        ingress_replicas="1-3",
        vision_cache="redis",
        rate_limit_storage="redis://127.0.0.1:6379/1",
        model_queue_redis_url="redis://127.0.0.1:6379/3",
        review_store="sqlite",
    )
    assert shared_state_problems(shared) == []
    assert shared_state_problems(shared, machines=1) == []  # several nodes on one host share its files
    # SQLite files are shared on one machine only: refused when the cluster spans machines, else a note
    across = "\n".join(shared_state_problems(shared, machines=3))
    assert "--review-store sqlite" in across and "--jobs-store sqlite" in across and "3 machines" in across
    assert len(shared_state_notes(shared)) == 2
    everything = _settings(
        ingress_replicas="4",
        vision_cache="redis",
        rate_limit_storage="redis://127.0.0.1:6379/1",
        model_queue_redis_url="redis://127.0.0.1:6379/3",
        review_store="redis",
        review_redis_url="redis://127.0.0.1:6379/4",
        jobs_store="redis",
        jobs_redis_url="redis://127.0.0.1:6379/2",
    )
    assert shared_state_problems(everything, machines=3) == [] and shared_state_notes(everything) == []


def test_a_remote_language_stage_says_whether_it_calls_the_clients_tools() -> None:
    """The ingress builds each stage unloaded to learn what it can do: the llama.cpp brain calls the
    client's tools (the request's tools travel in the ChatRequest to the replica)."""
    from flashvl.deploy.proxies import remote_stages

    stages = remote_stages(Settings(language="llamacpp"), {"language": object()})
    assert isinstance(stages["language"], RemoteLanguage) and stages["language"].supports_tools
