"""Exact-answer rules and the plain-language accounts, on hand-built observations."""

from __future__ import annotations

import numpy as np
import pytest

from flashvl.stages.base import Box
from flashvl.stages.offline.colours import NamedColour, background_and_foreground
from flashvl.stages.offline.describe import caption, describe, describe_objects
from flashvl.stages.offline.rules import answer_by_rule, parse_range_rows
from flashvl.stages.offline.scene import Observations, find_disagreements, place_objects, relate

ZH = {"person": "人", "cup": "杯子", "cat": "猫"}


def make_obs(boxes: list[Box], **kwargs: object) -> Observations:
    obs = Observations(width=300, height=200, **kwargs)  # type: ignore[arg-type]
    obs.objects = place_objects(boxes, 300, 200, ZH)
    obs.relations = relate(obs.objects)
    return obs


def test_positions_sizes_and_relations() -> None:
    obs = make_obs([Box("person", 0.9, 10, 10, 120, 195), Box("cup", 0.6, 230, 150, 260, 180)])
    person, cup = obs.objects
    assert (person.horizontal, person.size) == ("left", "large")
    assert (cup.horizontal, cup.vertical, cup.size) == ("right", "bottom", "small")
    assert [(r.subject, r.relation, r.object) for r in obs.relations] == [("person#1", "left_of", "cup#1")]
    assert "人在杯子的左边" in describe_objects(obs, "zh")
    assert "person is left of cup" in describe_objects(obs, "en")


def test_no_objects_is_worded_honestly() -> None:
    obs = make_obs([])
    assert "found no objects" in describe_objects(obs, "en")
    assert "未检测到" in describe_objects(obs, "zh")
    assert "there is no" not in describe(obs, "en").lower()


@pytest.mark.parametrize(
    ("score", "verdict", "expected"),
    [(0.03, "safe", "Yes"), (0.95, "unsafe", "No"), (0.5, "uncertain", "Uncertain")],
)
def test_safety_rule(score: float, verdict: str, expected: str) -> None:
    obs = make_obs([], nsfw_score=score, safety_verdict=verdict)
    answer = answer_by_rule("Is this image safe for work?", obs, "en")
    assert answer is not None and answer.source == "rule:safety" and answer.text.startswith(expected)
    assert answer_by_rule("这张图片适合在工作场合浏览吗?", obs, "zh") is not None


def test_safety_rule_does_not_fire_on_other_safety_questions() -> None:
    obs = make_obs([], nsfw_score=0.01, safety_verdict="safe")
    assert answer_by_rule("Is it safe to cross the road here?", obs, "en") is None


def test_colour_rule_splits_background_and_subject() -> None:
    img = np.full((200, 300, 3), 255, np.uint8)
    img[60:140, 100:200] = (220, 30, 30)
    bg, fg = background_and_foreground(img)
    obs = make_obs([], background=bg, foreground=fg)
    assert "red" in answer_by_rule("What colour is the square?", obs, "en").text
    assert "白" in answer_by_rule("背景是什么颜色?", obs, "zh").text


def test_colour_of_a_named_object() -> None:
    obs = make_obs(
        [Box("cup", 0.8, 10, 10, 100, 100)],
        background=NamedColour("white", "白色", (255, 255, 255), 1),
        foreground=NamedColour("white", "白色", (255, 255, 255), 1),
    )
    obs.objects[0].colour = NamedColour("blue", "蓝色", (0, 0, 255), 0.7)
    assert "cup is mostly blue" in answer_by_rule("What color is the cup?", obs, "en").text
    assert "杯子的主要颜色是蓝色" in answer_by_rule("杯子是什么颜色?", obs, "zh").text


def test_reference_range_rule() -> None:
    rows = parse_range_rows("白细胞 WBC 15.2 4.0-10.0 10^9/L\n血红蛋白 Hb 135 115~150 g/L\nDate 2026-03-14")
    assert [(r.verdict) for r in rows] == ["high", "normal"]
    obs = make_obs(
        [],
        text_present=True,
        text_lines=[{"text": "白细胞 WBC 15.2 4.0-10.0 10^9/L", "score": 0.95, "box": [0, 0, 1, 1]}],
    )
    answer = answer_by_rule("白细胞是否正常?", obs, "zh")
    assert answer is not None and "偏高" in answer.text and answer.source == "rule:reference-range"
    assert "above" in answer_by_rule("Is the WBC normal?", obs, "en").text


def test_count_rule() -> None:
    obs = make_obs([Box("person", 0.9, 0, 0, 50, 50), Box("person", 0.7, 100, 0, 150, 50)])
    assert "found 2 person" in answer_by_rule("How many people are there?", obs, "en").text
    assert "2 个人" in answer_by_rule("图中有几个人?", obs, "zh").text
    none = answer_by_rule("How many cats are there?", make_obs([]), "en")
    assert none is not None and none.text.startswith("No cat was detected")  # honest, not "there is none"
    assert "未检测到猫" in answer_by_rule("图里有几只猫?", make_obs([]), "zh").text
    assert answer_by_rule("How many unicorns are there?", make_obs([]), "en") is None  # unknown class: no guess


def test_read_text_rule() -> None:
    lines = [{"text": "ROAD WORK AHEAD", "score": 0.9, "box": [0, 0, 1, 1]}]
    assert answer_by_rule("What does the sign say?", make_obs([], text_lines=lines), "en").text == "ROAD WORK AHEAD"
    assert "No text" in answer_by_rule("What is written here?", make_obs([]), "en").text


def test_free_questions_go_to_the_language_stage() -> None:
    obs = make_obs([Box("person", 0.9, 0, 0, 50, 50)], nsfw_score=0.01, safety_verdict="safe")
    assert answer_by_rule("Is this a good photo for a birthday card?", obs, "en") is None
    assert answer_by_rule("这张图里有什么?", obs, "zh") is None


def test_disagreement_is_reported_not_hidden() -> None:
    objects = place_objects([Box("person", 0.59, 0, 0, 100, 100)], 300, 200, ZH)
    labels = [{"index": 281, "name": "tabby", "name_zh": "虎斑猫", "score": 0.6}]
    messages = find_disagreements(objects, labels)
    assert messages and "person" in messages[0] and "tabby" in messages[0]
    assert find_disagreements(objects, [{"index": 500, "name": "cliff", "name_zh": "", "score": 0.6}]) == []


def test_caption_mentions_subject_without_overclaiming() -> None:
    obs = make_obs([Box("cup", 0.6, 0, 0, 50, 50)])
    obs.labels = [{"index": 967, "name": "espresso", "name_zh": "浓缩咖啡", "score": 0.7}]
    # was "An image that likely shows espresso, with cup detected." (a fragment, no articles)
    assert caption(obs, "en").startswith("An image of a cup; the classifier's best guess for it is an espresso.")
    assert "浓缩咖啡" in caption(obs, "zh")


def test_count_mentions_the_classifier_when_the_detector_missed_the_animal() -> None:
    obs = make_obs([Box("person", 0.59, 0, 0, 100, 100)])
    obs.labels = [{"index": 285, "name": "Egyptian cat", "name_zh": "埃及猫", "score": 0.62}]
    zh = answer_by_rule("图里有几只猫?", obs, "zh").text
    assert "未检测到猫" in zh and "埃及猫" in zh and "至少有一个" in zh
    assert "Egyptian cat (62%)" in answer_by_rule("How many cats are there?", obs, "en").text


def test_range_rule_answers_only_the_named_row() -> None:
    text = "白细胞 WBC\t15.2\t10^9/L\t4.0-10.0\n血红蛋白 HGB\t138\tg/L\t130-175"
    obs = make_obs(
        [], text_present=True, full_text=text, text_lines=[{"text": "白细胞 WBC", "score": 0.9, "box": [0, 0, 1, 1]}]
    )
    answer = answer_by_rule("白细胞结果正常吗?", obs, "zh").text
    assert "偏高" in answer and "血红蛋白" not in answer
    assert "HGB" in answer_by_rule("Is the HGB normal?", obs, "en").text


def test_rules_answer_only_questions_they_answer_whole() -> None:
    """Old code: the colour rule answered "what animal is this, and what colour are its eyes?" with the
    image's colours (neither part), and "what colour is the car?" with no car detected."""
    white = NamedColour("white", "白色", (255, 255, 255), 1)
    obs = make_obs([Box("cup", 0.8, 10, 10, 100, 100)], background=white, foreground=white)
    obs.objects[0].colour = NamedColour("blue", "蓝色", (0, 0, 255), 0.7)
    for question in (
        "What animal is this, and what colour are its eyes?",
        "这是什么动物,它的眼睛是什么颜色?",
        "What colour are the cup and the saucer?",
        "How many cups are there and what are they made of?",
    ):
        assert answer_by_rule(question, obs, "zh" if "\u4e00" <= question[0] <= "\u9fff" else "en") is None, question
    both = answer_by_rule("How many cups are there, and what colour is the cup?", obs, "en")
    assert both is not None and "1 cup" in both.text and "mostly blue" in both.text
    assert both.source == "rule:count+rule:colour"
    assert "背景主要是白色" in answer_by_rule("这个杯子是什么颜色,背景是什么颜色?", obs, "zh").text
    assert "white" in answer_by_rule("What colours are in the image?", obs, "en").text


def test_what_no_part_measures_is_not_observed_and_says_what_was() -> None:
    """Old code: "what colour are its eyes?" went to the language stage with the image's colours, which
    answered with the background's colour; "what is the person doing?" got where the person stands."""
    white = NamedColour("white", "白色", (255, 255, 255), 1)
    obs = make_obs([Box("cup", 0.8, 10, 10, 100, 100), Box("person", 0.9, 150, 10, 290, 190)], background=white)
    obs.foreground = white
    for question, lang, asked in (
        ("What colour are its eyes?", "en", "colour of eyes"),
        ("What colour is the car?", "en", "colour of car"),  # no car detected: not the image's colour
        ("它的眼睛是什么颜色?", "zh", "眼睛的颜色"),
        ("汽车是什么颜色?", "zh", "汽车的颜色"),
        ("What is the person doing?", "en", "what anyone is doing"),
        ("What is the person doing right now, and why?", "en", "why anyone does something"),
        ("Is she running?", "en", "what anyone is doing"),
        ("这个人在做什么?", "zh", "在做什么"),
        ("How old is he?", "en", "age"),
        ("Is the person smiling?", "en", "expression"),
        ("她穿着什么衣服?", "zh", "穿着"),
    ):
        answer = answer_by_rule(question, obs, lang)
        assert answer is not None and answer.source == "rule:not_observed", question
        assert asked in answer.text, (question, answer.text)
        assert ("cup" in answer.text or "杯子" in answer.text) and answer.confidence is None, answer.text
        # a colour question also gets the colours that were measured, named as what they are (the image's)
        measured = "Main colour: white." in answer.text or "主色调:白色。" in answer.text
        assert measured == ("colour" in asked or "颜色" in asked), answer.text
        assert "eyes are" not in answer.text and "is white" not in answer.text
    tie = make_obs([Box("person", 0.9, 0, 0, 100, 190), Box("tie", 0.7, 40, 40, 60, 120)])
    assert answer_by_rule("Is he wearing a tie?", tie, "en") is None  # a tie is a detector class
    assert answer_by_rule("What colour is the tie?", tie, "en") is None  # no colour measured: the LLM says so


def test_an_activity_is_suggested_only_from_seen_objects_and_said_as_a_guess() -> None:
    surfer = make_obs([Box("person", 0.9, 0, 0, 100, 190), Box("surfboard", 0.6, 0, 150, 200, 190)])
    answer = answer_by_rule("What is he doing?", surfer, "en")
    assert answer is not None and "suggest surfing (surfboard 60%)" in answer.text and "guess" in answer.text
    assert "可能在冲浪(surfboard 60%)" in answer_by_rule("他在做什么?", surfer, "zh").text  # ZH has no name for it
    board_only = make_obs([Box("surfboard", 0.6, 0, 150, 200, 190)])
    assert "suggest" not in answer_by_rule("What is it doing?", board_only, "en").text
    plain = make_obs([Box("person", 0.9, 0, 0, 100, 190)])
    assert "suggest" not in answer_by_rule("What is she doing?", plain, "en").text
