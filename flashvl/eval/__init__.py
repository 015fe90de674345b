"""The evaluation set and its runner (``flashvl eval``): a strict, regex-scored score."""

from flashvl.eval.runner import (
    EvalItem,
    ItemResult,
    Verdict,
    format_report,
    load_items,
    run_eval,
    score_answer,
    select_items,
)

__all__ = [
    "EvalItem",
    "ItemResult",
    "Verdict",
    "format_report",
    "load_items",
    "run_eval",
    "score_answer",
    "select_items",
]
