"""Keyword routing: a question holding any reasoning keyword goes to the language stage."""

from __future__ import annotations

import re

from flashvl.pipeline.router.base import Decision

DEFAULT_KEYWORDS_ZH = [
    "为什么",
    "为何",
    "怎么做",
    "应该",
    "是否合理",
    "合理吗",
    "建议",
    "后果",
    "风险",
    "原因",
    "如何",
    "怎样",
    "评估",
    "判断",
    "比较",
    "推荐",
    "分析",
    "解释",
    "计划",
    "会发生",
]
DEFAULT_KEYWORDS_EN = [
    "why",
    "should",
    "recommend",
    "advice",
    "advise",
    "risk",
    "consequence",
    "reason",
    "explain",
    "evaluate",
    "compare",
    "how could",
    "how should",
    "how can",
    "best way",
    "suggest",
    "plan",
    "what would happen",
    "likely",
    "reasonable",
    "do you think",
]


class KeywordRouter:
    """``cascade`` when a keyword occurs (English on word boundaries, Chinese as substrings)."""

    name = "rules"

    def __init__(self, keywords_zh: list[str] | None = None, keywords_en: list[str] | None = None) -> None:
        self.keywords_zh = list(DEFAULT_KEYWORDS_ZH if keywords_zh is None else keywords_zh)
        self.keywords_en = list(DEFAULT_KEYWORDS_EN if keywords_en is None else keywords_en)
        words = "|".join(re.escape(w) for w in sorted(self.keywords_en, key=len, reverse=True))
        self._en = re.compile(rf"\b({words})\w*", re.IGNORECASE) if words else None

    def decide(self, question: str) -> Decision:
        for word in self.keywords_zh:
            if word and word in question:
                return Decision("cascade", self.name, f"keyword:{word}")
        match = self._en.search(question) if self._en else None
        if match:
            return Decision("cascade", self.name, f"keyword:{match.group(1).lower()}")
        return Decision("direct", self.name, "no reasoning keyword")
