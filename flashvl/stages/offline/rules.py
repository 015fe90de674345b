"""Questions that rules answer exactly, from the observations alone.

A rule fires only when the question is clearly of its kind and the observation
it needs exists; otherwise it returns None and the question goes on to the
language stage. Rules never guess: each answer names the measurement behind it.
The order in ``RULES`` matters: more specific rules come first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from flashvl.stages.offline.describe import describe_objects
from flashvl.stages.offline.scene import Observations
from flashvl.stages.offline.scope import colour_target_known, named_object, not_observed, unobserved_what
from flashvl.text.language import Lang


@dataclass(frozen=True)
class RuleAnswer:
    text: str
    source: str  # "rule:safety", ...
    confidence: float | None


def _has(pattern: str, text: str) -> bool:
    return re.search(pattern, text, re.IGNORECASE) is not None


# ------------------------------------------------------------------ safety

_SAFETY_EN = r"\b(nsfw|sfw|porn\w*|nud(e|ity)|explicit|adult content|safe for work)\b"
_SAFETY_EN_CTX = r"\b(safe|appropriate|inappropriate|offensive)\b.*\b(image|picture|photo|content|this|view)\b"
_SAFETY_ZH = r"(色情|不雅|低俗|裸露|涉黄|违规|敏感|(安全|合适|适合).*(图|内容|浏览|观看|工作|展示))"


def safety_rule(question: str, obs: Observations, lang: Lang) -> RuleAnswer | None:
    asks = _has(_SAFETY_EN, question) or _has(_SAFETY_EN_CTX, question) or _has(_SAFETY_ZH, question)
    if not asks or obs.nsfw_score is None:
        return None
    score, verdict = obs.nsfw_score, obs.safety_verdict
    if lang == "zh":
        text = {
            "safe": f"是的,看起来适合工作场合浏览:Open-NSFW 模型给出的分数为 {score:.2f}(低于阈值即视为安全)。",
            "unsafe": f"否,可能不适合工作场合浏览:Open-NSFW 模型给出的分数为 {score:.2f}(高于阈值即视为不安全)。",
            "uncertain": f"不确定:Open-NSFW 分数为 {score:.2f},介于安全与不安全阈值之间,建议人工复核。",
        }[verdict or "uncertain"]
    else:
        text = {
            "safe": f"Yes, it looks safe for work: the Open-NSFW model scored it {score:.2f} "
            "(below the safe threshold).",
            "unsafe": f"No, it may not be safe for work: the Open-NSFW model scored it {score:.2f} "
            "(above the unsafe threshold).",
            "uncertain": f"Uncertain: the Open-NSFW score is {score:.2f}, between the safe and unsafe "
            "thresholds; a human should review it.",
        }[verdict or "uncertain"]
    confidence = {"safe": 1 - score, "unsafe": score}.get(verdict or "", 0.5)
    return RuleAnswer(text, "rule:safety", round(confidence, 4))


# ------------------------------------------------------------------ colour


NOT_OBSERVED = "rule:not_observed"


def unobserved_rule(question: str, obs: Observations, lang: Lang) -> RuleAnswer | None:
    """Something no part measures (eyes, what someone is doing): "not observed" and what was observed."""
    what = unobserved_what(question, obs, lang)
    return RuleAnswer(not_observed([what], obs, lang), NOT_OBSERVED, None) if what else None


def colour_rule(question: str, obs: Observations, lang: Lang) -> RuleAnswer | None:
    if not (_has(r"\bcolou?rs?\b", question) or _has(r"颜色|什么色|哪种色", question)):
        return None
    if not obs.background or not obs.foreground or not colour_target_known(question, obs):
        return None
    target = named_object(question, obs)
    if target and target.colour:
        c = target.colour
        if lang == "zh":
            return RuleAnswer(f"{target.label_zh}的主要颜色是{c.name_zh}(按检测框内像素统计)。", "rule:colour", c.share)
        return RuleAnswer(
            f"The {target.label} is mostly {c.name} (measured from the pixels in its box).",
            "rule:colour",
            c.share,
        )
    bg, fg = obs.background, obs.foreground
    if _has(r"background|背景", question):
        text = f"背景主要是{bg.name_zh}。" if lang == "zh" else f"The background is mostly {bg.name}."
        return RuleAnswer(text, "rule:colour", round(bg.share, 4))
    if lang == "zh":
        text = (
            f"图像主色调是{bg.name_zh}。"
            if bg.name == fg.name
            else f"主体(画面中央)主要是{fg.name_zh},背景主要是{bg.name_zh}。"
        )
    else:
        text = (
            f"The image is mostly {bg.name}."
            if bg.name == fg.name
            else f"The main subject (centre) is mostly {fg.name}; the background is mostly {bg.name}."
        )
    return RuleAnswer(text, "rule:colour", round(fg.share, 4))


# ------------------------------------------------------------------ reference ranges

_NUM = r"(\d+(?:\.\d+)?)"
# name, value, then a low-high range; a value glued to '-' or '/' is a date or a range, not a result.
_ROW = re.compile(
    rf"^(?P<name>.*?[^\d\s.:：][^\d]*?)[\s:：]+{_NUM}(?![\d.]*\s*[-/~–—～])\s*(?:[↑↓HL*]\s*)?.*?"
    rf"{_NUM}\s*[-~–—～]\s*{_NUM}"
)
_RANGE_Q = r"正常|异常|偏高|偏低|超标|过高|过低|参考|范围|\bnormal\b|\babnormal\b|\bhigh\b|\blow\b|in range|reference"


@dataclass(frozen=True)
class RangeRow:
    name: str
    value: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        return "high" if self.value > self.high else "low" if self.value < self.low else "normal"


def parse_range_rows(text: str) -> list[RangeRow]:
    """Rows like 'WBC 15.2 4.0-10.0 10^9/L' or '白细胞 15.2 ↑ 4.0~10.0'."""
    rows = []
    for line in text.splitlines():
        match = _ROW.search(line.replace("\t", " "))
        if not match:
            continue
        name = match.group("name").strip(" :：\t")
        value, low, high = (float(match.group(i)) for i in (2, 3, 4))
        if low <= high and name:
            rows.append(RangeRow(name, value, low, high))
    return rows


def range_rule(question: str, obs: Observations, lang: Lang) -> RuleAnswer | None:
    if not _has(_RANGE_Q, question) or not obs.text_lines:
        return None
    rows = parse_range_rows(obs.text)
    if not rows:
        return None
    # A row is named when any word of its name ("白细胞", "WBC") appears in the question.
    q = question.lower()
    named = [r for r in rows if any(token.lower() in q for token in r.name.split() if len(token) > 1)]
    chosen = named or rows
    if lang == "zh":
        words = {"high": "高于参考范围(偏高)", "low": "低于参考范围(偏低)", "normal": "在参考范围内(正常)"}
        text = ";".join(f"{r.name} {r.value:g} {words[r.verdict]} {r.low:g}-{r.high:g}" for r in chosen) + "。"
    else:
        words = {
            "high": "is above the reference range",
            "low": "is below the reference range",
            "normal": "is within the reference range",
        }
        text = "; ".join(f"{r.name}: {r.value:g} {words[r.verdict]} {r.low:g}-{r.high:g}" for r in chosen) + "."
    scores = [line["score"] for line in obs.text_lines]
    return RuleAnswer(text, "rule:reference-range", round(min(scores), 4) if scores else None)


# ------------------------------------------------------------------ counting and reading

_PEOPLE = {"people", "persons", "person", "men", "women", "man", "woman", "人"}


def count_rule(question: str, obs: Observations, lang: Lang) -> RuleAnswer | None:
    match = re.search(r"how many (\w+)", question, re.IGNORECASE)
    zh = re.search(r"(?:几|多少)(?:个|只|辆|位|名)?(\w)", question)
    word = (match.group(1).lower() if match else None) or (zh.group(1) if zh else None)
    if not word:
        return None
    from flashvl.stages.offline.detector import COCO_LABELS, COCO_LABELS_ZH

    label = "person" if word in _PEOPLE else None
    for candidate in COCO_LABELS:  # any class the detector knows, detected or not
        if word.rstrip("s") == candidate or word == candidate + "es":
            label = candidate
    zh_names = {zh: en for en, zh in COCO_LABELS_ZH.items()}
    label = label or zh_names.get(word)
    if label is None:
        return None
    found = [o for o in obs.objects if o.label == label]
    scores = ", ".join(f"{o.score:.2f}" for o in found)
    if lang == "zh":
        name = COCO_LABELS_ZH.get(label, label)
        text = (
            f"目标检测器检测到 {len(found)} 个{name}(置信度 {scores});过小或被遮挡的可能未被检出。"
            if found
            else f"目标检测器未检测到{name};这不代表图中一定没有。"
        )
    else:
        text = (
            f"The object detector found {len(found)} {label}(s) (scores {scores}); small or hidden ones may be missed."
            if found
            else f"No {label} was detected; that does not prove there is none."
        )
    if not found and (top := _classifier_hint(obs, label)) is not None:
        text += (
            f"不过图像分类器认为主体可能是{top['name_zh']}({top['score']:.0%}),所以图中很可能至少有一个。"
            if lang == "zh"
            else f" But the image classifier's top label is {top['name']} ({top['score']:.0%}), "
            "so there is likely at least one."
        )
    confidence = min(o.score for o in found) if found else None
    return RuleAnswer(text, "rule:count", confidence)


def _classifier_hint(obs: Observations, label: str) -> dict | None:
    """The classifier's top label when it names the animal the detector missed (cat, dog, bird)."""
    from flashvl.stages.offline.scene import imagenet_group

    if not obs.labels or obs.labels[0]["score"] < 0.3 or label not in {"cat", "dog", "bird"}:
        return None
    top = obs.labels[0]
    return top if imagenet_group(int(top["index"])) == label else None


_READ_EN = (
    r"what (does|do) the (text|sign|label|words?)|read the|what is written|transcribe|\bocr\b|extract (the )?text"
)
_READ_ZH = r"文字是什么|写了什么|写的什么|写着什么|识别文字|提取文字|图中的文字|图片里的文字|图里的文字|上面写"


def read_text_rule(question: str, obs: Observations, lang: Lang) -> RuleAnswer | None:
    if not (_has(_READ_EN, question) or _has(_READ_ZH, question)):
        return None
    if not obs.text_lines:
        text = "未检测到文字(OCR)。" if lang == "zh" else "No text was detected (OCR)."
        return RuleAnswer(text, "rule:ocr", None)
    mean = sum(line["score"] for line in obs.text_lines) / len(obs.text_lines)
    return RuleAnswer(obs.text, "rule:ocr", round(mean, 4))


_OBJECTS_EN = r"\b(what objects|which objects|objects?\b.*\b(where|position|located))|\bwhere (is|are)\b|\bpositions?\b"
_OBJECTS_ZH = r"哪些物体|什么物体|位置关系|在哪|位置"


def objects_rule(question: str, obs: Observations, lang: Lang) -> RuleAnswer | None:
    if not (_has(_OBJECTS_EN, question) or _has(_OBJECTS_ZH, question)):
        return None
    scores = [o.score for o in obs.objects[:8]]
    return RuleAnswer(
        describe_objects(obs, lang), "rule:objects", round(sum(scores) / len(scores), 4) if scores else None
    )


Rule = Callable[[str, Observations, Lang], RuleAnswer | None]
RULES: tuple[Rule, ...] = (
    safety_rule,
    range_rule,
    read_text_rule,
    unobserved_rule,
    colour_rule,
    count_rule,
    objects_rule,
)


_QUESTION_WORD_EN = r"(?:what|which|how|where|who|whom|whose|why|when|is|are|does|do|did|can|could|should|would)"
_QUESTION_WORD_ZH = r"(?:什么|哪|几|多少|谁|为什么|怎么|怎样|如何|是否|吗|呢)"


def question_parts(question: str) -> list[str]:
    """The separate questions in one: "What animal is this, and what colour are its eyes?" has two.
    Splits at a question mark or semicolon with more text after it, and at a comma or "and" that
    starts a new question (a question word follows, and in Chinese the part before has one too)."""
    pieces = [p for p in re.split(r"(?<=[?？;；])\s*", question.strip()) if p.strip()]
    parts: list[str] = []
    for piece in pieces:
        piece = re.sub(rf"(?i)\s*(?:,\s*and|,|\band|\balso)\s+(?={_QUESTION_WORD_EN}\b)", "\x00", piece)
        chunks = re.split(r"[,，、]\s*|(?:还有|以及|并且|另外|同时)", piece.replace("\x00", "，"))
        current = ""
        for chunk in chunks:
            zh_new = re.search(_QUESTION_WORD_ZH, current) and re.search(_QUESTION_WORD_ZH, chunk)
            if current and (zh_new or re.match(rf"(?i)\s*{_QUESTION_WORD_EN}\b", chunk)):
                parts.append(current)
                current = chunk
            else:
                current = f"{current}, {chunk}" if current else chunk
        if current.strip():
            parts.append(current)
    return [p.strip(" ,，") for p in parts if p.strip(" ,，?？")] or [question]


def _first_rule(question: str, obs: Observations, lang: Lang) -> RuleAnswer | None:
    for rule in RULES:
        answer = rule(question, obs, lang)
        if answer is not None:
            return answer
    return None


def answer_by_rule(question: str | None, obs: Observations, lang: Lang) -> RuleAnswer | None:
    """The rule answer to the whole question, or None. A question of several parts is answered by
    rules only when a rule answers every part ("what animal is this, and what colour are its
    eyes?" is not: the colour rule would answer neither part)."""
    if not question:
        return None
    parts = question_parts(question)
    if len(parts) == 1:
        return _first_rule(question, obs, lang)
    answers = [_first_rule(part, obs, lang) for part in parts]
    if any(a is None for a in answers):
        return None
    done = [a for a in answers if a is not None]
    whats = [w for part in parts if (w := unobserved_what(part, obs, lang))]
    if whats:  # one "not observed" sentence for every such part, then the parts rules answered
        measured = [a for a in done if a.source != NOT_OBSERVED]
        done = [RuleAnswer(not_observed(whats, obs, lang), NOT_OBSERVED, None), *measured]
    scores = [a.confidence for a in done if a.confidence is not None]
    return RuleAnswer(  # one rule answering two parts ("which objects? where are they?") says it once
        ("" if lang == "zh" else " ").join(dict.fromkeys(a.text for a in done)),
        "+".join(dict.fromkeys(a.source for a in done)),
        min(scores) if scores else None,
    )


def unmeasured_parts(question: str | None, obs: Observations, lang: Lang) -> list[str]:
    """What the question's parts ask that no part measures, for the language stage's prompt when rules
    do not answer the whole question ("what animal is this, and what colour are its eyes?")."""
    asked = [u for part in question_parts(question) if (u := unobserved_what(part, obs, lang))] if question else []
    return [u.text for u in asked]
