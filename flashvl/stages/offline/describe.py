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


def describe_labels(obs: Observations, lang: Lang) -> str:
    """The classifier's likely labels (those above MIN_LABEL_SCORE), or an empty string."""
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


def describe_colours(obs: Observations, lang: Lang) -> str:
    """The measured colours: of the whole image, or of its background (border) and centre subject."""
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
        describe_labels(obs, lang),
        describe_colours(obs, lang),
        _text(obs, lang),
        _safety(obs, lang),
    ]
    if obs.disagreements:
        pieces.append(
            ("各部件结论不一致:" if lang == "zh" else "The parts disagree: ") + "; ".join(obs.disagreements) + "."
        )
    return "\n".join(p for p in pieces if p)


DOCUMENT_MIN_CHARS = 40  # as much text as this, and the image is a document (a page, a screenshot)
_NUMBERS_EN = ["no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_NUMBERS_ZH = ["零", "一", "两", "三", "四", "五", "六", "七", "八", "九", "十"]
_PLURAL_EN = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis"}
_MEASURE_ZH = {
    "person": "个",
    "cat": "只",
    "dog": "只",
    "bird": "只",
    "sheep": "只",
    "bear": "只",
    "giraffe": "只",
    "horse": "匹",
    "zebra": "匹",
    "cow": "头",
    "elephant": "头",
    "car": "辆",
    "bus": "辆",
    "truck": "辆",
    "bicycle": "辆",
    "motorcycle": "辆",
    "train": "列",
    "airplane": "架",
    "boat": "艘",
    "book": "本",
    "laptop": "台",
    "tv": "台",
    "chair": "把",
    "umbrella": "把",
    "knife": "把",
    "bottle": "瓶",
}


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _counted_en(label: str, n: int) -> str:
    if n == 1:
        return _a(label)
    plural = _PLURAL_EN.get(label) or label + ("es" if label.endswith(("s", "sh", "ch", "x")) else "s")
    return f"{_NUMBERS_EN[n] if n < len(_NUMBERS_EN) else n} {plural}"


def _counted_zh(label: str, name: str, n: int) -> str:
    return f"{_NUMBERS_ZH[n] if n < len(_NUMBERS_ZH) else n}{_MEASURE_ZH.get(label, '个')}{name}"


def _listed(items: list[str], lang: Lang) -> str:
    if lang == "zh":
        return "、".join(items[:-1]) + "和" + items[-1] if len(items) > 1 else items[0]
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def _quoted(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def caption(obs: Observations, lang: Lang) -> str:
    """A short caption in full sentences, from the observations: what kind of image it is (a
    document, or a picture of what the detector and classifier found), its text and its colours.
    No scores; nothing the parts did not report."""
    from flashvl.text.language import detect_language

    text = obs.text.strip()
    lines = [line["text"].strip() for line in obs.text_lines if line["text"].strip()]
    sentences: list[str] = []
    document = len(text) >= DOCUMENT_MIN_CHARS and bool(lines)
    if document:
        text_lang = detect_language(text)
        if lang == "zh":
            sentences.append(f"一份{'中文' if text_lang == 'zh' else '英文'}文档,第一行写着“{_quoted(lines[0])}”。")
        else:
            sentences.append(
                f"A document in {'Chinese' if text_lang == 'zh' else 'English'} "
                f'whose first line reads "{_quoted(lines[0])}".'
            )
        if len(lines) > 1:
            sentences.append(f"共有{len(lines)}行文字。" if lang == "zh" else f"It has {len(lines)} lines of text.")
    else:
        counts: dict[str, int] = {}
        names: dict[str, str] = {}
        for o in obs.objects:
            counts[o.label] = counts.get(o.label, 0) + 1
            names[o.label] = o.label_zh
        shown = list(counts)[:4]
        label = next((x for x in obs.labels if x["score"] >= 0.2), None)
        if lang == "zh":
            things = _listed([_counted_zh(k, names[k], counts[k]) for k in shown], lang) if shown else ""
            guess = label["name_zh"] or label["name"] if label else ""
            if things and guess:
                sentences.append(f"一张图片,画面中有{things},图像分类器认为最可能是{guess}。")
            elif things:
                sentences.append(f"一张图片,画面中有{things}。")
            elif guess:
                sentences.append(f"一张图片,图像分类器认为最可能是{guess}。")
            else:
                sentences.append("一张图片,未能识别出已知的物体。")
            if lines:
                sentences.append(f"图中有文字“{_quoted(' '.join(lines), 40)}”。")
        else:
            things = _listed([_counted_en(k, counts[k]) for k in shown], lang) if shown else ""
            guess = _a(label["name"]) if label else ""
            if things and guess:
                sentences.append(f"An image of {things}; the classifier's best guess for it is {guess}.")
            elif things:
                sentences.append(f"An image of {things}.")
            elif guess:
                sentences.append(f"An image that most likely shows {guess}.")
            else:
                sentences.append("An image in which no known object was recognised.")
            if lines:
                sentences.append(f'It contains the text "{_quoted(" ".join(lines), 40)}".')
    if obs.background and document:
        bg = obs.background
        sentences.append(f"页面底色是{bg.name_zh}。" if lang == "zh" else f"The page is mostly {bg.name}.")
    elif obs.background and obs.foreground:
        bg, fg = obs.background, obs.foreground
        if lang == "zh":
            sentences.append(
                f"画面主要是{bg.name_zh}。" if bg.name == fg.name else f"主体主要是{fg.name_zh},背景是{bg.name_zh}。"
            )
        else:
            sentences.append(
                f"Its colours are mostly {bg.name}."
                if bg.name == fg.name
                else f"The subject is mostly {fg.name} on a {bg.name} background."
            )
    return ("" if lang == "zh" else " ").join(sentences)
