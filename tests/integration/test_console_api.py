"""The API additions the web console (issue 17) uses, against one real server (offline vision stage, no
language stage): the review list's paging, reason filter and counts; a review item's thumbnail; the streamed
answer's boxes; the moderation verdict's flagged OCR lines. And, in process, the thumbnail that the
arbitration policy keeps with an answer it flags (or not, with --no-review-thumbnails)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image

from flashvl.config import Settings
from flashvl.media import decode_image
from flashvl.pipeline.arbitration import Conflict
from flashvl.pipeline.arbitration_policy import arbitrate
from flashvl.pipeline.review.base import THUMBNAIL_MAX_BYTES, THUMBNAIL_SIDE, make_thumbnail
from flashvl.pipeline.review.factory import build_review_store
from flashvl.pipeline.review.sqlite import SqliteReviewStore
from flashvl.pipeline.types import Answer, Query
from flashvl.stages.base import VisionResult
from flashvl.testing import start_server, stop_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from render import render_text

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("console-api")
    store = SqliteReviewStore(folder / "reviews.sqlite3")
    for n in range(7):
        store.add(
            question=f"q{n}",
            answer=f"a{n}",
            description="d",
            reasons=["Vision and language DISAGREE" if n % 2 else "low confidence"],
            image_sha256=[],
            route="cascade",
            thumbnail=make_thumbnail(coffee()) if n == 6 else None,
        )
    store.close()
    proc = start_server(["--language", "none", "--review-sqlite-path", str(folder / "reviews.sqlite3")], folder / "log")
    yield proc.base
    stop_server(proc.proc)


def coffee() -> Image.Image:
    from skimage import data

    return Image.fromarray(np.asarray(data.coffee()))  # 600×400


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def test_review_list_pages_filters_and_counts(server: str) -> None:
    page = httpx.get(f"{server}/review", params={"limit": 3, "offset": 3}).json()
    assert [item["question"] for item in page["items"]] == ["q3", "q4", "q5"]
    assert (page["count"], page["offset"], page["limit"]) == (7, 3, 3)
    assert page["counts"] == {"open": 7, "resolved": 0}
    first = httpx.get(f"{server}/review").json()["items"][0]["id"]
    assert httpx.post(f"{server}/review/{first}/resolve", json={"verdict": "accept"}).status_code == 200
    disagree = httpx.get(f"{server}/review", params={"reason": "disagree", "status": "all"}).json()
    assert [item["question"] for item in disagree["items"]] == ["q1", "q3", "q5"]  # case-insensitive substring
    assert disagree["counts"] == {"open": 6, "resolved": 1}
    resolved = httpx.get(f"{server}/review", params={"status": "resolved"}).json()
    assert [item["id"] for item in resolved["items"]] == [first] and resolved["count"] == 1
    assert httpx.get(f"{server}/review", params={"limit": 0}).status_code == 422


def test_a_review_items_thumbnail_is_served_privately_and_only_when_kept(server: str) -> None:
    items = httpx.get(f"{server}/review", params={"status": "all"}).json()["items"]
    assert [item["has_thumbnail"] for item in items] == [False] * 6 + [True]
    assert all("thumbnail" not in item for item in items)  # the bytes never travel in the JSON
    response = httpx.get(f"{server}/review/{items[6]['id']}/thumbnail")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["cache-control"] == "private, no-store"
    assert len(response.content) <= THUMBNAIL_MAX_BYTES
    thumbnail = Image.open(io.BytesIO(response.content))
    assert thumbnail.format == "WEBP" and thumbnail.size == (THUMBNAIL_SIDE, 107)  # 600×400, longest side 160
    missing = httpx.get(f"{server}/review/{items[0]['id']}/thumbnail")  # an item without one
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{server}/review/nosuchitem/thumbnail").status_code == 404


class Flags:
    """An arbiter that finds one conflict in every answer (the policy's own code decides the rest)."""

    def check(self, *args: object) -> list[Conflict]:
        return [Conflict("count", "cup", "the answer says 3 cups, the detector found 1")]


@pytest.mark.parametrize("thumbnails", [True, False])
def test_a_flagged_answer_keeps_a_thumbnail_of_its_image_unless_turned_off(tmp_path: Path, thumbnails: bool) -> None:
    buffer = io.BytesIO()
    coffee().save(buffer, "JPEG")
    image = decode_image(buffer.getvalue(), Settings(), "path")
    settings = Settings(review_thumbnails=thumbnails)  # --review-thumbnails / --no-review-thumbnails
    reviews = build_review_store("sqlite", tmp_path / "r.sqlite3", 10, settings.review_thumbnails)
    pipeline = SimpleNamespace(arbiter=Flags(), reask=False, voter=None, reviews=reviews)
    final = Answer("There are 3 cups.", "cascade", "offline-pipeline", "scripted")
    seen = VisionResult("offline-pipeline", "one cup", observations={})
    asyncio.run(arbitrate(pipeline, Query([image], "How many cups?"), seen, final, "en"))  # type: ignore[arg-type]
    assert final.needs_review and final.review_id
    item = reviews.get(final.review_id)
    assert item is not None and item.image_sha256 == [image.sha256]
    if thumbnails:
        assert item.thumbnail is not None and len(item.thumbnail) <= THUMBNAIL_MAX_BYTES
        assert Image.open(io.BytesIO(item.thumbnail)).size == (160, 107)
    else:
        assert item.thumbnail is None and item.to_dict()["has_thumbnail"] is False


def test_the_streamed_answer_ends_with_its_boxes(server: str) -> None:
    url = data_url(coffee(), "JPEG")
    content = [
        {"type": "text", "text": "What objects are in the image?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    body = {"model": "flashvl", "stream": True, "messages": [{"role": "user", "content": content}]}
    text = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=120).text
    chunks = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and "[DONE]" not in line]
    last = [chunk for chunk in chunks if "flashvl" in chunk]
    assert len(last) == 1
    cups = [box for box in last[0]["flashvl"]["boxes"] if box["label"] == "cup"]
    assert cups and 140 < cups[0]["box"][0] < 170 and 410 < cups[0]["box"][2] < 440  # pixels of the 600×400 photo


def test_moderation_names_the_ocr_line_that_raised_a_rule_without_its_text(server: str) -> None:
    image = render_text(["Spring sale", "Call 13812345678 today"])
    body = httpx.post(f"{server}/moderate", json={"image_base64": data_url(image)}, timeout=120).json()
    assert len(body["flagged_lines"]) == 1
    line = body["flagged_lines"][0]
    assert line["categories"] == ["privacy"] and line["box"][1] > image.height * 0.35
    assert "13812345678" not in json.dumps(body) and line["evidence"] == ["phone number: 138******78"]
    clean = httpx.post(f"{server}/moderate", json={"image_base64": data_url(render_text(["Meeting at noon"]))}).json()
    assert clean["flagged_lines"] == []
