"""Plain-language accounts of the observations, in English or Chinese.

Two forms: ``describe`` (the whole account: the offline caption, and what the
language stage reads) and ``describe_objects`` (objects and where they are).
Wording stays honest: "none detected", never "there is none"; every claim
names the part that made it and its score.
"""

from __future__ import annotations

from flashvl.stages.offline.scene import Observations, SceneObject
from flashvl.text.language import Lang

_POS_ZH = {
    "left": "左侧",
    "centre": "中间",
    "right": "右侧",
    "top": "上方",
    "middle": "中部",
    "bottom": "下方",
}
_SIZE_ZH = {"large": "大", "medium": "中等", "small": "小"}
_REL_EN = {
    "left_of": "is left of",
    "right_of": "is right of",
    "above": "is above",
    "below": "is below",
    "overlaps": "overlaps",
}
_REL_ZH = {
    "left_of": "在{b}的左边",
    "right_of": "在{b}的右边",
    "above": "在{b}的上方",
    "below": "在{b}的下方",
    "overlaps": "与{b}重叠",
}
MAX_LISTED_OBJECTS = 8
MIN_LABEL_SCORE = 0.12


def _where_en(o: SceneObject) -> str:
    if o.horizontal == "centre" and o.vertical == "middle":
        return "centre"
    if o.vertical == "middle":
        return o.horizontal
    return f"{o.vertical} {o.horizontal}" if o.horizontal != "centre" else o.vertical


def _where_zh(o: SceneObject) -> str:
    if o.horizontal == "centre" and o.vertical == "middle":
        return "画面中央"
    return (
        "画面"
        + (_POS_ZH[o.vertical] if o.vertical != "middle" else "")
        + (_POS_ZH[o.horizontal] if o.horizontal != "centre" else "")
    )


def _name(obs: Observations, ref: str, lang: Lang) -> str:
    for o in obs.objects:
        if o.ref == ref:
            label = o.label_zh if lang == "zh" else o.label
            same = sum(1 for x in obs.objects if x.label == o.label)
            return f"{label}{ref.split('#')[1]}" if same > 1 else label
    return ref


def describe_objects(obs: Observations, lang: Lang) -> str:
    """Objects with positions, sizes and pairwise relations."""
    listed = obs.objects[:MAX_LISTED_OBJECTS]
    if not listed:
        return (
            "目标检测器未检测到已知类别(COCO 80类)的物体。"
            if lang == "zh"
            else "The object detector found no objects of its 80 COCO classes."
        )
    if lang == "zh":
        parts = [f"{_name(obs, o.ref, lang)}(置信度{o.score:.2f},{_where_zh(o)},{_SIZE_ZH[o.size]})" for o in listed]
        text = "目标检测器检测到:" + "、".join(parts) + "。"
        rels = [
            f"{_name(obs, r.subject, lang)}{_REL_ZH[r.relation].format(b=_name(obs, r.object, lang))}"
            for r in obs.relations
        ]
        if rels:
            text += "位置关系:" + ";".join(rels) + "。"
    else:
        parts = [f"{_name(obs, o.ref, lang)} ({o.score:.2f}, {_where_en(o)}, {o.size})" for o in listed]
        text = "The object detector found: " + "; ".join(parts) + "."
        rels = [
            f"{_name(obs, r.subject, lang)} {_REL_EN[r.relation]} {_name(obs, r.object, lang)}" for r in obs.relations
        ]
        if rels:
            text += " Positions: " + "; ".join(rels) + "."
    if len(obs.objects) > len(listed):
        more = len(obs.objects) - len(listed)
        text += f"(另有{more}个物体未列出)" if lang == "zh" else f" ({more} more not listed.)"
    return text


def _labels(obs: Observations, lang: Lang) -> str:
    kept = [label for label in obs.labels if label["score"] >= MIN_LABEL_SCORE][:3]
    if not kept:
        return ""
    if lang == "zh":
        return (
            "图像分类器(ImageNet)认为可能是:"
            + "、".join(f"{label['name_zh']}({label['score']:.0%})" for label in kept)
            + "。"
        )
    return (
        "Likely scene/object labels (ImageNet classifier): "
        + ", ".join(f"{label['name']} ({label['score']:.0%})" for label in kept)
        + "."
    )


def _text(obs: Observations, lang: Lang, max_chars: int = 600) -> str:
    if not obs.text_lines:
        return "未检测到文字。" if lang == "zh" else "No text detected."
    text = obs.text
    if len(text) > max_chars:
        text = text[:max_chars] + "…"
    return ("图中文字(OCR):\n" if lang == "zh" else "Text in the image (OCR):\n") + text


def _safety(obs: Observations, lang: Lang) -> str:
    if obs.nsfw_score is None:
        return ""
    verdict = obs.safety_verdict or "uncertain"
    if lang == "zh":
        word = {"safe": "是", "unsafe": "否", "uncertain": "不确定"}[verdict]
        return f"适合工作场合(安全)浏览:{word}(Open-NSFW 分数 {obs.nsfw_score:.2f})。"
    word = {"safe": "yes", "unsafe": "no", "uncertain": "uncertain"}[verdict]
    return f"Safe for work: {word} (Open-NSFW score {obs.nsfw_score:.2f})."


def _colours(obs: Observations, lang: Lang) -> str:
    if not obs.background or not obs.foreground:
        return ""
    bg, fg = obs.background, obs.foreground
    if lang == "zh":
        if bg.name == fg.name:
            return f"主色调:{bg.name_zh}。"
        return f"背景颜色:{bg.name_zh};主体颜色:{fg.name_zh}。"
    if bg.name == fg.name:
        return f"Main colour: {bg.name}."
    return f"Background colour: {bg.name}; main subject colour: {fg.name}."


def describe(obs: Observations, lang: Lang) -> str:
    """The full account, one fact per sentence, for people and for the language stage."""
    head = f"图像尺寸 {obs.width}x{obs.height}。" if lang == "zh" else f"Image size {obs.width}x{obs.height}."
    pieces = [
        head,
        describe_objects(obs, lang),
        _labels(obs, lang),
        _colours(obs, lang),
        _text(obs, lang),
        _safety(obs, lang),
    ]
    if obs.disagreements:
        pieces.append(
            ("各部件结论不一致:" if lang == "zh" else "The parts disagree: ") + "; ".join(obs.disagreements) + "."
        )
    return "\n".join(p for p in pieces if p)


def caption(obs: Observations, lang: Lang) -> str:
    """A short caption: the main subject, the main objects, text and colour, no scores."""
    labels = [label for label in obs.labels if label["score"] >= 0.2][:1]
    objects = obs.objects[:4]
    if lang == "zh":
        parts = []
        if labels:
            parts.append(f"可能是{labels[0]['name_zh']}的图像")
        if objects:
            names = "、".join(dict.fromkeys(o.label_zh for o in objects))
            parts.append(f"检测到{names}")
        if obs.text_lines:
            parts.append("含有文字")
        if obs.foreground:
            parts.append(f"主色调为{obs.foreground.name_zh}")
        return (",".join(parts) or "未能识别出明确的物体") + "。"
    parts = []
    if labels:
        parts.append(f"An image that likely shows {labels[0]['name']}")
    if objects:
        names = ", ".join(dict.fromkeys(o.label for o in objects))
        parts.append(f"with {names} detected" if parts else f"An image with {names} detected")
    if obs.text_lines:
        parts.append("containing text")
    if obs.foreground:
        parts.append(f"mostly {obs.foreground.name}")
    if not parts:
        return "An image in which no known object was recognised."
    return ", ".join(parts) + "."
