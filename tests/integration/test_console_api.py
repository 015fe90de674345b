"""The API additions the web console (issue 17) uses, against one real server (offline vision stage, no
language stage): the review list's paging, reason filter and counts; the streamed answer's boxes; the
moderation verdict's flagged OCR lines."""

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from flashvl.pipeline.review_store import SqliteReviewStore
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
        )
    store.close()
    proc = start_server(["--language", "none", "--review-sqlite-path", str(folder / "reviews.sqlite3")], folder / "log")
    yield proc.base
    stop_server(proc.proc)


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


def test_the_streamed_answer_ends_with_its_boxes(server: str) -> None:
    from skimage import data

    url = data_url(Image.fromarray(np.asarray(data.coffee())), "JPEG")
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
