"""The router's labelled question set, built from hand-written zh/en templates.

Labels: ``direct`` (a perception question the eyes answer: what, where, how many,
what colour, what does it say) and ``cascade`` (needs reasoning: why, should,
advice, risk, consequences, judgement, plans). The held-out split is whole
*templates* never seen in training, so its accuracy measures new phrasings, not
memorised ones. ``python -m flashvl.pipeline.router.train`` rebuilds the data file
and the classifier's coefficients.
"""

from __future__ import annotations

import random

OBJECTS_EN = [
    "the dog",
    "the car",
    "the person",
    "the cup",
    "the chair",
    "the bus",
    "the cat",
    "the laptop",
    "the bicycle",
    "the sign",
    "the bottle",
    "the table",
]
OBJECTS_ZH = [
    "狗",
    "汽车",
    "这个人",
    "杯子",
    "椅子",
    "公交车",
    "猫",
    "笔记本电脑",
    "自行车",
    "标志",
    "瓶子",
    "桌子",
]
TOPICS_EN = [
    "this kitchen",
    "this street",
    "this room",
    "this chart",
    "this label",
    "this document",
    "this scene",
    "this desk",
    "this warehouse",
    "this menu",
    "this screenshot",
    "this report",
]
TOPICS_ZH = [
    "这个厨房",
    "这条街道",
    "这个房间",
    "这张图表",
    "这个标签",
    "这份文件",
    "这个场景",
    "这张桌子",
    "这个仓库",
    "这份菜单",
    "这张截图",
    "这份报告",
]

DIRECT_EN = [
    "What is in this image?",
    "What colour is {o}?",
    "How many people are there?",
    "Where is {o}?",
    "Is there {o} in the picture?",
    "What does the text say?",
    "Describe {t}.",
    "What objects can you see?",
    "What is on the left of {o}?",
    "Read the words on {t}.",
    "What animal is this?",
    "Is {o} on the table?",
    "What is the person holding?",
    "How many cars are in {t}?",
    "What brand is shown on {t}?",
    "Caption this photo.",
    "What is the background colour?",
    "Which object is the largest?",
    "What is written at the top?",
    "Is it day or night in {t}?",
]
DIRECT_ZH = [
    "图中有什么?",
    "{o}是什么颜色?",
    "图里有几个人?",
    "{o}在哪里?",
    "图片里有{o}吗?",
    "上面的文字写了什么?",
    "描述一下{t}。",
    "能看到哪些物体?",
    "{o}左边是什么?",
    "读出{t}上的文字。",
    "这是什么动物?",
    "{o}在桌子上吗?",
    "这个人手里拿着什么?",
    "{t}里有几辆车?",
    "{t}上显示的是什么品牌?",
    "给这张照片写个标题。",
    "背景是什么颜色?",
    "哪个物体最大?",
    "最上面写的是什么?",
    "{t}是白天还是晚上?",
]
CASCADE_EN = [
    "Why is {o} there?",
    "What should I do about {t}?",
    "Is {t} reasonable?",
    "Can you recommend how to improve {t}?",
    "What are the risks in {t}?",
    "What would happen if {o} fell?",
    "Is it safe to leave {o} like this?",
    "Explain why {t} looks messy.",
    "How should I fix the problem with {o}?",
    "What is the best way to clean {t}?",
    "Do you think {t} is well organised, and why?",
    "What are the consequences of {t} being like this?",
    "Should I buy {o}?",
    "How could {t} be made more efficient?",
    "What does {t} suggest about the owner?",
    "Given {t}, what is likely to happen next?",
    "Evaluate whether {t} follows safety rules.",
    "Compare {o} with a newer model and advise me.",
    "What is the reason {o} is broken?",
    "Plan the steps to repair {o}.",
]
CASCADE_ZH = [
    "为什么{o}会在那里?",
    "面对{t}我应该怎么做?",
    "{t}是否合理?",
    "有什么建议可以改进{t}?",
    "{t}存在哪些风险?",
    "如果{o}掉下来会有什么后果?",
    "这样放着{o}安全吗?",
    "解释一下{t}为什么看起来很乱。",
    "应该如何修好{o}?",
    "清理{t}最好的方法是什么?",
    "你觉得{t}布置得好吗,为什么?",
    "{t}这样下去会有什么后果?",
    "我应该买{o}吗?",
    "怎样让{t}更高效?",
    "{t}能说明主人是什么样的人?",
    "根据{t},接下来可能会发生什么?",
    "评估{t}是否符合安全规范。",
    "把{o}和新款比较一下并给我建议。",
    "{o}坏掉的原因是什么?",
    "制定修理{o}的步骤。",
]
HELD_OUT_TEMPLATES = 5  # the last five templates of each list are never trained on


def _fill(template: str, objects: list[str], topics: list[str], rng: random.Random) -> str:
    return template.format(o=rng.choice(objects), t=rng.choice(topics))


def build(per_template: int = 6, seed: int = 7) -> list[dict[str, str]]:
    """Rows of {"text", "label", "lang", "split"}; deterministic for a given seed."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    groups = [
        (DIRECT_EN, "direct", "en", OBJECTS_EN, TOPICS_EN),
        (DIRECT_ZH, "direct", "zh", OBJECTS_ZH, TOPICS_ZH),
        (CASCADE_EN, "cascade", "en", OBJECTS_EN, TOPICS_EN),
        (CASCADE_ZH, "cascade", "zh", OBJECTS_ZH, TOPICS_ZH),
    ]
    for templates, label, lang, objects, topics in groups:
        for index, template in enumerate(templates):
            split = "test" if index >= len(templates) - HELD_OUT_TEMPLATES else "train"
            seen: set[str] = set()
            for _ in range(per_template):
                text = _fill(template, objects, topics, rng)
                if text not in seen:
                    seen.add(text)
                    rows.append({"text": text, "label": label, "lang": lang, "split": split})
    return rows
