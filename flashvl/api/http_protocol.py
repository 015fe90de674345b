"""uvicorn's h11 protocol with a deadline on the request head, and the server options that bound a
connection (``serve`` passes them to ``uvicorn.run``).

uvicorn bounds the size of a request head (``h11_max_incomplete_event_size``) and idle keep-alive
connections (``timeout_keep_alive``, armed only after a response), but not the time a client takes
to send a head: a socket that connects and sends nothing, or half a header, stays open for good.
Here every connection must deliver a complete head within ``head_timeout_s`` of connecting, or of
its first byte after a response; otherwise it is closed. The body's own deadline is
``api.middleware.BodySizeLimit`` (ASGI, so it can answer 408). h11 rather than httptools because
httptools has no head-size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from flashvl.config import Settings


class HeadDeadlineH11Protocol(H11Protocol):
    head_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a complete head arrived: the request runs under the app's deadlines
            self._disarm_head_timer()
        elif self._waiting_for_head():
            self._arm_head_timer()

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._waiting_for_head() or self.transport.is_closing():
            return
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The connection limits of ``flashvl serve`` as ``uvicorn.run`` keyword arguments."""
    protocol = type("FlashvlH11Protocol", (HeadDeadlineH11Protocol,), {"head_timeout_s": settings.header_timeout_s})
    return {
        "http": protocol,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "limit_concurrency": settings.max_connections,
    }
