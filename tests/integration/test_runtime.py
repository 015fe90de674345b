"""The runtime with the real offline vision stage: every use case goes through the guarded calls
(cache, admission, breaker, metrics), one embedder is shared, disclaimers follow rule answers."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from PIL import Image

from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.media import decode_image
from flashvl.media.types import LoadedImage
from flashvl.observability import Metrics
from flashvl.pipeline.resilience import VisionDown
from flashvl.pipeline.types import Query
from flashvl.runtime import Runtime
from flashvl.stages.base import VisionRequest
from flashvl.tasks.document import read_image
from flashvl.tasks.moderate import Thresholds, moderate_image

pytestmark = pytest.mark.slow


def photo(name: str = "coffee", angle: float = 0.0) -> LoadedImage:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).rotate(angle).save(buffer, "JPEG", quality=90)
    return decode_image(buffer.getvalue(), Settings(), "path")


def vision_only(**overrides: object) -> Settings:
    return Settings(language="none", arbitration=False, review_store="memory", **overrides)  # type: ignore[arg-type]


def test_moderation_ocr_and_batch_items_share_the_vision_cache_and_report_hits() -> None:
    """On the old main, /moderate, /ocr and batch items called the stage directly: no cache, no
    metrics. Here an image seen by /infer is moderated and read without running a model again."""
    metrics = Metrics()

    async def run() -> dict[str, object]:
        async with Runtime(vision_only(), roles={"vision"}, metrics=metrics) as runtime:
            image = photo(angle=1.5)
            first = await runtime.pipeline.answer(Query([image], "What colour is the cup?"))
            thresholds = Thresholds(0.5, 0.85)
            verdict = await moderate_image(runtime.vision, None, image, thresholds=thresholds)
            await read_image(runtime.vision, image)
            document, looked = await read_image(runtime.vision, image)  # a second read: nothing runs again
            from flashvl.jobs.tasks import make_handler

            handle = make_handler("moderate", runtime.job_context())
            data_url = "data:image/jpeg;base64," + base64.b64encode(image_bytes(image)).decode()
            [item] = await handle([{"image": data_url}])
            return {"first": first, "verdict": verdict, "document": document, "ocr": looked, "item": item}

    out = asyncio.run(run())
    assert out["first"].cache["vision"] == "miss"  # type: ignore[attr-defined]
    assert out["verdict"]["cache"]["vision"] == "hit" and out["verdict"]["stages"][0]["cached"]  # type: ignore[index]
    # OCR forces the text reader on: its observations are their own entry, reused on the second read
    assert out["document"]["cache"]["vision"] == "hit" and out["ocr"].record.cached  # type: ignore[index, attr-defined]
    assert isinstance(out["item"], dict) and out["item"]["suggestion"] == "pass"
    scraped = metrics.stage_latency.labels("vision", "offline-pipeline")._sum.get()  # type: ignore[attr-defined]
    assert scraped > 0, "per-stage metrics come from the guarded calls"


def image_bytes(image: LoadedImage) -> bytes:
    buffer = io.BytesIO()
    image.image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_an_open_breaker_and_a_full_model_queue_guard_moderation_too() -> None:
    """A vision stage that fails trips one breaker for every use case; the model queue bounds them all."""
    settings = vision_only(breaker_failures=1, breaker_reset_s=30, model_max_concurrent=1, model_max_queue=0)

    async def run() -> tuple[str, str, str]:
        runtime = Runtime(settings, roles={"vision"})  # never started: every real stage call fails
        try:
            with pytest.raises(VisionDown):
                await runtime.vision.see(VisionRequest([photo()], "What is it?"))
            with pytest.raises(VisionDown) as refused:  # moderation gets the open breaker, not the stage
                await moderate_image(runtime.vision, None, photo("chelsea"), thresholds=Thresholds(0.5, 0.85))
            breaker_state = runtime.vision.breaker.state
            async with runtime.admission.slot():  # the only slot is taken: the next call is refused at once
                with pytest.raises(FlashvlError) as busy:
                    await read_image(runtime.vision, photo("rocket"))
            return breaker_state, str(refused.value), busy.value.code
        finally:
            await runtime.close()

    state, reason, code = asyncio.run(run())
    assert state == "open" and "circuit open" in reason
    assert code == "server_busy"


def test_router_and_arbiter_share_one_embedder() -> None:
    async def run() -> bool:
        runtime = Runtime(Settings(language="none", review_store="memory", router="classifier"), roles={"vision"})
        try:
            assert runtime.pipeline.arbiter is not None
            return runtime.pipeline.router.embed is runtime.pipeline.arbiter._embed  # type: ignore[attr-defined]
        finally:
            await runtime.close()

    assert asyncio.run(run())


def test_a_reference_range_rule_answer_carries_the_medical_disclaimer() -> None:
    """'Is the WBC value high, low, or normal?' has no medical keyword; the answer comes from the
    lab reference-range rule, which is medical whatever the question's words."""
    from flashvl.eval.render import image_for

    buffer = io.BytesIO()
    image_for("render:lab_zh").save(buffer, "PNG")
    image = decode_image(buffer.getvalue(), Settings(), "path")

    async def run() -> tuple[object, object]:
        async with Runtime(vision_only(), roles={"vision"}) as runtime:
            en = await runtime.pipeline.answer(Query([image], "Is the WBC value high, low, or normal?"))
            zh = await runtime.pipeline.answer(Query([image], "白细胞结果正常吗?"))
            return en, zh

    en, zh = asyncio.run(run())
    assert en.confidence_source == "rule:reference-range"  # type: ignore[attr-defined]
    assert en.disclaimer == "AI-assisted suggestion, for reference only"  # type: ignore[attr-defined]
    assert zh.disclaimer == "AI辅助建议，仅供参考"  # type: ignore[attr-defined]
    assert en.text.endswith(en.disclaimer)  # type: ignore[attr-defined]
