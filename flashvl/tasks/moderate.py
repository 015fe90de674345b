"""Content moderation: the offline stage's measurements + rules over OCR text + the language stage's verdict.

Every signal names its source; a category's score is the noisy-OR of its signals
(``1 - prod(1 - s)``: independent evidence adds up, one signal alone keeps its own score).
A category is reported when its score reaches the review threshold; ``suggestion`` is
``block`` at or above the block threshold, ``review`` at or above review, else ``pass``.

Sources:
- ``safety_model``: Open-NSFW score -> adult.
- ``imagenet``: classifier labels that mean something for moderation (weapon classes; syringe).
- ``coco``: detector classes (knife; weighted down, kitchens are full of knives).
- ``ocr_rules``: patterns over OCR text (resident ID with checksum, passport-like numbers, phone
  numbers, bank cards with Luhn, e-mails, URLs, messenger handles, keyword lists).
- ``language``: the language stage's verdict under a JSON schema, from the observations only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from flashvl.errors import StageUnavailable
from flashvl.media.types import LoadedImage
from flashvl.pipeline.guarded import GuardedLanguage, GuardedVision
from flashvl.stages.base import ChatMessage, ChatRequest, VisionRequest
from flashvl.tasks.moderation_signals import (
    CATEGORIES,
    Signal,
    flagged_lines,
    image_signals,
    resident_id_valid,
    text_signals,
)

__all__ = [
    "CATEGORIES",
    "Signal",
    "Thresholds",
    "Verdict",
    "combine",
    "flagged_lines",
    "image_signals",
    "moderate",
    "moderate_image",
    "resident_id_valid",
    "text_signals",
]

Suggestion = Literal["pass", "review", "block"]


@dataclass(frozen=True)
class Thresholds:
    review: float = 0.5
    block: float = 0.85
    per_category: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (review, block)

    def for_category(self, name: str) -> tuple[float, float]:
        return self.per_category.get(name, (self.review, self.block))


@dataclass
class Verdict:
    is_sensitive: bool
    categories: list[dict[str, Any]]
    confidence: float
    suggestion: Suggestion
    reasons: list[str]
    signals: list[Signal]
    language: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "is_sensitive": self.is_sensitive,
            "categories": self.categories,
            "confidence": round(self.confidence, 4),
            "suggestion": self.suggestion,
            "reasons": self.reasons,
        }


# ------------------------------------------------------------------ the language stage's verdict

REASON_MAX_CHARS = 240  # the grammar's bound on the reason; a reason this long was cut by it
_SENTENCE_END = (".", "!", "?", "。", "！", "？")


def complete_reason(reason: str, limit: int = 200) -> str:
    """The reason as whole sentences: a reason cut (by the schema's length bound or ``limit``) ends at its
    last complete sentence, or at a word boundary with "…"; never mid-word."""
    text = " ".join(reason.split())
    if len(text) < min(limit, REASON_MAX_CHARS):
        return text
    head = text[:limit]
    end = max(head.rfind(mark) for mark in _SENTENCE_END)
    if end >= 20:
        return head[: end + 1]
    cut = head[: limit - 1].rsplit(" ", 1)[0] if " " in head else head[: limit - 1]
    return cut.rstrip(",;:- ") + "…"


def normalise_verdict(verdict: dict[str, Any]) -> dict[str, Any]:
    """Known categories once each (none when not sensitive) and a complete reason."""
    sensitive = bool(verdict.get("sensitive"))
    given = verdict.get("categories")
    named: list[Any] = given if isinstance(given, list) else []
    categories = [name for name in dict.fromkeys(named) if name in CATEGORIES] if sensitive else []
    return {"sensitive": sensitive, "categories": categories, "reason": complete_reason(str(verdict.get("reason", "")))}


VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sensitive": {"type": "boolean"},
        "categories": {
            "type": "array",
            "items": {"type": "string", "enum": list(CATEGORIES)},
            "maxItems": 3,
            "uniqueItems": True,  # not every grammar backend enforces it: ``normalise_verdict`` does
        },
        "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
    },
    "required": ["sensitive", "categories", "reason"],
}
VERDICT_SYSTEM = (
    "You are a content moderator. You cannot see the image; automatic tools describe it (objects, "
    "classifier labels, a safety score, OCR text). Decide whether the image is sensitive for a public "
    "product listing. Categories: adult (sexual content), violence (gore, threats), weapons, drugs, hate "
    "(hate symbols or slurs), privacy (ID numbers, phone numbers, personal data), contact_ads (contact "
    "details, ads, spam), other. Ordinary products, people, animals, food and documents are not "
    "sensitive. Answer JSON only; empty categories when nothing is sensitive; each category at most "
    "once; the reason is one short, complete sentence."
)


def verdict_messages(observations: dict[str, Any]) -> list[ChatMessage]:
    objects = ", ".join(f"{o['label']} ({o['score']:.2f})" for o in (observations.get("objects") or [])[:8])
    labels = ", ".join(f"{x['name']} ({x['score']:.2f})" for x in (observations.get("labels") or [])[:3])
    text = "\n".join(line["text"] for line in ((observations.get("text") or {}).get("lines") or []))[:1500]
    nsfw = (observations.get("safety") or {}).get("nsfw_score")
    user = (
        f"Objects detected: {objects or 'none detected'}\nClassifier labels: {labels or 'none'}\n"
        f"Safety model NSFW score (0-1): {nsfw}\nOCR text:\n{text or '(no text read)'}"
    )
    return [ChatMessage("system", VERDICT_SYSTEM), ChatMessage("user", user)]


async def language_verdict(
    language: GuardedLanguage, observations: dict[str, Any], weight: float
) -> tuple[list[Signal], dict[str, Any]]:
    """Ask the language stage; its categories become signals scored ``weight`` x its confidence (if known)."""
    generation = await language.generate(
        ChatRequest(verdict_messages(observations), max_tokens=160, temperature=0.0, json_schema=VERDICT_SCHEMA, seed=0)
    )
    try:
        raw = json.loads(generation.text)
    except json.JSONDecodeError:
        return [], {"error": "unparseable verdict", "raw": generation.text[:200]}
    if not isinstance(raw, dict):
        return [], {"error": "unparseable verdict", "raw": generation.text[:200]}
    verdict = normalise_verdict(raw)
    score = weight * (generation.confidence if generation.confidence is not None else 1.0)
    evidence = complete_reason(f"language stage: {verdict['reason']}")
    signals = [Signal(name, "language", score, evidence) for name in verdict["categories"]]
    info = {
        "verdict": verdict,
        "confidence": generation.confidence,
        "seconds": round(generation.timings.total, 3),
    }
    return signals, info


# ------------------------------------------------------------------ combining


def wants_language(mode: str, observations: dict[str, Any]) -> bool:
    if mode == "always":
        return True
    if mode == "text":
        return bool((observations.get("text") or {}).get("lines"))
    return False


def combine(signals: list[Signal], thresholds: Thresholds) -> Verdict:
    """Noisy-OR per category; report what reaches review; suggest from the strongest category."""
    by_category: dict[str, list[Signal]] = {}
    for signal in signals:
        by_category.setdefault(signal.category, []).append(signal)
    categories: list[dict[str, Any]] = []
    reasons: list[str] = []
    suggestion: Suggestion = "pass"
    top_raw = 0.0
    for name in CATEGORIES:
        hits = sorted(by_category.get(name, []), key=lambda s: -s.score)
        if not hits:
            continue
        miss = 1.0
        for hit in hits:
            miss *= 1.0 - min(max(hit.score, 0.0), 1.0)
        score = 1.0 - miss
        top_raw = max(top_raw, score)
        review, block = thresholds.for_category(name)
        if score < review:
            continue
        level: Suggestion = "block" if score >= block else "review"
        if level == "block" or suggestion == "pass":
            suggestion = level
        categories.append(
            {
                "category": name,
                "score": round(score, 4),
                "level": level,
                "raised_by": sorted({h.source for h in hits}),
                "signals": [h.to_dict() for h in hits],
            }
        )
        reasons.append(f"{name} ({score:.2f}, {level}): " + "; ".join(h.evidence for h in hits[:3]))
    categories.sort(key=lambda c: -c["score"])
    # Confidence: of the flag for flagged images, of "nothing found" (1 - strongest score) otherwise.
    confidence = categories[0]["score"] if categories else 1.0 - top_raw
    if not categories:
        reasons.append("no category reached the review threshold")
    return Verdict(bool(categories), categories, confidence, suggestion, reasons, signals)


async def moderate(
    observations: dict[str, Any],
    *,
    language: GuardedLanguage | None,
    thresholds: Thresholds,
    language_mode: str = "text",
    language_weight: float = 0.6,
) -> Verdict:
    """The whole verdict for one image's observations (from ``OfflineVisionStage.see``)."""
    text = "\n".join(line["text"] for line in ((observations.get("text") or {}).get("lines") or []))
    signals = image_signals(observations) + text_signals(text)
    info = None
    if language is not None and wants_language(language_mode, observations):
        try:
            language_signals, info = await language_verdict(language, observations, language_weight)
        except StageUnavailable as exc:  # the image's own signals still stand; say what is missing
            language_signals, info = [], {"error": f"language stage unavailable: {exc.message}"}
        signals += language_signals
    verdict = combine(signals, thresholds)
    verdict.language = info
    return verdict


async def moderate_image(
    vision: GuardedVision,
    language: GuardedLanguage | None,
    image: LoadedImage,
    *,
    thresholds: Thresholds,
    language_mode: str = "text",
    language_weight: float = 0.6,
) -> dict[str, Any]:
    """See one image with the vision stage, then judge it: the /moderate response body (less request ids)."""
    looked = await vision.see(VisionRequest([image], task="moderate"))
    seen = looked.result
    verdict = await moderate(
        seen.observations,
        language=language,
        thresholds=thresholds,
        language_mode=language_mode,
        language_weight=language_weight,
    )
    stages = [looked.record.to_dict()]
    if verdict.language is not None:
        stages.append(
            {
                "name": "language",
                "backend": getattr(language, "name", "language"),
                "seconds": verdict.language.get("seconds"),
                "error": verdict.language.get("error"),
                "verdict": verdict.language.get("verdict"),
            }
        )
    return verdict.to_dict() | {
        "flagged_lines": flagged_lines(seen.observations),
        "stages": stages,
        "image": {"sha256": image.sha256, "width": image.width, "height": image.height},
        "cache": looked.cache,
    }
