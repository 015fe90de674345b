"""The pipeline in-process with the real offline vision stage (no language stage here:
the cascade with the real language model is covered over HTTP in test_api.py)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import pytest
from PIL import Image

from flashvl.config import Settings
from flashvl.media import decode_image
from flashvl.media.types import LoadedImage
from flashvl.pipeline.cache.memory import MemoryVisionCache
from flashvl.pipeline.service import Answer, Query
from flashvl.stages.base import TextDelta, VisionRequest
from flashvl.stages.offline.stage import OfflineVisionStage
from tests.pipelines import build_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stage() -> Iterator[OfflineVisionStage]:
    vision = OfflineVisionStage.from_settings(Settings())
    asyncio.run(vision.load())
    yield vision


def load(name: str) -> LoadedImage:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).save(buffer, "JPEG", quality=92)
    return decode_image(buffer.getvalue(), Settings(), "path")


def test_vision_only_answers_carry_a_notice_in_the_question_language(stage: OfflineVisionStage) -> None:
    pipeline = build_pipeline(stage, None)
    en = asyncio.run(pipeline.answer(Query([load("chelsea")], "Would this make a good birthday card?")))
    zh = asyncio.run(pipeline.answer(Query([load("chelsea")], "这张图适合做生日贺卡吗?")))
    assert (en.route, en.notice) == ("vision-only", "image description only")
    assert (zh.route, zh.notice) == ("vision-only", "当前仅提供图像描述")
    assert "Egyptian cat" in en.text or "tabby" in en.text
    assert "未检测到文字" in zh.text


def test_rule_route_needs_no_language_stage(stage: OfflineVisionStage) -> None:
    answer = asyncio.run(build_pipeline(stage, None).answer(Query([load("coffee")], "Is this image safe for work?")))
    assert answer.route == "rule" and answer.text.startswith("Yes") and answer.confidence > 0.5
    assert answer.stages[0].backend == "offline-pipeline" and answer.stages[0].seconds > 0


def test_stream_yields_text_then_the_final_answer(stage: OfflineVisionStage) -> None:
    async def collect() -> list[object]:
        return [event async for event in build_pipeline(stage, None).stream(Query([load("rocket")], task="caption"))]

    events = asyncio.run(collect())
    assert isinstance(events[0], TextDelta) and isinstance(events[-1], Answer)
    assert events[-1].route == "direct" and events[-1].text == events[0].text


def test_disagreement_is_reported_on_a_real_photo(stage: OfflineVisionStage) -> None:
    result = asyncio.run(stage.see(VisionRequest([load("chelsea")], "What animal is this?")))
    labels = [label["name"] for label in result.observations["labels"][:3]]
    assert any("cat" in name for name in labels)
    detected = {obj["label"] for obj in result.observations["objects"]}
    if "person" in detected:  # NanoDet calls this cat a person; the stage must say so
        assert any("person" in d and "cat" in d for d in result.observations["disagreements"])


def test_large_images_are_analysed_downscaled_with_boxes_in_original_pixels(
    stage: OfflineVisionStage,
) -> None:
    small = load("astronaut")
    big_bytes = io.BytesIO()
    small.image.resize((2048, 2048)).save(big_bytes, "JPEG", quality=90)
    big = decode_image(big_bytes.getvalue(), Settings(), "path")
    request = VisionRequest([big], "where is the person?", max_pixels=512 * 512)
    result = asyncio.run(stage.see(request))
    person = next(b for b in result.boxes if b.label == "person")
    assert person.x2 > 1024 and person.y2 > 1500, "boxes must be scaled back to the 2048px original"


def test_a_second_question_about_the_same_image_reuses_its_observations(stage: OfflineVisionStage) -> None:
    """One vision cache: the observations are keyed per image (not per question), and the response
    says ``hit`` when a second question reused them."""
    buffer = io.BytesIO()
    load("coffee").image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buffer, "JPEG")
    image = decode_image(buffer.getvalue(), Settings(), "path")  # bytes no other test has sent
    pipeline = build_pipeline(stage, cache=MemoryVisionCache())

    async def run() -> list[Answer]:
        questions = ["What colour is the cup?", "Is this image safe for work?"]
        answers = [await pipeline.answer(Query([image], question)) for question in questions]
        return [*answers, await pipeline.answer(Query([load("chelsea")], questions[1]))]

    first, second, other = asyncio.run(run())
    assert first.cache["vision"] == "miss" and "detect" in first.stages[0].steps
    assert second.cache["vision"] == "hit" and second.stages[0].cached
    assert "detect" not in second.stages[0].steps, "no model ran for the second question"
    assert first.confidence_source == "rule:colour" and second.confidence_source == "rule:safety"
    assert other.cache["vision"] == "miss", "never another image's observations"
    assert other.observations["image"] == {"width": 451, "height": 300}
    assert "cup" not in {o["label"] for o in other.observations["objects"]}
