"""The review queue's item and interface: answers arbitration flagged, kept for a person.

Three stores implement ``ReviewQueue``: ``memory.py`` (one process), ``sqlite.py`` (a file: survives a
restart, shared by the processes of one machine) and ``redis.py`` (shared by every process and machine);
``factory.py`` picks one from the settings. All are bounded (the oldest item goes first). An item's
``thumbnail`` (a few KB of WebP, or None) lives as long as the item; ``thumbnails`` says whether flagged
answers get one (``--review-thumbnails``).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from PIL import Image

THUMBNAIL_SIDE = 160  # pixels, the longest side of a review item's thumbnail
THUMBNAIL_MAX_BYTES = 16 * 1024  # a thumbnail that does not fit is not kept


def make_thumbnail(image: Image.Image) -> bytes | None:
    """A small WebP of ``image`` for the review page (longest side ``THUMBNAIL_SIDE`` px, at most
    ``THUMBNAIL_MAX_BYTES``; a few KB at quality 70), or None if even low quality does not fit or the
    image cannot be encoded (a flagged answer is never lost for its thumbnail)."""
    width, height = image.size
    if width < 1 or height < 1:
        return None
    scale = min(1.0, THUMBNAIL_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    try:
        if image.mode not in ("RGB", "RGBA", "L"):  # intake decodes to RGB; anything else is converted first
            image = image.convert("RGB")
        small = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)  # never copies the full image
        if small.mode != "RGB":
            small = small.convert("RGB")
        for quality in (70, 45, 20):
            buffer = io.BytesIO()
            small.save(buffer, format="WEBP", quality=quality, method=4)
            if buffer.tell() <= THUMBNAIL_MAX_BYTES:
                return buffer.getvalue()
    except (OSError, ValueError):
        return None
    return None


def thumbnail_type(data: bytes) -> str:
    """The media type of a stored thumbnail (WebP; JPEG for stores that wrote JPEG)."""
    return "image/webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else "image/jpeg"


@dataclass
class ReviewItem:
    id: str
    created: float
    question: str | None
    answer: str
    description: str
    reasons: list[str]
    image_sha256: list[str]
    route: str
    status: str = "open"  # open | resolved
    resolution: dict[str, Any] | None = None
    owner: str | None = None  # the principal whose request was flagged (None: no authenticated caller)
    resolved_by: str | None = None  # the principal (a reviewer) who resolved it
    # A small WebP of the (first) image, made when the answer was flagged (``make_thumbnail``); kept as
    # long as the item, never in the JSON (``has_thumbnail`` there; GET /review/{id}/thumbnail serves it).
    # None: thumbnails off (--no-review-thumbnails), no image, or an item older than thumbnails.
    thumbnail: bytes | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["thumbnail"]
        out["has_thumbnail"] = self.thumbnail is not None
        return out

    def mark_resolved(
        self, verdict: str, corrected_answer: str | None, note: str | None, resolved_by: str | None = None
    ) -> None:
        self.status = "resolved"
        self.resolved_by = resolved_by
        self.resolution = {"verdict": verdict, "corrected_answer": corrected_answer, "note": note, "at": time.time()}


class ReviewQueue(Protocol):
    """Flagged answers awaiting a person, oldest first."""

    max_items: int
    thumbnails: bool

    def add(self, **fields: Any) -> ReviewItem: ...

    def list(self, status: str | None = None) -> list[ReviewItem]: ...

    def get(self, item_id: str) -> ReviewItem | None: ...

    def resolve(
        self,
        item_id: str,
        verdict: str,
        corrected_answer: str | None = None,
        note: str | None = None,
        resolved_by: str | None = None,
    ) -> ReviewItem | None: ...


def dump_item(item: ReviewItem) -> str:
    fields = asdict(item)
    del fields["thumbnail"]  # in its own column
    return json.dumps(fields, ensure_ascii=False)


def load_item(text: str, thumbnail: bytes | None = None) -> ReviewItem:
    # items written before owner/resolved_by/thumbnail existed take the defaults
    return ReviewItem(**json.loads(text), thumbnail=thumbnail)
