"""Continuous batching in the in-process GLM stage (issue 18), on the tiny random GLM model: short
requests that arrive while a long one generates join the running batch at the next decode step
(those that arrive together are read in one prefill, image and text-only rows alike), leave when
done (while the long one goes on), and get exactly the answers they get alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from PIL import Image

from flashvl.media.types import LoadedImage
from flashvl.stages.base import ChatMessage, ChatRequest, TextDelta, VisionRequest, VisionResult

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

    # Long enough that it is still decoding when the others are done, whatever the machine's load.
    long_request = VisionRequest([photo("astronaut")], "Describe the image.", max_tokens=3000, temperature=0)
    joining = [
        VisionRequest([photo("coffee")], "What is this?", max_tokens=12, temperature=0),
        VisionRequest([photo("chelsea")], "Describe the image.", max_tokens=20, temperature=0),
    ]

    chat = ChatRequest([ChatMessage("user", "Say something.")], max_tokens=10, temperature=0)

    async def run() -> tuple[list[str], str, list[VisionResult], str, bool, list[int]]:
        stage = Glm4vStage(str(model_dir), max_batch=8, batch_wait_ms=0, max_pixels=256 * 256, continuous=True)
        await stage.load()
        engine = stage._continuous
        groups: list[int] = []  # rows per prefill forward
        prefill = engine._prefill

        def counted(jobs: list) -> object:
            groups.append(len(jobs))
            return prefill(jobs)

        engine._prefill = counted
        # Hand the joiners over only once all three have arrived (the long row decodes meanwhile), so
        # that they wait together whatever the machine's load: one prefill must read them all.
        batcher = stage._batcher
        take = batcher._join

        def together(joined: list, most: int) -> list:
            if 0 < batcher._joining.qsize() < 3 and time.monotonic() < deadline:
                return []
            return take(joined, most)

        deadline = time.monotonic() + 30
        batcher._join = together  # type: ignore[method-assign]
        try:
            alone = [(await stage.see(r)).answer or "" for r in joining]
            chat_alone = (await stage.generate(chat)).text
            started = asyncio.Event()

            async def long_one() -> None:
                async for event in stage.stream(long_request):
                    if isinstance(event, TextDelta):
                        started.set()  # the long row is decoding: the next ones must join its batch

            long_task = asyncio.create_task(long_one())
            await started.wait()
            groups.clear()
            *results, chat_joined = await asyncio.gather(*[stage.see(r) for r in joining], stage.generate(chat))
            long_still_running = not long_task.done()
            long_task.cancel()  # closing its stream stops its row
            await asyncio.gather(long_task, return_exceptions=True)
            return alone, chat_alone, list(results), chat_joined.text, long_still_running, groups
        finally:
            await stage.close()

    alone, chat_alone, results, chat_joined, long_still_running, groups = asyncio.run(run())
    assert len(set(alone)) == 2
    assert [r.answer for r in results] == alone
    assert chat_joined == chat_alone and chat_alone
    assert long_still_running, "the short rows left the batch while the long one kept decoding"
    assert all(r.observations["batch_size"] >= 2 for r in results), "they ran alongside the long row"
    assert groups == [3], f"rows waiting together share one prefill: {groups}"
    assert [r.completion_tokens for r in results] == [12, 20]
    assert {"queue", "prompt", "generate"} <= set(results[0].timings.steps)
    assert results[0].timings.tokens["generated"] == 12


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
