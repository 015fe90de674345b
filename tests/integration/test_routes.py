"""Routes that do what was asked, and say so: the real offline vision stage (its rules answer
colours, counts, text) with a scripted language stage (what is under test is the routing, not
the model's wording).

On the old code a forced ``"route": "direct"`` or ``"cascade"`` came back as ``rule`` whenever a rule
could answer; ``route: cascade`` came with ``route_decision.route: "direct"`` (and every rule answer
with the router's unused choice); and "what animal is this, and what colour are its eyes?" was
answered by the colour rule alone, which answers neither part.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import pytest
from PIL import Image

from flashvl.config import Settings
from flashvl.media import decode_image
from flashvl.media.types import LoadedImage
from flashvl.pipeline.service import Answer, Query
from flashvl.stages.offline.stage import OfflineVisionStage
from tests.pipelines import ScriptedLanguage, build_pipeline

pytestmark = pytest.mark.slow
SCRIPTED = "From the observations: a cat was detected."


@pytest.fixture(scope="module")
def stage() -> Iterator[OfflineVisionStage]:
    vision = OfflineVisionStage.from_settings(Settings())
    asyncio.run(vision.load())
    yield vision


def load(name: str) -> LoadedImage:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).save(buffer, "JPEG", quality=92)
    return decode_image(buffer.getvalue(), Settings(), "path")


def ask(stage: OfflineVisionStage, question: str, route: str | None = None, language: bool = True) -> Answer:
    pipeline = build_pipeline(stage, ScriptedLanguage(SCRIPTED) if language else None)
    return asyncio.run(pipeline.answer(Query([load("chelsea")], question, route=route)))  # type: ignore[arg-type]


def consistent(answer: Answer) -> None:
    decision = answer.route_decision or {}
    assert decision.get("route") == answer.route, decision
    if decision.get("requested", answer.route) != answer.route:
        assert len(decision.get("changed_because", "")) > 20, decision


def test_a_forced_direct_route_is_honoured_even_when_a_rule_answers(stage: OfflineVisionStage) -> None:
    for question in ("What colour is the background?", "背景是什么颜色?"):
        answer = ask(stage, question, route="direct")
        assert answer.route == "direct" and answer.language_stage is None, answer.meta()
        assert answer.confidence_source == "rule:colour"  # the vision stage alone: here its exact rule
        consistent(answer)


def test_a_forced_cascade_is_honoured_or_says_why_not(stage: OfflineVisionStage) -> None:
    answer = ask(stage, "What colour is the background?", route="cascade")
    assert answer.route == "cascade" and answer.language_stage == "scripted" and answer.text == SCRIPTED
    consistent(answer)
    without = ask(stage, "What colour is the background?", route="cascade", language=False)
    assert without.route == "rule" and without.route_decision is not None
    assert without.route_decision["requested"] == "cascade"
    assert "no language stage" in without.route_decision["changed_because"]


def test_route_and_route_decision_never_disagree_without_a_reason(stage: OfflineVisionStage) -> None:
    rule = ask(stage, "What colour is the background?")  # auto: a rule answers
    assert rule.route == "rule" and rule.route_decision is not None
    assert (
        rule.route_decision["requested"] in ("direct", "cascade")
        and "rule:colour" in rule.route_decision["changed_because"]
    )
    consistent(rule)
    free = ask(stage, "What is in this picture?")  # the keyword router says direct; the offline pipeline is no VLM
    assert free.route == "cascade" and free.route_decision is not None
    assert free.route_decision["requested"] == "direct"
    assert "not a vision-language model" in free.route_decision["changed_because"]
    only_vision = ask(stage, "Why is the cat resting?", language=False)
    assert only_vision.route == "vision-only" and "no language stage" in only_vision.route_decision["changed_because"]  # type: ignore[index]
    for question in ("How many cats are there?", "What does the sign say?", "Is this image safe for work?", "为什么"):
        for route in (None, "direct", "cascade"):
            consistent(ask(stage, question, route=route))


@pytest.mark.parametrize(
    "question",
    [
        "What animal is this, and what colour are its eyes?",
        "这是什么动物,它的眼睛是什么颜色?",
    ],
)
def test_a_rule_does_not_answer_half_of_a_two_part_question(stage: OfflineVisionStage, question: str) -> None:
    answer = ask(stage, question)
    assert answer.route == "cascade" and answer.text == SCRIPTED, answer.meta()
    consistent(answer)


@pytest.mark.parametrize(
    ("question", "counted", "unobserved"),
    [
        ("How many cats are there, and what are they doing?", "cat", "not observed: what anyone is doing"),
        ("图里有几只猫?它们在做什么?", "猫", "未观察到人或物在做什么"),
    ],
)
def test_a_count_and_an_unobserved_activity_are_both_answered_by_rules(
    stage: OfflineVisionStage, question: str, counted: str, unobserved: str
) -> None:
    """Both parts have an exact answer: the count, and "not observed" for the activity (no part sees one)."""
    answer = ask(stage, question)
    assert answer.route == "rule" and answer.confidence_source == "rule:not_observed+rule:count", answer.meta()
    assert unobserved in answer.text and counted in answer.text
