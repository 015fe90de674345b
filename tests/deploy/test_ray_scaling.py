"""Scaling on a REAL two-node Ray cluster (the one of ``tests/deploy/conftest.py``):

- autoscaling: a ``1-2`` vision stage goes to 2 replicas under queued load and back to 1 after;
- two ingress replicas on one real ``redis-server``: an image answered on one is a cache hit on the
  other; a per-key rate limit holds across both within 10%; the model queue is one queue (its one
  slot held by this process, both replicas answer 503 ``server_busy``);
- every port the cluster's processes listen on is on 127.0.0.1, but each Serve replica's
  inter-deployment gRPC server (every interface, Ray's choice), which refuses callers without the
  cluster's token.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from ray_support import (  # noqa: E402
    Cluster,
    check_ports_with_replicas,
    deploy_app,
    images_b64,
    is_loopback,
    replicas_running,
)

from flashvl.config import Settings  # noqa: E402
from flashvl.testing import start_redis  # noqa: E402

pytestmark = pytest.mark.timeout(420)


def test_autoscaling_up_under_queued_load_and_back_down(cluster: Cluster, image_dir: Path) -> None:
    deploy_app(
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
    assert replicas_running("vision") == 1
    images = list(images_b64(image_dir).values())
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
        while replicas_running("vision") < 2 and time.monotonic() - began < 90:
            time.sleep(0.5)
        up_s = time.monotonic() - began
        assert replicas_running("vision") == 2, "no second replica under queued load"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    began = time.monotonic()
    while replicas_running("vision") > 1 and time.monotonic() - began < 90:
        time.sleep(0.5)
    down_s = time.monotonic() - began
    assert replicas_running("vision") == 1, "did not scale back to 1 after the load"
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
        deploy_app(
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
        assert replicas_running("ingress") == 2
        check_ports_with_replicas(cluster, replicas=3)  # 2 ingress + 1 vision
        image = images_b64(image_dir)["rocket"]

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
                        json={"image_base64": images_b64(image_dir)["coffee"], "prompt": f"What is this? {i}"},
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
            json={"image_base64": images_b64(image_dir)["coffee"], "prompt": "What is this?"},
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
    open_ = [(address, name) for address, name in listeners if not is_loopback(address)]
    assert not open_, open_
    print(f"\n{len(listeners)} listening sockets, all on 127.0.0.1: {sorted(names)}")
