"""COCO-80 object detection with NanoDet (ONNX Runtime + numpy, fully offline).

The model is the NanoDet of the Human library's TFJS models, converted to ONNX by
``scripts/convert_nanodet.py`` (origin and licence: ``flashvl/assets/NOTICE-nanodet.md``).

Model contract (checked on the converted file):
- input ``input``: float32 NCHW 1x3x416x416, **BGR**, normalised with the Caffe-style
  mean/std below (feeding RGB/255, as the Human library's own JS does, gives junk);
- outputs ``cls_s{8,16,32}``: 1 x cells x 80 class scores, already sigmoided;
- outputs ``reg_s{8,16,32}``: 1 x cells x 44, i.e. 4 sides (left, top, right, bottom)
  x 11 distribution bins, decoded GFL-style: softmax expectation x stride, measured
  from the cell centre. Cells are row-major (index = row * width + column).

By default the image is squashed to 416x416 (no letterbox): on the few test photos this
keeps the cup of ``skimage.data.coffee`` (0.53) that a letterbox drops to 0.34, but it
calls the cat of ``chelsea`` "person"; ``keep_aspect=True`` letterboxes instead (centred,
black padding) and then finds "cat". Either way boxes are mapped back to the pixels of
the input array.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from flashvl.stages.base import Box
from flashvl.stages.offline.onnx import ASSETS, make_session

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
REG_BINS = 11  # reg_max 10 -> distances 0..10 strides per side
MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)

COCO_LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

COCO_LABELS_ZH: dict[str, str] = {
    "person": "人", "bicycle": "自行车", "car": "汽车", "motorcycle": "摩托车", "airplane": "飞机",
    "bus": "公交车", "train": "火车", "truck": "卡车", "boat": "船", "traffic light": "交通信号灯",
    "fire hydrant": "消防栓", "stop sign": "停车标志", "parking meter": "停车计时器", "bench": "长椅",
    "bird": "鸟", "cat": "猫", "dog": "狗", "horse": "马", "sheep": "羊", "cow": "牛", "elephant": "大象",
    "bear": "熊", "zebra": "斑马", "giraffe": "长颈鹿", "backpack": "背包", "umbrella": "雨伞",
    "handbag": "手提包", "tie": "领带", "suitcase": "行李箱", "frisbee": "飞盘", "skis": "滑雪板",
    "snowboard": "单板滑雪板", "sports ball": "球", "kite": "风筝", "baseball bat": "棒球棒",
    "baseball glove": "棒球手套", "skateboard": "滑板", "surfboard": "冲浪板", "tennis racket": "网球拍",
    "bottle": "瓶子", "wine glass": "酒杯", "cup": "杯子", "fork": "叉子", "knife": "刀", "spoon": "勺子",
    "bowl": "碗", "banana": "香蕉", "apple": "苹果", "sandwich": "三明治", "orange": "橙子",
    "broccoli": "西兰花", "carrot": "胡萝卜", "hot dog": "热狗", "pizza": "披萨", "donut": "甜甜圈",
    "cake": "蛋糕", "chair": "椅子", "couch": "沙发", "potted plant": "盆栽", "bed": "床",
    "dining table": "餐桌", "toilet": "马桶", "tv": "电视", "laptop": "笔记本电脑", "mouse": "鼠标",
    "remote": "遥控器", "keyboard": "键盘", "cell phone": "手机", "microwave": "微波炉", "oven": "烤箱",
    "toaster": "烤面包机", "sink": "水槽", "refrigerator": "冰箱", "book": "书", "clock": "钟",
    "vase": "花瓶", "scissors": "剪刀", "teddy bear": "泰迪熊", "hair drier": "吹风机", "toothbrush": "牙刷",
}  # fmt: skip

DEFAULT_MODEL = ASSETS / "nanodet.onnx"


def _cell_centres(stride: int) -> np.ndarray:
    """(cells, 2) x/y centres in 416-pixel units, row-major like the model's outputs."""
    size = INPUT_SIZE // stride
    ys, xs = np.mgrid[0:size, 0:size]
    return (np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) + 0.5) * stride


def _distances(reg: np.ndarray, stride: int) -> np.ndarray:
    """(cells, 44) distribution logits -> (cells, 4) distances left/top/right/bottom in pixels."""
    logits = reg.reshape(-1, 4, REG_BINS)
    logits = logits - logits.max(axis=2, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=2, keepdims=True)
    return (probs @ np.arange(REG_BINS, dtype=np.float32)) * stride


class ObjectDetector:
    """NanoDet COCO-80 detector; one ONNX Runtime session, loaded once."""

    def __init__(
        self,
        model_path: Path | None = None,
        threads: int = 0,
        min_score: float = 0.35,
        iou_threshold: float = 0.45,
        max_detections: int = 50,
        keep_aspect: bool = False,
    ) -> None:
        self.session = make_session(model_path or DEFAULT_MODEL, threads)
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.keep_aspect = keep_aspect
        self._input_name = self.session.get_inputs()[0].name
        self._output_names = [f"cls_s{s}" for s in STRIDES] + [f"reg_s{s}" for s in STRIDES]
        missing = set(self._output_names) - {o.name for o in self.session.get_outputs()}
        if missing:
            raise ValueError(f"{model_path or DEFAULT_MODEL} lacks NanoDet outputs {sorted(missing)}")
        self._centres = {s: _cell_centres(s) for s in STRIDES}

    def _preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model input, plus the per-axis scale and offset that map image pixels to it."""
        height, width = rgb.shape[:2]
        if self.keep_aspect:
            ratio = INPUT_SIZE / max(height, width)
            new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
            offset = np.array([(INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2], np.float32)
            canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
            x0, y0 = int(offset[0]), int(offset[1])
            canvas[y0 : y0 + new_h, x0 : x0 + new_w] = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            scale = np.array([new_w / width, new_h / height], np.float32)
        else:
            canvas = cv2.resize(rgb, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
            offset = np.zeros(2, np.float32)
            scale = np.array([INPUT_SIZE / width, INPUT_SIZE / height], np.float32)
        bgr = canvas[:, :, ::-1].astype(np.float32)
        normalised = (bgr - MEAN_BGR) / STD_BGR
        return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None]), scale, offset

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """Boxes (pixel coordinates of ``rgb``) above ``min_score``, best first.

        ``rgb`` is an HxWx3 uint8 RGB array. NMS is class-agnostic: one object gets one
        label, the most confident one.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
        height, width = rgb.shape[:2]
        tensor, scale, offset = self._preprocess(rgb)
        outputs = dict(
            zip(
                self._output_names,
                self.session.run(self._output_names, {self._input_name: tensor}),
                strict=True,
            )
        )

        boxes, scores, classes = [], [], []
        for stride in STRIDES:
            cls = outputs[f"cls_s{stride}"][0]
            best_class = cls.argmax(axis=1)
            best_score = cls[np.arange(len(cls)), best_class]
            keep = best_score >= self.min_score
            if not keep.any():
                continue
            dist = _distances(outputs[f"reg_s{stride}"][0][keep], stride)
            centres = self._centres[stride][keep]
            boxes.append(np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], axis=1))
            scores.append(best_score[keep])
            classes.append(best_class[keep])
        if not boxes:
            return []

        xyxy = (np.concatenate(boxes) - np.tile(offset, 2)) / np.tile(scale, 2)
        xyxy = np.clip(xyxy, 0, [width, height, width, height])
        score = np.concatenate(scores)
        label = np.concatenate(classes)
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        visible = (xywh[:, 2] >= 1) & (xywh[:, 3] >= 1)  # boxes that lay in the letterbox padding
        xyxy, xywh, score, label = xyxy[visible], xywh[visible], score[visible], label[visible]
        # No top_k here: OpenCV applies it to the candidates before suppression.
        kept = cv2.dnn.NMSBoxes(xywh.tolist(), score.tolist(), self.min_score, self.iou_threshold)
        order = sorted(np.asarray(kept, dtype=int).ravel().tolist(), key=lambda i: -score[i])
        return [
            Box(COCO_LABELS[label[i]], float(score[i]), *(float(v) for v in xyxy[i]))
            for i in order[: self.max_detections]
        ]
