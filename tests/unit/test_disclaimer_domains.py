"""Domain detection for disclaimers, measured on a labelled zh/en question set
(``flashvl/pipeline/data/disclaimer_questions.jsonl``: medical, financial, legal, none).

On the old code (keywords only) "WBC 偏高意味着什么？我应该怎么办？" and "Should I pay this invoice? Is the
price reasonable?" got no disclaimer; its recall was 0.37 medical, 0.50 financial, 0.32 legal on the dev
questions and 0.00, 0.00, 0.30 on the held-out ones.
"""

from __future__ import annotations

import json

import pytest

from flashvl.pipeline.disclaimers import (
    CLASSIFIER,
    DOMAINS,
    DomainClassifier,
    disclaimer_for,
    domains_of,
    load_questions,
)
from flashvl.pipeline.embedding import Embedder

# Floors. Held-out: 10 questions per domain (5 zh, 5 en) written after the classifier was trained;
# keywords alone reach 0.0 medical, 0.7 financial, 0.6 legal there, and the classifier 0.9-1.0, so
# 0.8 (two misses in ten) is above the keyword baseline in every domain with room for one more miss.
# Dev: the 30 questions per domain it was trained on; 0.95 allows one miss in 30.
# False alarms: at most 10% of all "none" questions get a disclaimer (a needless line, not a harm).
HELDOUT_RECALL = 0.8
DEV_RECALL = 0.95
NONE_FLAGGED = 0.10


@pytest.fixture(scope="module")
def classifier() -> DomainClassifier:
    return DomainClassifier(Embedder())


def measure(rows: list[dict], classifier: DomainClassifier | None) -> dict[str, tuple[float, float]]:
    predicted = [domains_of(r["question"], classifier=classifier) for r in rows]
    out = {}
    for domain in DOMAINS:
        tp = sum(domain in p and domain in r["domains"] for p, r in zip(predicted, rows, strict=True))
        flagged = sum(domain in p for p in predicted)
        actual = sum(domain in r["domains"] for r in rows)
        out[domain] = (tp / max(1, flagged), tp / actual)
    none = [p for p, r in zip(predicted, rows, strict=True) if not r["domains"]]
    out["none"] = (sum(bool(p) for p in none) / len(none), 0.0)
    return out


def test_domain_recall_and_precision_on_the_labelled_questions(classifier: DomainClassifier) -> None:
    rows = load_questions()
    assert {r["lang"] for r in rows} == {"zh", "en"} and len(rows) >= 150
    for split, floor in (("dev", DEV_RECALL), ("heldout", HELDOUT_RECALL)):
        part = [r for r in rows if r.get("split", "dev") == split]
        keywords, both = measure(part, None), measure(part, classifier)
        for domain in DOMAINS:
            print(
                f"{split:8} {domain:9} keywords P {keywords[domain][0]:.2f} R {keywords[domain][1]:.2f} | "
                f"keywords+classifier P {both[domain][0]:.2f} R {both[domain][1]:.2f}"
            )
            assert both[domain][1] >= floor, (split, domain, both[domain])
        print(f"{split:8} none flagged: keywords {keywords['none'][0]:.2f}, keywords+classifier {both['none'][0]:.2f}")
    # Over all 40 "none" questions (the held-out ten alone are too few: its two misses are "what colour is
    # the doctor's coat?" in both languages, a topic word without a request for advice).
    assert measure(rows, classifier)["none"][0] <= NONE_FLAGGED


def test_the_same_worry_gets_the_same_disclaimer_whatever_the_wording(classifier: DomainClassifier) -> None:
    for question in (
        "WBC 偏高意味着什么？我应该怎么办？",
        "WBC 偏高意味着什么？应该吃什么药？",
    ):
        assert disclaimer_for(question, "zh", classifier=classifier)[1] == ["medical"], question
    assert (
        "financial"
        in disclaimer_for("Should I pay this invoice? Is the price reasonable?", "en", classifier=classifier)[1]
    )
    assert disclaimer_for("What is the total on this invoice?", "en", classifier=classifier) == ("", [])
    assert disclaimer_for("What colour is the cup?", "en", classifier=classifier) == ("", [])
    # a rule answer of two parts, one of them the lab reference-range rule, is medical
    assert domains_of("How many rows, and which are out of range?", "rule:count+rule:reference-range") == ["medical"]


def test_the_stored_classifier_names_its_training() -> None:
    stored = json.loads(CLASSIFIER.read_text())
    dev = [r for r in load_questions() if r.get("split", "dev") == "dev"]
    assert stored["domains"] == list(DOMAINS) and stored["train_rows"] == len(dev)
    assert len(stored["coef"]) == len(DOMAINS) and 0 < stored["threshold"] < 1
