"""flashvl on a REAL two-node Ray cluster: ``ray start --head`` plus a second ``ray start --address``
node process, both on this machine, one cluster for this module, stopped (``ray stop --force``) at
the end. Light on purpose (this machine has 2 cores): the offline vision stage, an OpenAI-compatible
stand-in upstream for the language stage, fractional CPUs per replica.

- ``--engine ray``: the three product snippets and the OpenAI client; 12 concurrent requests with
  ``--vision-replicas 2`` are served by both vision replicas (``stages[].replica``); with
  ``--tracing``, one request is one trace across the ingress and the replicas' processes, exported
  over OTLP/HTTP to a collector here;
- a language replica SIGKILLed under bounded concurrent load: 0 failed requests (labelled degraded
  answers allowed), Serve brings a replica back, full answers resume;
- autoscaling: a ``1-2`` vision stage goes to 2 replicas under queued load and back to 1 after;
- every port the cluster's processes listen on is on 127.0.0.1, but each Serve replica's
  inter-deployment gRPC server (every interface, Ray's choice), which refuses callers without the
  cluster's token;
- two ingress replicas on one real ``redis-server``: an image answered on one is a cache hit on the
  other; a per-key rate limit holds across both within 10%; the model queue is one queue (its one
  slot held by this process, both replicas answer 503 ``server_busy``).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from flashvl.config import Settings  # noqa: E402
from flashvl.deploy.cluster import LocalRayCluster as Cluster  # noqa: E402
from flashvl.testing import start_redis  # noqa: E402

pytestmark = pytest.mark.timeout(420)
ANSWER = "The person in the photo is an astronaut."
UPSTREAM_EVENTS: list[tuple[str, float]] = []
LIGHT = [
    "--router", "rules", "--no-arbitration", "--no-disclaimers", "--vision-num-cpus", "0.5",
    "--ingress-num-cpus", "0.25", "--language-num-cpus", "0.25", "--vision-threads", "1",
]  # fmt: skip


class Upstream(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat server (streamed answers), standing in for vLLM/llama.cpp."""

    def do_POST(self) -> None:
        prompt = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        slow = b"SLOWLY" in prompt  # 100 pieces, 0.1 s apart: the client-goes-away check
        words = ANSWER.split(" ") * (13 if slow else 1)
        try:
            for i, word in enumerate(words):
                chunk = {"choices": [{"index": 0, "delta": {"content": word + (" " if i < len(words) - 1 else "")}}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.1 if slow else 0.01)
        except (BrokenPipeError, ConnectionResetError):
            UPSTREAM_EVENTS.append(("closed", time.monotonic()))  # the generation was stopped
            return
        if slow:
            UPSTREAM_EVENTS.append(("finished", time.monotonic()))
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": len(words)}}
        self.wfile.write(f"data: {json.dumps(end)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # spans leave every process within 0.2 s (the OTLP batch processor's delay; default 5 s)
    with Cluster(nodes=2, cpus_per_node=2, env={"OTEL_BSP_SCHEDULE_DELAY": "200"}) as cluster:
        yield cluster  # stopped (ray stop --force) whatever happens


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace collector: keeps every span it is sent (protobuf), flattened."""

    spans: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        export = ExportTraceServiceRequest()
        export.ParseFromString(self.rfile.read(int(self.headers.get("content-length", 0))))
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: a.value.string_value for a in span.attributes}
                    self.spans.append(
                        {
                            "name": span.name,
                            "trace": span.trace_id.hex(),
                            "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "attributes": attributes,
                        }
                    )
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    server.shutdown()


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _images(image_dir: Path) -> dict[str, str]:
    return {p.stem: base64.b64encode(p.read_bytes()).decode() for p in sorted(image_dir.glob("*.jpg"))}


def _wait_ready(base: str, proc: subprocess.Popen[bytes] | None, log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"flashvl serve --engine ray exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"not ready in {timeout_s:g}s:\n{log.read_text()[-4000:] if log.exists() else ''}")


def _deploy(cluster: Cluster, **settings: Any) -> None:
    """Deploy from this driver (what ``serve run flashvl.deploy.ray:build`` does) and wait until ready."""
    from flashvl.deploy.ray import build_app

    app = build_app(Settings(**settings))
    serve.run(app, name="flashvl", route_prefix="/")
    _wait_ready(cluster.base, None, Path("/nonexistent"))


def _replicas(deployment: str) -> int:
    status = serve.status().applications["flashvl"].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def _stage(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in body["stages"] if s["name"] == name)


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
        _wait_ready(cluster.base, proc, log)
        base, images = cluster.base, _images(image_dir)
        with httpx.Client(base_url=base, timeout=60) as client:
            # the three product snippets
            infer = client.post(
                "/infer", json={"image_url": f"{image_server}/astronaut.jpg", "prompt": "Why is he here?"}
            )
            assert infer.status_code == 200, infer.text
            body = infer.json()
            assert body["route"] == "cascade" and body["text"].startswith(ANSWER)
            assert _stage(body, "vision")["replica"].startswith("vision#")
            assert _stage(body, "language")["replica"].startswith("language#")
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
        vision_replicas = {_stage(b, "vision")["replica"] for b in bodies}
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
    assert observe["attributes"]["flashvl.replica"] == _stage(body, "vision")["replica"]
    assert by_id[observe["parent"]]["name"] == "flashvl.stage.vision.observe"  # the ingress's call
    language = next(s for s in trace if s["name"].startswith("flashvl.replica.language."))
    assert language["attributes"]["flashvl.replica"] == _stage(body, "language")["replica"]
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
            if fresh and any(_stage(b, "language")["replica"] != victim["replica"] for b in full_after):
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


def test_autoscaling_up_under_queued_load_and_back_down(cluster: Cluster, image_dir: Path) -> None:
    _deploy(
        cluster,
        language="none",
        router="rules",
        arbitration=False,
        disclaimers=False,
        vision_cache="none",
        vision_replicas="1-2",
        vision_num_cpus=0.5,
        ingress_num_cpus=0.25,
        vision_threads=1,
        stage_max_ongoing_requests=2,
        autoscale_target_ongoing_requests=1,
        autoscale_upscale_delay_s=1,
        autoscale_downscale_delay_s=4,
        rate_limit_per_ip="",
        concurrency_per_ip=0,
        review_store="memory",
    )
    assert _replicas("vision") == 1
    images = list(_images(image_dir).values())
    stop = threading.Event()

    def load(n: int) -> None:
        with httpx.Client(base_url=cluster.base, timeout=120) as http:
            i = 0
            while not stop.is_set():
                http.post("/infer", json={"image_base64": images[(n + i) % len(images)], "prompt": "What is this?"})
                i += 1

    threads = [threading.Thread(target=load, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    try:
        began = time.monotonic()
        while _replicas("vision") < 2 and time.monotonic() - began < 90:
            time.sleep(0.5)
        up_s = time.monotonic() - began
        assert _replicas("vision") == 2, "no second replica under queued load"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    began = time.monotonic()
    while _replicas("vision") > 1 and time.monotonic() - began < 90:
        time.sleep(0.5)
    down_s = time.monotonic() - began
    assert _replicas("vision") == 1, "did not scale back to 1 after the load"
    print(f"\nautoscaling: 1 -> 2 in {up_s:.1f}s under load, 2 -> 1 in {down_s:.1f}s after it")
    serve.delete("flashvl")


def test_two_ingress_replicas_share_cache_and_rate_limits(cluster: Cluster, image_dir: Path, tmp_path: Path) -> None:
    from flashvl.security.auth import make_key

    cache_key, cache_entry = make_key("cache", "infer")
    limited_key, limited_entry = make_key("limited", "infer")
    queue_key, queue_entry = make_key("queue", "infer")
    proc, url = start_redis()
    try:
        common = {
            "language": "none",
            "router": "rules",
            "arbitration": False,
            "disclaimers": False,
            "vision_num_cpus": 0.5,
            "ingress_num_cpus": 0.25,
            "vision_threads": 1,
            "api_keys": [cache_entry, limited_entry, queue_entry],
            "review_store": "sqlite",
            "review_sqlite_path": tmp_path / "reviews.sqlite3",
            "jobs_sqlite_path": tmp_path / "jobs.sqlite3",
            "ingress_replicas": "2",
        }
        with pytest.raises(ValueError, match="--vision-cache redis") as refused:  # process-local state is refused
            from flashvl.deploy.ray import build_app

            build_app(Settings(**common))
        assert "--model-queue-redis-url" in str(refused.value)
        queue_url = url.rsplit("/", 1)[0] + "/3"
        _deploy(
            cluster,
            **common,
            vision_cache="redis",
            vision_cache_redis_url=f"{url}/0",
            rate_limit_storage=f"{url}/1",
            rate_limit_per_key="30/minute",
            rate_limit_per_ip="",
            model_max_concurrent=1,
            model_queue_timeout_s=1.0,
            model_queue_redis_url=queue_url,
            model_queue_redis_prefix="t:ray",
        )
        assert _replicas("ingress") == 2
        _check_ports_with_replicas(cluster, replicas=3)  # 2 ingress + 1 vision
        image = _images(image_dir)["rocket"]

        def infer() -> tuple[str, dict[str, Any]]:
            r = httpx.post(
                f"{cluster.base}/infer",
                json={"image_base64": image, "prompt": "What is this?"},
                headers={"authorization": f"Bearer {cache_key}"},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            return r.headers["x-flashvl-replica"], dict(r.json())

        first_ingress, first = infer()
        assert first["cache"]["vision"] == "miss"
        for _ in range(25):  # until the other ingress replica answers the same image (under the key's 30/minute)
            ingress, body = infer()
            if ingress != first_ingress:
                assert body["cache"]["vision"] == "hit" and body["cache"]["backend"] == "redis"
                break
        else:
            pytest.fail("one ingress replica answered 25 requests in a row")

        statuses: dict[str, list[int]] = {}
        with httpx.Client(base_url=cluster.base, timeout=30) as http:
            for _ in range(45):
                r = http.get("/v1/models", headers={"authorization": f"Bearer {limited_key}"})
                statuses.setdefault(r.headers.get("x-flashvl-replica", "?"), []).append(r.status_code)
        allowed = sum(code == 200 for codes in statuses.values() for code in codes)
        refused = sum(code == 429 for codes in statuses.values() for code in codes)
        assert len(statuses) == 2, statuses.keys()  # both ingress replicas counted requests
        assert 27 <= allowed <= 33 and allowed + refused == 45, (allowed, refused)
        print(f"\nrate limit 30/minute across 2 ingress replicas: {allowed} allowed, {refused} refused")

        # one model queue: its only slot held here, both ingress replicas answer 503 server_busy
        import asyncio

        from flashvl.pipeline.admission_redis import RedisModelGate

        async def hold_and_ask() -> dict[str, set[int]]:
            gate = RedisModelGate(queue_url, 1, 8, 5.0, prefix="t:ray")
            seen: dict[str, set[int]] = {}
            async with gate.slot(), httpx.AsyncClient(base_url=cluster.base, timeout=30) as http:
                for i in range(12):
                    r = await http.post(
                        "/infer",
                        json={"image_base64": _images(image_dir)["coffee"], "prompt": f"What is this? {i}"},
                        headers={"authorization": f"Bearer {queue_key}"},
                    )
                    assert r.status_code != 503 or r.json()["error"]["code"] == "server_busy", r.text
                    seen.setdefault(r.headers.get("x-flashvl-replica", "?"), set()).add(r.status_code)
            await gate.aclose()
            return seen

        seen = asyncio.run(hold_and_ask())
        assert len(seen) == 2 and all(codes == {503} for codes in seen.values()), seen
        r = httpx.post(
            f"{cluster.base}/infer",
            json={"image_base64": _images(image_dir)["coffee"], "prompt": "What is this?"},
            headers={"authorization": f"Bearer {queue_key}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text  # the slot is free again
        serve.delete("flashvl")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_cluster_listens_on_loopback_only(cluster: Cluster) -> None:
    """With no app deployed, every TCP port of the cluster's processes (GCS, raylets, agents, Serve's
    controller and proxy, workers, the Ray client server, this driver) is on 127.0.0.1
    (``LocalRayCluster`` keeps Ray from rewriting 127.0.0.1 to the machine's address)."""
    listeners = cluster.listeners()
    names = {name for _, name in listeners}
    assert {"gcs_server", "raylet"} <= names and len(listeners) >= 8, listeners
    open_ = [(address, name) for address, name in listeners if not _loopback(address)]
    assert not open_, open_
    print(f"\n{len(listeners)} listening sockets, all on 127.0.0.1: {sorted(names)}")


def _check_ports_with_replicas(cluster: Cluster, replicas: int) -> None:
    """With replicas running: each Serve replica's inter-deployment gRPC server is the one port Ray
    binds on every interface (``[::]:0`` in Ray Serve 2.60, not configurable); it refuses a call
    without the cluster's token. Everything else stays on 127.0.0.1."""
    import grpc

    listeners = cluster.listeners()
    open_ = [(address, name) for address, name in listeners if not _loopback(address)]
    assert all(name.startswith("ray::ServeRepli") for _, name in open_), open_
    assert len(open_) == replicas, open_
    for address, _ in open_:
        channel = grpc.insecure_channel(f"127.0.0.1:{address.rsplit(':', 1)[1]}")
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary("/ray.serve.ASGIService/HandleRequest")(b"", timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        channel.close()
    print(f"\n{len(listeners)} listening sockets; on every interface only the {replicas} replicas' gRPC (token)")


def _loopback(address: str) -> bool:
    return address.rsplit(":", 1)[0] in {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}
