"""One cache interface, its key, and (de)serialisation of ``VisionResult``.

The key hashes everything that can change a vision stage's output: the bytes of
every image (sha256 of the content, not the URL), the stage's explicit
``fingerprint()`` (class, model id, weights revision or file hash, output-relevant
settings; never secrets or per-process values, so processes serving the same model
share entries through Redis), and every field of the request (task, question,
pixel cap, thinking, sampling).
The offline stage's observations do not depend on the question, but its answer
and the language of its description do, so the question is part of the key: a
different image, model, setting or question can never be served another's entry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from flashvl.stages.base import Box, Timings, VisionRequest, VisionResult

if TYPE_CHECKING:
    pass

KEY_VERSION = "v2"  # bump when VisionResult's shape or the key material changes: old entries then miss


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0  # dropped for size or expired (TTL)
    errors: int = 0  # backend failures (a failing cache is a miss, never an error for the client)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class VisionCache(Protocol):
    """JSON-able values by key: a ``VisionResult`` (``result_to_dict``) or a stage's observations."""

    name: str
    stats: CacheStats

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def set(self, key: str, value: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


def stage_fingerprint(stage: object) -> dict[str, Any]:
    """What determines the stage's output, from its own ``fingerprint()`` (see ``VisionStage``):
    class, model id, weights revision or hash, output-relevant settings. Nothing is read off the
    object by reflection, so per-process values (load time, threads) and secrets (an upstream's
    API key) never reach a key, and two processes serving one model compute the same one."""
    explicit = getattr(stage, "fingerprint", None)
    if not callable(explicit):
        raise TypeError(f"{type(stage).__qualname__} has no fingerprint(): it cannot be cached")
    return {"class": type(stage).__qualname__, **explicit()}


def vision_cache_key(stage: object, request: VisionRequest) -> str:
    """sha256 over (key version, image hashes, stage fingerprint, request parameters)."""
    material = {
        "v": KEY_VERSION,
        "stage_name": "vision",
        "images": [image.sha256 for image in request.images],
        "stage": stage_fingerprint(stage),
        "task": request.task,
        "question": request.question,
        "max_pixels": request.max_pixels,
        "enable_thinking": request.enable_thinking,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    blob = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str).encode()
    return "flashvl:vision:" + hashlib.sha256(blob).hexdigest()


def observation_cache_key(stage: object, images: list[Any], params: dict[str, Any]) -> str:
    """sha256 over (key version, image hashes, stage fingerprint, the parameters that change the
    observations): the question is not part of it, so every question about an image shares it."""
    material = {
        "v": KEY_VERSION,
        "kind": "observations",
        "images": [image.sha256 for image in images],
        "stage": stage_fingerprint(stage),
        "params": params,
    }
    blob = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str).encode()
    return "flashvl:observations:" + hashlib.sha256(blob).hexdigest()


def result_to_dict(result: VisionResult) -> dict[str, Any]:
    data = asdict(result)
    data["timings"] = result.timings.steps
    return data


def result_from_dict(data: dict[str, Any]) -> VisionResult:
    data = dict(data)
    data["boxes"] = [Box(**box) for box in data.get("boxes", [])]
    data["timings"] = Timings(dict(data.get("timings") or {}))
    return VisionResult(**data)
