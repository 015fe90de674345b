"""GLM's answer format, parsed: ``<think>..</think>``, ``<answer>..</answer>`` and boxes.

GLM-4.xV writes ``<think>thinking</think><answer>answer</answer>`` (the answer tags
are optional) and grounds objects as ``<|begin_of_box|>[x1,y1,x2,y2]<|end_of_box|>``
with coordinates normalised to 0-1000 of the image's width and height (several
boxes may share one tag: ``[[..],[..]]``). Pure Python: the OpenAI-compatible stage
uses it on upstream answers too.

``StreamParser`` splits a stream of text pieces into thinking and answer pieces as
they arrive, holding back only what could be the start of a tag; the visible answer
keeps box coordinates but drops the tags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"
_DROPPED = (ANSWER_OPEN, ANSWER_CLOSE, THINK_CLOSE)
_ALL_TAGS = (THINK_OPEN, *_DROPPED)
_BOX_TAGS = (BOX_OPEN, BOX_CLOSE)
_BOX_RE = re.compile(re.escape(BOX_OPEN) + r"(.*?)" + re.escape(BOX_CLOSE), re.DOTALL)
_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_QUAD_RE = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")
_LABEL_WORDS = 6

Kind = Literal["thinking", "answer"]


@dataclass
class ParsedBox:
    """One grounded box: the model's 0-1000 values and pixels of the original image."""

    label: str
    norm: tuple[float, float, float, float]
    pixels: tuple[float, float, float, float]


@dataclass
class ParsedOutput:
    thinking: str | None
    answer: str
    boxes: list[ParsedBox] = field(default_factory=list)


def _label_before(text: str) -> str:
    """The few words before a box, as its label ("the red cup <box>" -> "the red cup")."""
    tail = re.split(r"[.\n:;!?。：；！？]", text.rstrip(" \t\n:：,，"))[-1]
    words = tail.replace(",", " ").split()
    return " ".join(words[-_LABEL_WORDS:]) or "box"


def parse_boxes(text: str, width: int, height: int) -> list[ParsedBox]:
    """Every box in ``text``; coordinates clamped to 0-1000 and mapped to a width x height image."""
    boxes: list[ParsedBox] = []
    previous_end = 0
    for match in _BOX_RE.finditer(text):
        before = _strip_tags(text[previous_end : match.start()])  # the words since the previous box
        previous_end = match.end()
        for quad in _QUAD_RE.finditer(match.group(1)):
            x1, y1, x2, y2 = (min(1000.0, max(0.0, float(v))) for v in quad.groups())
            x1, x2 = sorted((x1, x2))
            y1, y2 = sorted((y1, y2))
            pixels = (x1 * width / 1000, y1 * height / 1000, x2 * width / 1000, y2 * height / 1000)
            boxes.append(ParsedBox(_label_before(before), (x1, y1, x2, y2), pixels))
    return boxes


def _strip_tags(text: str) -> str:
    for tag in (*_ALL_TAGS, *_BOX_TAGS):
        text = text.replace(tag, "")
    return text


def parse_output(raw: str, width: int | None = None, height: int | None = None) -> ParsedOutput:
    """Split a whole GLM answer; boxes are mapped when the image size is given."""
    parser = StreamParser()
    pieces = parser.feed(raw) + parser.flush()
    thinking = "".join(text for kind, text in pieces if kind == "thinking")
    answer = "".join(text for kind, text in pieces if kind == "answer")
    answer_raw = raw.rsplit(THINK_CLOSE, 1)[-1]  # boxes drawn while thinking are drafts, not the answer
    boxes = parse_boxes(answer_raw, width, height) if width and height else []
    return ParsedOutput(thinking.strip() or None, answer.strip(), boxes)


class StreamParser:
    """Incremental: ``feed(piece)`` returns ``[(kind, text), ...]`` ready to show."""

    def __init__(self) -> None:
        self._pending = ""
        self._kind: Kind = "answer"
        self._started = False  # seen any non-space text yet (a leading <think> opens thinking)
        self.raw: list[str] = []

    def feed(self, piece: str) -> list[tuple[Kind, str]]:
        self.raw.append(piece)
        self._pending += piece
        return self._drain(final=False)

    def flush(self) -> list[tuple[Kind, str]]:
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> list[tuple[Kind, str]]:
        out: list[tuple[Kind, str]] = []
        while self._pending:
            index = self._pending.find("<")
            if index < 0:
                self._emit(out, self._pending)
                self._pending = ""
                break
            if index > 0:
                self._emit(out, self._pending[:index])
                self._pending = self._pending[index:]
            tag = next((t for t in _ALL_TAGS if self._pending.startswith(t)), None)
            if tag is not None:
                self._pending = self._pending[len(tag) :]
                self._on_tag(tag)
                continue
            if not final and any(t.startswith(self._pending) for t in _ALL_TAGS):
                break  # maybe the start of a tag: wait for more text
            self._emit(out, "<")
            self._pending = self._pending[1:]
        return out

    def _on_tag(self, tag: str) -> None:
        if tag == THINK_OPEN and not self._started:
            self._kind = "thinking"
        elif tag == THINK_CLOSE:
            self._kind = "answer"
        self._started = True

    def _emit(self, out: list[tuple[Kind, str]], text: str) -> None:
        if not text:
            return
        if text.strip():
            self._started = True
        if out and out[-1][0] == self._kind:
            out[-1] = (self._kind, out[-1][1] + text)
        else:
            out.append((self._kind, text))


# What a VLM (in-process or behind an OpenAI-compatible server) is asked for a task without a question.
TASK_PROMPTS = {
    "caption": "Describe this image in one or two sentences.",
    "ocr": "Read all the text in this image.",
    "moderate": "Is this image safe for work? Answer yes or no, then say why.",
}


def vlm_prompt(task: str) -> str:
    """The question a VLM gets for ``task`` when the request has none (a caption for unknown tasks)."""
    return TASK_PROMPTS.get(task, TASK_PROMPTS["caption"])
