"""Stage specs by name: one builder shares an engine between roles; builders share nothing."""

from __future__ import annotations

import pytest

from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.stages.registry import StageBuilder

UPSTREAM = "openai:http://127.0.0.1:9/v1#glm-4.6v-flash"  # never contacted: nothing is loaded here


def test_an_upstream_for_both_roles_is_built_for_each_role_and_never_changed_after() -> None:
    settings = Settings(vision=UPSTREAM, language=UPSTREAM)
    builder = StageBuilder(settings)
    vision = builder.vision()
    language = builder.language()
    assert vision is not language and vision.is_vlm and not language.is_vlm
    assert (vision.role, language.role) == ("vision", "language")
    assert builder.vision() is vision and builder.language() is language
    assert builder.vision().is_vlm and not builder.language().is_vlm, "building a role changes no other role"
    other = StageBuilder(settings).vision()  # nothing lives at module level
    assert other is not vision


def test_one_in_process_model_serves_both_roles(tmp_path) -> None:
    pytest.importorskip("transformers")
    settings = Settings(vision=f"glm4v:{tmp_path}", language=f"glm4v:{tmp_path}")  # nothing is loaded here
    builder = StageBuilder(settings)
    assert builder.vision() is builder.language()


def test_the_voter_may_share_the_language_engine() -> None:
    settings = Settings(vision="offline", language=UPSTREAM, arbitration_voter=UPSTREAM)
    builder = StageBuilder(settings)
    language = builder.language()
    assert builder.voter() is language


@pytest.mark.parametrize(
    ("field", "spec"), [("vision", "tesseract"), ("vision", "openai:ftp://x#m"), ("language", "glm4v:")]
)
def test_unknown_or_malformed_specs_say_what_to_write(field: str, spec: str) -> None:
    builder = StageBuilder(Settings(**{field: spec}))
    with pytest.raises(FlashvlError) as raised:
        builder.vision() if field == "vision" else builder.language()
    assert raised.value.code == "bad_setting" and "choose:" in raised.value.message
