"""flashvl on a REAL two-node Ray cluster (``tests/deploy/conftest.py``: ``ray start --head`` plus a second
``ray start --address`` node process, both on this machine, one cluster for every Ray test module here).
Light on purpose (this machine has 2 cores): the offline vision stage, an OpenAI-compatible stand-in
upstream for the language stage, fractional CPUs per replica.

- ``--engine ray``: the three product snippets and the OpenAI client; 12 concurrent requests with
  ``--vision-replicas 2`` are served by both vision replicas (``stages[].replica``); with
  ``--tracing``, one request is one trace across the ingress and the replicas' processes, exported
  over OTLP/HTTP to a collector here;
- a language replica SIGKILLed under bounded concurrent load: 0 failed requests (labelled degraded
  answers allowed), Serve brings a replica back, full answers resume.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from ray_support import (  # noqa: E402
    ANSWER,
    LIGHT,
    UPSTREAM_EVENTS,
    Cluster,
    Collector,
    images_b64,
    stage_of,
    wait_ready,
)

pytestmark = pytest.mark.timeout(420)


def test_engine_ray_snippets_replicas_and_a_killed_language_replica(
    cluster: Cluster, upstream: str, collector: str, image_dir: Path, image_server: str, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    cmd = [
        sys.executable, "-m", "flashvl", "serve", "--engine", "ray", "--ray-address", cluster.address,
        "--host", "127.0.0.1", "--port", str(cluster.http_port), *LIGHT,
        "--vision-replicas", "2", "--language", f"openai:{upstream}#stand-in", "--vision-cache", "none",
        "--language-timeout-s", "4", "--breaker-failures", "2", "--breaker-reset-s", "1",
        "--rate-limit-per-ip", "", "--concurrency-per-ip", "0",
        "--fetch-allow-cidrs", "127.0.0.1/32", "--review-store", "memory",
        "--jobs-sqlite-path", str(tmp_path / "jobs.sqlite3"),
        "--tracing", "--tracing-otlp-endpoint", collector,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=cluster.env)
    try:
        wait_ready(cluster.base, proc, log)
        base, images = cluster.base, images_b64(image_dir)
        with httpx.Client(base_url=base, timeout=60) as client:
            # the three product snippets
            infer = client.post(
                "/infer", json={"image_url": f"{image_server}/astronaut.jpg", "prompt": "Why is he here?"}
            )
            assert infer.status_code == 200, infer.text
            body = infer.json()
            assert body["route"] == "cascade" and body["text"].startswith(ANSWER)
            assert stage_of(body, "vision")["replica"].startswith("vision#")
            assert stage_of(body, "language")["replica"].startswith("language#")
            _check_trace(body["request_id"], body)  # (Serve's proxy sets its own x-request-id header)
            with (image_dir / "coffee.jpg").open("rb") as f:
                caption = client.post("/caption", files={"file": f})
            assert caption.status_code == 200 and caption.json()["caption"], caption.text
            predict = client.post(
                "/api/predict", json={"data": ["这张图里有什么?", f"data:image/jpeg;base64,{images['chelsea']}"]}
            )
            assert predict.status_code == 200 and predict.json()["data"][0]
        # the OpenAI client, whole and streamed
        from openai import OpenAI

        oai = OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=60)
        content = [
            {"type": "text", "text": "Why is this person here?"},
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{images['astronaut']}"}},
        ]
        done = oai.chat.completions.create(model="flashvl", messages=[{"role": "user", "content": content}])
        assert (done.choices[0].message.content or "").startswith(ANSWER)
        streamed = oai.chat.completions.create(
            model="flashvl", messages=[{"role": "user", "content": content}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).startswith(ANSWER)
        _client_goes_away(base, images["astronaut"])

        # 12 concurrent requests: both vision replicas serve
        def ask(i: int) -> dict[str, Any]:
            name = list(images)[i % len(images)]
            r = httpx.post(
                f"{base}/infer",
                json={"image_base64": images[name], "prompt": f"Why is this here? ({i})"},
                timeout=120,
            )
            assert r.status_code == 200, r.text
            return dict(r.json())

        with ThreadPoolExecutor(12) as pool:
            bodies = list(pool.map(ask, range(12)))
        vision_replicas = {stage_of(b, "vision")["replica"] for b in bodies}
        assert len(vision_replicas) == 2, vision_replicas

        # SIGKILL the language replica under bounded load
        _kill_language_replica_under_load(base, images)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]


def _client_goes_away(base: str, image: str) -> None:
    """A streaming client that leaves after the first piece stops the generation in the language
    replica: its connection to the upstream closes seconds before the answer would have ended."""
    body = {
        "model": "flashvl",
        "stream": True,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Explain SLOWLY why this person is here."},
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{image}"}},
                ],
            }
        ],
    }
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:") and '"content"' in line:
                break  # the first piece: now leave
    left = time.monotonic()
    deadline = left + 8  # the whole answer would take 10 s more
    while time.monotonic() < deadline and not UPSTREAM_EVENTS:
        time.sleep(0.1)
    assert UPSTREAM_EVENTS and UPSTREAM_EVENTS[0][0] == "closed", UPSTREAM_EVENTS
    print(f"\nclient left: the replica closed its upstream stream {UPSTREAM_EVENTS[0][1] - left:.1f}s later")


def _check_trace(request_id: str, body: dict[str, Any]) -> None:
    """One trace for the request: the ingress's request span, its stage calls, and the replicas' work
    (spans sent by the vision and language replica processes, named by their replica)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        roots = [s for s in Collector.spans if s["attributes"].get("flashvl.request_id") == request_id]
        trace = [s for s in Collector.spans if roots and s["trace"] == roots[0]["trace"]]
        names = {s["name"] for s in trace}
        if {"flashvl.replica.vision.observe", "flashvl.replica.language.stream"} <= names or (
            {"flashvl.replica.vision.observe", "flashvl.replica.language.generate"} <= names
        ):
            break
        time.sleep(0.3)
    seen = [(s["name"], s["attributes"]) for s in Collector.spans][:20]
    assert roots, f"no flashvl.request span for the request id; spans: {seen}"
    by_id = {s["id"]: s for s in trace}
    observe = next(s for s in trace if s["name"] == "flashvl.replica.vision.observe")
    assert observe["attributes"]["flashvl.replica"] == stage_of(body, "vision")["replica"]
    assert by_id[observe["parent"]]["name"] == "flashvl.stage.vision.observe"  # the ingress's call
    language = next(s for s in trace if s["name"].startswith("flashvl.replica.language."))
    assert language["attributes"]["flashvl.replica"] == stage_of(body, "language")["replica"]
    assert by_id[language["parent"]]["name"].startswith("flashvl.stage.language.")


def _language_replica() -> dict[str, Any] | None:
    """The language deployment's answer to ``info`` (its replica name and pid), None while it has none."""
    handle = serve.get_deployment_handle("language", app_name="flashvl")
    try:
        return dict(handle.info.remote().result(timeout_s=5))
    except Exception:
        return None


def _kill_language_replica_under_load(base: str, images: dict[str, str]) -> None:
    victim = _language_replica()
    assert victim is not None
    results: list[tuple[float, int, dict[str, Any]]] = []
    stop = threading.Event()
    killed_at: list[float] = []

    def client(n: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            i = 0
            while not stop.is_set():
                r = http.post(
                    "/infer",
                    json={"image_base64": images["astronaut"], "prompt": f"Why is this person here? ({n}.{i})"},
                )
                results.append((time.monotonic(), r.status_code, r.json() if r.status_code == 200 else {}))
                i += 1
                time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        os.kill(int(victim["pid"]), signal.SIGKILL)  # the replica process dies as in a crash
        killed_at.append(time.monotonic())
        deadline = killed_at[0] + 90
        back = False
        while time.monotonic() < deadline:
            time.sleep(1)
            now = _language_replica()
            fresh = now is not None and now["replica"] != victim["replica"]
            full_after = [b for t, s, b in results if t > killed_at[0] + 1 and s == 200 and not b["degraded"]]
            if fresh and any(stage_of(b, "language")["replica"] != victim["replica"] for b in full_after):
                back = True
                break
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=90)
    failed = [(s, b) for _, s, b in results if s != 200]
    degraded = [b for _, s, b in results if s == 200 and b["degraded"]]
    assert not failed, failed[:3]
    assert all(b["route"] == "vision-only" and b["notice"] for b in degraded)  # labelled
    assert back, f"no replica back / no full answers: {len(results)} requests, {len(degraded)} degraded"
    print(f"\nkill: {len(results)} requests, 0 failed, {len(degraded)} degraded (labelled), replica replaced")
