"""Tool-using answers vs plain cascade answers: latency p50/p99 (issue 15).

Runs the regression set's "tools" items (rendered pages: receipts, exercises, price tables, code)
in-process twice, with the tools off (the plain cascade: one language call) and on (tools, maybe a
one-line plan call, then the answer), interleaved per round so machine noise hits both alike, and
writes bench/results/tool_latency.md and .png (or ``--out-dir``). Run: .venv/bin/python bench/tool_latency.py
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from pathlib import Path

from flashvl.config import Settings
from flashvl.eval.runner import evaluate, load_items, select_items
from flashvl.runtime import ANSWER_ROLES, Runtime


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def main(rounds: int, out_dir: Path, kinds: list[str]) -> None:
    items = select_items(load_items(), ids=kinds)
    seconds: dict[str, list[float]] = {"plain cascade": [], "with tools": []}
    right: dict[str, int] = {"plain cascade": 0, "with tools": 0}
    settings = Settings(max_tokens=128, disclaimers=False, arbitration=False, review_store="memory")
    async with Runtime(settings, roles=ANSWER_ROLES) as runtime:
        for number in range(rounds):
            modes = ["plain cascade", "with tools"] if number % 2 == 0 else ["with tools", "plain cascade"]
            for mode in modes:
                runtime.pipeline.tools = mode == "with tools"
                results = await evaluate(runtime.pipeline, items, settings)
                seconds[mode] += [r.seconds for r in results]
                right[mode] += sum(r.outcome == "right" for r in results)
    lines = [
        f"# Tool-using vs plain cascade answers ({dt.date.today()}, {len(items)} items x {rounds} rounds)",
        "",
        "| mode | p50 s | p99 s | right |",
        "|---|---|---|---|",
    ]
    for mode, values in seconds.items():
        lines.append(f"| {mode} | {_p(values, 0.5):.2f} | {_p(values, 0.99):.2f} | {right[mode]}/{len(values)} |")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tool_latency.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    _plot(seconds, out_dir / "tool_latency.png")


def _plot(seconds: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.boxplot(list(seconds.values()), whis=(1, 99))
    ax.set_xticks(range(1, len(seconds) + 1), list(seconds))
    ax.set_ylabel("seconds per answer")
    ax.set_title("Tool-using vs plain cascade answers (whiskers p1-p99)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--select", default="tools", help="Item ids or kinds of the regression set.")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.out_dir, [s.strip() for s in args.select.split(",")]))
