"""Structured observations of the offline pipeline, and where things are.

Everything here is derived from what the parts measured; nothing is guessed.
Positions are in thirds of the image (left/centre/right, top/middle/bottom),
sizes from the box's share of the image area, relations from box centres.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from flashvl.stages.base import Box
from flashvl.stages.offline.colours import NamedColour


@dataclass
class SceneObject:
    """One detected object with its place in the image."""

    ref: str  # "person#1": stable name used by relations
    label: str
    label_zh: str
    score: float
    box: Box
    horizontal: str  # left | centre | right
    vertical: str  # top | middle | bottom
    size: str  # large | medium | small
    area_fraction: float
    colour: NamedColour | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "ref": self.ref,
            "label": self.label,
            "label_zh": self.label_zh,
            "score": round(self.score, 3),
            "box": self.box.to_dict()["box"],
            "position": {"horizontal": self.horizontal, "vertical": self.vertical},
            "size": self.size,
            "area_fraction": round(self.area_fraction, 4),
        }
        if self.colour:
            out["colour"] = self.colour.to_dict()
        return out


@dataclass(frozen=True)
class Relation:
    subject: str
    relation: str  # left_of | right_of | above | below | overlaps
    object: str


@dataclass
class Observations:
    """Everything the offline pipeline saw in one image."""

    width: int
    height: int
    objects: list[SceneObject] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)  # ImageNet: name, name_zh, score
    text_present: bool = False
    text_lines: list[dict[str, Any]] = field(default_factory=list)  # text, score, box
    nsfw_score: float | None = None
    safety_verdict: str | None = None  # safe | unsafe | uncertain
    background: NamedColour | None = None
    foreground: NamedColour | None = None
    disagreements: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)  # which parts ran

    full_text: str = ""  # OCR text with cells of one row joined (tables read row by row)

    @property
    def text(self) -> str:
        return self.full_text or "\n".join(line["text"] for line in self.text_lines)

    def to_state(self) -> dict[str, Any]:
        """Everything, unrounded and JSON-able: ``from_state`` gives back an equal object (the cache
        form; ``to_dict`` is the rounded form responses show)."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Observations:
        def colour(data: dict[str, Any] | None) -> NamedColour | None:
            return NamedColour(**(data | {"rgb": tuple(data["rgb"])})) if data else None

        data = dict(state)
        data["objects"] = [
            SceneObject(
                **(
                    o
                    | {
                        "box": Box(**(o["box"] | {"norm": _tuple(o["box"].get("norm"))})),
                        "colour": colour(o.get("colour")),
                    }
                )
            )
            for o in data.get("objects", [])
        ]
        data["relations"] = [Relation(**r) for r in data.get("relations", [])]
        data["background"] = colour(data.get("background"))
        data["foreground"] = colour(data.get("foreground"))
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": {"width": self.width, "height": self.height},
            "objects": [o.to_dict() for o in self.objects],
            "relations": [asdict(r) for r in self.relations],
            "labels": self.labels,
            # full_text: the lines with the cells of one table row joined (rows, as a person reads them)
            "text": {"present": self.text_present, "lines": self.text_lines, "full_text": self.text},
            "safety": {"nsfw_score": self.nsfw_score, "verdict": self.safety_verdict},
            "colours": {
                "background": self.background.to_dict() if self.background else None,
                "foreground": self.foreground.to_dict() if self.foreground else None,
            },
            "disagreements": self.disagreements,
            "parts": self.parts,
        }


def _tuple(value: list[float] | None) -> tuple[float, float, float, float] | None:
    return tuple(value) if value is not None else None  # type: ignore[return-value]


def _third(value: float, extent: float, names: tuple[str, str, str]) -> str:
    ratio = value / max(extent, 1.0)
    return names[0] if ratio < 1 / 3 else names[1] if ratio < 2 / 3 else names[2]


def place_objects(boxes: list[Box], width: int, height: int, labels_zh: dict[str, str]) -> list[SceneObject]:
    """Turn detector boxes into placed, numbered scene objects."""
    counts: dict[str, int] = {}
    objects = []
    image_area = float(max(width * height, 1))
    for box in boxes:
        counts[box.label] = counts.get(box.label, 0) + 1
        cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
        area = max(0.0, box.x2 - box.x1) * max(0.0, box.y2 - box.y1) / image_area
        size = "large" if area >= 0.25 else "medium" if area >= 0.05 else "small"
        objects.append(
            SceneObject(
                ref=f"{box.label}#{counts[box.label]}",
                label=box.label,
                label_zh=labels_zh.get(box.label, box.label),
                score=box.score,
                box=box,
                horizontal=_third(cx, width, ("left", "centre", "right")),
                vertical=_third(cy, height, ("top", "middle", "bottom")),
                size=size,
                area_fraction=area,
            )
        )
    return objects


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def relate(objects: list[SceneObject], max_objects: int = 6) -> list[Relation]:
    """Pairwise relations between the most confident objects.

    Horizontal wins when the centres differ more across than down; a pair whose
    boxes overlap heavily is reported as overlapping instead.
    """
    top = objects[:max_objects]
    relations = []
    for i, a in enumerate(top):
        for b in top[i + 1 :]:
            if _iou(a.box, b.box) > 0.3:
                relations.append(Relation(a.ref, "overlaps", b.ref))
                continue
            ax, ay = (a.box.x1 + a.box.x2) / 2, (a.box.y1 + a.box.y2) / 2
            bx, by = (b.box.x1 + b.box.x2) / 2, (b.box.y1 + b.box.y2) / 2
            if abs(ax - bx) >= abs(ay - by):
                relations.append(Relation(a.ref, "left_of" if ax < bx else "right_of", b.ref))
            else:
                relations.append(Relation(a.ref, "above" if ay < by else "below", b.ref))
    return relations


# ImageNet-1k index ranges of coarse groups, to cross-check the detector.
_IMAGENET_GROUPS: list[tuple[range, str]] = [
    (range(281, 286), "cat"),
    (range(151, 269), "dog"),
    (range(7, 25), "bird"),
    (range(80, 101), "bird"),
    (range(127, 147), "bird"),
    (range(0, 398), "animal"),
]
_COCO_ANIMALS = {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"}


def imagenet_group(index: int) -> str | None:
    for span, group in _IMAGENET_GROUPS:
        if index in span:
            return group
    return None


def find_disagreements(objects: list[SceneObject], labels: list[dict[str, Any]]) -> list[str]:
    """Say where the detector and the classifier tell different stories.

    Only confident classifier labels (>= 0.3) are used; each message names both
    parts and their scores, so a reader can judge.
    """
    if not labels or labels[0]["score"] < 0.3:
        return []
    top = labels[0]
    group = imagenet_group(int(top["index"]))
    if group is None:
        return []
    messages = []
    detected = {o.label for o in objects}
    for obj in objects:
        if obj.label == "person" and group in {"cat", "dog", "bird", "animal"}:
            messages.append(
                f"the object detector says person ({obj.score:.2f}) but the classifier says "
                f"{top['name']} ({top['score']:.2f}), an animal"
            )
            break
        if obj.label in _COCO_ANIMALS and group in {"cat", "dog", "bird"} and obj.label != group:
            messages.append(
                f"the object detector says {obj.label} ({obj.score:.2f}) but the classifier says "
                f"{top['name']} ({top['score']:.2f}), a {group}"
            )
            break
    if group in {"cat", "dog", "bird"} and not detected & _COCO_ANIMALS and top["score"] >= 0.5 and not messages:
        messages.append(
            f"the classifier says {top['name']} ({top['score']:.2f}) but the object detector found no animal"
        )
    return messages
