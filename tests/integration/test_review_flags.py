"""``needs_review`` on real OCR of rendered documents: the real offline vision stage reads them, a
scripted language stage gives the answer under test (a real model cannot be made to be wrong on
demand), and the real arbitration policy decides.

On the old code a correct answer naming a person read from the text was flagged, and a total taken
from the wrong line was not.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator

import pytest

from flashvl.config import Settings
from flashvl.eval.render import image_for
from flashvl.media import decode_image
from flashvl.pipeline.arbitration import Arbiter
from flashvl.pipeline.service import Answer, Query
from flashvl.stages.base import ChatRequest, Generation, TextDelta
from flashvl.stages.offline.stage import OfflineVisionStage
from tests.pipelines import build_pipeline

pytestmark = pytest.mark.slow


class Says:
    """A language stage that gives one fixed answer."""

    name = "scripted"
    model_id = "scripted"

    def __init__(self, text: str) -> None:
        self.text = text

    async def load(self) -> None: ...

    async def close(self) -> None: ...

    def fingerprint(self) -> dict[str, str]:
        return {"model_id": self.model_id}

    async def generate(self, request: ChatRequest) -> Generation:
        return Generation(self.name, self.text)

    async def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | Generation]:
        yield TextDelta(self.text)
        yield Generation(self.name, self.text)


@pytest.fixture(scope="module")
def stage() -> Iterator[OfflineVisionStage]:
    vision = OfflineVisionStage.from_settings(Settings())
    asyncio.run(vision.load())
    yield vision


def answer(stage: OfflineVisionStage, document: str, question: str, text: str) -> Answer:
    buffer = io.BytesIO()
    image_for(document).save(buffer, "PNG")
    image = decode_image(buffer.getvalue(), Settings(), "path")
    pipeline = build_pipeline(stage, Says(text), arbiter=Arbiter())
    return asyncio.run(pipeline.answer(Query([image], question, route="cascade")))


CASES = [
    ("render:invoice_en", "Who is the invoice billed to?", "The person billed is Northwind Traders.", False),
    ("render:lab_zh", "这份报告是谁的?", "这份报告属于一个人,姓名是张某。", False),
    ("render:invoice_en", "What is the total?", "The total is USD 71.50.", False),
    ("render:invoice_en", "What is the total?", "The total is USD 65.00.", True),  # the subtotal's line
    ("render:invoice_zh", "合计金额是多少?", "合计金额是1576元。", False),
    ("render:invoice_zh", "合计金额是多少?", "合计金额是1400元。", True),  # one item's amount
    (
        "render:invoice_zh",
        "开票的是一个什么样的人?",
        "一个戴眼镜的男人在开票。",
        True,
    ),  # nobody in the text or the picture
]


@pytest.mark.parametrize(("document", "question", "text", "flag"), CASES)
def test_needs_review_on_real_ocr(
    stage: OfflineVisionStage, document: str, question: str, text: str, flag: bool
) -> None:
    got = answer(stage, document, question, text)
    assert got.route == "cascade"
    assert got.needs_review is flag, got.review_reasons
