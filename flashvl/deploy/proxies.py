"""Stages that run in Ray Serve deployments, reached through ``DeploymentHandle``s behind the same
``VisionStage`` / ``StreamingVisionStage`` / ``ObservingVisionStage`` / ``LanguageStage``
protocols: the ingress's ``Runtime`` guards them (cache, model queue, breaker, deadline) exactly
like stages in its own process, and the pipeline does not know where a stage runs.

- ``load`` asks the deployment what it serves (name, model id, fingerprint): the vision cache's
  keys are the same as a local stage's, so local servers and Ray replicas share Redis entries.
- ``close`` closes nothing remote: the replicas belong to Serve.
- An observing vision stage (the offline pipeline) runs only ``observe`` (every model, the
  expensive part) in the replica; ``observation_params`` and ``interpret`` (rules and wording,
  milliseconds) run here, on the same class built unloaded, as the protocol allows.
- Streams go through ``handle.options(stream=True)``; closing one (the client went away)
  cancels the generator in the replica.
- A replica that dies under a call: the call is sent again, once, to another replica, when no
  piece of its answer went out yet; otherwise the error reaches the guarded call, which degrades.
- Every result says which replica made it (``replica``, shown as ``stages[].replica``).
- Each call is a client span whose context rides with the request (``tracing``).

``handle`` is anything with Ray Serve's handle interface (``handle.method.remote(...)``,
awaitable; ``handle.options(stream=True).method.remote(...)``, async-iterable, ``cancel()``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from flashvl.config import Settings
from flashvl.deploy.tracing import carrier, client_span
from flashvl.stages.base import (
    ChatRequest,
    Generation,
    ObservingVisionStage,
    StreamingVisionStage,
    TextDelta,
    VisionRequest,
    VisionResult,
    VisionStage,
)
from flashvl.stages.registry import StageBuilder

RETRIES_ON_LOST_REPLICA = 1
_LOST_REPLICA = (
    "ActorDiedError",
    "ActorUnavailableError",
    "RayActorError",
    "ReplicaUnavailableError",
    "WorkerCrashedError",
    "NodeDiedError",
)


def unwrap(exc: BaseException) -> BaseException:
    """The replica's own exception (a ``RayTaskError`` wraps it as ``cause``), so the guarded call
    classifies it as it would a local one (a 4xx stays the client's, a timeout a timeout)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, Exception) else exc


def replica_lost(exc: BaseException) -> bool:
    """The replica died or was unreachable (not an error of the request itself)."""
    return any(base.__name__ in _LOST_REPLICA for e in (exc, unwrap(exc)) for base in type(e).__mro__)


class _Remote:
    """What every remote stage shares: identity from the deployment, calls, streams, spans."""

    def __init__(self, handle: Any, role: str, *, name: str, model_id: str) -> None:
        self.handle = handle
        self.role = role
        self.name = name  # the spec's name until ``load`` asks the deployment
        self.model_id = model_id
        self._fingerprint: dict[str, Any] = {}
        self.replicas_seen: set[str] = set()

    async def load(self) -> None:
        info = await self._call("info")
        self.name = info["name"]
        self.model_id = info["model_id"]
        self._fingerprint = dict(info["fingerprint"])

    async def close(self) -> None:
        """Nothing to close here: the stage lives in its replicas, which Serve owns."""

    def fingerprint(self) -> dict[str, Any]:
        return self._fingerprint

    async def _call(self, method: str, *args: Any) -> Any:
        with client_span(f"flashvl.stage.{self.role}.{method}", **{"flashvl.role": self.role}) as span:
            attempt = 0
            while True:
                try:
                    out = await getattr(self.handle, method).remote(*args, carrier())
                    break
                except Exception as exc:
                    if replica_lost(exc) and attempt < RETRIES_ON_LOST_REPLICA:
                        attempt += 1
                        span.add_event("retry_on_lost_replica", {"error": type(exc).__name__})
                        continue
                    raise unwrap(exc) from None
            replica = getattr(out, "replica", None) or (out.get("replica") if isinstance(out, dict) else None)
            if replica:
                span.set_attribute("flashvl.replica", replica)
                self.replicas_seen.add(replica)
            return out

    async def _stream(self, method: str, request: Any) -> AsyncIterator[Any]:
        with client_span(f"flashvl.stage.{self.role}.{method}", **{"flashvl.role": self.role}) as span:
            attempt = 0
            while True:
                responses = getattr(self.handle.options(stream=True), method).remote(request, carrier())
                emitted = 0
                finished = False
                try:
                    async for item in responses:
                        emitted += 1
                        replica = getattr(item, "replica", None)
                        if replica:
                            span.set_attribute("flashvl.replica", replica)
                            self.replicas_seen.add(replica)
                        yield item
                    finished = True
                    return
                except Exception as exc:
                    finished = True
                    if replica_lost(exc) and not emitted and attempt < RETRIES_ON_LOST_REPLICA:
                        attempt += 1
                        span.add_event("retry_on_lost_replica", {"error": type(exc).__name__})
                        continue
                    raise unwrap(exc) from None
                finally:
                    if not finished:  # our reader went away: stop the generation in the replica
                        cancel = getattr(responses, "cancel", None)
                        if cancel is not None:
                            cancel()


class RemoteVision(_Remote):
    """A vision stage in a deployment: ``see`` runs in a replica."""

    def __init__(self, handle: Any, *, name: str, model_id: str, is_vlm: bool, role: str = "vision") -> None:
        super().__init__(handle, role, name=name, model_id=model_id)
        self.is_vlm = is_vlm

    async def see(self, request: VisionRequest) -> VisionResult:
        result: VisionResult = await self._call("see", request)
        return result


class RemoteStreamingVision(RemoteVision):
    """A VLM in a deployment: its answer streams back through the handle."""

    def stream(self, request: VisionRequest) -> AsyncIterator[TextDelta | VisionResult]:
        return self._stream("stream", request)


class RemoteObservingVision(RemoteVision):
    """An observing vision stage (the offline pipeline): its models run in a replica (``observe``);
    the question's reading of the observations runs here on ``local``, the same class unloaded."""

    def __init__(self, handle: Any, local: ObservingVisionStage, role: str = "vision") -> None:
        super().__init__(handle, name=local.name, model_id=local.model_id, is_vlm=local.is_vlm, role=role)
        self.local = local

    def observation_params(self, request: VisionRequest) -> dict[str, Any]:
        return self.local.observation_params(request)

    async def observe(self, request: VisionRequest) -> dict[str, Any]:
        observed: dict[str, Any] = await self._call("observe", request)
        return observed

    async def interpret(self, request: VisionRequest, observed: dict[str, Any]) -> VisionResult:
        result = await self.local.interpret(request, observed)
        result.replica = observed.get("replica")  # whose models made these observations
        return result

    async def see(self, request: VisionRequest) -> VisionResult:
        return await self.interpret(request, await self.observe(request))


class RemoteLanguage(_Remote):
    """A language stage (or the arbitration voter) in a deployment. ``supports_tools``: whether the stage
    in the replica calls the client's tools (the request's tools travel in the ``ChatRequest``)."""

    def __init__(self, handle: Any, role: str, *, name: str, model_id: str, supports_tools: bool = False) -> None:
        super().__init__(handle, role, name=name, model_id=model_id)
        self.supports_tools = supports_tools

    async def generate(self, request: ChatRequest) -> Generation:
        generation: Generation = await self._call("generate", request)
        return generation

    def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | Generation]:
        return self._stream("stream", request)


def remote_stages(settings: Settings, handles: Mapping[str, Any]) -> dict[str, Any]:
    """Stand-ins, by role, for the stages the settings name, reaching the deployments in ``handles``
    ("vision", "language", "voter"). Which protocol each one speaks comes from the same stage built
    here unloaded (nothing is loaded in the ingress)."""
    builder = StageBuilder(settings)
    stages: dict[str, Any] = {}
    if "vision" in handles:
        local: VisionStage = builder.vision()
        vision: RemoteVision
        if isinstance(local, ObservingVisionStage):
            vision = RemoteObservingVision(handles["vision"], local)
        elif isinstance(local, StreamingVisionStage):
            vision = RemoteStreamingVision(
                handles["vision"], name=local.name, model_id=local.model_id, is_vlm=local.is_vlm
            )
        else:
            vision = RemoteVision(handles["vision"], name=local.name, model_id=local.model_id, is_vlm=local.is_vlm)
        stages["vision"] = vision
    for role in ("language", "voter"):
        if role in handles:
            spec = settings.language if role == "language" else settings.arbitration_voter
            unloaded = builder.language(spec)  # built, not loaded: what it can do
            tools = bool(getattr(unloaded, "supports_tools", False))
            stages[role] = RemoteLanguage(handles[role], role, name=spec, model_id=spec, supports_tools=tools)
    return stages
