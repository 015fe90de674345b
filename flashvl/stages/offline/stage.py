"""The offline vision stage: real CPU models assembled into honest observations.

Parts (all ONNX Runtime): NanoDet COCO-80 detector, EfficientNet-Lite2 ImageNet
classifier, Open-NSFW safety score, PP-OCR (only when a cheap gate says the image
holds text), plus colour statistics. It is *not* a vision-language model: it
describes what its parts measured, answers what rules answer exactly, and hands
everything else to the language stage.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from flashvl.media.types import LoadedImage
from flashvl.stages.base import Box, Timings, VisionRequest, VisionResult
from flashvl.stages.offline.colours import background_and_foreground, dominant_colours
from flashvl.stages.offline.describe import caption, describe
from flashvl.stages.offline.rules import answer_by_rule, unmeasured_parts
from flashvl.stages.offline.scene import Observations, find_disagreements, place_objects, relate
from flashvl.text.language import detect_language

if TYPE_CHECKING:
    from flashvl.config import Settings
    from flashvl.stages.offline.classifier import ImageClassifier
    from flashvl.stages.offline.detector import ObjectDetector
    from flashvl.stages.offline.ocr import TextReader
    from flashvl.stages.offline.safety import SafetyScorer

STAGE_NAME = "offline-pipeline"


class OfflineVisionStage:
    """Eyes made of separate CPU models; see the module docstring."""

    name = STAGE_NAME
    is_vlm = False

    def __init__(
        self,
        *,
        threads: int = 0,
        ocr_min_score: float = 0.5,
        safe_threshold: float = 0.2,
        unsafe_threshold: float = 0.8,
        concurrency: int = 1,
        max_pixels: int = 4_194_304,
    ) -> None:
        self.model_id = "nanodet-coco80+efficientnet-lite2+open-nsfw+pp-ocr"
        self._threads = threads
        self._ocr_min_score = ocr_min_score
        self._safe = safe_threshold
        self._unsafe = unsafe_threshold
        self._max_pixels = max_pixels
        # ONNX Runtime already uses every core per call; more parallel calls only thrash.
        self._slots = asyncio.Semaphore(concurrency)
        self._detector: ObjectDetector | None = None
        self._classifier: ImageClassifier | None = None
        self._safety: SafetyScorer | None = None
        self._reader: TextReader | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OfflineVisionStage:
        return cls(
            threads=settings.vision_threads,
            ocr_min_score=settings.ocr_min_text_score,
            safe_threshold=settings.safety_safe_threshold,
            unsafe_threshold=settings.safety_unsafe_threshold,
            max_pixels=settings.vision_max_pixels,
        )

    @property
    def loaded(self) -> bool:
        return self._reader is not None

    async def load(self) -> None:
        await asyncio.to_thread(self._load_parts)

    def _load_parts(self) -> None:
        from flashvl.stages.offline.classifier import ImageClassifier
        from flashvl.stages.offline.detector import ObjectDetector
        from flashvl.stages.offline.ocr import TextReader
        from flashvl.stages.offline.safety import SafetyScorer

        self._detector = ObjectDetector(threads=self._threads)
        self._classifier = ImageClassifier(threads=self._threads)
        self._safety = SafetyScorer(threads=self._threads)
        self._reader = TextReader(threads=self._threads, min_score=self._ocr_min_score)
        self.fingerprint()  # hashes the model files now, off the event loop (once per process)

    async def close(self) -> None:
        self._detector = self._classifier = self._safety = self._reader = None

    def fingerprint(self) -> dict[str, Any]:
        """The model files' hashes, flashvl's version (the rules and descriptions are code) and the
        settings that change observations: OCR score floor, safety thresholds, default pixel cap.
        Not threads or concurrency."""
        from flashvl import __version__
        from flashvl.stages.fingerprint import file_sha256

        return {
            "class": type(self).__qualname__,
            "name": self.name,
            "model_id": self.model_id,
            "code": __version__,
            "files": {name: file_sha256(path) for name, path in sorted(_model_files().items())},
            "ocr_min_score": self._ocr_min_score,
            "safe_threshold": self._safe,
            "unsafe_threshold": self._unsafe,
            "max_pixels": self._max_pixels,
        }

    async def see(self, request: VisionRequest) -> VisionResult:
        return await self.interpret(request, await self.observe(request))

    def observation_params(self, request: VisionRequest) -> dict[str, Any]:
        return {"max_pixels": request.max_pixels or self._max_pixels, "force_ocr": request.task == "ocr"}

    async def observe(self, request: VisionRequest) -> dict[str, Any]:
        """Every part run on the first image; JSON-able (the pipeline caches it per image)."""
        if not request.images:
            raise ValueError("the offline pipeline needs an image")
        params = self.observation_params(request)
        async with self._slots:
            timings = Timings()
            obs = await asyncio.to_thread(
                self._observe, request.images[0], params["max_pixels"], params["force_ocr"], timings
            )
        return {"observations": obs.to_state(), "timings": timings.steps}

    async def interpret(self, request: VisionRequest, observed: dict[str, Any]) -> VisionResult:
        """Rules and a description in the question's language, from observations (milliseconds)."""
        obs = Observations.from_state(observed["observations"])
        timings = Timings(dict(observed.get("timings") or {}))
        lang = detect_language(request.question)
        with timings.measure("interpret"):
            rule = answer_by_rule(request.question, obs, lang) if request.task == "vqa" else None
            description = describe(obs, lang)
            # what nobody measured goes to the language stage too (a forced cascade answers a rule question)
            unmeasured = unmeasured_parts(request.question, obs, lang) if request.task == "vqa" else []
            extra = {"description": description} | ({"not_observed": unmeasured} if unmeasured else {})
        return VisionResult(
            stage=self.name,
            description=caption(obs, lang) if request.task == "caption" else description,
            observations=obs.to_dict() | extra,
            answer=rule.text if rule else None,
            answer_source=rule.source if rule else None,
            confidence=rule.confidence if rule else _caption_confidence(obs),
            boxes=[o.box for o in obs.objects],
            timings=timings,
        )

    # ------------------------------------------------------------ the work

    def _observe(self, image: LoadedImage, max_pixels: int, force_ocr: bool, timings: Timings) -> Observations:
        """Run every part on one image. The result does not depend on the question, so the pipeline
        caches it per image (several questions about one image run the models once)."""
        assert self._detector and self._classifier and self._safety and self._reader, "stage not loaded"
        with timings.measure("resize"):
            rgb, scale = _bounded_rgb(image.image, max_pixels)
        obs = Observations(width=image.width, height=image.height)
        with timings.measure("detect"):
            from flashvl.stages.offline.detector import COCO_LABELS_ZH

            boxes = [_scaled(box, 1 / scale) for box in self._detector.detect(rgb)]
            obs.objects = place_objects(boxes, image.width, image.height, COCO_LABELS_ZH)
            obs.relations = relate(obs.objects)
        with timings.measure("classify"):
            obs.labels = [
                {
                    "index": label.index,
                    "name": label.name,
                    "name_zh": label.name_zh,
                    "score": round(label.score, 4),
                }
                for label in self._classifier.classify(rgb, top_k=5)
            ]
        with timings.measure("safety"):
            obs.nsfw_score = round(float(self._safety.score(rgb)), 4)
            obs.safety_verdict = (
                "safe" if obs.nsfw_score < self._safe else "unsafe" if obs.nsfw_score > self._unsafe else "uncertain"
            )
        with timings.measure("colours"):
            obs.background, obs.foreground = background_and_foreground(rgb)
            for obj in obs.objects[:8]:
                b = _scaled(obj.box, scale)
                crop = _centre_crop(rgb, b.x1, b.y1, b.x2, b.y2)
                if crop.size:
                    obj.colour = dominant_colours(crop, k=3)[0]
        with timings.measure("text_gate"):
            obs.text_present = force_ocr or self._reader.has_text(rgb)
        if obs.text_present:
            with timings.measure("ocr"):
                from flashvl.text.layout import lines_to_text

                lines = self._reader.read(rgb)
                obs.text_lines = [
                    {
                        "text": line.text,
                        "score": round(line.score, 4),
                        "box": [round(v / scale, 1) for v in line.box],
                    }
                    for line in lines
                ]
                obs.full_text = lines_to_text(lines)
        obs.disagreements = find_disagreements(obs.objects, obs.labels)
        obs.parts = list(timings.steps)
        return obs


def _model_files() -> dict[str, Path]:
    """Every file whose content the offline parts' output depends on (weights and label tables)."""
    from flashvl.stages.offline import classifier, detector, ocr, safety

    return {
        "detector": Path(detector.DEFAULT_MODEL),
        "classifier": Path(classifier.MODEL_PATH),
        "classes": Path(classifier.CLASSES_PATH),
        "classes_zh": Path(classifier.CLASSES_ZH_PATH),
        "safety": Path(safety.MODEL_PATH),
        "ocr_det": Path(ocr.DET_MODEL),
        "ocr_cls": Path(ocr.CLS_MODEL),
        "ocr_rec": Path(ocr.REC_MODEL),
    }


def _bounded_rgb(image: Image.Image, max_pixels: int) -> tuple[np.ndarray, float]:
    """RGB array of at most ``max_pixels``, and the scale applied (1.0: untouched)."""
    pixels = image.width * image.height
    if pixels <= max_pixels:
        return np.asarray(image.convert("RGB")), 1.0
    scale = (max_pixels / pixels) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR)), size[0] / image.width


def _scaled(box: Box, factor: float) -> Box:
    return Box(box.label, box.score, box.x1 * factor, box.y1 * factor, box.x2 * factor, box.y2 * factor)


def _centre_crop(rgb: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """The middle half of a box: less background bleeding into an object's colour."""
    w, h = x2 - x1, y2 - y1
    xa, xb = int(max(0, x1 + w / 4)), int(min(rgb.shape[1], x2 - w / 4))
    ya, yb = int(max(0, y1 + h / 4)), int(min(rgb.shape[0], y2 - h / 4))
    return rgb[ya:yb, xa:xb]


def _caption_confidence(obs: Observations) -> float | None:
    """For descriptions: the best score among the parts that named the subject."""
    scores = [o.score for o in obs.objects[:1]] + [label["score"] for label in obs.labels[:1]]
    return round(max(scores), 4) if scores else None
