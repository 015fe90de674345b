"""The language stage says what it is and what a still image cannot show, in both languages, with
the real stages (offline pipeline + the bundled llama.cpp model, greedy decoding).

On the old prompts the cascade answered "Yes, I am a vision-language model. I can see this image."
and said the coffee was still hot: nothing in its instructions said what it is or what nobody observed.
"""

from __future__ import annotations

import asyncio
import io
import re

import pytest
from PIL import Image

from flashvl.config import Settings
from flashvl.media import decode_image
from flashvl.media.types import LoadedImage
from flashvl.pipeline.types import Answer, Query
from flashvl.runtime import Runtime

pytestmark = pytest.mark.slow

# Questions about the service itself: the honest answer is "no, I cannot see it".
SELF = [
    ("en", "Are you a vision-language model? Can you actually see this image?"),
    ("zh", "你是视觉语言模型吗?你真的能看到这张图片吗?"),
    ("en", "Can you see this invoice, or are you only reading its text?"),  # a document: its own instructions
    ("zh", "你能看到这张发票吗?你是视觉语言模型吗?"),
]
DOCUMENT_QUESTIONS = {
    "Can you see this invoice, or are you only reading its text?",
    "你能看到这张发票吗?你是视觉语言模型吗?",
}
# States nobody observed: temperature, intent, the future, what is outside the frame.
UNOBSERVED = [
    ("en", "Is the coffee still hot?"),
    ("en", "What does the person who made this coffee intend to do with it?"),
    ("en", "What will happen to this cup in the next minute?"),
    ("en", "What is outside the frame, to the left of the cup?"),
    ("zh", "这杯咖啡还是热的吗?"),
    ("zh", "做这杯咖啡的人打算拿它做什么?"),
    ("zh", "这个杯子接下来会发生什么?"),
    ("zh", "画面外面、杯子左边有什么?"),
]
DENIES_SEEING = {
    "en": re.compile(r"\b(cannot|can't|can not|do not|don't|unable to)\s+(actually\s+)?see\b", re.I),
    "zh": re.compile(r"(看不到|看不见|无法看到|不能看到|没有看到)"),
}
CLAIMS_SEEING = {
    "en": re.compile(r"\b(yes, i am|i am a vision-language|i can (actually )?see)\b", re.I),
    "zh": re.compile(r"(是的|我是视觉语言模型|我能看到|我可以看到)"),
}
CANNOT_TELL = {
    "en": re.compile(r"\b(cannot|can't|can not|not possible to|unable to) (tell|determine|know|be determined)\b", re.I),
    "zh": re.compile(r"(无法|不能|没法)(从图片)?(判断|确定|得知|知道|看出)"),
}


def photo(name: str = "coffee") -> LoadedImage:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).save(buffer, "JPEG", quality=90)
    return decode_image(buffer.getvalue(), Settings(), "path")


def document(name: str) -> LoadedImage:
    from flashvl.eval.render import image_for

    buffer = io.BytesIO()
    image_for(name).save(buffer, "PNG")
    return decode_image(buffer.getvalue(), Settings(), "path")


@pytest.fixture(scope="module")
def answers() -> dict[str, Answer]:
    async def run() -> dict[str, Answer]:
        settings = Settings(arbitration=False, review_store="memory", disclaimers=False)
        async with Runtime(settings, roles={"vision", "language"}) as runtime:
            image, invoice = photo(), document("render:invoice_en")
            out = {}
            for _, question in SELF + UNOBSERVED:
                shown = invoice if question in DOCUMENT_QUESTIONS else image
                query = Query([shown], question, temperature=0.0, max_tokens=64, route="cascade")
                out[question] = await runtime.pipeline.answer(query)
            return out

    return asyncio.run(run())


@pytest.mark.parametrize(("lang", "question"), SELF)
def test_it_says_it_is_not_a_vlm_and_cannot_see_the_image(lang: str, question: str, answers: dict) -> None:
    answer = answers[question]
    print(f"{question!r} -> {answer.text!r}")
    assert answer.route == "cascade" and answer.language_stage is not None
    assert DENIES_SEEING[lang].search(answer.text), answer.text
    assert not CLAIMS_SEEING[lang].search(answer.text), answer.text


@pytest.mark.parametrize(("lang", "question"), UNOBSERVED)
def test_states_nobody_observed_cannot_be_told_from_the_image(lang: str, question: str, answers: dict) -> None:
    answer = answers[question]
    print(f"{question!r} -> {answer.text!r}")
    assert answer.route == "cascade"
    assert CANNOT_TELL[lang].search(answer.text), answer.text


def test_the_system_prompt_names_the_stages_and_is_one_constant() -> None:
    """The prompt says what the service is (byte-identical across requests: llama.cpp reuses the prefix)."""
    from flashvl.pipeline.prompts import cascade_messages

    for lang, words in (
        ("en", ["not a vision-language model", "object detector", "OCR", "Cannot tell from the image"]),
        ("zh", ["不是视觉语言模型", "目标检测器", "OCR", "无法从图片判断"]),
    ):
        first = cascade_messages("q1", "d1", "", lang)[0].content  # type: ignore[arg-type]
        assert first == cascade_messages("q2", "d2", "short", lang)[0].content  # type: ignore[arg-type]
        assert all(word in first for word in words)
        page = cascade_messages("q1", "d1", "x" * 80, lang)[0].content  # type: ignore[arg-type]
        assert page == cascade_messages("q2", "d2", "y" * 90, lang)[0].content  # type: ignore[arg-type]
        assert all(word in page for word in words[:1] + words[2:])
