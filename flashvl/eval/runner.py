"""``flashvl eval``: run the evaluation set in-process and print a strict score.

Each item is one image and one question. An answer passes only when at least one
``expect`` regex matches it and no ``reject`` regex does (both case-insensitive):
a right fact next to a hallucinated one fails. The pipeline is loaded once; the
language stage answers greedily (temperature 0) so two runs give the same score.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from flashvl.config import Settings

Kind = Literal["photo", "document", "reasoning", "tools", "unobserved"]
KINDS: tuple[Kind, ...] = ("photo", "document", "reasoning", "tools", "unobserved")
Outcome = Literal["right", "declined", "wrong"]
# An answer that is not right but says plainly that it cannot tell is "declined", not "wrong": a regression
# set must see confidently wrong answers go down, not only right answers go up.
DECLINED = re.compile(
    r"\b(cannot|can't|can not|unable to|could not|couldn't) (tell|determine|be determined|know|see|find)\b|"
    r"\bnot (observed|detected|visible|shown|read|in the (text|image|table))\b|\bno (such|information)\b|"
    r"无法|不能(判断|确定)|未观察|未检测|没有(检测|识别|读)到|看不到|不确定",
    re.IGNORECASE,
)
DEFAULT_MAX_DROP = 0.1  # --compare fails when a category's right share falls, or wrong share rises, by more
DEFAULT_ITEMS = Path(__file__).parent / "data" / "items.jsonl"
ANSWER_COLUMN_CHARS = 70


@dataclass(frozen=True)
class EvalItem:
    id: str
    image: str
    question: str
    expect: list[str]
    reject: list[str] = field(default_factory=list)
    kind: Kind = "photo"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    matched: list[str]  # the expect patterns that matched
    rejected: list[str]  # the reject patterns that matched (any one fails the item)


@dataclass
class ItemResult:
    id: str
    kind: str
    question: str
    answer: str
    route: str | None
    passed: bool
    seconds: float
    matched: list[str]
    rejected: list[str]
    error: str | None = None
    outcome: Outcome = "wrong"
    tools: list[str] = field(default_factory=list)  # the tools the language stage used


# ------------------------------------------------------------------ items and scoring


def load_items(path: Path = DEFAULT_ITEMS) -> list[EvalItem]:
    """Read the JSONL set; blank lines and lines starting with '#' are skipped."""
    items: list[EvalItem] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = EvalItem(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a valid item: {exc}") from exc
        if item.kind not in KINDS:
            raise ValueError(f"{path}:{number}: kind must be one of {KINDS}, not {item.kind!r}")
        if not item.expect:
            raise ValueError(f"{path}:{number}: an item needs at least one expect pattern")
        for pattern in (*item.expect, *item.reject):
            re.compile(pattern)  # a broken pattern fails loudly here, not as a silent miss
        items.append(item)
    ids = [item.id for item in items]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{path}: duplicate item ids")
    return items


def select_items(
    items: Sequence[EvalItem], *, ids: Iterable[str] | None = None, limit: int | None = None
) -> list[EvalItem]:
    """The items named in ``ids`` (in the set's order; unknown ids are an error), then the first ``limit``."""
    chosen = list(items)
    if ids is not None:
        wanted = set(ids)
        kinds = wanted & set(KINDS)  # a kind's name selects all its items
        wanted = (wanted - kinds) | {item.id for item in items if item.kind in kinds}
        unknown = wanted - {item.id for item in items}
        if unknown:
            raise ValueError(f"unknown eval item ids: {sorted(unknown)}")
        chosen = [item for item in chosen if item.id in wanted]
    return chosen[:limit] if limit is not None else chosen


def score_answer(answer: str, expect: Sequence[str], reject: Sequence[str] = ()) -> Verdict:
    """Strict: some ``expect`` pattern matches and no ``reject`` pattern does (case-insensitive)."""
    matched = [p for p in expect if re.search(p, answer, re.IGNORECASE | re.MULTILINE)]
    rejected = [p for p in reject if re.search(p, answer, re.IGNORECASE | re.MULTILINE)]
    return Verdict(passed=bool(matched) and not rejected, matched=matched, rejected=rejected)


# ------------------------------------------------------------------ running


def _encode_png(reference: str) -> bytes:
    from flashvl.eval.render import image_for

    buffer = io.BytesIO()
    image_for(reference).save(buffer, format="PNG")
    return buffer.getvalue()


async def _load_image(reference: str, settings: Settings, cache: dict[str, Any]) -> Any:
    """The item's image through the same decoder the service uses (``decode_image``)."""
    if reference not in cache:
        from flashvl.media import decode_image

        data = await asyncio.to_thread(_encode_png, reference)
        cache[reference] = await asyncio.to_thread(decode_image, data, settings, "path")
    return cache[reference]


async def _run_item(pipeline: Any, item: EvalItem, settings: Settings, cache: dict[str, Any]) -> ItemResult:
    from flashvl.errors import FlashvlError
    from flashvl.pipeline.service import Query

    image = await _load_image(item.image, settings, cache)
    query = Query(images=[image], question=item.question, max_tokens=settings.max_tokens, temperature=0.0)
    start = time.perf_counter()
    try:
        answer = await pipeline.answer(query)
    except FlashvlError as exc:  # a refused item counts as failed, with the reason shown
        return ItemResult(
            item.id,
            item.kind,
            item.question,
            answer="",
            route=None,
            passed=False,
            seconds=time.perf_counter() - start,
            matched=[],
            rejected=[],
            error=f"{exc.code}: {exc.message}",
        )
    seconds = time.perf_counter() - start
    verdict = score_answer(answer.text, item.expect, item.reject)
    declined = not verdict.passed and DECLINED.search(answer.text) is not None
    return ItemResult(
        item.id,
        item.kind,
        item.question,
        answer=answer.text,
        route=answer.route,
        passed=verdict.passed,
        seconds=seconds,
        matched=verdict.matched,
        rejected=verdict.rejected,
        outcome="right" if verdict.passed else "declined" if declined else "wrong",
        tools=[call["name"] for call in (answer.tools or [])],
    )


def _check_data_dependencies(items: Sequence[EvalItem]) -> None:
    """Fail before loading models when the photos or the CJK font cannot be had."""
    if any(item.image.startswith("skimage:") for item in items):
        try:
            import skimage  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                "the evaluation photos come from scikit-image, which is not installed: "
                "pip install 'flashvl[dev]' (it gives scikit-image)"
            ) from exc
    if any(item.image.startswith("render:") for item in items):
        from flashvl.eval.render import cjk_font_path

        cjk_font_path()


async def evaluate(
    pipeline: Any,
    items: Sequence[EvalItem],
    settings: Settings,
    on_item: Callable[[int, int, str], None] | None = None,
) -> list[ItemResult]:
    """Answer every item with an already loaded pipeline, in order; ``on_item(done, total, id)``
    before the first and after each one (the CLI's progress bar)."""
    cache: dict[str, Any] = {}
    results = []
    if on_item is not None and items:
        on_item(0, len(items), items[0].id)
    for number, item in enumerate(items, 1):
        results.append(await _run_item(pipeline, item, settings, cache))
        if on_item is not None:
            on_item(number, len(items), item.id)
    return results


# ------------------------------------------------------------------ reporting


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def percent(passed: int, total: int) -> str:
    return f"{passed}/{total} ({100.0 * passed / total if total else 0.0:.1f}%)"


def format_report(results: Sequence[ItemResult]) -> str:
    """The per-item table, per-kind scores and the total strict score."""
    id_width = max([len("id"), *(len(r.id) for r in results)])
    header = f"{'id':<{id_width}}  {'kind':<9}  {'route':<11}  {'result':<6}  {'secs':>6}  answer"
    lines = [header, "-" * len(header)]
    for r in results:
        answer = f"[error {r.error}]" if r.error else _one_line(r.answer, ANSWER_COLUMN_CHARS)
        lines.append(
            f"{r.id:<{id_width}}  {r.kind:<9}  {r.route or '-':<11}  {'PASS' if r.passed else 'FAIL':<6}  "
            f"{r.seconds:>6.2f}  {answer}"
        )
    lines.append("")
    by_kind: dict[str, list[ItemResult]] = defaultdict(list)
    for r in results:
        by_kind[r.kind].append(r)
    for kind in [k for k in KINDS if k in by_kind] + sorted(set(by_kind) - set(KINDS)):
        group = by_kind[kind]
        counts = {o: sum(r.outcome == o for r in group) for o in ("right", "declined", "wrong")}
        lines.append(
            f"{kind:<10} {percent(sum(r.passed for r in group), len(group))}  "
            f"right {counts['right']} / declined {counts['declined']} / wrong {counts['wrong']}"
        )
    total_seconds = sum(r.seconds for r in results)
    lines.append(
        f"strict score: {percent(sum(r.passed for r in results), len(results))}  [{total_seconds:.1f} s answering]"
    )
    return "\n".join(lines)


def write_results(results: Sequence[ItemResult], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for r in results:
            handle.write(json.dumps(asdict(r) | {"seconds": round(r.seconds, 4)}, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------ baselines (a regression set across models)


def _p(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def summarise(results: Sequence[ItemResult], identity: dict[str, Any]) -> dict[str, Any]:
    """A baseline: who answered (vision and language stages, versions), per-category shares of right /
    declined / wrong, latency, and every item's outcome and answer."""
    by_kind: dict[str, list[ItemResult]] = defaultdict(list)
    for r in results:
        by_kind[r.kind].append(r)
    categories = {
        kind: {o: round(sum(r.outcome == o for r in group) / len(group), 4) for o in ("right", "declined", "wrong")}
        | {"n": len(group)}
        for kind, group in by_kind.items()
    }
    seconds = [r.seconds for r in results]
    return {
        "identity": identity,
        "categories": categories,
        "latency": {"p50": round(_p(seconds, 0.5), 3), "p99": round(_p(seconds, 0.99), 3)},
        "items": {r.id: {"outcome": r.outcome, "answer": r.answer, "seconds": round(r.seconds, 3)} for r in results},
    }


def compare(baseline: dict[str, Any], current: dict[str, Any], max_drop: float = DEFAULT_MAX_DROP) -> tuple[str, bool]:
    """What changed since ``baseline``: per-category shares, answers whose outcome flipped, latency; and
    whether it regressed (a category's right share fell, or its wrong share rose, by more than ``max_drop``)."""
    lines = [f"baseline: {json.dumps(baseline.get('identity', {}), ensure_ascii=False)}"]
    lines.append(f"current:  {json.dumps(current.get('identity', {}), ensure_ascii=False)}")
    regressed = False
    for kind in sorted(set(baseline["categories"]) | set(current["categories"])):
        old = baseline["categories"].get(kind, {"right": 0.0, "declined": 0.0, "wrong": 0.0})
        new = current["categories"].get(kind, {"right": 0.0, "declined": 0.0, "wrong": 0.0})
        if kind not in baseline["categories"] or kind not in current["categories"]:
            lines.append(f"{kind:<10} only in the {'current run' if kind in current['categories'] else 'baseline'}")
            continue  # nothing to compare it with
        bad = old["right"] - new["right"] > max_drop or new["wrong"] - old["wrong"] > max_drop
        regressed |= bad
        lines.append(
            f"{kind:<10} right {old['right']:.2f} -> {new['right']:.2f}  declined {old['declined']:.2f} -> "
            f"{new['declined']:.2f}  wrong {old['wrong']:.2f} -> {new['wrong']:.2f}{'  REGRESSED' if bad else ''}"
        )
    for item_id, now in current["items"].items():
        before = baseline["items"].get(item_id)
        if before is not None and before["outcome"] != now["outcome"]:
            lines.append(f"flipped {item_id}: {before['outcome']} -> {now['outcome']}: {_one_line(now['answer'], 80)}")
    old_l, new_l = baseline.get("latency", {}), current.get("latency", {})
    lines.append(
        f"latency p50 {old_l.get('p50', 0):.2f} -> {new_l.get('p50', 0):.2f} s, "
        f"p99 {old_l.get('p99', 0):.2f} -> {new_l.get('p99', 0):.2f} s"
    )
    lines.append("REGRESSION beyond the threshold" if regressed else f"no regression beyond {max_drop:.2f}")
    return "\n".join(lines), regressed


def _identity(runtime: Any, settings: Settings) -> dict[str, Any]:
    from flashvl import __version__

    pipeline = runtime.pipeline
    return {
        "vision_stage": pipeline.vision.name,
        "language_stage": pipeline.language.name if pipeline.language is not None else None,
        "tools": bool(getattr(pipeline, "tools", False)),
        "flashvl": __version__,
    }


async def run_eval(
    settings: Settings,
    out: Path | None = None,
    *,
    ids: Iterable[str] | None = None,
    limit: int | None = None,
    items_path: Path = DEFAULT_ITEMS,
    start: Callable[[Settings, frozenset[str]], AbstractAsyncContextManager[Any]] | None = None,
    on_item: Callable[[int, int, str], None] | None = None,
    save_baseline: Path | None = None,
    compare_to: Path | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
) -> int:
    """Load the pipeline once, answer the (selected) items, print the report; 0 when it ran.

    The score is reported, not judged: a low score still exits 0, unless ``compare_to`` names a
    baseline (``save_baseline`` writes one) and a category regressed beyond ``max_drop``: then 1. Returns 2 when the
    evaluation data cannot be made (scikit-image or a CJK font missing). ``start`` builds and starts
    the runtime (the CLI's shows a progress display; it raises when a stage fails to load);
    ``on_item`` is told after each answered item.
    """
    from flashvl.runtime import ANSWER_ROLES, Runtime

    items = select_items(load_items(items_path), ids=ids, limit=limit)
    try:
        _check_data_dependencies(items)
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"flashvl eval: {exc}", file=sys.stderr)
        return 2
    print("flashvl eval: loading the models ...", file=sys.stderr)
    started = start(settings, ANSWER_ROLES) if start is not None else Runtime(settings, roles=ANSWER_ROLES)
    async with started as runtime:
        failed = {role: status for role, status in runtime.stage_status.items() if status != "ready"}
        if failed:
            print(f"flashvl eval: a stage failed to load: {failed}", file=sys.stderr)
            return 1
        print(f"flashvl eval: answering {len(items)} items ...", file=sys.stderr)
        results = await evaluate(runtime.pipeline, items, settings, on_item)
        identity = _identity(runtime, settings)
    print(format_report(results))
    if out is not None:
        write_results(results, out)
        print(f"results written to {out}")
    summary = summarise(results, identity)
    if save_baseline is not None:
        save_baseline.parent.mkdir(parents=True, exist_ok=True)
        save_baseline.write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"baseline written to {save_baseline}")
    if compare_to is not None:
        text, regressed = compare(json.loads(compare_to.read_text(encoding="utf-8")), summary, max_drop)
        print(text)
        return 1 if regressed else 0
    return 0
