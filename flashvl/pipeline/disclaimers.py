"""Domain disclaimers: medical, financial and legal questions get a fixed line after the answer."""

from __future__ import annotations

import re

from flashvl.text.language import Lang

DEFAULT_DISCLAIMER = {"zh": "AI辅助建议，仅供参考", "en": "AI-assisted suggestion, for reference only"}
DOMAINS: dict[str, re.Pattern[str]] = {
    "medical": re.compile(
        r"\b(medic\w*|medicine|drug|dose|dosage|symptom\w*|diagnos\w*|disease|doctor|blood test|lab result|"
        r"pill|tablet|prescription|x-ray|mri|treatment|health|glucose|cholesterol|blood pressure|hemoglobin|"
        r"haemoglobin|lab report|test results?|reference range)\b|"
        r"医|药|症状|诊断|疾病|化验|体检|血常规|处方|治疗|病|剂量|健康|检查报告|血糖|血压|血脂|胆固醇|血红蛋白|参考范围|检验",
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


# Answers whose source is itself in a domain, whatever words the question used ("is this value ok?").
SOURCE_DOMAINS = {"rule:reference-range": "medical"}


def domains_of(question: str | None, source: str | None = None) -> list[str]:
    found = [name for name, pattern in DOMAINS.items() if question and pattern.search(question)]
    by_source = SOURCE_DOMAINS.get(source or "")
    if by_source and by_source not in found:
        found.append(by_source)
    return found


def disclaimer_for(
    question: str | None, lang: Lang, texts: dict[str, str] | None = None, source: str | None = None
) -> tuple[str, list[str]]:
    """("", []) when neither the question nor the answer's source (``confidence_source``, e.g. the
    reference-range rule) is in a domain; else the line and the domains."""
    found = domains_of(question, source)
    if not found:
        return "", []
    return (texts or DEFAULT_DISCLAIMER)[lang], found
