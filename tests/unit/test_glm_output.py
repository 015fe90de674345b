"""GLM's output format: thinking, answer tags and boxes, whole and streamed piece by piece."""

from __future__ import annotations

import pytest

from flashvl.stages.glm_output import StreamParser, parse_boxes, parse_output

RAW = (
    "<think>The cup is on the left, I think [1,2,3,4].</think>"
    "<answer>The red cup <|begin_of_box|>[100,200,300,400]<|end_of_box|> is left of "
    "the plate <|begin_of_box|>[500, 500, 900, 1000]<|end_of_box|>.</answer>"
)


def test_whole_answer_is_split_into_thinking_answer_and_boxes() -> None:
    out = parse_output(RAW, width=2000, height=1000)
    assert out.thinking == "The cup is on the left, I think [1,2,3,4]."
    assert out.answer == (
        "The red cup <|begin_of_box|>[100,200,300,400]<|end_of_box|> is left of "
        "the plate <|begin_of_box|>[500, 500, 900, 1000]<|end_of_box|>."
    )
    assert [b.norm for b in out.boxes] == [(100, 200, 300, 400), (500, 500, 900, 1000)]
    # 0-1000 of width/height -> pixels of the original 2000x1000 image
    assert out.boxes[0].pixels == (200, 200, 600, 400)
    assert out.boxes[1].pixels == (1000, 500, 1800, 1000)
    assert [b.label for b in out.boxes] == ["The red cup", "is left of the plate"]


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_streamed_in_any_piece_size_gives_the_same_result(size: int) -> None:
    parser = StreamParser()
    pieces = []
    for start in range(0, len(RAW), size):
        pieces += parser.feed(RAW[start : start + size])
    pieces += parser.flush()
    thinking = "".join(t for kind, t in pieces if kind == "thinking")
    answer = "".join(t for kind, t in pieces if kind == "answer")
    whole = parse_output(RAW)
    assert thinking == whole.thinking
    assert answer == whole.answer
    assert not any("think>" in t or "answer>" in t for _, t in pieces)  # no tag fragment ever shown


def test_no_think_block_is_all_answer_and_plain_angle_brackets_survive() -> None:
    out = parse_output("x < 3 and y <b> z")
    assert out.thinking is None
    assert out.answer == "x < 3 and y <b> z"


def test_empty_think_block_from_thinking_off() -> None:
    out = parse_output("<think></think>\n<answer>A cat.</answer>")
    assert out.thinking is None and out.answer == "A cat."


def test_boxes_drawn_while_thinking_are_not_the_answers_boxes() -> None:
    raw = "<think>maybe <|begin_of_box|>[1,1,2,2]<|end_of_box|></think>here <|begin_of_box|>[0,0,500,500]<|end_of_box|>"
    assert [b.norm for b in parse_output(raw, 100, 100).boxes] == [(0, 0, 500, 500)]


def test_several_boxes_in_one_tag_clamped_and_ordered() -> None:
    boxes = parse_boxes("two cats <|begin_of_box|>[[10,20,30,40],[900,900,1200,800]]<|end_of_box|>", 1000, 500)
    assert [b.norm for b in boxes] == [(10, 20, 30, 40), (900, 800, 1000, 900)]
    assert boxes[1].pixels == (900, 400, 1000, 450)
    assert boxes[0].label == "two cats"


def test_malformed_box_is_ignored() -> None:
    assert parse_boxes("<|begin_of_box|>[1,2,3]<|end_of_box|>", 100, 100) == []
