"""Speculative decoding for the offline brain: Qwen2.5-Coder-1.5B with and without the 0.5B draft.

Two llama.cpp stages in this process on the same bundled GGUF (1 slot each): ``plain`` and
``draft`` (``--language-draft``: the bundled Qwen2.5-Coder-0.5B Q4_K_M drafts ``--draft-max``
tokens per step). Cascade-style prompts (the real instructions + an image's observations + a
question), greedy, ``--max-tokens`` long, sent one at a time, the two sides alternating per prompt
(a shared, noisy machine hits both alike). Reported: decode tokens/s (generated tokens / llama.cpp's
generation seconds), answer latency p50, draft acceptance, and whether every answer's text is
identical on both sides.

Writes speculative.md and .png under --out-dir. Run: .venv/bin/python bench/speculative.py
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
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flashvl.pipeline.prompts import cascade_messages
from flashvl.stages.base import ChatRequest
from flashvl.stages.brain_model import ensure_brain_model
from flashvl.stages.llamacpp import LlamaCppLanguageStage

RESULTS = Path(__file__).parent / "results"
CASES = [
    (
        "What is the cat doing, and what is next to it?",
        "Objects detected: cat (91%, centre, large), laptop (64%, below the cat). The classifier's best guess: "
        "tabby cat (55%). Colours: mostly orange and brown. No text was read. Safe: yes.",
    ),
    (
        "What might this picture be used for?",
        "Objects detected: cup (52%, centre). The classifier's best guess: espresso (75%), coffee mug (10%). "
        "Colours: brown on a white background. No text was read. Safe: yes.",
    ),
    (
        "Describe the scene for someone who cannot see it.",
        "Objects detected: person (88%, left, large), camera (41%, centre). The classifier's best guess: "
        "space suit (35%). Colours: white, blue and red. No text was read. Safe: yes.",
    ),
    (
        "Is there anything unusual in this image?",
        "Objects detected: motorcycle (78%, centre, large), bicycle (40%, right), bottle (37%, left). The "
        "classifier's best guess: moped (44%). Colours: grey and black. No text was read. Safe: yes.",
    ),
]


async def run(args: argparse.Namespace, path: Path) -> dict[str, list[dict[str, Any]]]:
    sides = {
        "plain": LlamaCppLanguageStage(path, slots=1, ctx=2048, threads=args.threads),
        "draft": LlamaCppLanguageStage(
            path, slots=1, ctx=2048, threads=args.threads, draft=True, draft_max=args.draft_max, model_dir=path.parent
        ),
    }
    for stage in sides.values():
        await stage.load()
    rows: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    try:
        for warm in sides.values():  # one short warm-up each
            await warm.generate(
                ChatRequest(cascade_messages("Hi?", CASES[0][1], "", "en"), max_tokens=4, temperature=0)
            )
        for round_ in range(args.rounds):
            for i, (question, description) in enumerate(CASES):
                request = ChatRequest(
                    cascade_messages(question, description, "", "en"),
                    max_tokens=args.max_tokens,
                    temperature=0,
                    logprobs=False,
                )
                order = list(sides.items()) if (round_ + i) % 2 == 0 else list(sides.items())[::-1]
                for side, stage in order:
                    start = time.perf_counter()
                    result = await stage.generate(request)
                    wall = time.perf_counter() - start
                    tokens = result.timings.tokens
                    rows[side].append(
                        {
                            "case": i,
                            "text": result.text,
                            "wall": wall,
                            "tps": tokens.get("generated", 0) / max(result.timings.steps.get("generate", 0), 1e-6),
                            "drafted": tokens.get("drafted", 0),
                            "accepted": tokens.get("draft_accepted", 0),
                        }
                    )
                    print(f"{side} case {i}: {rows[side][-1]['tps']:.1f} tok/s, {wall:.2f} s", flush=True)
    finally:
        for stage in sides.values():
            await stage.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2, help="passes over the prompts")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--draft-max", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads per side (0: all cores)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = ensure_brain_model(Path(os.environ.get("FLASHVL_MODEL_DIR", "~/.cache/flashvl/models")).expanduser())
    rows = asyncio.run(run(args, path))
    identical = all(a["text"] == b["text"] for a, b in zip(rows["plain"], rows["draft"], strict=True))
    stats = {
        side: {
            "tps": float(np.median([r["tps"] for r in values])),
            "p50": float(np.percentile([r["wall"] for r in values], 50)),
        }
        for side, values in rows.items()
    }
    drafted = sum(r["drafted"] for r in rows["draft"])
    accepted = sum(r["accepted"] for r in rows["draft"])
    speedup = stats["draft"]["tps"] / stats["plain"]["tps"]
    lines = [
        "# Speculative decoding: Qwen2.5-Coder-1.5B with and without the 0.5B draft",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} · {os.cpu_count()} CPUs · "
        f"load {os.getloadavg()[0]:.2f} · {args.rounds} x {len(CASES)} cascade prompts · greedy, max_tokens "
        f"{args.max_tokens} · draft_max {args.draft_max}",
        "",
        "| side | decode tok/s (median) | answer p50 s |",
        "|---|---|---|",
        *[f"| {side} | {s['tps']:.2f} | {s['p50']:.2f} |" for side, s in stats.items()],
        "",
        f"**Decode speed-up draft / plain: {speedup:.2f}x** (target >= 1.3x); answer p50 ratio "
        f"{stats['draft']['p50'] / stats['plain']['p50']:.2f}; draft acceptance {accepted}/{drafted} "
        f"({accepted / max(drafted, 1):.0%}); greedy texts identical: **{identical}**",
    ]
    (args.out_dir / "speculative.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.boxplot([[r["tps"] for r in values] for values in rows.values()], tick_labels=list(rows))
    ax.set(ylabel="decode tokens/s", title=f"Speculative decoding: {speedup:.2f}x decode")
    fig.tight_layout()
    fig.savefig(args.out_dir / "speculative.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
