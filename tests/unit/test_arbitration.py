"""Arbitration checks (named objects, negations, counts, similarity), calibration, review store, breaker."""

from __future__ import annotations

import json

from flashvl.pipeline.arbitration import PAIRS, THRESHOLD_FILE, Arbiter, calibrate
from flashvl.pipeline.disclaimers import disclaimer_for
from flashvl.pipeline.embedding import Embedder
from flashvl.pipeline.resilience import CircuitBreaker, is_moderation_request, keyword_fallback
from flashvl.pipeline.review.memory import MemoryReviewStore as ReviewStore

CAT = {"objects": [{"label": "cat", "score": 0.8}]}
CAT_DESCRIPTION = "Objects: a cat (large, centre). Labels: tabby cat 0.71. No text detected."


def kinds(conflicts: list) -> set[str]:
    return {c.kind for c in conflicts}


def test_named_object_the_vision_stage_did_not_report() -> None:
    conflicts = Arbiter().check(CAT, CAT_DESCRIPTION, "A man is walking past the cat.")
    assert "named_object" in kinds(conflicts) and any(c.label == "person" for c in conflicts)


def test_negated_mentions_are_not_named_object_conflicts() -> None:
    conflicts = Arbiter().check(CAT, CAT_DESCRIPTION, "A tabby cat lies in the centre; no person was detected.")
    assert "named_object" not in kinds(conflicts)


def test_negation_of_a_detected_object() -> None:
    assert "negation" in kinds(Arbiter().check(CAT, CAT_DESCRIPTION, "There is no cat in this picture."))
    assert "negation" in kinds(Arbiter().check(CAT, "物体:一只猫。", "图中没有猫。"))


def test_counts_that_contradict() -> None:
    assert "count" in kinds(Arbiter().check(CAT, CAT_DESCRIPTION, "Three cats are sleeping."))
    assert "count" in kinds(
        Arbiter().check({"objects": [{"label": "car", "score": 0.9}]}, "物体:一辆汽车。", "路上有三辆汽车。")
    )
    assert "count" not in kinds(Arbiter().check(CAT, CAT_DESCRIPTION, "One cat is lying there."))


def test_consistent_answer_raises_nothing() -> None:
    assert Arbiter().check(CAT, CAT_DESCRIPTION, "A tabby cat is lying in the centre of the picture.") == []


def test_threshold_is_calibrated_on_the_labelled_pairs() -> None:
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    threshold, accuracy, scores = calibrate(pairs, Embedder())
    stored = json.loads(THRESHOLD_FILE.read_text())
    print(f"arbitration threshold {threshold} (stored {stored['threshold']}), accuracy {accuracy:.3f}")
    assert abs(threshold - stored["threshold"]) < 0.01 and accuracy >= 0.9
    assert Arbiter().threshold == stored["threshold"]
    consistent = [s for s, p in zip(scores, pairs, strict=True) if p["consistent"]]
    assert min(consistent) >= threshold  # no consistent pair is flagged


def test_review_store_lists_and_resolves() -> None:
    store = ReviewStore(max_items=2)
    first = store.add(question="q1", answer="a", description="d", reasons=["r"], image_sha256=["x"], route="cascade")
    store.add(question="q2", answer="a", description="d", reasons=["r"], image_sha256=["x"], route="cascade")
    store.add(question="q3", answer="a", description="d", reasons=["r"], image_sha256=["x"], route="cascade")
    assert store.get(first.id) is None and [i.question for i in store.list()] == ["q2", "q3"]
    item = store.list()[0]
    store.resolve(item.id, "corrected", "fixed", "note")
    assert [i.question for i in store.list("open")] == ["q3"]
    assert store.get(item.id).resolution["corrected_answer"] == "fixed"


def test_breaker_opens_probes_and_closes_by_itself() -> None:
    now = [0.0]
    breaker = CircuitBreaker("language", failure_threshold=2, reset_after_s=5, clock=lambda: now[0])
    breaker.failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow() and breaker.retry_after() == 5
    now[0] = 5.0
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()  # probe failed: open again
    assert breaker.state == "open"
    now[0] = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_keyword_fallback_and_moderation_detection() -> None:
    assert is_moderation_request("vqa", "Is this image safe for work?")
    assert is_moderation_request("vqa", "这张图片违规吗?") and not is_moderation_request("vqa", "What colour?")
    flagged = keyword_fallback(["Is this gun picture allowed?"], "en")
    assert flagged.flagged and flagged.matched == ["gun"] and "Rule-based" in flagged.text
    assert not keyword_fallback(["这张图片违规吗?"], "zh").flagged


def test_domain_disclaimers() -> None:
    assert disclaimer_for("这个化验单的结果正常吗?", "zh")[0] == "AI辅助建议，仅供参考"
    assert disclaimer_for("Should I invest in this stock?", "en") == (
        "AI-assisted suggestion, for reference only",
        ["financial"],
    )
    assert disclaimer_for("Is this contract clause legal?", "en")[1] == ["legal"]
    assert disclaimer_for("What colour is the car?", "en") == ("", [])
    assert disclaimer_for("Is this legal?", "en", {"en": "Not advice.", "zh": "非建议"})[0] == "Not advice."
