"""The NanoDet COCO detector on real photos (skimage's bundled images), with the real ONNX model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from flashvl.stages.base import Box
from flashvl.stages.offline.detector import COCO_LABELS, COCO_LABELS_ZH, ObjectDetector

# Boxes judged by eye on the images (x1, y1, x2, y2 in pixels).
ASTRONAUT_PERSON = (20.0, 14.0, 362.0, 512.0)  # hair top to the bottom edge, left arm to right shoulder
COFFEE_CUP = (170.0, 15.0, 418.0, 300.0)  # rim, handle and the cup's foot, without the saucer


def iou(box: Box, ref: tuple[float, float, float, float]) -> float:
    ix1, iy1 = max(box.x1, ref[0]), max(box.y1, ref[1])
    ix2, iy2 = min(box.x2, ref[2]), min(box.y2, ref[3])
    inter = max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1)
    area_box = (box.x2 - box.x1) * (box.y2 - box.y1)
    area_ref = (ref[2] - ref[0]) * (ref[3] - ref[1])
    return inter / (area_box + area_ref - inter)


def best(boxes: list[Box], label: str) -> Box:
    found = [b for b in boxes if b.label == label]
    assert found, f"no {label} in {[(b.label, round(b.score, 2)) for b in boxes]}"
    return max(found, key=lambda b: b.score)


@pytest.fixture(scope="module")
def detector() -> ObjectDetector:
    return ObjectDetector(threads=2)


@pytest.fixture(scope="module")
def letterbox_detector() -> ObjectDetector:
    return ObjectDetector(threads=2, keep_aspect=True)


def test_labels_are_the_80_coco_classes_with_chinese_names() -> None:
    assert len(COCO_LABELS) == 80 == len(set(COCO_LABELS))
    assert (COCO_LABELS[0], COCO_LABELS[15], COCO_LABELS[41], COCO_LABELS[79]) == (
        "person",
        "cat",
        "cup",
        "toothbrush",
    )
    assert set(COCO_LABELS_ZH) == set(COCO_LABELS)
    assert COCO_LABELS_ZH["person"] == "人" and COCO_LABELS_ZH["cup"] == "杯子"


def test_finds_the_astronaut_as_a_person_where_she_is(detector: ObjectDetector) -> None:
    boxes = detector.detect(data.astronaut())
    assert boxes[0].label == "person"
    assert iou(best(boxes, "person"), ASTRONAUT_PERSON) > 0.9  # 0.97 now; ~0.85 with cells off by half


def test_finds_the_cup_on_coffee(detector: ObjectDetector) -> None:
    cup = best(detector.detect(data.coffee()), "cup")
    assert cup.score >= detector.min_score
    assert iou(cup, COFFEE_CUP) > 0.5


def test_finds_the_motorcycle(detector: ObjectDetector) -> None:
    boxes = detector.detect(data.stereo_motorcycle()[1])
    assert boxes[0].label == "motorcycle" and boxes[0].score > 0.6


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket", "motorcycle"])
def test_boxes_are_inside_the_image_sorted_and_above_threshold(detector: ObjectDetector, name: str) -> None:
    image = data.stereo_motorcycle()[1] if name == "motorcycle" else getattr(data, name)()
    height, width = image.shape[:2]
    boxes = detector.detect(image)
    for box in boxes:
        assert 0 <= box.x1 < box.x2 <= width and 0 <= box.y1 < box.y2 <= height, box
        assert box.score >= detector.min_score and box.label in COCO_LABELS
    assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)


def test_blank_white_image_has_no_detections(detector: ObjectDetector) -> None:
    assert detector.detect(np.full((480, 640, 3), 255, np.uint8)) == []


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
@pytest.mark.parametrize("letterbox", [False, True])
def test_boxes_scale_with_the_image(
    detector: ObjectDetector, letterbox_detector: ObjectDetector, name: str, letterbox: bool
) -> None:
    model = letterbox_detector if letterbox else detector
    image = getattr(data, name)()
    doubled = cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
    small, large = model.detect(image), model.detect(doubled)
    assert small and len(small) == len(large)
    for a, b in zip(small, large, strict=True):
        assert a.label == b.label
        coords_a = np.array([a.x1, a.y1, a.x2, a.y2])
        coords_b = np.array([b.x1, b.y1, b.x2, b.y2])
        # within 1% of the doubled image's longer side
        np.testing.assert_allclose(coords_b, 2 * coords_a, atol=0.01 * max(doubled.shape[:2]))


def test_letterbox_maps_boxes_through_the_padding(letterbox_detector: ObjectDetector) -> None:
    """The same content on a taller canvas: boxes must move with it, not stretch."""
    image = data.astronaut()  # 512 x 512
    canvas = np.zeros((1024, 512, 3), np.uint8)
    canvas[256:768] = image
    person = best(letterbox_detector.detect(canvas), "person")
    assert iou(person, (ASTRONAUT_PERSON[0], ASTRONAUT_PERSON[1] + 256, ASTRONAUT_PERSON[2], 768.0)) > 0.7


def test_letterbox_calls_chelsea_a_cat(letterbox_detector: ObjectDetector) -> None:
    # The plain resize calls this cat "person" (see the module docstring); the letterbox gets it right.
    assert letterbox_detector.detect(data.chelsea())[0].label == "cat"


def test_rejects_non_rgb_input(detector: ObjectDetector) -> None:
    with pytest.raises(ValueError):
        detector.detect(data.camera())


def test_max_detections_caps_the_list() -> None:
    many = ObjectDetector(threads=2, min_score=0.05, max_detections=3).detect(data.stereo_motorcycle()[1])
    assert len(many) == 3 and many[0].label == "motorcycle"
