"""The one thing media intake hands to the rest of the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

Source = Literal["upload", "base64", "url", "file", "path"]


@dataclass(frozen=True)
class LoadedImage:
    """A decoded, size-checked image.

    ``image`` is RGB (first frame for animated formats). ``sha256`` is the hash
    of the original encoded bytes: the image's identity for caches.
    """

    image: Image.Image = field(repr=False, compare=False)
    sha256: str
    format: str
    width: int
    height: int
    nbytes: int
    source: Source
    source_url: str | None = None  # the http(s) URL it was fetched from (upstream stages may forward it)

    @property
    def pixels(self) -> int:
        return self.width * self.height
