"""Follow-up questions about the same image, with other users' requests in between: is the prompt reused?

The cascade prompt is the language stage's instructions, then the image's observations, then the
question, so everything before the question is the same for every question about one image. Two real
``flashvl serve`` processes (offline vision + the bundled Qwen2.5-Coder-1.5B, ``--slots`` llama.cpp
slots each, llama.cpp's prompt cache in RAM on) differ in one setting:

- ``llama.cpp picks`` (``--no-language-slot-affinity``): llama.cpp puts each request on the slot
  with the longest common prefix, which for any cascade prompt is any slot (they all share the long
  instructions), and keeps a replaced prompt in its RAM cache only when less than half of it is shared;
- ``slot affinity`` (the default): questions about one image go to the slot that read its prompt; a new
  image takes the least recently used idle slot.

For each image: a first question, then ``--others`` requests about other images (other users), then a
follow-up question about the first image. Both servers get the same sequence, step by step (the order
of the two alternates per image, so neither always goes first on a noisy shared machine). Every answer
is forced through the cascade (``route: cascade``), greedy, short. Reported from each response's
``stages[language].steps``: prompt seconds and cached prompt tokens, first vs follow-up, and the
end-to-end latency p50.

Writes prompt_reuse.md and .png under --out-dir. Run: .venv/bin/python bench/prompt_reuse.py
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flashvl.testing import start_server, stop_server

RESULTS = Path(__file__).parent / "results"
FOLLOWED = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left")
OTHERS = ("hubble_deep_field", "immunohistochemistry", "coins", "camera", "horse", "retina", "brick", "grass")
FIRST = "What is in this picture, and what is it probably used for?"
FOLLOW_UP = "Describe the main subject's surroundings in one sentence."
OTHER_QUESTIONS = ("What could this picture be about?", "Which object stands out most, and why?")
SIDES = {"llama.cpp picks": ["--no-language-slot-affinity"], "slot affinity": []}


def image_b64(name: str) -> str:
    from PIL import Image
    from skimage import data

    array = getattr(data, name)()
    if array.dtype != np.uint8:
        array = (255 * (array.astype(float) / max(1.0, float(array.max())))).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(buffer, "JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode()


def ask(client: httpx.Client, base: str, image: str, question: str, max_tokens: int) -> dict[str, Any]:
    body = {"image_base64": image, "prompt": question, "route": "cascade", "max_tokens": max_tokens, "temperature": 0}
    start = time.perf_counter()
    response = client.post(f"{base}/infer", json=body, timeout=600)
    response.raise_for_status()
    wall = time.perf_counter() - start
    steps = next(s for s in response.json()["stages"] if s["name"] == "language")["steps"]
    if "prompt" not in steps:
        print(f"no prompt step in the language stage's steps: {steps}", flush=True)
    return {
        "wall": wall,
        "prompt": float(steps.get("prompt", 0.0)),
        "cached": int(steps.get("prompt_cached_tokens", 0)),
        "read": int(steps.get("prompt_read_tokens", 0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4, help=f"images asked about twice (up to {len(FOLLOWED)})")
    parser.add_argument("--others", type=int, default=2, help="other users' requests between first and follow-up")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--slots", type=int, default=4, help="llama.cpp slots per server (> --others)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    followed = [image_b64(name) for name in FOLLOWED[: args.images]]
    others = [image_b64(name) for name in OTHERS]
    servers = {}
    try:
        for side, flags in SIDES.items():  # started one after the other: loading is CPU-bound
            log = args.out_dir / f"prompt_reuse.{side.replace(' ', '_')}.log"
            servers[side] = start_server(["--language-slots", str(args.slots), *flags], log)
        rows: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        other_index = 0
        with httpx.Client() as client:
            # Warm-up: one request per side, so the first measured prompt is not the process's first.
            for server in servers.values():
                ask(client, server.base, others[-1], OTHER_QUESTIONS[0], args.max_tokens)
            for i, image in enumerate(followed):
                order = list(servers.items()) if i % 2 == 0 else list(servers.items())[::-1]
                plan = [(image, FIRST, "first")]
                for k in range(args.others):
                    plan.append((others[other_index % len(others)], OTHER_QUESTIONS[k % 2], "other"))
                    other_index += 1
                plan.append((image, FOLLOW_UP, "follow-up"))
                per_side: dict[str, dict[str, Any]] = {side: {} for side in SIDES}
                for picture, question, kind in plan:
                    for side, server in order:
                        result = ask(client, server.base, picture, question, args.max_tokens)
                        if kind != "other":
                            per_side[side][kind] = result
                for side in SIDES:
                    rows[side].append(per_side[side])
                    first, follow = per_side[side]["first"], per_side[side]["follow-up"]
                    print(
                        f"image {i} {side}: prompt {first['prompt']:.2f}s ({first['read']} read) -> "
                        f"{follow['prompt']:.2f}s ({follow['cached']} cached, {follow['read']} read)",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            stop_server(server.proc)
    report(rows, args)


def report(rows: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    stats = {}
    for side, per_image in rows.items():
        ratios = [r["follow-up"]["prompt"] / max(r["first"]["prompt"], 1e-6) for r in per_image]
        stats[side] = {
            "first_prompt": float(np.median([r["first"]["prompt"] for r in per_image])),
            "follow_prompt": float(np.median([r["follow-up"]["prompt"] for r in per_image])),
            "ratio": float(np.median(ratios)),
            "cached": float(np.median([r["follow-up"]["cached"] for r in per_image])),
            "read": float(np.median([r["first"]["read"] for r in per_image])),
            "first_wall": float(np.percentile([r["first"]["wall"] for r in per_image], 50)),
            "follow_wall": float(np.percentile([r["follow-up"]["wall"] for r in per_image], 50)),
        }
    lines = [
        "# Follow-up questions with other users' requests in between: prompt reuse",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} · {os.cpu_count()} CPUs · "
        f"load {os.getloadavg()[0]:.2f} · {args.images} images · {args.others} other requests between first "
        f"and follow-up · {args.slots} llama.cpp slots · Qwen2.5-Coder-1.5B Q4_K_M · greedy, "
        f"max_tokens {args.max_tokens}",
        "",
        "| setting | first: prompt tokens | first: prompt s | follow-up: cached tokens | follow-up: prompt s | "
        "follow-up / first prompt (median over images) | e2e p50 first s | e2e p50 follow-up s |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {side} | {s['read']:.0f} | {s['first_prompt']:.2f} | {s['cached']:.0f} | {s['follow_prompt']:.2f} | "
            f"**{s['ratio']:.2f}** | {s['first_wall']:.2f} | {s['follow_wall']:.2f} |"
            for side, s in stats.items()
        ],
        "",
        "Target: follow-up prompt time <= 0.35 of the first's (median over images) with slot affinity.",
    ]
    (args.out_dir / "prompt_reuse.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(stats))
    ax.bar(x - 0.2, [s["first_prompt"] for s in stats.values()], 0.4, label="first question")
    ax.bar(x + 0.2, [s["follow_prompt"] for s in stats.values()], 0.4, label="follow-up (others in between)")
    ax.set_xticks(x, [f"{side}\nratio {s['ratio']:.2f}" for side, s in stats.items()])
    ax.set(ylabel="language-stage prompt seconds (median)", title="Prompt reuse across users")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out_dir / "prompt_reuse.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
