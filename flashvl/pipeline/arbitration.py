"""Noticing when the eyes and the brain disagree, and what to do about it.

Checks (each gives a reason a person can read):
- ``named_object``: the answer talks about an object (COCO vocabulary, people words)
  that the vision stage did not report, and does not negate it;
- ``negation``: the answer says an object is absent/not there while the vision stage
  detected it;
- ``count``: the answer states a number of an object that differs from the detected count;
- ``text_number``: a question about a quantity in the text (a price, a total, a table cell) is
  answered with a number that the line (and column) the question names does not give, nor a
  multiple or sum of it (a total computed from the wrong menu line, a value from the wrong column);
- ``low_similarity``: embedding cosine(description, answer) under a threshold calibrated
  on ``data/arbitration_pairs.jsonl`` (``python -m flashvl.pipeline.arbitration``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
PAIRS = DATA / "arbitration_pairs.jsonl"
THRESHOLD_FILE = DATA / "arbitration_threshold.json"
NUMBERS_EN = {
    "one": 1,
    "a single": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
NUMBERS_ZH = {
    "一": 1,
    "两": 2,
    "二": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
    "十": 10,
}
PERSON_EN = [
    "person",
    "people",
    "man",
    "men",
    "woman",
    "women",
    "boy",
    "boys",
    "girl",
    "girls",
    "child",
    "children",
    "kid",
    "kids",
    "pedestrian",
    "pedestrians",
    "someone",
    "persons",
]
PERSON_ZH = ["男人", "女人", "男孩", "女孩", "孩子", "行人", "人物", "一个人", "两个人", "有人"]
SINGLE_CHARACTER_NAMES = {"猫", "狗", "牛", "羊", "鸟", "熊"}  # not 马 (马路) or 人 (too common)
NEGATION_BEFORE = re.compile(
    r"(\bno\b|\bnot\b|\bwithout\b|\bnone\b|\bany\b|未检测到|没有|未发现|不存在|无)[^.。,,;;]{0,24}$",
    re.IGNORECASE,
)


@dataclass
class Conflict:
    kind: str  # named_object | negation | count | text_number | low_similarity
    label: str | None
    detail: str


def _vocabulary() -> dict[str, str]:
    """Surface word -> COCO label (English words and plurals, Chinese names of 2+ characters)."""
    from flashvl.stages.offline.detector import COCO_LABELS_ZH

    vocab: dict[str, str] = {}
    for label, zh in COCO_LABELS_ZH.items():
        vocab[label] = label
        vocab[label + ("es" if label.endswith(("s", "h")) else "s")] = label
        if len(zh) >= 2 or zh in SINGLE_CHARACTER_NAMES:
            vocab[zh] = label
    for word in PERSON_EN + PERSON_ZH:
        vocab[word] = "person"
    return vocab


def _mentions(text: str, vocab: dict[str, str]) -> list[tuple[str, str, int]]:
    """(word, label, position) for every vocabulary word in ``text``."""
    found = []
    for word, label in vocab.items():
        pattern = re.escape(word) if re.search(r"[\u4e00-\u9fff]", word) else rf"\b{re.escape(word)}\b"
        for match in re.finditer(pattern, text, re.IGNORECASE):
            found.append((word, label, match.start()))
    return found


def _stated_counts(text: str, vocab: dict[str, str]) -> list[tuple[str, int]]:
    counts = []
    for word, label, position in _mentions(text, vocab):
        before = text[max(0, position - 12) : position].lower()
        en = re.search(r"(\d+|" + "|".join(NUMBERS_EN) + r")\s+$", before)
        zh = re.search(r"(\d+|[一两二三四五六七八九十])\s*[个只辆张位名条台把头匹架艘]?$", before)
        if en:
            counts.append((label, int(en.group(1)) if en.group(1).isdigit() else NUMBERS_EN[en.group(1)]))
        elif zh and re.search(r"[\u4e00-\u9fff]", word):
            counts.append((label, int(zh.group(1)) if zh.group(1).isdigit() else NUMBERS_ZH[zh.group(1)]))
    return counts


# ------------------------------------------------------------------ numbers read from the text

_NUMBER = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d])|(?<![\d.])\d+(?:\.\d+)?")
_QUANTITY_QUESTION = re.compile(
    r"\b(how (much|many)|total|price|cost|amount|score|value|fee|charge|rate|sum|balance)\b|"
    r"多少|几|金额|价格|总计|合计|总共|一共|成绩|分数|数值|费用|价钱",
    re.IGNORECASE,
)
_CJK = re.compile(r"[\u4e00-\u9fff]+")
# A person word next to text the OCR read ("the person named Zhang Wei", "收款人李娜") is about a name
# on the page, not a claim that someone is in the picture.
_NAME_WINDOW = 40


def _numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in _NUMBER.findall(text)]


def _words(text: str) -> list[str]:
    """Latin words of 2+ letters (lower case) and every 2-character piece of Chinese runs."""
    words = [w.lower().removesuffix("s") if len(w) > 3 else w.lower() for w in re.findall(r"[A-Za-z]{2,}", text)]
    for run in _CJK.findall(text):
        words += [run[i : i + 2] for i in range(max(1, len(run) - 1))]
    return words


def _question_numbers(question: str) -> list[float]:
    found = _numbers(question)
    lowered = question.lower()
    found += [float(v) for w, v in NUMBERS_EN.items() if re.search(rf"\b{w}\b", lowered)]
    found += [float(v) for w, v in NUMBERS_ZH.items() if re.search(rf"{w}(?=[个只杯份张瓶件本位名条台]|$)", question)]
    return found


def _cells(line: str) -> tuple[str, list[float]]:
    """A row's label (its words) and its numbers, in order."""
    return _NUMBER.sub(" ", line).strip(), _numbers(line)


def expected_numbers(question: str, lines: list[str]) -> set[float] | None:
    """The numbers the text gives for what the question names: the cell at the named row and
    column of a table (the header is the nearest line above without numbers and with one cell per
    number, or one more for the row's label), else every number on the named rows; None when the
    question names no row."""
    asked = set(_words(question))
    rows = [_cells(line) for line in lines]
    values: set[float] = set()
    for index, (label, nums) in enumerate(rows):
        if not nums or not set(_words(label)) & asked:
            continue
        column = None
        header = next(
            (
                above.split()
                for above, above_nums in reversed(rows[:index])
                if not above_nums and len(above.split()) in (len(nums), len(nums) + 1)
            ),
            None,
        )
        if header:
            hits = [i for i, name in enumerate(header) if set(_words(name)) & asked]
            offset = len(header) - len(nums)  # a leading header cell names the label column
            if len(hits) == 1 and 0 <= hits[0] - offset < len(nums):
                column = hits[0] - offset
        values |= {nums[column]} if column is not None else set(nums)
    return values or None


def _derivable(number: float, values: set[float], factors: list[float]) -> bool:
    candidates = set(values) | {v * f for v in values for f in factors} | {sum(values)}
    return any(abs(number - c) < 0.005 + 1e-6 * abs(c) for c in candidates)


class Arbiter:
    def __init__(self, threshold: float | None = None, embed: Any = None, min_score: float = 0.45) -> None:
        if threshold is None:
            threshold = json.loads(THRESHOLD_FILE.read_text())["threshold"]
        self.threshold = float(threshold)
        self.min_score = min_score  # detections below this score do not count as "seen" for negations
        self._embed = embed
        self._vocab = _vocabulary()

    def similarity(self, description: str, answer: str) -> float:
        if self._embed is None:
            from flashvl.pipeline.embedding import Embedder

            self._embed = Embedder()
        vectors = self._embed([description, answer])
        return float(vectors[0] @ vectors[1])

    def check(
        self,
        observations: dict[str, Any],
        description: str,
        answer: str,
        question: str | None = None,
        similarity: bool = True,
    ) -> list[Conflict]:
        """Conflicts between ``answer`` and what the vision stage reported (``similarity=False``
        skips the embedding check, which never flags an answer by itself)."""
        text = observations.get("text", {})
        lines = (text.get("full_text") or "\n".join(line["text"] for line in text.get("lines", []))).splitlines()
        names = _names("\n".join(lines))
        detected: dict[str, int] = {}
        confident: set[str] = set()
        for obj in observations.get("objects", []):
            detected[obj["label"]] = detected.get(obj["label"], 0) + 1
            if obj.get("score", 0) >= self.min_score:
                confident.add(obj["label"])
        seen_text = (description + "\n" + "\n".join(lines)).lower()
        conflicts: list[Conflict] = []
        flagged: set[tuple[str, str | None]] = set()

        def add(conflict: Conflict) -> None:
            if (conflict.kind, conflict.label) not in flagged:
                flagged.add((conflict.kind, conflict.label))
                conflicts.append(conflict)

        for word, label, position in _mentions(answer, self._vocab):
            negated = bool(NEGATION_BEFORE.search(answer[:position]))
            if negated and label in confident:
                add(
                    Conflict(
                        "negation",
                        label,
                        f"the answer says no '{word}', but the vision stage detected {detected[label]} {label}",
                    )
                )
            elif (
                not negated
                and label not in detected
                and word.lower() not in seen_text
                and label not in seen_text  # "pizzas" in the answer, "Pizza Palace" in the text
                and not (label == "person" and _near_a_name(answer, position, names))
            ):
                add(
                    Conflict(
                        "named_object",
                        label,
                        f"the answer mentions '{word}', which the vision stage did not report",
                    )
                )
        for label, stated in _stated_counts(answer, self._vocab):
            if label in detected and detected[label] != stated:
                add(
                    Conflict(
                        "count",
                        label,
                        f"the answer says {stated} {label}, the vision stage counted {detected[label]}",
                    )
                )
        if question and lines and _QUANTITY_QUESTION.search(question):
            expected = expected_numbers(question, lines)
            if expected is None:  # no row named: the answer's number should at least be in the text
                every = {n for line in lines for n in _numbers(line)}
                expected = every | {a + b for a in every for b in every} if every else None
            asked = _question_numbers(question)
            given = [n for n in _numbers(answer) if not any(abs(n - q) < 1e-9 for q in asked)]
            wrong = [n for n in given if expected is not None and not _derivable(n, expected, asked)]
            if expected is not None and given and len(wrong) == len(given):
                add(
                    Conflict(
                        "text_number",
                        None,
                        f"the answer says {', '.join(f'{n:g}' for n in wrong)}, but the text gives "
                        f"{', '.join(f'{n:g}' for n in sorted(expected))} for what the question names",
                    )
                )
        if similarity and description.strip() and answer.strip():
            score = self.similarity(description, answer)
            if score < self.threshold:
                add(
                    Conflict(
                        "low_similarity",
                        None,
                        f"answer/description similarity {score:.2f} is under {self.threshold:.2f}",
                    )
                )
        return conflicts


def _names(text: str) -> set[str]:
    """What could be a name in the text: capitalised words, and Chinese runs of 2-3 characters
    standing alone (a cell, or after a colon: "收款人:李娜", "张三 85 90 78")."""
    latin = set(re.findall(r"\b[A-Z][a-z]+\b", text))
    return latin | {run for run in _CJK.findall(text) if 2 <= len(run) <= 3} - _PERSON_WORDS


def _near_a_name(answer: str, position: int, names: set[str]) -> bool:
    """A name the OCR read appears next to the word at ``position`` ("a woman named Li Na")."""
    near = answer[max(0, position - _NAME_WINDOW) : position + _NAME_WINDOW]
    return any((name in near) if not name.isascii() else re.search(rf"\b{name}\b", near) for name in names)


_PERSON_WORDS = set(PERSON_EN) | set(PERSON_ZH)


def needs_review(conflicts: list[Conflict]) -> bool:
    """What the policy flags when nothing settles a conflict: any conflict but low similarity."""
    return any(c.kind != "low_similarity" for c in conflicts)


def targeted_question(conflict: Conflict, lang: str) -> str | None:
    """What to ask the vision stage again to settle one conflict."""
    if conflict.label is None:
        return None
    if lang == "zh":
        from flashvl.stages.offline.detector import COCO_LABELS_ZH

        return f"图中有几个{COCO_LABELS_ZH.get(conflict.label, conflict.label)}?"
    return f"How many {conflict.label}s are there?"


def reask_supports_answer(conflict: Conflict, reask_text: str, answer: str) -> bool:
    """Does the vision stage's answer to the targeted question side with the language stage?"""
    text = reask_text.lower()
    negative = re.search(r"\b(no|none|not detected|0)\b|未检测到|没有|0 ?个", text) is not None
    if conflict.kind == "named_object":
        return not negative
    if conflict.kind == "negation":
        return negative
    if conflict.kind == "count":
        numbers = {int(n) for n in re.findall(r"\d+", text)}
        stated = {int(n) for n in re.findall(r"\d+", answer)}
        return bool(numbers & stated)
    return False


# ------------------------------------------------------------------ calibration


def calibrate(pairs: list[dict[str, Any]], embed: Any) -> tuple[float, float, list[float]]:
    """The cosine threshold best separating consistent from inconsistent pairs, its accuracy, the scores."""
    arbiter = Arbiter(threshold=0.0, embed=embed)
    scores = [arbiter.similarity(p["description"], p["answer"]) for p in pairs]
    labels = np.array([p["consistent"] for p in pairs])
    best = (0.0, 0.0)
    for candidate in sorted(scores):
        accuracy = float(((np.array(scores) >= candidate) == labels).mean())
        if accuracy > best[1]:
            best = (candidate, accuracy)
    # the midpoint between the chosen score and the next lower one: a margin on both sides
    lower = [s for s in scores if s < best[0]]
    threshold = (best[0] + max(lower)) / 2 if lower else best[0]
    return round(threshold, 4), best[1], scores


def main() -> None:
    from flashvl.pipeline.embedding import Embedder

    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    threshold, accuracy, _ = calibrate(pairs, Embedder(threads=2))
    THRESHOLD_FILE.write_text(
        json.dumps({"threshold": threshold, "pairs": len(pairs), "accuracy": round(accuracy, 4)}) + "\n"
    )
    print(f"threshold {threshold} separates {len(pairs)} pairs with accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
