"""/moderate, /caption and /ocr take the image either way (issue 20): JSON (``image_url`` /
``image_base64``) or multipart (a ``file`` part, options as form fields); the OpenAPI description
lists both, and mistakes are 422 ``invalid_request`` naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
ROUTES = ("/moderate", "/caption", "/ocr")


def test_moderate_takes_a_multipart_upload_with_options_as_form_fields(live_server: str, image_dir: Path) -> None:
    photo = (image_dir / "coffee.jpg").read_bytes()
    options = {"use_language": "never", "category_thresholds": json.dumps({"privacy": {"review": 0.9, "block": 0.99}})}
    reply = httpx.post(
        f"{live_server}/moderate", files={"file": ("coffee.jpg", photo, "image/jpeg")}, data=options, timeout=120
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["is_sensitive"], body["suggestion"]) == (False, "pass")
    assert [stage["name"] for stage in body["stages"]] == ["vision"]  # use_language=never was read from the form
    as_json = httpx.post(
        f"{live_server}/moderate", json={"image_url": (image_dir / "coffee.jpg").as_uri()}, timeout=120
    ).json()
    assert as_json["image"]["sha256"] == body["image"]["sha256"]  # the same image either way


def test_caption_takes_json_as_well_as_multipart(live_server: str, image_dir: Path) -> None:
    by_url = httpx.post(f"{live_server}/caption", json={"image_url": (image_dir / "coffee.jpg").as_uri()}, timeout=120)
    assert by_url.status_code == 200, by_url.text
    photo = (image_dir / "coffee.jpg").read_bytes()
    uploaded = httpx.post(f"{live_server}/caption", files={"file": ("c.jpg", photo, "image/jpeg")}, timeout=120)
    assert uploaded.status_code == 200, uploaded.text
    assert by_url.json()["caption"] == uploaded.json()["caption"]


def test_ocr_takes_a_multipart_upload(live_server: str, image_dir: Path) -> None:
    photo = (image_dir / "coffee.jpg").read_bytes()
    reply = httpx.post(
        f"{live_server}/ocr", files={"file": ("c.jpg", photo, "image/jpeg")}, data={"tables": "false"}, timeout=120
    )
    assert reply.status_code == 200, reply.text
    assert "tables" not in reply.json()  # tables=false came from the form


def test_mistakes_name_the_field_either_way(live_server: str, image_dir: Path) -> None:
    photo = (image_dir / "coffee.jpg").read_bytes()
    for route in ROUTES:
        no_file = httpx.post(f"{live_server}{route}", files={"other": ("a.txt", b"x", "text/plain")}, timeout=30)
        assert no_file.status_code == 422 and no_file.json()["error"]["code"] == "invalid_request", no_file.text
        both = httpx.post(
            f"{live_server}{route}",
            files={"file": ("c.jpg", photo, "image/jpeg")},
            data={"image_url": (image_dir / "coffee.jpg").as_uri()},
            timeout=30,
        )
        assert both.status_code == 422 and "exactly one image" in both.json()["error"]["message"], both.text
        empty = httpx.post(f"{live_server}{route}", json={}, timeout=30)
        assert empty.status_code == 422 and "exactly one image" in empty.json()["error"]["message"]
        other = httpx.post(f"{live_server}{route}", content=b"x", headers={"content-type": "text/plain"}, timeout=30)
        assert other.status_code == 415 and other.json()["error"]["code"] == "unsupported_media_type"
    bad = httpx.post(
        f"{live_server}/moderate",
        files={"file": ("c.jpg", photo, "image/jpeg")},
        data={"review_threshold": "high"},
        timeout=30,
    )
    assert bad.status_code == 422 and "review_threshold" in bad.json()["error"]["message"]


def test_openapi_lists_both_encodings(live_server: str) -> None:
    spec = httpx.get(f"{live_server}/openapi.json", timeout=30).json()
    for route in ROUTES:
        content = spec["paths"][route]["post"]["requestBody"]["content"]
        assert set(content) == {"application/json", "multipart/form-data"}, route
        assert content["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
        assert "image_url" in content["application/json"]["schema"]["properties"]
