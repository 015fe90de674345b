"""What the offline pipeline measures, and what it does not.

The parts measure: objects of 80 COCO classes (where, how large, the colour inside each box), ImageNet
labels, text (OCR), an NSFW score, and the colours of the whole image, its background and its centre
subject. Nothing measures body parts (eyes, hair, faces), expressions, age, clothing, or what anyone is
doing or why. A question about those gets "not observed" and what was observed instead, never a
measurement of something else ("What colour are her eyes?" must not be answered with the background's
colour, "What is he doing?" not with where he stands).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from flashvl.stages.offline.describe import MIN_LABEL_SCORE, describe_colours, describe_labels, describe_objects
from flashvl.stages.offline.scene import Observations, SceneObject
from flashvl.text.language import Lang

# ------------------------------------------------------------------ colour targets

# What the colour statistics measure: the whole image, its background and its main (centre) subject.
_WHOLE_EN = {
    "image",
    "picture",
    "photo",
    "photograph",
    "it",
    "this",
    "that",
    "background",
    "foreground",
    "subject",
    "main subject",
    "object",
    "thing",
    "shape",
    "square",
    "rectangle",
    "circle",
    "triangle",
    "centre",
    "center",
}
_WHOLE_ZH = re.compile(
    r"^(这张|这幅|这个|那个|整张|整个|整体)?(图片?|图像|照片|画面|背景|主体|前景|它|这|形状|方块|圆形?|方形|正方形|长方形|三角形?|整体)?$"
)
_COLOUR_TARGET_EN = re.compile(
    r"colou?rs?\s+(?:is|are|of)\s+(?:the\s+|its\s+|his\s+|her\s+|their\s+|this\s+|that\s+|these\s+|those\s+)?"
    r"(?P<target>[a-z][a-z ]*?)\s*(?:[?.!,;]|$|\b(?:in|on|at)\b)",
    re.IGNORECASE,
)
_COLOUR_TARGET_ZH = re.compile(r"(?P<target>[\u4e00-\u9fff]*?)(?:是|呈)?(?:什么颜色|什么色|哪种颜色|哪种色|的颜色)")
_COLOUR_Q = re.compile(r"\bcolou?rs?\b|颜色|什么色|哪种色", re.IGNORECASE)


def named_object(question: str, obs: Observations) -> SceneObject | None:
    """The detected object the question names ("the dog", "狗"), if any."""
    q = question.lower()
    for obj in obs.objects:
        if re.search(rf"\b{re.escape(obj.label)}s?\b", q) or obj.label_zh in question:
            return obj
    return None


def _colour_target(question: str) -> str | None:
    """The thing whose colour is asked for, as written ("her eyes" -> "eyes"), or None for the image."""
    if en := _COLOUR_TARGET_EN.search(question):
        return re.sub(r"^(?:in|on) (?:the |this )?", "", en.group("target").strip().lower())
    if zh := _COLOUR_TARGET_ZH.search(question):
        target = re.sub(r"^(图中|图里|图片中|图片里|画面中|画面里)", "", zh.group("target")).removesuffix("的")
        return re.sub(r"^(她|他|它|他们|她们)的?", "", target) or None
    return None


def colour_target_known(question: str, obs: Observations) -> bool:
    """The question asks for the colour of something the measurements cover: the whole image, its
    background or subject, or a detected object. "What colour are its eyes?" is not (no part measures
    eyes), nor "What colour is the car?" when no car was detected."""
    en = _COLOUR_TARGET_EN.search(question)
    zh = _COLOUR_TARGET_ZH.search(question)
    if (en and re.search(r"\band\b", en.group("target"))) or (zh and re.search("[和与跟]", zh.group("target"))):
        return False  # two things: one colour would answer half the question
    if named_object(question, obs):
        return True
    target = _colour_target(question)
    if target is None:
        return True  # "What is the main colour?", "主色调是什么颜色": the image as a whole
    return target in _WHOLE_EN or _WHOLE_ZH.match(target) is not None


# ------------------------------------------------------------------ never measured

_ACTIVITY_EN = re.compile(
    r"\b(doing|do(es)? (he|she|they|it|the \w+) do|activity|activities|action|actions|busy with|up to)\b"
    r"|\b(is|are) (he|she|they|it|someone|anyone|the \w+) (running|walking|playing|eating|drinking|sleeping|"
    r"working|cooking|reading|writing|dancing|singing|talking|jumping|sitting|standing|looking|waiting)\b",
    re.IGNORECASE,
)
_ACTIVITY_ZH = re.compile(r"在做什么|在干什么|在干嘛|在干啥|做什么|干什么|正在做|在忙|什么动作|什么活动|在进行")
_INTENT_ONLY = re.compile(r"^\s*(and\s+)?why\s*[?.!]*\s*$|^\s*(以及|还有)?为什么\s*[?？]*\s*$", re.IGNORECASE)
_ATTRIBUTE_EN = re.compile(
    r"\b(eyes?|hair|hairstyle|beard|skin|lips?|teeth|face|facial|expression|smil\w*|mood|emotions?|feel\w*|"
    r"age|old is|how old|wearing|wears?|clothes|clothing|shirt|dress|jacket|shoes|hat)\b",
    re.IGNORECASE,
)
_ATTRIBUTE_ZH = re.compile(
    r"眼睛|眼珠|头发|发型|胡子|皮肤|嘴唇|牙齿|脸|表情|微笑|在笑|情绪|心情|年龄|几岁|穿着|穿的|衣服|上衣|裙子|外套|鞋|帽子"
)
_PEOPLE = {"person"}


# What a seen object suggests someone is doing (COCO detector classes and ImageNet labels). Only a
# suggestion, said as one: no part recognises actions.
_ACTIVITY_HINTS: dict[str, tuple[str, str]] = {
    "tripod": ("photography", "摄影(拍照)"),
    "reflex camera": ("photography", "摄影(拍照)"),
    "Polaroid camera": ("photography", "摄影(拍照)"),
    "surfboard": ("surfing", "冲浪"),
    "skis": ("skiing", "滑雪"),
    "ski": ("skiing", "滑雪"),
    "snowboard": ("snowboarding", "滑雪板运动"),
    "skateboard": ("skateboarding", "玩滑板"),
    "tennis racket": ("playing tennis", "打网球"),
    "baseball bat": ("playing baseball", "打棒球"),
    "baseball glove": ("playing baseball", "打棒球"),
    "sports ball": ("playing with a ball", "玩球"),
    "frisbee": ("playing frisbee", "玩飞盘"),
    "kite": ("flying a kite", "放风筝"),
    "bicycle": ("cycling", "骑自行车"),
    "laptop": ("using a laptop", "使用笔记本电脑"),
    "keyboard": ("using a computer", "使用电脑"),
    "cell phone": ("using a phone", "使用手机"),
    "book": ("reading", "阅读"),
    "toothbrush": ("brushing teeth", "刷牙"),
    "pizza": ("eating", "吃东西"),
    "sandwich": ("eating", "吃东西"),
    "fork": ("eating", "吃东西"),
}


def activity_hint(obs: Observations, lang: Lang) -> str:
    """What the seen objects suggest a detected person is doing, said as a suggestion, or ''."""
    if not any(o.label in _PEOPLE for o in obs.objects):
        return ""
    zh = lang == "zh"
    seen = [(o.label, o.label_zh if zh else o.label, o.score) for o in obs.objects] + [
        (str(label["name"]), str(label.get("name_zh") if zh else label["name"]), float(label["score"]))
        for label in obs.labels
        if label["score"] >= MIN_LABEL_SCORE
    ]
    hints: dict[str, list[str]] = {}
    for name, shown, score in seen:
        if name in _ACTIVITY_HINTS:
            hints.setdefault(_ACTIVITY_HINTS[name][1 if zh else 0], []).append(f"{shown} {score:.0%}")
    if not hints:
        return ""
    if lang == "zh":
        return "看到的物体提示可能在" + "或".join(f"{a}({'、'.join(w)})" for a, w in hints.items()) + ",但这只是推测。"
    listed = " or ".join(f"{a} ({', '.join(w)})" for a, w in hints.items())
    return f"The objects seen suggest {listed}, but that is a guess from objects, not an observed action."


def _observed_instead(obs: Observations, lang: Lang, activity: bool = False, colour: bool = False) -> str:
    """Objects and labels; for an activity, what the objects suggest; for a colour, the measured colours."""
    pieces = [
        describe_objects(obs, lang),
        describe_labels(obs, lang),
        activity_hint(obs, lang) if activity else "",
        describe_colours(obs, lang) if colour else "",
    ]
    return ("" if lang == "zh" else " ").join(p for p in pieces if p)


@dataclass(frozen=True)
class Unobserved:
    """What one question part asks that no part measures: its kind and how to say it."""

    kind: Literal["intent", "activity", "colour", "attribute"]
    text: str  # "the colour of eyes (...)"


def unobserved_what(question: str, obs: Observations, lang: Lang) -> Unobserved | None:
    """What one question part asks that no part measures, or None when the parts may have measured it."""
    zh = lang == "zh"
    if _INTENT_ONLY.match(question):
        return Unobserved("intent", "人为什么这样做" if zh else "why anyone does something")
    if _ACTIVITY_EN.search(question) or _ACTIVITY_ZH.search(question):
        text = "人或物在做什么(没有部件识别动作)" if zh else "what anyone is doing (no part recognises actions)"
        return Unobserved("activity", text)
    if _COLOUR_Q.search(question):
        if colour_target_known(question, obs):
            return None
        target = _colour_target(question) or ("它" if zh else "that")
        if re.search(r"\band\b|[和与跟]", target):
            return None  # two things, one maybe measured: the language stage answers from the observations
        if zh:
            return Unobserved("colour", f"{target}的颜色(只统计整张图、背景、画面中央和每个检测框内的颜色)")
        return Unobserved(
            "colour",
            f"the colour of {target} (colours are measured only for the whole image, its background and "
            "centre, and inside each detected object's box)",
        )
    m = _ATTRIBUTE_EN.search(question) or _ATTRIBUTE_ZH.search(question)
    if m is None:
        return None
    named = named_object(question, obs)
    if named is not None and named.label not in _PEOPLE:
        return None  # "is he wearing a tie?": a tie is a detector class, the parts may have seen it
    if zh:
        return Unobserved("attribute", f"{m.group(0)}(没有部件测量脸、身体、衣着、年龄或表情)")
    word = m.group(0).lower()
    noun = "age" if "old" in word else "clothing" if word.startswith("wear") else word
    noun = "expression" if noun.startswith(("smil", "feel", "emotion", "mood")) else noun
    return Unobserved("attribute", f"{noun} (no part measures faces, bodies, clothing, age or expressions)")


def not_observed(asked: list[Unobserved], obs: Observations, lang: Lang) -> str:
    """The answer to question parts that asked only for what no part measures: it says so, and what
    was observed instead."""
    kinds = {u.kind for u in asked}
    instead = _observed_instead(obs, lang, activity="activity" in kinds, colour="colour" in kinds)
    if lang == "zh":
        return f"无法从图片判断:未观察到{'；'.join(u.text for u in asked)}。观察到的是:{instead}"
    return f"Cannot tell from the image: not observed: {'; '.join(u.text for u in asked)}. Observed instead: {instead}"
