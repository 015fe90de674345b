"""Rows of one batch keep their own settings and their own consumers (in-process, tiny random GLM).

One batch may mix a streaming consumer (``stream``: every piece handed over as it is made),
whole-answer consumers (``see``: nothing handed over until the end) and a sampled row among
greedy ones. Each greedy row must still get exactly the answer its image gets alone, and a
streamed answer must be the same text, piece by piece, as the whole one.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from PIL import Image

from flashvl.media.types import LoadedImage
from flashvl.stages.base import TextDelta, VisionRequest, VisionResult

pytest.importorskip("torch")
pytest.importorskip("torchvision")

QUESTION = "Describe the image."


def photo(name: str) -> LoadedImage:
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    return LoadedImage(image, name, "JPEG", image.width, image.height, 0, "upload")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flashvl.stages.glm4v.tiny import build_tiny_glm4v

    folder = tmp_path_factory.mktemp("tiny-glm4v-rows") / "random"
    build_tiny_glm4v(folder, seed=1)
    return folder


def ask(image: LoadedImage, temperature: float = 0.0) -> VisionRequest:
    return VisionRequest([image], QUESTION, max_tokens=24, temperature=temperature)


def test_live_and_whole_rows_and_a_sampled_row_share_a_batch(model_dir: Path) -> None:
    from flashvl.stages.glm4v.stage import Glm4vStage

    images = [photo(name) for name in ("astronaut", "coffee", "chelsea")]

    async def run() -> tuple[list[str], list[TextDelta], VisionResult, list[VisionResult], list[int]]:
        stage = Glm4vStage(str(model_dir), max_batch=8, batch_wait_ms=200, max_pixels=256 * 256)
        await stage.load()
        try:
            alone = [(await stage.see(ask(image))).answer for image in images]
            stage._batcher.batch_sizes.clear()

            async def streamed() -> tuple[list[TextDelta], VisionResult]:
                events = [event async for event in stage.stream(ask(images[0]))]
                assert isinstance(events[-1], VisionResult)
                return events[:-1], events[-1]

            (deltas, final), *wholes = await asyncio.gather(
                streamed(),
                stage.see(ask(images[1])),
                stage.see(ask(images[2], temperature=1.0)),  # sampled: the batch is not all-greedy
                stage.see(ask(images[2])),
            )
            return alone, deltas, final, wholes, list(stage._batcher.batch_sizes)
        finally:
            await stage.close()

    alone, deltas, final, (second, sampled, third), sizes = asyncio.run(run())
    assert len(set(alone)) == 3, "the tiny model answers each photo differently"
    assert max(sizes) >= 3, f"the four requests should share batches: {sizes}"
    assert final.answer == alone[0] and second.answer == alone[1] and third.answer == alone[2]
    assert len(deltas) > 1 and "".join(d.text for d in deltas if d.kind == "answer") == final.answer
    assert sampled.completion_tokens > 0 and sampled.prompt_tokens > 0


def test_the_generating_thread_keeps_all_intra_op_threads(model_dir: Path) -> None:
    """Preprocessing threads run torch with one thread each; torch hands a new thread the count
    last set anywhere, so the generating thread (created after them) must set its own back."""
    import torch

    from flashvl.stages.glm4v.stage import Glm4vStage, default_threads

    full = default_threads()
    if full < 2:
        pytest.skip(f"one core: nothing to tell apart ({os.sched_getaffinity(0)}, {os.environ.get('OMP_NUM_THREADS')})")

    async def run() -> tuple[int, int]:
        stage = Glm4vStage(str(model_dir), max_pixels=128 * 128)
        await stage.load()
        try:
            await stage.see(ask(photo("coffee")))
            prep = stage._batcher._prepare_pool.submit(torch.get_num_threads).result()
            gen = stage._batcher._worker.submit(torch.get_num_threads).result()
            return prep, gen
        finally:
            await stage.close()

    prep, gen = asyncio.run(run())
    assert prep == 1 and gen == full
