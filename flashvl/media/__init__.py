"""Media intake: every image enters the service through ``MediaIntake``."""

from flashvl.media.decode import accepted_formats, decode_image, sniff_format
from flashvl.media.fetch import (
    ParsedTarget,
    UrlFetcher,
    build_pinned_request,
    check_address,
    parse_ipv4_like,
    resolve_target,
    validate_url,
)
from flashvl.media.sources import MediaIntake
from flashvl.media.types import LoadedImage, Source

__all__ = [
    "LoadedImage",
    "MediaIntake",
    "ParsedTarget",
    "Source",
    "UrlFetcher",
    "accepted_formats",
    "build_pinned_request",
    "check_address",
    "decode_image",
    "parse_ipv4_like",
    "resolve_target",
    "sniff_format",
    "validate_url",
]
