"""The cascade over HTTP with the real stages (offline vision + llama.cpp): route, timings, cache,
intermediate outputs, the override, disclaimers and the review endpoint."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_cascade_reports_route_stages_cache_and_intermediate(live_server: str, image_server: str) -> None:
    body = {
        "image_url": f"{image_server}/chelsea.jpg",
        "prompt": "Why might this animal be resting here?",
        "route": "cascade",
        "include_intermediate": True,
        "max_tokens": 48,
    }
    first = httpx.post(f"{live_server}/infer", json=body, timeout=300).json()
    assert first["route"] == "cascade" and first["route_decision"]["strategy"] == "override"
    assert [s["name"] for s in first["stages"]][:2] == ["vision", "language"]
    assert all(s["seconds"] > 0 for s in first["stages"])
    inter = first["intermediate"]
    assert inter["vision"]["description"] and inter["language"]["text"]
    assert inter["language_prompt"][0]["role"] == "system" and "arbitration" in inter
    assert isinstance(first["needs_review"], bool) and first["cache"]["backend"] == "memory-lru"
    second = httpx.post(f"{live_server}/infer", json=body, timeout=300).json()
    assert second["stages"][0]["cached"] is True and second["cache"]["vision"] == "hit"
    if first["needs_review"]:
        listed = httpx.get(f"{live_server}/review").json()["items"]
        assert first["review_id"] in [item["id"] for item in listed]


def test_direct_override_skips_the_language_stage(live_server: str, image_server: str) -> None:
    body = {
        "image_url": f"{image_server}/coffee.jpg",
        "prompt": "What is in this picture?",
        "route": "direct",
    }
    answer = httpx.post(f"{live_server}/infer", json=body, timeout=120).json()
    assert answer["route"] == "direct" and answer["language_stage"] is None
    assert ([s["name"] for s in answer["stages"]] == ["vision"] and "intermediate" not in answer) or answer[
        "intermediate"
    ] is None


def test_medical_question_gets_the_disclaimer(live_server: str, image_server: str) -> None:
    body = {
        "image_url": f"{image_server}/coffee.jpg",
        "prompt": "这杯咖啡对健康有什么风险?",
        "max_tokens": 32,
    }
    answer = httpx.post(f"{live_server}/infer", json=body, timeout=300).json()
    assert answer["text"].endswith("AI辅助建议，仅供参考") and answer["disclaimer"] == "AI辅助建议，仅供参考"


def test_review_endpoint_resolves_items(live_server: str) -> None:
    assert httpx.get(f"{live_server}/review/doesnotexist").status_code == 404
    listed = httpx.get(f"{live_server}/review", params={"status": "all"})
    assert listed.status_code == 200 and "items" in listed.json()
    for item in listed.json()["items"][:1]:
        resolved = httpx.post(f"{live_server}/review/{item['id']}/resolve", json={"verdict": "accept"}).json()
        assert resolved["status"] == "resolved" and resolved["resolution"]["verdict"] == "accept"
