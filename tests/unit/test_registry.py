"""Stage specs by name: one builder shares an engine between roles; builders share nothing."""

from __future__ import annotations

import asyncio

import pytest

from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.stages.registry import StageBuilder

UPSTREAM = "openai:http://127.0.0.1:9/v1#glm-4.6v-flash"  # never contacted: nothing is loaded here


def test_one_spec_for_both_roles_is_one_instance_per_builder() -> None:
    settings = Settings(vision=UPSTREAM, language=UPSTREAM)
    builder = StageBuilder(settings)
    vision = builder.vision()
    language = asyncio.run(builder.language())
    assert vision is language and vision.is_vlm
    other = StageBuilder(settings).vision()  # nothing lives at module level
    assert other is not vision


def test_the_voter_may_share_the_language_engine() -> None:
    settings = Settings(vision="offline", language=UPSTREAM, arbitration_voter=UPSTREAM)
    builder = StageBuilder(settings)
    language = asyncio.run(builder.language())
    assert asyncio.run(builder.voter()) is language


@pytest.mark.parametrize(
    ("field", "spec"), [("vision", "tesseract"), ("vision", "openai:ftp://x#m"), ("language", "glm4v:")]
)
def test_unknown_or_malformed_specs_say_what_to_write(field: str, spec: str) -> None:
    builder = StageBuilder(Settings(**{field: spec}))
    with pytest.raises(FlashvlError) as raised:
        builder.vision() if field == "vision" else asyncio.run(builder.language())
    assert raised.value.code == "bad_setting" and "choose:" in raised.value.message
