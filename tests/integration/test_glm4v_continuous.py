"""Continuous batching in the in-process GLM stage (issue 18), on the tiny random GLM model: a short
request that arrives while a long one generates joins the running batch at the next decode step,
leaves when done (long before the long one), and gets exactly the answer it gets alone; so does the
long one, whose batch it joined."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image

from flashvl.media.types import LoadedImage
from flashvl.stages.base import TextDelta, VisionRequest, VisionResult

pytest.importorskip("torch")
pytest.importorskip("torchvision")


def photo(name: str) -> LoadedImage:
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    return LoadedImage(image, name, "JPEG", image.width, image.height, 0, "upload")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flashvl.stages.glm4v.tiny import build_tiny_glm4v

    folder = tmp_path_factory.mktemp("tiny-glm4v-continuous") / "random"
    build_tiny_glm4v(folder, seed=1)
    return folder


def test_a_row_joins_a_running_batch_and_gets_exactly_its_solo_answer(model_dir: Path) -> None:
    from flashvl.stages.glm4v.stage import Glm4vStage

    long_request = VisionRequest([photo("astronaut")], "Describe the image.", max_tokens=160, temperature=0)
    short_request = VisionRequest([photo("coffee")], "What is this?", max_tokens=12, temperature=0)
    text_only_like = VisionRequest([photo("chelsea")], "Describe the image.", max_tokens=20, temperature=0)

    async def run() -> tuple[list[str], list[VisionResult], list[str]]:
        stage = Glm4vStage(str(model_dir), max_batch=8, batch_wait_ms=0, max_pixels=256 * 256, continuous=True)
        await stage.load()
        try:
            alone = [(await stage.see(r)).answer or "" for r in (long_request, short_request, text_only_like)]
            finished: list[str] = []
            started = asyncio.Event()

            async def long_one() -> VisionResult:
                final = None
                async for event in stage.stream(long_request):
                    if isinstance(event, TextDelta):
                        started.set()  # the long row is decoding: the next ones must join its batch
                    else:
                        final = event
                finished.append("long")
                assert isinstance(final, VisionResult)
                return final

            async def joining(request: VisionRequest, name: str) -> VisionResult:
                await started.wait()
                result = await stage.see(request)
                finished.append(name)
                return result

            results = await asyncio.gather(
                long_one(), joining(short_request, "short"), joining(text_only_like, "third")
            )
            return alone, list(results), finished
        finally:
            await stage.close()

    alone, (long_result, short_result, third_result), finished = asyncio.run(run())
    assert len(set(alone)) == 3
    assert short_result.answer == alone[1] and third_result.answer == alone[2]
    assert long_result.answer == alone[0]
    assert finished[-1] == "long", f"the short rows left the batch first: {finished}"
    assert short_result.observations["batch_size"] >= 2, "the short row ran alongside the long one"
    assert short_result.completion_tokens == 12 and long_result.completion_tokens == 160
    assert {"queue", "prompt", "generate"} <= set(short_result.timings.steps)
    assert short_result.timings.tokens["generated"] == 12


def test_static_batches_still_answer_each_row_as_alone(model_dir: Path) -> None:
    from flashvl.stages.glm4v.stage import Glm4vStage

    requests = [
        VisionRequest([photo(name)], "Describe the image.", max_tokens=tokens, temperature=0)
        for name, tokens in (("astronaut", 24), ("coffee", 8))
    ]

    async def run() -> tuple[list[str], list[str]]:
        stage = Glm4vStage(str(model_dir), max_batch=8, batch_wait_ms=100, max_pixels=256 * 256, continuous=False)
        await stage.load()
        try:
            alone = [(await stage.see(r)).answer or "" for r in requests]
            together = await asyncio.gather(*[stage.see(r) for r in requests])
            return alone, [r.answer or "" for r in together]
        finally:
            await stage.close()

    alone, together = asyncio.run(run())
    assert together == alone
