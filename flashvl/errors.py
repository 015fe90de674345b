"""One error type for everything a client can get wrong or that can be refused.

Every refusal carries a stable machine-readable ``code`` (documented in the README),
an HTTP status and a message that says what to fix. The API layer turns it into
``{"error": {"code", "message", "type"}}`` (OpenAI's error shape) and a metric.
"""

from __future__ import annotations


class FlashvlError(Exception):
    """A refusal with a stable code, an HTTP status and an actionable message."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int = 400,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, str]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"code": self.code, "message": self.message, "type": kind}


class MediaError(FlashvlError):
    """An image that was refused at intake (size, format, address, ...)."""


class StageUnavailable(FlashvlError):
    """A stage is not loaded, failed, or timed out."""

    def __init__(self, stage: str, message: str, retry_after: float = 5.0) -> None:
        super().__init__("stage_unavailable", f"{stage}: {message}", 503, retry_after=retry_after)
        self.stage = stage
