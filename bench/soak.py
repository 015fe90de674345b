"""Bounded soak: a real ``flashvl serve`` process (API key auth on) under mixed traffic for a few minutes.

Traffic per client, round-robin: /caption (upload), /infer (base64, a rule-route question),
/v1/chat/completions (data: URL), /v1/models, a hostile file (expects 4xx), a bad key
(expects 401). Every status is checked against what that request must get; anything else
is an error. The server's RSS (/proc/PID/status VmRSS) is sampled once a second; drift
compares the mean of the last fifth with the mean of the first fifth after warm-up.

Writes bench/results/soak.md and soak.png.
Run: .venv/bin/python bench/soak.py [--duration 180] [--clients 4] [--language none]
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "security"))

import hostile  # noqa: E402

from flashvl.security.auth import hash_key, new_key  # noqa: E402
from flashvl.testing import start_server, stop_server  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def photo() -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.coffee()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def requests_for(base: str, key: str) -> list[tuple[str, dict, set[int]]]:
    jpeg = photo()
    b64 = base64.b64encode(jpeg).decode()
    bomb = hostile.png_with_size(50_000, 50_000)
    chat = {
        "model": "flashvl",
        "max_tokens": 32,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What colours are in this image?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64}"}},
                ],
            }
        ],
    }
    auth = {"Authorization": f"Bearer {key}"}
    return [
        (
            "caption",
            {
                "method": "POST",
                "url": f"{base}/caption",
                "headers": auth,
                "files": {"file": ("c.jpg", jpeg, "image/jpeg")},
            },
            {200},
        ),
        (
            "infer",
            {
                "method": "POST",
                "url": f"{base}/infer",
                "headers": auth,
                "json": {"image_base64": b64, "prompt": "What colours are in this image?"},
            },
            {200},
        ),
        (
            "chat",
            {"method": "POST", "url": f"{base}/v1/chat/completions", "headers": auth, "json": chat},
            {200},
        ),
        ("models", {"method": "GET", "url": f"{base}/v1/models", "headers": auth}, {200}),
        (
            "hostile",
            {
                "method": "POST",
                "url": f"{base}/caption",
                "headers": auth,
                "files": {"file": ("b.png", bomb, "image/png")},
            },
            {413},
        ),
        (
            "bad_key",
            {"method": "GET", "url": f"{base}/v1/models", "headers": {"Authorization": "Bearer fvl_wrong"}},
            {401},
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=180)
    parser.add_argument("--warmup", type=float, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--language", default="none")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the .md and .png go")
    args = parser.parse_args()
    key = new_key()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.out = args.out_dir / "soak"  # soak.md, soak.png
    log = args.out_dir / "soak.server.log"
    # Rate limits off: the soak measures stability under sustained load (limits: tests/security).
    server = start_server(
        [
            "--language",
            args.language,
            "--api-keys",
            f"soak:infer:{hash_key(key)}",
            "--max-tokens",
            "32",
            "--rate-limit-per-key",
            "",
            "--rate-limit-per-ip",
            "",
        ],
        log,
    )
    proc, base = server.proc, server.base
    plan = requests_for(base, key)
    statuses: Counter[tuple[str, int]] = Counter()
    errors: list[str] = []
    samples: list[tuple[float, float]] = []
    start = time.monotonic()
    stop_at = start + args.warmup + args.duration

    def client(offset: int) -> None:
        with httpx.Client(timeout=120) as http:
            i = offset
            while time.monotonic() < stop_at:
                name, request, expected = plan[i % len(plan)]
                i += 1
                try:
                    status = http.request(**request).status_code
                except httpx.HTTPError as exc:
                    errors.append(f"{name}: {type(exc).__name__}")
                    continue
                statuses[(name, status)] += 1
                if status not in expected:
                    errors.append(f"{name}: HTTP {status}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for t in threads:
        t.start()
    while time.monotonic() < stop_at:
        samples.append((time.monotonic() - start, rss_mib(proc.pid)))
        time.sleep(1)
    for t in threads:
        t.join()
    stop_server(proc)
    steady = [(t, r) for t, r in samples if t >= args.warmup]
    fifth = max(1, len(steady) // 5)
    first = statistics.mean(r for _, r in steady[:fifth])
    last = statistics.mean(r for _, r in steady[-fifth:])
    drift = (last - first) / first * 100
    total = sum(statuses.values())
    write_report(args, samples, statuses, errors, first, last, drift, total)
    print(f"soak: {total} requests, {len(errors)} errors, RSS {first:.0f} -> {last:.0f} MiB ({drift:+.1f}%)")
    return 0 if not errors and abs(drift) <= 10 else 1


def write_report(
    args: argparse.Namespace,
    samples: list[tuple[float, float]],
    statuses: Counter,
    errors: list[str],
    first: float,
    last: float,
    drift: float,
    total: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([t for t, _ in samples], [r for _, r in samples])
    ax.axvline(args.warmup, color="grey", linestyle="--", label="end of warm-up")
    ax.set_xlabel("seconds")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title(f"flashvl soak: {args.clients} clients, {args.duration:.0f} s, language={args.language}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    rows = "\n".join(f"| {name} | {status} | {n} |" for (name, status), n in sorted(statuses.items()))
    text = f"""# Soak

`{" ".join(sys.argv)}` on {time.strftime("%Y-%m-%d")}: {args.clients} clients for
{args.duration:.0f} s after a {args.warmup:.0f} s warm-up, language stage `{args.language}`, API-key auth on.

| figure | value |
|---|---|
| requests | {total} |
| errors (unexpected status or transport error) | {len(errors)} |
| RSS, first fifth after warm-up (MiB) | {first:.1f} |
| RSS, last fifth (MiB) | {last:.1f} |
| RSS drift | {drift:+.1f}% |

| request | status | count |
|---|---|---|
{rows}

{"Errors: " + "; ".join(errors[:20]) if errors else "No errors."}

![RSS over time](soak.png)
"""
    args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
