"""Named colours of an image: background (the border) and foreground (the centre).

Why split: the dominant colour of a document or of a shape on white is "white",
which is the right answer for "what colour is the background" and the wrong one
for "what colour is the circle".
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# (name, name_zh) by hue band, for saturated colours; hue in OpenCV's 0-180 scale.
_HUES: list[tuple[float, str, str]] = [
    (8, "red", "红色"),
    (20, "orange", "橙色"),
    (33, "yellow", "黄色"),
    (78, "green", "绿色"),
    (97, "cyan", "青色"),
    (130, "blue", "蓝色"),
    (150, "purple", "紫色"),
    (170, "pink", "粉色"),
    (180, "red", "红色"),
]


@dataclass(frozen=True)
class NamedColour:
    name: str
    name_zh: str
    rgb: tuple[int, int, int]
    share: float  # fraction of the region's pixels this colour covers

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "name_zh": self.name_zh,
            "rgb": list(self.rgb),
            "share": round(self.share, 3),
        }


def name_colour(rgb: tuple[int, int, int] | np.ndarray) -> tuple[str, str]:
    """A basic colour name (English, Chinese) for one RGB value."""
    pixel = np.uint8([[list(rgb)]])
    h, s, v = (int(x) for x in cv2.cvtColor(pixel, cv2.COLOR_RGB2HSV)[0, 0])
    if v < 50:
        return "black", "黑色"
    if s < 40:
        if v > 200:
            return "white", "白色"
        return "gray", "灰色"
    if 8 <= h < 25 and v < 170:
        return "brown", "棕色"
    for upper, name, name_zh in _HUES:
        if h < upper:
            return name, name_zh
    return "red", "红色"


def dominant_colours(rgb: np.ndarray, k: int = 3) -> list[NamedColour]:
    """Main colours of a region, largest share first (k-means on a small copy)."""
    small = cv2.resize(rgb, (48, 48), interpolation=cv2.INTER_AREA) if rgb.shape[0] * rgb.shape[1] > 2304 else rgb
    pixels = small.reshape(-1, 3).astype(np.float32)
    if len(pixels) < 2:  # OpenCV reads a single (1, 3) row as three 1-D samples
        pixels = np.repeat(pixels, 2, axis=0)
    k = max(1, min(k, len(pixels)))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, labels, centres = cv2.kmeans(pixels, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    counts = np.bincount(labels.ravel(), minlength=k)
    # Merge clusters that map to the same name, so "white 60% + white 20%" reads as one.
    merged: dict[tuple[str, str], tuple[float, np.ndarray]] = {}
    for idx in np.argsort(-counts):
        share = counts[idx] / counts.sum()
        key = name_colour(centres[idx].astype(np.uint8))
        prev_share, prev_centre = merged.get(key, (0.0, centres[idx]))
        merged[key] = (prev_share + share, prev_centre)
    colours = [
        NamedColour(n, nz, tuple(int(c) for c in centre), float(share)) for (n, nz), (share, centre) in merged.items()
    ]
    return sorted(colours, key=lambda c: -c.share)


def background_and_foreground(rgb: np.ndarray) -> tuple[NamedColour, NamedColour]:
    """Background = dominant colour of a border ring; foreground = the centre's main
    colour that differs from the background (or the background's, if none does)."""
    h, w = rgb.shape[:2]
    bh, bw = max(1, h // 10), max(1, w // 10)
    ring = np.concatenate(
        [
            rgb[:bh].reshape(-1, 3),
            rgb[-bh:].reshape(-1, 3),
            rgb[:, :bw].reshape(-1, 3),
            rgb[:, -bw:].reshape(-1, 3),
        ]
    )
    side = int(np.sqrt(len(ring))) or 1
    background = dominant_colours(ring[: side * side].reshape(side, side, 3))[0]
    centre = rgb[h // 4 : h - h // 4, w // 4 : w - w // 4]
    if centre.size == 0:
        centre = rgb
    for colour in dominant_colours(centre, k=4):
        if colour.name != background.name and colour.share >= 0.12:
            return background, colour
    return background, background
