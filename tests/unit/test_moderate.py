"""Moderation: rules over OCR text, signal combination, and the real offline stage on real images."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from PIL import Image
from render import render_text
from skimage import data

from flashvl.media.types import LoadedImage
from flashvl.stages.base import VisionRequest
from flashvl.tasks.moderate import (
    Signal,
    Thresholds,
    combine,
    image_signals,
    moderate,
    resident_id_valid,
    text_signals,
)

VALID_ID = "11010519491231002X"  # the GB 11643 example number; checksum valid


def categories(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for signal in text_signals(text):
        out.setdefault(signal.category, []).append(signal.evidence)
    return out


def test_resident_id_checksum() -> None:
    assert resident_id_valid(VALID_ID)
    assert resident_id_valid(VALID_ID.lower())
    assert not resident_id_valid("110105194912310021")  # one digit off
    assert not resident_id_valid("11010519491231002")


def test_privacy_rules_find_ids_phones_passports_and_cards_and_mask_them() -> None:
    found = categories(f"身份证号 {VALID_ID}\n电话 138 1234 5678\nPassport No: E12345678\n卡号 4111 1111 1111 1111")
    evidence = " ".join(found["privacy"])
    assert "checksum valid" in evidence and "phone number" in evidence
    assert "passport-like" in evidence and "bank card" in evidence
    assert VALID_ID not in evidence and "13812345678" not in evidence.replace(" ", "")


def test_contact_and_keyword_rules() -> None:
    found = categories("加微信 shop_8888 咨询,官网 www.example.cn,邮箱 sales@example.com")
    assert set(found) == {"contact_ads"}
    assert categories("大麻 出售")["drugs"]
    assert categories("An ordinary receipt: 2 coffees, total 7.50 EUR, thank you") == {}
    assert categories("Order 2024-0315-7781 shipped on 2024-03-15") == {}  # dates and order numbers are not phones


def test_combination_noisy_or_thresholds_and_suggestion() -> None:
    weak = [Signal("weapons", "coco", 0.3, "detector: knife (0.50)")]
    assert combine(weak, Thresholds()).categories == []  # under review: nothing reported
    two = [*weak, Signal("weapons", "language", 0.4, "language stage: a knife")]
    verdict = combine(two, Thresholds(review=0.5, block=0.85))
    assert verdict.suggestion == "review" and verdict.categories[0]["score"] == pytest.approx(0.58)
    assert verdict.categories[0]["raised_by"] == ["coco", "language"]
    strict = combine(two, Thresholds(review=0.5, block=0.85, per_category={"weapons": (0.2, 0.5)}))
    assert strict.suggestion == "block"
    safe = combine([Signal("adult", "safety_model", 0.03, "Open-NSFW score 0.03")], Thresholds())
    assert (safe.is_sensitive, safe.categories, safe.suggestion) == (False, [], "pass")
    assert safe.confidence == pytest.approx(0.97)


def test_image_signals_name_their_source() -> None:
    observations = {
        "safety": {"nsfw_score": 0.91},
        "labels": [
            {"index": 413, "name": "assault rifle", "score": 0.8},
            {"index": 1, "name": "goldfish", "score": 0.9},
        ],
        "objects": [{"label": "knife", "score": 0.7}, {"label": "person", "score": 0.9}],
    }
    signals = {(s.category, s.source) for s in image_signals(observations)}
    assert signals == {("adult", "safety_model"), ("weapons", "imagenet"), ("weapons", "coco")}
    verdict = combine(image_signals(observations), Thresholds())
    assert verdict.suggestion == "block" and {c["category"] for c in verdict.categories} == {
        "adult",
        "weapons",
    }


# ------------------------------------------------------------------ the real offline stage


@pytest.fixture(scope="module")
def vision():
    from flashvl.stages.offline.stage import OfflineVisionStage

    stage = OfflineVisionStage()
    asyncio.run(stage.load())
    return stage


def loaded(image: Image.Image) -> LoadedImage:
    rgb = image.convert("RGB")
    digest = hashlib.sha256(rgb.tobytes()).hexdigest()  # a real identity: stages memoise by it
    return LoadedImage(rgb, digest, "PNG", image.width, image.height, 0, "path")


def judge(vision, image: Image.Image):
    seen = asyncio.run(vision.see(VisionRequest([loaded(image)], task="moderate")))
    return asyncio.run(moderate(seen.observations, language=None, thresholds=Thresholds()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_safe_photos_pass_with_no_categories(vision, name: str) -> None:
    verdict = judge(vision, Image.fromarray(getattr(data, name)()))
    assert verdict.suggestion == "pass", verdict.reasons
    assert verdict.categories == [] and verdict.is_sensitive is False


@pytest.mark.slow
def test_rendered_phone_and_id_raise_privacy_from_ocr(vision) -> None:
    image = render_text(["客户资料", "手机 13812345678", f"身份证 {VALID_ID}"], font_size=30)
    verdict = judge(vision, image)
    privacy = [c for c in verdict.categories if c["category"] == "privacy"]
    assert privacy and privacy[0]["raised_by"] == ["ocr_rules"]
    assert verdict.suggestion == "block"  # a checksum-valid ID alone is over the block threshold
    assert any("phone number" in s["evidence"] for s in privacy[0]["signals"])


# ------------------------------------------------------------------ the language stage's verdict (issue 20)


class ScriptedLanguage:
    """Answers every verdict request with one fixed JSON text, as a language stage would."""

    name = "scripted"

    def __init__(self, text: str) -> None:
        self.text = text

    async def generate(self, request: object) -> object:
        from flashvl.stages.base import Generation

        return Generation("scripted", self.text, confidence=0.9)


def test_verdict_categories_are_unique_and_the_reason_complete() -> None:
    import json

    from flashvl.tasks.moderate import language_verdict

    cut = ("This invoice lists ordinary office supplies and a company address. " * 4)[:240]  # cut mid-word
    text = json.dumps({"sensitive": True, "categories": ["other", "other", "other"], "reason": cut})
    signals, info = asyncio.run(language_verdict(ScriptedLanguage(text), {}, 0.6))  # type: ignore[arg-type]
    assert [s.category for s in signals] == ["other"]
    assert info["verdict"]["categories"] == ["other"]
    reason = info["verdict"]["reason"]
    assert reason.endswith((".", "…")) and cut.startswith(reason.rstrip("…").rstrip(".")) and len(reason) <= 200
    assert all(s.evidence.endswith((".", "…")) for s in signals)

    plain = json.dumps({"sensitive": False, "categories": ["other", "other"], "reason": "An ordinary invoice."})
    signals, info = asyncio.run(language_verdict(ScriptedLanguage(plain), {}, 0.6))  # type: ignore[arg-type]
    assert signals == [] and info["verdict"] == {
        "sensitive": False,
        "categories": [],
        "reason": "An ordinary invoice.",
    }
