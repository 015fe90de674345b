"""The third-stage vote, with the real offline vision stage and the real llama.cpp model as the voter.

The language stage here is a scripted test double: a real model cannot be made to contradict
the image on demand, and the point is what arbitration does when it does.
"""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from flashvl.config import Settings
from flashvl.media import decode_image
from flashvl.pipeline.arbitration import Arbiter
from flashvl.pipeline.arbitration_policy import parse_vote
from flashvl.pipeline.service import Answer, Query
from flashvl.stages.brain_model import ensure_brain_model
from flashvl.stages.llamacpp import LlamaCppLanguageStage
from flashvl.stages.offline.stage import OfflineVisionStage
from tests.pipelines import ScriptedLanguage, build_pipeline

WRONG = "Two dogs are playing football on a green lawn."


def test_parse_vote() -> None:
    assert parse_vote('{"agrees": false}') is False
    assert parse_vote('{"agrees": true}') is True
    assert parse_vote("Yes.") is True and parse_vote("no") is False and parse_vote("{broken") is False


@pytest.mark.slow
def test_the_voter_runs_on_an_open_conflict_and_decides_the_review() -> None:
    from skimage import data

    async def run() -> tuple[Answer, Answer]:
        settings = Settings(vision_cache="none")
        vision = OfflineVisionStage.from_settings(settings)
        voter = LlamaCppLanguageStage(ensure_brain_model(settings.model_dir), slots=1, ctx=4096, name="voter")
        await vision.load()
        await voter.load()
        arbiter = Arbiter(settings.arbitration_similarity_threshold)
        pipeline = build_pipeline(vision, ScriptedLanguage(WRONG), arbiter=arbiter)
        voting = build_pipeline(vision, ScriptedLanguage(WRONG), arbiter=arbiter, voter=voter)
        buffer = io.BytesIO()
        Image.fromarray(data.coffee()).save(buffer, "JPEG")
        image = decode_image(buffer.getvalue(), settings, "path")
        query = Query([image], "What is happening here?", route="cascade", include_intermediate=True)
        without = await pipeline.answer(query)
        with_vote = await voting.answer(query)
        await voter.close()
        return without, with_vote

    without, with_vote = asyncio.run(run())
    assert without.needs_review and any("dog" in r for r in without.review_reasons)
    assert "voter" not in [s.name for s in without.stages]
    assert "voter" in [s.name for s in with_vote.stages], "an open conflict must go to the voter"
    vote = with_vote.intermediate["arbitration"]["vote"]
    assert isinstance(vote, bool)
    assert with_vote.needs_review is (not vote), "the vote decides whether the answer goes to review"
