"""Domain disclaimers: medical, financial and legal questions get a fixed line after the answer."""

from __future__ import annotations

import re

from flashvl.tasks.language import Lang

DEFAULT_DISCLAIMER = {"zh": "AI辅助建议，仅供参考", "en": "AI-assisted suggestion, for reference only"}
DOMAINS: dict[str, re.Pattern[str]] = {
    "medical": re.compile(
        r"\b(medic\w*|medicine|drug|dose|dosage|symptom\w*|diagnos\w*|disease|doctor|blood test|lab result|"
        r"pill|tablet|prescription|x-ray|mri|treatment|health)\b|"
        r"医|药|症状|诊断|疾病|化验|体检|血常规|处方|治疗|病|剂量|健康|检查报告",
        re.IGNORECASE,
    ),
    "financial": re.compile(
        r"\b(invest\w*|stocks?|shares|fund|loan|mortgage|tax\w*|financ\w*|crypto\w*|portfolio|interest rate|"
        r"insurance)\b|投资|股票|基金|贷款|理财|税|财务|保险|利率|收益",
        re.IGNORECASE,
    ),
    "legal": re.compile(
        r"\b(legal|illegal|law\w*|contract|lawsuit|sue|court|liabilit\w*|clause|regulation|licen[cs]e)\b|"
        r"法律|合法|违法|合同|起诉|法院|条款|责任|诉讼|法规",
        re.IGNORECASE,
    ),
}


def domains_of(question: str | None) -> list[str]:
    if not question:
        return []
    return [name for name, pattern in DOMAINS.items() if pattern.search(question)]


def disclaimer_for(question: str | None, lang: Lang, texts: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """("", []) when the question is in none of the domains; else the line and the domains."""
    found = domains_of(question)
    if not found:
        return "", []
    return (texts or DEFAULT_DISCLAIMER)[lang], found
