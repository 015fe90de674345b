"""The APIs against a real server process with the real offline models.

Includes the three snippets from the product description, verbatim except for
the base URL (the test server runs on a free port, not 8080).
"""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path

import httpx
import pytest
import requests

pytestmark = pytest.mark.slow


def test_infer_snippet_objects_and_positions(live_server: str, image_server: str) -> None:
    url = f"{image_server}/astronaut.jpg"
    result = requests.post(
        f"{live_server}/infer", json={"image_url": url, "prompt": "图中有哪些物体?它们的位置关系如何?"}
    ).json()
    assert result["vision_stage"] == "offline-pipeline"
    assert "人" in result["text"], result  # the detector finds the astronaut (a person)
    assert result["route"] == "rule"
    assert 0 < result["confidence"] <= 1
    assert result["finish_reason"] == "stop" and result["usage"]["total_tokens"] == 0  # a rule generates no tokens
    assert result["image"]["width"] == 512 and len(result["image"]["sha256"]) == 64
    assert [s["name"] for s in result["stages"]] == ["vision"]


def test_caption_snippet(live_server: str, image_dir: Path) -> None:
    caption = requests.post(
        f"{live_server}/caption",
        files={"file": open(image_dir / "coffee.jpg", "rb")},  # noqa: SIM115 - the snippet, verbatim
    ).json()["caption"]
    assert "cup" in caption.lower() or "espresso" in caption.lower() or "coffee" in caption.lower(), caption


def test_predict_snippet_uses_language_stage(live_server: str, image_dir: Path) -> None:
    b64 = base64.b64encode((image_dir / "chelsea.jpg").read_bytes()).decode()
    response = requests.post(
        f"{live_server}/api/predict", json={"data": ["这张图里有什么?", f"data:image/jpeg;base64,{b64}"]}
    )
    answer = response.json()["data"][0]
    assert isinstance(answer, str) and answer.strip()
    meta = response.json()["flashvl"]
    assert meta["route"] == "cascade"
    assert [s["name"] for s in meta["stages"]] == ["vision", "language"]
    assert meta["language_stage"].startswith("llamacpp:")
    assert meta["usage"]["prompt_tokens"] > 0 and meta["usage"]["completion_tokens"] > 0  # the language stage's


def test_openai_client_url_and_base64(live_server: str, image_server: str, image_dir: Path) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key="unused", timeout=120)
    b64 = base64.b64encode((image_dir / "coffee.jpg").read_bytes()).decode()
    for image_url in (f"{image_server}/coffee.jpg", f"data:image/jpeg;base64,{b64}"):
        completion = client.chat.completions.create(
            model="flashvl",
            max_tokens=48,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What colour is the background?"},
                        {"type": "image_url", "image_url": {"url": image_url}},
                    ],
                }
            ],
        )
        assert completion.choices[0].message.content
        assert completion.model_extra["flashvl"]["route"] == "rule"


def test_text_only_chat_confidence_only_when_logprobs_asked(live_server: str) -> None:
    """As in OpenAI, token probabilities are opt-in (``logprobs``): they cost decode time."""
    body = {"messages": [{"role": "user", "content": "Name two colours."}], "max_tokens": 8, "temperature": 0}
    plain = httpx.post(f"{live_server}/v1/chat/completions", json=body, timeout=120).json()
    asked = httpx.post(f"{live_server}/v1/chat/completions", json=body | {"logprobs": True}, timeout=120).json()
    assert plain["flashvl"]["route"] == asked["flashvl"]["route"] == "text-only"
    assert plain["choices"][0]["message"]["content"] == asked["choices"][0]["message"]["content"]
    assert plain["flashvl"]["confidence"] is None
    assert 0 < asked["flashvl"]["confidence"] <= 1
    assert asked["flashvl"]["confidence_source"] == "language:token-probability"


def test_openai_client_streaming(live_server: str, image_server: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key="unused", timeout=120)
    stream = client.chat.completions.create(
        model="flashvl",
        max_tokens=32,
        stream=True,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Write one sentence about this picture for a photo album."},
                    {"type": "image_url", "image_url": {"url": f"{image_server}/chelsea.jpg"}},
                ],
            }
        ],
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1, "the answer should arrive in several pieces"
    assert "".join(pieces).strip()


def test_stream_final_chunk_carries_stages(live_server: str, image_server: str) -> None:
    body = {
        "model": "flashvl",
        "stream": True,
        "max_tokens": 16,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe the rocket briefly."},
                    {"type": "image_url", "image_url": {"url": f"{image_server}/rocket.jpg"}},
                ],
            }
        ],
    }
    events = []
    with httpx.stream("POST", f"{live_server}/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    assert {s["name"] for s in final["flashvl"]["stages"]} == {"vision", "language"}


def test_models_health_ready_metrics(live_server: str) -> None:
    models = httpx.get(f"{live_server}/v1/models").json()
    assert models["data"][0]["id"] == "flashvl"
    assert models["data"][0]["flashvl"]["vision_is_vlm"] is False
    assert httpx.get(f"{live_server}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{live_server}/readyz").json()
    assert ready["ready"] is True and set(ready["stages"]) == {"vision", "language", "safety"}  # safety: batch task
    text = httpx.get(f"{live_server}/metrics").text
    assert 'flashvl_request_seconds_bucket{endpoint="/infer"' in text
    assert 'flashvl_stage_seconds_bucket{backend="offline-pipeline"' in text
    assert "flashvl_errors_total" in text


def test_errors_are_clear_and_counted(live_server: str, image_dir: Path) -> None:
    bad = httpx.post(f"{live_server}/caption", files={"file": ("x.png", b"plain text", "image/png")})
    assert bad.status_code == 415
    assert bad.json()["error"]["code"] == "unsupported_format"
    both = httpx.post(f"{live_server}/infer", json={"prompt": "hi"})
    assert both.status_code == 422 and "image_url or image_base64" in both.json()["error"]["message"]
    blocked = httpx.post(f"{live_server}/infer", json={"image_url": "http://127.0.0.2:9/x.jpg", "prompt": "hi"})
    assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "url_address_blocked"
    too_many = httpx.post(f"{live_server}/infer", json={"image_base64": "AAAA", "prompt": "hi", "max_tokens": 10**6})
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "max_tokens_too_large"
    metrics = httpx.get(f"{live_server}/metrics").text
    assert 'flashvl_errors_total{code="unsupported_format"}' in metrics


def test_body_cap_refuses_before_reading(live_server: str) -> None:
    limits = httpx.get(f"{live_server}/api/limits").json()
    declared = limits["max_image_bytes"] * 10
    host, port = live_server.removeprefix("http://").split(":")
    # Raw socket: declare a huge body, send none of it. The server must answer from the headers alone.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /caption HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):  # the server closes the connection after refusing
            chunks.append(chunk)
        reply = b"".join(chunks).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert '"request_too_large"' in reply


def test_file_url_under_root_only(live_server: str, image_dir: Path) -> None:
    ok = httpx.post(
        f"{live_server}/infer",
        json={"image_url": f"file://{image_dir / 'white.png'}", "prompt": "What colour is this image?"},
        timeout=60,
    )
    assert ok.status_code == 200 and "white" in ok.json()["text"]
    outside = httpx.post(f"{live_server}/infer", json={"image_url": "file:///etc/passwd", "prompt": "hi"})
    assert outside.status_code == 403 and outside.json()["error"]["code"] == "file_url_not_allowed"


def test_security_headers_and_request_id(live_server: str) -> None:
    response = httpx.get(f"{live_server}/healthz", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_logs_are_json_without_prompts(live_server: str, server_log: Path) -> None:
    secret = "zebra-quokka-prompt-marker"
    httpx.post(f"{live_server}/infer", json={"image_base64": "AAAA", "prompt": secret})
    lines = [line for line in server_log.read_text().splitlines() if line.startswith("{")]
    # llama.cpp writes its own (non-JSON) messages to the same stderr from C++, and one can land
    # right after a record, before its newline: each record must still parse whole, as a prefix.
    records = [json.JSONDecoder().raw_decode(line)[0] for line in lines]
    assert any(r.get("event") == "request" and r.get("endpoint") == "/infer" and "latency_ms" in r for r in records)
    assert secret not in server_log.read_text()
