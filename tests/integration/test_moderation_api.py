"""POST /moderate on the real server with the real models (vision stage + language stage)."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from render import render_text

pytestmark = pytest.mark.slow
VALID_ID = "11010519491231002X"


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("name", ["astronaut.jpg", "coffee.jpg", "chelsea.jpg"])
def test_safe_photo_passes_with_no_categories(live_server: str, image_dir: Path, name: str) -> None:
    reply = httpx.post(f"{live_server}/moderate", json={"image_url": (image_dir / name).as_uri()}, timeout=120)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["is_sensitive"], body["categories"], body["suggestion"]) == (False, [], "pass")
    assert 0.5 < body["confidence"] <= 1
    assert body["stages"][0]["name"] == "vision"


def test_rendered_phone_and_id_number_raise_privacy(live_server: str) -> None:
    image = render_text(["客户登记表", "联系电话 13812345678", f"身份证号 {VALID_ID}"], font_size=30)
    body = httpx.post(f"{live_server}/moderate", json={"image_base64": b64(image)}, timeout=180).json()
    assert body["is_sensitive"] is True, body
    privacy = next(c for c in body["categories"] if c["category"] == "privacy")
    assert "ocr_rules" in privacy["raised_by"]
    evidence = " ".join(s["evidence"] for s in privacy["signals"])
    assert "phone number" in evidence and "resident ID" in evidence
    assert body["suggestion"] == "block"
    assert [s["name"] for s in body["stages"]] == [
        "vision",
        "language",
    ]  # text present: the language stage judged


def test_thresholds_are_the_callers_to_set(live_server: str) -> None:
    image = render_text(["联系电话 13812345678"], font_size=30)
    lenient = {
        "image_base64": b64(image),
        "use_language": "never",
        "category_thresholds": {"privacy": {"review": 0.9, "block": 0.99}},
    }
    body = httpx.post(f"{live_server}/moderate", json=lenient, timeout=120).json()
    assert (body["suggestion"], body["categories"]) == ("pass", [])
    strict = lenient | {"category_thresholds": {"privacy": {"review": 0.3, "block": 0.7}}}
    assert httpx.post(f"{live_server}/moderate", json=strict, timeout=120).json()["suggestion"] == "block"
    bad = httpx.post(
        f"{live_server}/moderate",
        json=lenient | {"category_thresholds": {"nope": {"review": 0.1, "block": 0.2}}},
        timeout=30,
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
