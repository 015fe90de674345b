"""A language stage that loads its model on first use, not at start.

``flashvl ask`` starts with the vision stage alone: a question a rule answers (a colour, a count,
"is it safe") never needs the language model, so it is not loaded. The runtime wraps the language
stage in ``LoadOnFirstUse`` when asked to (``Runtime(lazy=...)``); the first ``generate`` or
``stream`` loads it (under the guarded call's deadline), announced through ``loading``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from typing import Any

from flashvl.stages.base import ChatRequest, Generation, LanguageStage, TextDelta


class LoadOnFirstUse:
    """Wraps ``inner``: ``load()`` at start does nothing; the first call loads ``inner`` once."""

    def __init__(
        self, inner: LanguageStage, *, loading: Callable[[str], AbstractContextManager[Any]] | None = None
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_id = inner.model_id
        self.loaded = False
        self._loading = loading
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Load ``inner`` unless it is loaded (the runtime skips this at start; calls come here)."""
        async with self._lock:
            if self.loaded:
                return
            announce = self._loading(f"loading the language model ({self.name})") if self._loading else None
            with announce or contextlib.nullcontext():
                await self.inner.load()
            self.model_id = self.inner.model_id
            self.loaded = True

    async def close(self) -> None:
        if self.loaded:
            await self.inner.close()

    async def generate(self, request: ChatRequest) -> Generation:
        await self.load()
        return await self.inner.generate(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | Generation]:
        await self.load()
        async with contextlib.aclosing(self.inner.stream(request)) as events:  # type: ignore[type-var]
            async for event in events:
                yield event

    def fingerprint(self) -> dict[str, Any]:
        return self.inner.fingerprint()

    def __getattr__(self, name: str) -> Any:  # anything else the stage offers (batch listeners, ...)
        return getattr(self.inner, name)
