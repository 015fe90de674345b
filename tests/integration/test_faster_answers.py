"""Faster answers with the REAL brain (issue 18): a follow-up question about an image reuses its
instructions + observations prefix even after another user's request took the slot, and speculative
decoding with the bundled 0.5B draft gives the same greedy text as plain decoding.

Reuse is checked through llama.cpp's own counts (cached vs read prompt tokens), not wall-clock.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from flashvl.pipeline.prompts import cascade_messages
from flashvl.stages.base import ChatMessage, ChatRequest, Generation
from flashvl.stages.brain_model import BrainModelError, ensure_brain_model, ensure_draft_model
from flashvl.stages.llamacpp import LlamaCppLanguageStage

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("FLASHVL_MODEL_DIR", "~/.cache/flashvl/models")).expanduser()
CAT = (
    "Objects detected: cat (91%, centre, large), laptop (64%, below the cat). The classifier's best guess: "
    "tabby cat (55%), Egyptian cat (20%). Colours: mostly orange and brown. No text was read. Safe: yes."
)
ROCKET = (
    "Objects detected: none. The classifier's best guess: missile (48%), space shuttle (22%). Colours: blue "
    "sky, white. No text was read. Safe: yes."
)


def model(kind: str) -> Path:
    try:
        return ensure_brain_model(CACHE) if kind == "brain" else ensure_draft_model(CACHE)
    except BrainModelError as exc:
        pytest.skip(f"real {kind} model unavailable: {exc.message}")


def ask(stage: LlamaCppLanguageStage, question: str, description: str, key: str) -> Generation:
    messages = cascade_messages(question, description, "", "en")
    request = ChatRequest(messages, max_tokens=4, temperature=0, logprobs=False, prefix_key=key)
    return asyncio.run(stage.generate(request))


def test_a_follow_up_reuses_the_image_prefix_after_another_users_request() -> None:
    # Two slots: llama.cpp alone would put the other user's request on the slot that holds the first
    # image's prompt (they share the long instructions); slot affinity sends it to the other slot.
    stage = LlamaCppLanguageStage(model("brain"), slots=2, ctx=2048)
    asyncio.run(stage.load())
    try:
        first = ask(stage, "What animal is this?", CAT, "cat")
        ask(stage, "What is this?", ROCKET, "rocket")
        follow_up = ask(stage, "Where is the laptop?", CAT, "cat")
    finally:
        asyncio.run(stage.close())
    total_first = first.timings.tokens["prompt_read"] + first.timings.tokens["prompt_cached"]
    assert total_first > 150
    # Everything up to the question was reused; only the question (and the turn's markers) was read.
    assert follow_up.timings.tokens["prompt_cached"] >= total_first - 15
    assert follow_up.timings.tokens["prompt_read"] <= 15
    assert {"queue", "prompt", "generate"} <= set(follow_up.timings.steps)


def test_speculative_decoding_gives_the_same_greedy_text() -> None:
    request = ChatRequest(
        [ChatMessage("user", "List the planets of the solar system in order, comma separated.")],
        max_tokens=24,
        temperature=0,
        logprobs=False,
    )
    texts = {}
    for draft in (False, True):
        stage = LlamaCppLanguageStage(model("brain"), slots=1, ctx=1024, draft=draft, model_dir=CACHE)
        asyncio.run(stage.load())
        try:
            result = asyncio.run(stage.generate(request))
        finally:
            asyncio.run(stage.close())
        texts[draft] = result.text
        if draft:
            assert result.timings.tokens.get("drafted", 0) > 0  # the draft model really ran
    assert texts[True] == texts[False]
    assert "Mercury" in texts[False]
