"""Serving overhead: end-to-end HTTP latency of ``flashvl serve`` over the same stages called in-process.

For each endpoint (``/infer`` answered by a rule, ``/infer`` answered by the cascade,
``/caption``) it sends N sequential requests to a real server process and runs the
same image and question N times through an in-process ``Pipeline`` with the same
settings, interleaved (HTTP first on even rounds, in-process first on odd ones) so
machine noise hits both alike. The in-process time includes decoding the image
bytes (``decode_image``), which any caller has to do; the HTTP time includes
everything a client sees (base64/multipart, JSON, uvicorn, middleware, logging).

Also records cold start (process start -> /readyz 200) and the server's RSS.
Writes bench/results/serving_overhead.md and .png. Run: .venv/bin/python bench/serving_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import io
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from flashvl.config import Settings, load_settings
from flashvl.media import decode_image
from flashvl.pipeline.service import Pipeline, Query
from flashvl.runtime import ANSWER_ROLES, Runtime
from flashvl.testing import memory_mib, start_server, stop_server

RESULTS = Path(__file__).parent / "results"
READY_TIMEOUT_S = 600
RULE_QUESTION = "Is this image safe for work?"  # the safety rule answers it from the Open-NSFW score
CASCADE_QUESTION = "Describe the mood of this photo in one short sentence."  # no rule: the language stage


@dataclass
class Endpoint:
    name: str  # shown in the table
    path: str
    question: str | None  # None: caption
    rounds: int
    expected_route: str
    http_s: list[float] = field(default_factory=list)
    local_s: list[float] = field(default_factory=list)
    routes: set[str] = field(default_factory=set)
    texts: set[str] = field(default_factory=set)  # one entry when HTTP and in-process answered alike


# ------------------------------------------------------------------ server process


# ------------------------------------------------------------------ one request each way


def http_call(client: httpx.Client, endpoint: Endpoint, image: bytes, max_tokens: int) -> tuple[float, str, str]:
    start = time.perf_counter()
    if endpoint.question is None:
        response = client.post(endpoint.path, files={"file": ("image.jpg", image, "image/jpeg")})
    else:
        body = {
            "image_base64": base64.b64encode(image).decode(),
            "prompt": endpoint.question,
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        response = client.post(endpoint.path, json=body)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    body = response.json()
    return elapsed, body["route"], body.get("text", body.get("caption", ""))


def http_floor(client: httpx.Client, rounds: int) -> list[float]:
    """Round trips to /healthz: what HTTP + uvicorn + middleware cost with no work behind them."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        client.get("/healthz").raise_for_status()
        times.append(time.perf_counter() - start)
    return times


async def local_call(
    pipeline: Pipeline, settings: Settings, endpoint: Endpoint, image: bytes, max_tokens: int
) -> tuple[float, str, str]:
    start = time.perf_counter()
    loaded = await asyncio.to_thread(decode_image, image, settings, "upload")
    if endpoint.question is None:
        query = Query(images=[loaded], task="caption")
    else:
        query = Query(images=[loaded], question=endpoint.question, max_tokens=max_tokens, temperature=0.0)
    answer = await pipeline.answer(query)
    return time.perf_counter() - start, answer.route, answer.text


async def measure(
    endpoint: Endpoint,
    http: Callable[[], tuple[float, str, str]],
    local: Callable[[], Awaitable[tuple[float, str, str]]],
    warmup: int,
) -> None:
    for _ in range(warmup):  # first calls pay one-off costs (allocations, prompt cache) on both sides
        http()
        await local()
    for round_ in range(endpoint.rounds):
        order = ("http", "local") if round_ % 2 == 0 else ("local", "http")
        for side in order:
            seconds, route, text = http() if side == "http" else await local()
            (endpoint.http_s if side == "http" else endpoint.local_s).append(seconds)
            endpoint.routes.add(f"{side}:{route}")
            endpoint.texts.add(text)
        print(f"  {endpoint.name} {round_ + 1}/{endpoint.rounds}", file=sys.stderr, end="\r")
    print(file=sys.stderr)


# ------------------------------------------------------------------ reporting


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_kib / 1024**2:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def write_markdown(path: Path, endpoints: list[Endpoint], facts: dict[str, str]) -> None:
    rows = [
        "| endpoint | route | same answer | N | HTTP p50 (ms) | in-process p50 (ms) | ratio p50 | "
        "HTTP p99 (ms) | in-process p99 (ms) | ratio p99 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in endpoints:
        h50, l50, h99, l99 = (pct(e.http_s, 50), pct(e.local_s, 50), pct(e.http_s, 99), pct(e.local_s, 99))
        same = "yes" if len(e.texts) == 1 else f"no ({len(e.texts)} texts)"
        rows.append(
            f"| `{e.name}` | {', '.join(sorted(e.routes))} | {same} | {e.rounds} | {h50 * 1e3:.1f} | "
            f"{l50 * 1e3:.1f} | {h50 / l50:.3f} | {h99 * 1e3:.1f} | {l99 * 1e3:.1f} | {h99 / l99:.3f} |"
        )
    lines = [
        "# Serving overhead: HTTP vs in-process",
        "",
        *(f"- **{key}**: {value}" for key, value in facts.items()),
        "",
        *rows,
        "",
        "Ratio = HTTP latency / in-process latency of the same percentile (target: p50 ratio <= 1.03).",
        "With N requests, p99 is interpolated between the two slowest; treat it as the tail, not a true p99.",
        "Generated by `bench/serving_overhead.py`; see bench/README.md.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_plot(path: Path, endpoints: list[Endpoint]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(endpoints), figsize=(4.2 * len(endpoints), 4), squeeze=False)
    for ax, e in zip(axes[0], endpoints, strict=True):
        x = np.arange(2)
        http = [pct(e.http_s, 50) * 1e3, pct(e.http_s, 99) * 1e3]
        local = [pct(e.local_s, 50) * 1e3, pct(e.local_s, 99) * 1e3]
        ax.bar(x - 0.2, http, 0.4, label="HTTP (flashvl serve)")
        ax.bar(x + 0.2, local, 0.4, label="in-process Pipeline")
        ax.set_xticks(x, ["p50", "p99"])
        ax.set_ylabel("ms")
        ax.set_title(f"{e.name}\nratio p50 {http[0] / local[0]:.3f}")
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ main


def photo_jpeg() -> bytes:
    from flashvl.eval.render import skimage_photo

    buffer = io.BytesIO()
    skimage_photo("astronaut").save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


async def run(args: argparse.Namespace) -> int:
    # No caching on either side: every request does the real work, so the ratio is the serving overhead.
    settings = load_settings({"max_tokens": args.max_tokens, "vision_cache": "none"})
    image = photo_jpeg()
    endpoints = [
        Endpoint("/infer (rule)", "/infer", RULE_QUESTION, args.n_rule, "rule"),
        Endpoint("/infer (cascade)", "/infer", CASCADE_QUESTION, args.n_cascade, "cascade"),
        Endpoint("/caption", "/caption", None, args.n_caption, "direct"),
    ]
    endpoints = [e for e in endpoints if e.rounds > 0]
    load_before = os.getloadavg()
    log_path = Path(tempfile.mkdtemp(prefix="flashvl-bench-")) / "server.log"
    print(f"starting flashvl serve (log: {log_path})", file=sys.stderr)
    server = start_server(
        ["--max-tokens", str(args.max_tokens), "--vision-cache", "none"],
        log_path,
        timeout_s=READY_TIMEOUT_S,
    )
    proc, base, cold_start = server.proc, server.base, server.ready_s
    runtime: Runtime | None = None
    try:
        start = time.perf_counter()
        runtime = Runtime(settings, roles=ANSWER_ROLES)
        await runtime.start()
        pipeline = runtime.pipeline
        local_load = time.perf_counter() - start
        with httpx.Client(base_url=base, timeout=settings.request_timeout_s) as client:
            for e in endpoints:
                await measure(
                    e,
                    lambda e=e: http_call(client, e, image, args.max_tokens),
                    lambda e=e: local_call(pipeline, settings, e, image, args.max_tokens),
                    args.warmup,
                )
            floor = http_floor(client, args.n_rule or 30)
        memory = memory_mib(proc.pid)
    finally:
        stop_server(proc)
        if runtime is not None:
            await runtime.close()
    load_after = os.getloadavg()
    for e in endpoints:
        if e.routes != {f"http:{e.expected_route}", f"local:{e.expected_route}"}:
            print(f"warning: {e.name} took routes {sorted(e.routes)}", file=sys.stderr)
    facts = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load average (1 min) before / after": f"{load_before[0]:.2f} / {load_after[0]:.2f}",
        "stages": f"vision={settings.vision}, language={settings.language}, max_tokens={args.max_tokens}, "
        "temperature=0",
        "image": "scikit-image `astronaut`, 512x512 JPEG q92 "
        f"({len(image) / 1024:.0f} KiB; base64 JSON for /infer, multipart for /caption)",
        "questions": f"rule: {RULE_QUESTION!r}; cascade: {CASCADE_QUESTION!r}",
        "cold start (process start -> /readyz 200)": f"{cold_start:.2f} s "
        f"(in-process runtime start: {local_load:.2f} s)",
        "HTTP floor (GET /healthz round trip, keep-alive)": f"p50 {pct(floor, 50) * 1e3:.2f} ms, "
        f"p99 {pct(floor, 99) * 1e3:.2f} ms",
        "server RSS after the run": f"{memory['VmRSS']:.0f} MiB (peak {memory['VmHWM']:.0f} MiB)",
        "method": f"sequential, {args.warmup} warm-up call(s) per side, HTTP and in-process interleaved",
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_markdown(args.out_dir / "serving_overhead.md", endpoints, facts)
    write_plot(args.out_dir / "serving_overhead.png", endpoints)
    print((args.out_dir / "serving_overhead.md").read_text(encoding="utf-8"))
    return 0  # the runtime closed its stages above


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-rule", type=int, default=30, help="requests to /infer answered by a rule")
    parser.add_argument("--n-cascade", type=int, default=10, help="requests to /infer answered by the cascade")
    parser.add_argument("--n-caption", type=int, default=30, help="requests to /caption")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per endpoint and side first")
    parser.add_argument("--max-tokens", type=int, default=48, help="answer cap for the cascade route")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the .md and .png go")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
