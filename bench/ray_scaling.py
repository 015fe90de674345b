"""Ray Serve scale-out: requests/s and p50/p99 with one vs two vision replicas, on a real local
two-node Ray cluster, in one run; then a model of N-replica throughput from the measured per-stage
service times.

Setup: ``flashvl.deploy.ray`` (ingress + vision deployment), offline vision stage, no language
stage (``--language none``: the vision stage is what is scaled here), no vision cache (every request
runs the models), distinct images round robin, ``--concurrency`` clients.

Measured per request at concurrency 1: the vision replica's own service time (the sum of its
steps: the models) ``t_v``, and everything else (HTTP proxy, ingress app, handle hop, response)
``t_i``. The model: with N vision replicas behind one ingress replica, each replica on its own
device, throughput X(N) = min(N / t_v, 1 / t_i) (the ingress is one asyncio process; it can
overlap waiting but its own CPU work per request, ``t_i`` at most, is serial).

Honest limit: this machine has 2 CPU cores shared by every process (both Ray nodes, the replicas,
the proxy, the clients), so two CPU replicas here cannot double throughput; the model says what
separate devices (GPUs, or nodes) would give. Writes bench/results/ray_scaling.md, .json and .png.
Run: .venv/bin/python bench/ray_scaling.py
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from flashvl.config import Settings
from flashvl.deploy.cluster import LocalRayCluster

RESULTS = Path(__file__).parent / "results"


def images(count: int) -> list[str]:
    from PIL import Image
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "cat"]
    out = []
    for i in range(count):
        array = getattr(data, names[i % len(names)])()
        image = Image.fromarray(array).convert("RGB").rotate(i * 7)  # distinct bytes, real content
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        out.append(base64.b64encode(buf.getvalue()).decode())
    return out


def settings(vision_replicas: int) -> Settings:
    return Settings(
        language="none",
        router="rules",
        arbitration=False,
        disclaimers=False,
        vision_cache="none",
        vision_replicas=str(vision_replicas),
        vision_num_cpus=0.5,
        ingress_num_cpus=0.25,
        vision_threads=1,
        rate_limit_per_ip="",
        concurrency_per_ip=0,
        review_store="memory",
        model_max_concurrent=64,
    )


def run(base: str, pictures: list[str], requests: int, concurrency: int) -> dict[str, Any]:
    def one(i: int) -> tuple[float, dict[str, Any]]:
        began = time.perf_counter()
        r = httpx.post(
            f"{base}/infer", json={"image_base64": pictures[i % len(pictures)], "prompt": "What is this?"}, timeout=120
        )
        r.raise_for_status()
        return time.perf_counter() - began, r.json()

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - began
    latencies = [s for s, _ in done]
    vision = [next(st for st in b["stages"] if st["name"] == "vision") for _, b in done]
    service = [sum(v for k, v in st["steps"].items() if k != "interpret") for st in vision]
    return {
        "requests": requests,
        "concurrency": concurrency,
        "rps": requests / wall,
        "p50_s": float(np.percentile(latencies, 50)),
        "p99_s": float(np.percentile(latencies, 99)),
        "replicas_seen": len({st["replica"] for st in vision}),
        "vision_service_s": statistics.median(service),
        "overhead_s": statistics.median(lat - svc for lat, svc in zip(latencies, service, strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the .md, .json and .png go")
    args = parser.parse_args()
    from ray import serve

    from flashvl.deploy.ray import build_app

    pictures = images(12)
    rows: list[dict[str, Any]] = []
    with LocalRayCluster(nodes=2, cpus_per_node=2) as cluster:
        for replicas in (1, 2):
            serve.run(build_app(settings(replicas)), name="flashvl", route_prefix="/")
            run(cluster.base, pictures, 8, 4)  # warm up: every replica's first call
            single = run(cluster.base, pictures, 16, 1)
            loaded = run(cluster.base, pictures, args.requests, args.concurrency)
            rows.append({"vision_replicas": replicas, "serial": single, "loaded": loaded})
            print(json.dumps(rows[-1]))
            serve.delete("flashvl")
    t_v = rows[0]["serial"]["vision_service_s"]
    t_i = rows[0]["serial"]["overhead_s"]
    model = [{"replicas": n, "rps": min(n / t_v, 1 / t_i)} for n in (1, 2, 4, 8)]
    write(rows, model, t_v, t_i, args)


def write(rows: list[dict[str, Any]], model: list[dict[str, Any]], t_v: float, t_i: float, args: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Ray Serve scale-out: one vs two vision replicas",
        "",
        f"{stamp}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores; real local Ray cluster, "
        "2 node processes (2 logical CPUs each); offline vision stage (0.5 CPU per replica, 1 thread), no language "
        f"stage, no vision cache; {args.requests} requests at concurrency {args.concurrency} over 12 distinct images "
        "(`.venv/bin/python bench/ray_scaling.py`).",
        "",
        "| vision replicas | req/s | p50 (s) | p99 (s) | replicas seen | vision service (s, median) "
        "| rest incl. queueing (s, median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m = row["loaded"]
        lines.append(
            f"| {row['vision_replicas']} | {m['rps']:.2f} | {m['p50_s']:.3f} | {m['p99_s']:.3f} | {m['replicas_seen']} "
            f"| {m['vision_service_s']:.3f} | {m['overhead_s']:.3f} |"
        )
    lines += [
        "",
        "Serial (concurrency 1, 16 requests), one replica: vision replica service time "
        f"t_v = {t_v * 1000:.0f} ms (its models), everything else t_i = {t_i * 1000:.0f} ms (HTTP proxy, ingress app, "
        "handle hop, response).",
        "",
        "**Honest note:** this machine has 2 CPU cores, shared by both Ray nodes, every replica, Serve's proxy and "
        "the load generator, so a second CPU replica here mostly shares the same cores: the measured gain is what "
        "2 cores allow, not what a second device gives.",
        "",
        "## Model: N vision replicas, each on its own device, behind one ingress",
        "",
        "X(N) = min(N / t_v, 1 / t_i), from the measured t_v and t_i above. With a GPU vision stage put its "
        "measured service time in for t_v; the ingress bound 1 / t_i is where more ingress replicas "
        "(`--ingress-replicas`, Redis for shared state) are needed. t_i is wall time, not CPU time (it includes "
        "the hops' waiting, which overlaps under concurrency), so the ingress bound is a conservative one.",
        "",
        "| vision replicas | modelled req/s | bound by |",
        "|---|---|---|",
    ]
    for entry in model:
        bound = "vision" if entry["replicas"] / t_v < 1 / t_i else "ingress"
        lines.append(f"| {entry['replicas']} | {entry['rps']:.1f} | {bound} |")
    (out / "ray_scaling.md").write_text("\n".join(lines) + "\n")
    (out / "ray_scaling.json").write_text(json.dumps({"rows": rows, "model": model}, indent=2) + "\n")

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["vision_replicas"] for r in rows]
    left.bar([str(x) for x in xs], [r["loaded"]["rps"] for r in rows], color="#4c78a8")
    for x, r in zip(xs, rows, strict=True):
        left.text(str(x), r["loaded"]["rps"], f"p50 {r['loaded']['p50_s']:.2f}s\np99 {r['loaded']['p99_s']:.2f}s",
                  ha="center", va="bottom", fontsize=8)  # fmt: skip
    left.set_xlabel("vision replicas (measured, 2 shared cores)")
    left.set_ylabel("requests / s")
    left.set_title("measured")
    ns = [m["replicas"] for m in model]
    right.plot(ns, [m["rps"] for m in model], marker="o", label="model: min(N/t_v, 1/t_i)")
    right.plot(ns, [n / t_v for n in ns], linestyle="--", color="gray", label="vision bound N/t_v")
    right.axhline(1 / t_i, linestyle=":", color="red", label="one-ingress bound 1/t_i")
    right.set_xscale("log", base=2)
    right.set_xticks(ns, [str(n) for n in ns])
    right.set_xlabel("vision replicas, one device each (modelled)")
    right.set_ylabel("requests / s")
    right.set_title("modelled")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ray_scaling.png", dpi=120)
    print((out / "ray_scaling.md").read_text())


if __name__ == "__main__":
    main()
