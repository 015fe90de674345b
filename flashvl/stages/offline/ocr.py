"""Offline OCR on rapidocr (PP-OCR det + cls + rec on ONNX Runtime), plus a cheap text-presence gate.

The models ship inside the rapidocr wheel; every model path is passed explicitly so rapidocr never
takes its download branch, and nothing is written to the working directory.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rapidocr
from rapidocr import RapidOCR

from flashvl.stages.offline.onnx import make_session
from flashvl.text.layout import TextLine, group_rows

MODEL_DIR = Path(rapidocr.__file__).resolve().parent / "models"
DET_MODEL = MODEL_DIR / "PP-OCRv6_det_small.onnx"
CLS_MODEL = MODEL_DIR / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
REC_MODEL = MODEL_DIR / "PP-OCRv6_rec_small.onnx"

# has_text: detection map thresholds. A text line shows up as a thin, elongated, confident blob;
# photos give at most round or weak blobs (checked on skimage's photos and a plain colour image).
_GATE_PIXEL_THRESH = 0.3
_GATE_MIN_MEAN_PROB = 0.7
_GATE_MIN_ASPECT = 2.0
_GATE_MAX_THICKNESS = 0.3  # of the map's shorter side
_GATE_MIN_STD = 2.0  # grey-level std below which an image is treated as plain

# Space restoration: a blank run wider than this fraction of the ink height is a space.
_SPACE_GAP_RATIO = 0.3
# Column gaps: glyphs further apart than this fraction of the line's height are separate cells of a
# space-aligned table (a word space is about 0.3 of it), so the line is split there.
_COLUMN_GAP_RATIO = 0.75


class TextReader:
    """rapidocr loaded once; ``read`` runs the full OCR, ``has_text`` decides whether it is worth it."""

    def __init__(self, threads: int = 0, min_score: float = 0.5, gate_side: int = 640) -> None:
        for path in (DET_MODEL, CLS_MODEL, REC_MODEL):
            if not path.is_file():
                raise FileNotFoundError(f"rapidocr model missing from the wheel: {path}")
        self.min_score = min_score
        self.gate_side = gate_side
        params: dict[str, Any] = {
            "Global.log_level": "error",
            "Global.text_score": 0.0,  # filtered here, so word boxes stay aligned with lines
            "Global.return_word_box": True,
            "Global.return_single_char_box": True,
            "Det.model_path": str(DET_MODEL),
            "Cls.model_path": str(CLS_MODEL),
            "Rec.model_path": str(REC_MODEL),
            "EngineConfig.onnxruntime.intra_op_num_threads": threads if threads > 0 else -1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        self._engine = RapidOCR(params=params)
        self._gate = make_session(DET_MODEL, threads=threads)
        self._gate_input = self._gate.get_inputs()[0].name

    def has_text(self, rgb: np.ndarray) -> bool:
        """Detection model alone on an image scaled to ``gate_side``; True if any blob looks like a line."""
        rgb = _as_rgb(rgb)
        if float(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).std()) < _GATE_MIN_STD:
            return False
        prob = self._text_probability(rgb)
        mask = (prob > _GATE_PIXEL_THRESH).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count <= 1:
            return False
        sums = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=count)
        max_thickness = _GATE_MAX_THICKNESS * min(prob.shape)
        for label in range(1, count):
            area = stats[label, cv2.CC_STAT_AREA]
            if area < 8 or sums[label] / area < _GATE_MIN_MEAN_PROB:
                continue
            points = np.column_stack(np.nonzero(labels == label)[::-1]).astype(np.float32)
            (_, _), (width, height), _ = cv2.minAreaRect(points)
            thick, long = sorted((width + 1.0, height + 1.0))
            if long >= _GATE_MIN_ASPECT * thick and thick <= max_thickness:
                return True
        return False

    def read(self, rgb: np.ndarray) -> list[TextLine]:
        """Full OCR: lines in reading order, low-score lines dropped, zh/Latin spaces restored."""
        rgb = _as_rgb(rgb)
        result = self._engine(np.ascontiguousarray(rgb[:, :, ::-1]))
        boxes, texts = getattr(result, "boxes", None), getattr(result, "txts", None)
        scores = getattr(result, "scores", None)
        if boxes is None or texts is None or scores is None or len(texts) == 0:
            return []
        words = result.word_results if len(result.word_results) == len(texts) else [()] * len(texts)
        height, width = rgb.shape[:2]
        lines = []
        for quad, text, score, chars in zip(boxes, texts, scores, words, strict=True):
            if score < self.min_score or not text.strip():
                continue
            quad = np.asarray(quad, dtype=np.float32)
            text = restore_spaces(rgb, quad, text, chars)
            x1, y1 = np.clip(quad.min(axis=0), 0, [width, height])
            x2, y2 = np.clip(quad.max(axis=0), 0, [width, height])
            box = (float(x1), float(y1), float(x2), float(y2))
            lines.extend(split_at_column_gaps(text.strip(), float(score), box, chars))
        return [line for row in group_rows(lines) for line in row]

    def _text_probability(self, rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        scale = min(1.0, self.gate_side / max(height, width))
        new_h = max(32, round(height * scale / 32) * 32)
        new_w = max(32, round(width * scale / 32) * 32)
        bgr = cv2.resize(rgb[:, :, ::-1], (new_w, new_h), interpolation=cv2.INTER_AREA)
        tensor = (bgr.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
        return self._gate.run(None, {self._gate_input: tensor})[0][0, 0]


def restore_spaces(rgb: np.ndarray, quad: np.ndarray, text: str, chars: Any) -> str:
    """Put back spaces the recogniser dropped next to CJK characters, judged from blank ink columns.

    ``chars`` are rapidocr's single-character results ``(char, score, 4-point box)`` for this line;
    they locate each character boundary, and the line's own pixels say how wide the gap there is.
    """
    glyphs = [(item[0], np.asarray(item[2], dtype=np.float32)) for item in chars or ()]
    if not glyphs or not any(_is_cjk(c) for c in text) or "".join(g for g, _ in glyphs) != text.replace(" ", ""):
        return text
    crop, warp = _rectify(rgb, quad)
    ink = _ink_mask(crop)
    rows_with_ink = np.nonzero(ink.any(axis=1))[0]
    if rows_with_ink.size == 0:
        return text
    ink_height = rows_with_ink[-1] - rows_with_ink[0] + 1
    blank = ~ink.any(axis=0)
    centres = cv2.perspectiveTransform(np.stack([box.mean(axis=0) for _, box in glyphs])[None], warp)[0, :, 0]

    out, glyph_index = [], 0
    for position, char in enumerate(text):
        if char == " ":
            out.append(char)
            continue
        if glyph_index > 0 and text[position - 1] != " ":
            prev = text[position - 1]
            if (_is_cjk(prev) or _is_cjk(char)) and not (_is_punct(prev) or _is_punct(char)):
                start, stop = sorted((centres[glyph_index - 1], centres[glyph_index]))
                if _longest_run(blank[max(0, int(start)) : max(0, int(stop))]) > _SPACE_GAP_RATIO * ink_height:
                    out.append(" ")
        out.append(char)
        glyph_index += 1
    return "".join(out)


def split_at_column_gaps(text: str, score: float, box: tuple[float, float, float, float], chars: Any) -> list[TextLine]:
    """One detected line, or the cells of a space-aligned table row that the detector took as one line.

    ``chars`` are rapidocr's per-character results ``(char, score, 4-point box)``. Where two glyphs are
    further apart than ``_COLUMN_GAP_RATIO`` of the line's height, the line is split (so "60   70",
    which the recogniser may read as "6070", becomes "60" and "70"). Each piece's box spans its own
    glyphs (the detector's box is padded, and padded boxes of neighbouring columns overlap)."""
    glyphs = [(str(item[0]), np.asarray(item[2], dtype=np.float32)) for item in chars or ()]
    if not glyphs or "".join(g for g, _ in glyphs) != text.replace(" ", ""):
        return [TextLine(text, score, box)]
    x1, y1, x2, y2 = box
    spans = [(float(quad[:, 0].min()), float(quad[:, 0].max())) for _, quad in glyphs]
    gap_limit = _COLUMN_GAP_RATIO * (y2 - y1)
    pieces: list[tuple[str, list[int]]] = []  # text and glyph indices of each cell
    glyph = 0
    for char in text:
        if char == " ":
            if pieces:
                pieces[-1] = (pieces[-1][0] + char, pieces[-1][1])
            continue
        if not pieces or (glyph > 0 and spans[glyph][0] - spans[glyph - 1][1] > gap_limit):
            pieces.append(("", []))
        pieces[-1] = (pieces[-1][0] + char, [*pieces[-1][1], glyph])
        glyph += 1
    if len(pieces) == 1:
        return [TextLine(text, score, box)]
    return [
        TextLine(piece.strip(), score, (max(x1, spans[ids[0]][0]), y1, min(x2, spans[ids[-1]][1]), y2))
        for piece, ids in pieces
    ]


def _rectify(rgb: np.ndarray, quad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = max(1, int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3]))))
    height = max(1, int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    warp = cv2.getPerspectiveTransform(quad, target)
    crop = cv2.warpPerspective(rgb, warp, (width, height), borderMode=cv2.BORDER_REPLICATE)
    return crop, warp


def _ink_mask(crop: np.ndarray) -> np.ndarray:
    """Otsu split; ink is the class the border pixels (background) mostly do not belong to."""
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    _, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    border = np.concatenate([binary[0], binary[-1], binary[:, 0], binary[:, -1]])
    background_is_white = np.mean(border > 0) >= 0.5
    return binary == 0 if background_is_white else binary > 0


def _longest_run(flags: np.ndarray) -> int:
    best = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        best = max(best, current)
    return best


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x3040 <= code <= 0x30FF
        or 0xAC00 <= code <= 0xD7AF
        or 0xF900 <= code <= 0xFAFF
    )


def _is_punct(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 from grey, RGBA (composited on white) or float input."""
    if image.dtype != np.uint8:
        image = np.clip(image * 255.0 if image.max() <= 1.0 else image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.shape[2] == 4:
        alpha = image[:, :, 3:].astype(np.float32) / 255.0
        image = (image[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(image[:, :, :3])
