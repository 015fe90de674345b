"""The knowledge base over HTTP on a real server process: scopes, ownership, multipart upload of images and
a PDF, text and image search, grounded answers through /infer and /v1/chat/completions, deletion."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flashvl.security.auth import hash_key
from flashvl.testing import start_server, stop_server

from .corpus import PDFS, SCREENSHOTS, pdf_bytes, png_bytes, screenshot

pytestmark = pytest.mark.slow
ALICE, BOB, APP = "fvl_alice_" + "a" * 40, "fvl_bob_" + "b" * 40, "fvl_app_" + "c" * 40


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("kbapi")
    keys = [
        f"alice:infer+kb:write:{hash_key(ALICE)}",
        f"bob:infer+kb:read:{hash_key(BOB)}",
        f"app:infer:{hash_key(APP)}",
    ]
    server = start_server(
        ["--language", "none", "--kb-sqlite-path", str(folder / "kb.sqlite3"), "--api-keys", ",".join(keys)],
        folder / "server.log",
    )
    yield server.base
    stop_server(server.proc)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_index_search_answer_delete_over_http(server: str) -> None:
    client = httpx.Client(base_url=server, timeout=180)
    vpn = png_bytes(screenshot(SCREENSHOTS["vpn_setup.png"]))
    files = [
        ("files", ("vpn_setup.png", vpn, "image/png")),
        ("files", ("办公手册.pdf", pdf_bytes(PDFS["办公手册.pdf"]), "application/pdf")),
    ]
    assert client.post("/kb/team/documents", files=files, headers=auth(BOB)).status_code == 403  # read only
    added = client.post("/kb/team/documents", files=files, headers=auth(ALICE)).json()
    assert [(d["document"], d["status"], d["pages"]) for d in added["documents"]] == [
        ("vpn_setup.png", "indexed", 1),
        ("办公手册.pdf", "indexed", 2),
    ]
    found = client.post("/kb/team/search", json={"query": "灭火器在哪里", "top_k": 3}, headers=auth(ALICE)).json()
    top = found["results"][0]
    assert (top["document"], top["page"]) == ("办公手册.pdf", 2) and top["highlights"]
    by_image = client.post(
        "/kb/team/search", files={"image": ("shot.png", vpn, "image/png")}, data={"top_k": "2"}, headers=auth(ALICE)
    ).json()
    assert by_image["results"][0]["document"] == "vpn_setup.png" and by_image["results"][0]["phash_distance"] == 0
    picture = client.get(f"/kb/team/documents/{top['document_id']}/pages/2/image", headers=auth(ALICE))
    assert picture.status_code == 200 and picture.content[:4] == b"\x89PNG"

    # ownership: bob does not see alice's collection until she grants it
    assert client.post("/kb/team/search", json={"query": "VPN"}, headers=auth(BOB)).status_code == 404
    assert client.get("/kb", headers=auth(BOB)).json() == {"collections": []}
    assert client.post("/kb/team/grants", json={"principal": "key:bob"}, headers=auth(ALICE)).status_code == 200
    assert client.post("/kb/team/search", json={"query": "VPN"}, headers=auth(BOB)).json()["results"]

    # grounded answers (no language stage here: the best page's passage, cited)
    answer = client.post(
        "/infer", json={"prompt": "VPN server address?", "knowledge": {"collection": "team"}}, headers=auth(BOB)
    ).json()
    assert answer["route"] == "knowledge"
    assert [(s["document"], s["page"]) for s in answer["sources"]] == [("vpn_setup.png", 1)]
    assert "vpn.northwind.example" in answer["text"]
    refused = client.post("/infer", json={"prompt": "VPN?", "knowledge": {"collection": "team"}}, headers=auth(APP))
    assert refused.status_code == 403  # infer alone is not kb:read
    chat = client.post(
        "/v1/chat/completions",
        json={
            "model": "flashvl",
            "messages": [{"role": "user", "content": "午休时间是几点?"}],
            "knowledge": {"collection": "team", "top_k": 2},
        },
        headers=auth(ALICE),
    ).json()
    assert chat["flashvl"]["sources"][0]["document"] == "办公手册.pdf" and chat["flashvl"]["sources"][0]["page"] == 1
    declined = client.post(
        "/infer",
        json={"prompt": "What is the capital of Australia?", "knowledge": {"collection": "team"}},
        headers=auth(ALICE),
    ).json()
    assert declined["sources"] == [] and "nothing relevant" in declined["text"]

    # deleting removes every derived record
    document_id = added["documents"][0]["document_id"]
    assert client.delete(f"/kb/team/documents/{document_id}", headers=auth(BOB)).status_code == 403
    assert client.delete(f"/kb/team/documents/{document_id}", headers=auth(ALICE)).json()["pages_removed"] == 1
    hits = client.post("/kb/team/search", json={"query": "VPN server"}, headers=auth(ALICE)).json()["results"]
    assert "vpn_setup.png" not in [h["document"] for h in hits]
    gone = client.get(f"/kb/team/documents/{document_id}/pages/1/image", headers=auth(ALICE))
    assert gone.status_code == 404
    data_url = "data:image/png;base64," + base64.b64encode(vpn).decode()
    again = client.post("/kb/team/documents", json={"urls": [data_url]}, headers=auth(ALICE)).json()
    assert again["documents"][0]["status"] == "indexed"


def test_a_missing_collection_and_bad_names_are_refused(server: str) -> None:
    client = httpx.Client(base_url=server, timeout=60)
    assert client.post("/kb/nope/search", json={"query": "x"}, headers=auth(ALICE)).status_code == 404
    assert client.post("/kb/..bad/search", json={"query": "x"}, headers=auth(ALICE)).status_code == 400


def test_streamed_chat_with_knowledge_cites_sources(server: str) -> None:
    client = httpx.Client(base_url=server, timeout=120)
    client.post(
        "/kb/streams/documents",
        files=[("files", ("printer_help.png", png_bytes(screenshot(SCREENSHOTS["printer_help.png"])), "image/png"))],
        headers=auth(ALICE),
    )
    body = {
        "model": "flashvl",
        "messages": [{"role": "user", "content": "which toner part should I order?"}],
        "knowledge": {"collection": "streams"},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body, headers=auth(ALICE)) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert "TN-760" in "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    final = next(c for c in chunks if c.get("flashvl"))
    assert final["flashvl"]["route"] == "knowledge" and final["flashvl"]["sources"][0]["document"] == "printer_help.png"


def test_flashvl_kb_add_is_idempotent_and_resumable(tmp_path: Path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    (folder / "vpn_setup.png").write_bytes(png_bytes(screenshot(SCREENSHOTS["vpn_setup.png"])))
    (folder / "notes.txt").write_text("not indexed")
    command = [sys.executable, "-m", "flashvl", "kb", "add", "cli-docs", str(folder), "--no-progress"]
    command += ["--kb-sqlite-path", str(tmp_path / "kb.sqlite3"), "--no-kb-describe"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"collection": "cli-docs", "indexed": 1, "skipped": 0, "failed": 0, "pages": 1}
    (folder / "manual.pdf").write_bytes(pdf_bytes(PDFS["办公手册.pdf"]))  # a file added after the first run
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert json.loads(second.stdout) == {"collection": "cli-docs", "indexed": 1, "skipped": 1, "failed": 0, "pages": 2}


def test_infer_with_an_image_and_knowledge_searches_by_the_image_too(server: str) -> None:
    client = httpx.Client(base_url=server, timeout=120)
    mail = png_bytes(screenshot(SCREENSHOTS["邮箱配置.png"]))
    files = [
        ("files", ("邮箱配置.png", mail, "image/png")),
        ("files", ("printer_help.png", png_bytes(screenshot(SCREENSHOTS["printer_help.png"])), "image/png")),
    ]
    client.post("/kb/mail/documents", files=files, headers=auth(ALICE))
    answer = client.post(
        "/infer",
        json={
            "prompt": "这个页面的发件服务器是什么?",
            "image_base64": base64.b64encode(mail).decode(),
            "knowledge": {"collection": "mail", "top_k": 2},
        },
        headers=auth(ALICE),
    ).json()
    assert answer["route"] == "knowledge" and answer["image"]["width"] > 0
    assert answer["sources"][0]["document"] == "邮箱配置.png"
