"""Per-stage timeouts and circuit breakers, and the rule-based fallback when the eyes are down.

A breaker opens after ``failure_threshold`` consecutive failures; while open,
calls are refused at once (the pipeline degrades instead of waiting). After
``reset_after_s`` one call is let through as a probe (half-open): success closes
the breaker by itself, failure opens it again for another ``reset_after_s``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Literal

from flashvl.text.language import Lang

BreakerState = Literal["closed", "open", "half-open"]
NOTICE_LANGUAGE_DOWN = {"zh": "当前仅提供图像描述", "en": "image description only"}
NOTICE_FALLBACK = {
    "zh": "视觉模型暂不可用:以下为基于文字关键词的规则判断,未分析图像",
    "en": "vision stage unavailable: rule-based keyword check of the text only; the image was not analysed",
}


class VisionDown(Exception):
    """The vision stage is unavailable (breaker open, timeout or failure)."""


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failure_threshold: int = 3,
        reset_after_s: float = 5.0,
        clock: object = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False
        self.trips = 0
        # Failures counted against the stage, by kind ("timeout", "error", "unavailable"); a client's own
        # mistake (a 4xx) is never one of them.
        self.faults: dict[str, int] = {}

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self._now() - self.opened_at >= self.reset_after_s else "open"

    def _now(self) -> float:
        return self._clock()  # type: ignore[operator]

    def allow(self) -> bool:
        """May a call go to the stage now? In half-open, only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next probe may run (for Retry-After)."""
        if self.opened_at is None:
            return 0.0
        return max(1.0, self.reset_after_s - (self._now() - self.opened_at))

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._probing = False

    def failure(self, kind: str = "error") -> None:
        self._probing = False
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.failure_threshold:
            if self.opened_at is None:
                self.trips += 1
            self.opened_at = self._now()

    def release(self) -> None:
        """A call ended without a verdict (cancelled by the client): free the probe slot."""
        self._probing = False

    def to_dict(self) -> dict[str, object]:
        return {"state": self.state, "failures": self.failures, "trips": self.trips, "faults": dict(self.faults)}


@dataclass(frozen=True)
class Fallback:
    text: str
    flagged: bool
    matched: list[str]


MODERATION_QUESTION = re.compile(
    r"\b(moderat\w*|nsfw|sfw|safe for work|appropriate|inappropriate|offensive|explicit|violat\w*|allowed|"
    r"spam|abuse|abusive)\b|审核|违规|合规|色情|涉黄|暴力|敏感|安全吗|适合.*(展示|发布|观看)|能发|可以发",
    re.IGNORECASE,
)
BLOCKLIST = re.compile(
    r"\b(porn\w*|nude|nudity|sex\w*|kill\w*|gun|weapon|drugs?|cocaine|terror\w*|hate|nazi|gore|blood)\b|"
    r"色情|裸|性爱|杀|枪|武器|毒品|恐怖|仇恨|血腥|赌博",
    re.IGNORECASE,
)


def is_moderation_request(task: str, question: str | None) -> bool:
    return task == "moderate" or bool(question and MODERATION_QUESTION.search(question))


def keyword_fallback(texts: list[str], lang: Lang) -> Fallback:
    """Moderation by keyword over the text we have (question, earlier messages) when the eyes are down."""
    matched = sorted({m.group(0).lower() for text in texts for m in BLOCKLIST.finditer(text or "")})
    if lang == "zh":
        text = (
            f"规则判断:文字中出现敏感词({'、'.join(matched)}),建议人工审核。"
            if matched
            else "规则判断:文字中未发现敏感词;图像未经分析,无法判断图像内容。"
        )
    else:
        text = (
            f"Rule-based check: the text contains flagged words ({', '.join(matched)}); review by a person."
            if matched
            else "Rule-based check: no flagged words in the text; the image itself was not "
            "analysed, so its content could not be judged."
        )
    return Fallback(text, bool(matched), matched)
