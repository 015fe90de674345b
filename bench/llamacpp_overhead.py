"""Text-only /v1/chat/completions: through flashvl vs llama.cpp's own server, same GGUF.

- llama.cpp side: llama.cpp's own HTTP server (the C++ server, started here through xllamacpp
  on 127.0.0.1, 1 slot) on the offline brain GGUF;
- flashvl side: a real ``flashvl serve --language llamacpp`` process (same GGUF, 1 slot).
Same body (greedy, short answer, same prompt so both hit their prompt cache), sequential,
interleaved round by round after warm-up; three runs, each with fresh processes on both sides.
Reports p50/p99 per side (runs pooled) and the median of the runs' p50 ratios.

Writes bench/results/llamacpp_overhead.md and .png. Run: .venv/bin/python bench/llamacpp_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flashvl.stages.brain_model import ensure_brain_model
from flashvl.stages.llamacpp import LlamaCppLanguageStage
from flashvl.testing import start_server, stop_server

RESULTS = Path(__file__).parent / "results"
BODY = {
    "messages": [{"role": "user", "content": "Name three fruits, comma separated."}],
    "max_tokens": 16,
    "temperature": 0,
}


def timed(client: httpx.Client, url: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    r = client.post(url, json=BODY, headers=headers, timeout=120)
    r.raise_for_status()
    return time.perf_counter() - start


def one_run(path: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """Fresh processes on both sides, warm-up, then ``rounds`` interleaved requests."""
    server = start_server(
        ["--language-model-path", str(path), "--language-slots", "1"],
        args.out_dir / "llamacpp_overhead.server.log",
    )
    brain = LlamaCppLanguageStage(path, slots=1, ctx=8192)
    asyncio.run(brain.load())
    llama_url = f"{brain.http_address}/v1/chat/completions"
    llama_headers = {"authorization": f"Bearer {brain.http_api_key}"}
    flashvl_url = f"{server.base}/v1/chat/completions"
    samples: dict[str, list[float]] = {"llama.cpp server": [], "flashvl": []}
    try:
        with httpx.Client() as client:
            for _ in range(args.warmup):
                timed(client, llama_url, llama_headers)
                timed(client, flashvl_url, {})
            for round_ in range(args.rounds):
                order = [("llama.cpp server", llama_url, llama_headers), ("flashvl", flashvl_url, {})]
                for name, url, headers in order if round_ % 2 == 0 else order[::-1]:
                    samples[name].append(timed(client, url, headers))
    finally:
        stop_server(server.proc)
        asyncio.run(brain.close())
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40, help="interleaved request pairs per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs, each with fresh processes on both sides")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    path = ensure_brain_model(Path(os.environ.get("FLASHVL_MODEL_DIR", "~/.cache/flashvl/models")).expanduser())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    samples: dict[str, list[float]] = {"llama.cpp server": [], "flashvl": []}
    run_ratios = []
    for _ in range(args.repeats):
        run = one_run(path, args)
        run_ratios.append(float(np.percentile(run["flashvl"], 50) / np.percentile(run["llama.cpp server"], 50)))
        for side, values in run.items():
            samples[side].extend(values)
        print(f"run p50 ratio {run_ratios[-1]:.3f}", flush=True)
    stats = {k: (float(np.percentile(v, 50)), float(np.percentile(v, 99))) for k, v in samples.items()}
    ratio50 = float(np.median(run_ratios))  # the median run: one run can be off by a few % on a shared machine
    ratio99 = stats["flashvl"][1] / stats["llama.cpp server"][1]
    lines = [
        "# Text-only chat completions: flashvl vs llama.cpp's own server (same GGUF)",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} · {os.cpu_count()} CPUs · "
        f"load {os.getloadavg()[0]:.2f} · {args.repeats} runs (fresh processes each) of {args.rounds} interleaved "
        f"rounds · {path.name} · greedy · table: all runs pooled",
        "",
        "| side | p50 s | p99 s |",
        "|---|---|---|",
        *[f"| {k} | {p50:.3f} | {p99:.3f} |" for k, (p50, p99) in stats.items()],
        "",
        f"**Latency ratio flashvl / llama.cpp: p50 {ratio50:.3f} (median of the runs: "
        f"{', '.join(f'{r:.3f}' for r in run_ratios)}), p99 {ratio99:.3f}** (target p50 <= 1.05)",
    ]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "llamacpp_overhead.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.boxplot(list(samples.values()), tick_labels=list(samples.keys()))
    ax.set(ylabel="seconds", title=f"Text-only chat: p50 ratio {ratio50:.3f}")
    fig.tight_layout()
    fig.savefig(args.out_dir / "llamacpp_overhead.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
