"""The stage deployment: one stage (built by ``StageBuilder`` from the same ``Settings`` as a local
server) in each Ray Serve replica, loaded when the replica starts.

Batching happens inside the replica, by the stage's own batcher (GLM's dynamic batcher, the
offline pipeline's slots, an upstream's connection pool): Serve lets ``max_ongoing_requests``
calls into a replica at once and the stage coalesces them, so one request per call stays the
interface. Every result carries the replica's name; each call continues the caller's trace.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from flashvl.config import Settings
from flashvl.deploy.tracing import configure_tracing, replica_span
from flashvl.observability import get_logger
from flashvl.stages.base import ChatRequest, VisionRequest
from flashvl.stages.registry import StageBuilder

log = get_logger("flashvl.deploy")


def replica_name() -> str:
    """``deployment#replica-id@node``: which replica of which deployment, on which Ray node."""
    try:
        import ray
        from ray import serve

        context = serve.get_replica_context()
        node = ray.get_runtime_context().get_node_id()[:8]
        return f"{context.deployment}#{context.replica_id.unique_id}@{node}"
    except Exception:  # not in a Serve replica (a unit test): the process
        import socket

        return f"{socket.gethostname()}:{os.getpid()}"


def build_stage(settings: Settings, role: str) -> Any:
    builder = StageBuilder(settings)
    if role == "vision":
        return builder.vision()
    stage = builder.voter() if role == "voter" else builder.language()
    if stage is None:
        raise ValueError(f"the settings name no {role} stage")
    return stage


class StageServer:
    """One stage of ``role`` ("vision", "language", "voter") in a replica. Its methods mirror the
    stage protocols, each taking the caller's trace context last."""

    def __init__(self, settings: Settings, role: str, *, stage: Any = None) -> None:
        configure_tracing(settings)
        self.role = role
        self.stage = stage if stage is not None else build_stage(settings, role)
        self.replica = replica_name()
        self._loaded = False

    async def start(self) -> None:
        if not self._loaded:
            await self.stage.load()
            self._loaded = True
            log.info("replica_ready", role=self.role, stage=self.stage.name, replica=self.replica)

    def _span(self, method: str, context: dict[str, str] | None) -> Any:
        return replica_span(
            f"flashvl.replica.{self.role}.{method}",
            context,
            **{"flashvl.role": self.role, "flashvl.replica": self.replica},
        )

    async def info(self, context: dict[str, str] | None = None) -> dict[str, Any]:
        await self.start()
        stage = self.stage
        return {
            "name": stage.name,
            "model_id": stage.model_id,
            "is_vlm": bool(getattr(stage, "is_vlm", False)),
            "fingerprint": stage.fingerprint(),
            "replica": self.replica,
            "pid": os.getpid(),
        }

    async def see(self, request: VisionRequest, context: dict[str, str] | None = None) -> Any:
        await self.start()
        with self._span("see", context):
            result = await self.stage.see(request)
        result.replica = self.replica
        return result

    async def observe(self, request: VisionRequest, context: dict[str, str] | None = None) -> dict[str, Any]:
        await self.start()
        with self._span("observe", context):
            observed: dict[str, Any] = await self.stage.observe(request)
        return observed | {"replica": self.replica}

    async def generate(self, request: ChatRequest, context: dict[str, str] | None = None) -> Any:
        await self.start()
        with self._span("generate", context):
            generation = await self.stage.generate(request)
        generation.replica = self.replica
        return generation

    async def stream(
        self, request: ChatRequest | VisionRequest, context: dict[str, str] | None = None
    ) -> AsyncIterator[Any]:
        """Pieces, then the result (with this replica's name). Serve cancels this generator when the
        caller closes its stream; closing the stage's own stream stops the generation."""
        await self.start()
        with self._span("stream", context):
            stream = self.stage.stream(request)
            try:
                async for event in stream:
                    if hasattr(event, "replica"):
                        event.replica = self.replica
                    yield event
            finally:
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
