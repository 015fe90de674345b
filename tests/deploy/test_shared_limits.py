"""In-flight caps counted in a real ``redis-server`` (``SharedInFlight``): two gates (two ingress
replicas) share one count per identity; a request over the cap is refused on either; counts are
released, and expire if a process dies holding them."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from flashvl.errors import FlashvlError
from flashvl.security.limits import SharedInFlight
from flashvl.testing import start_redis


def test_in_flight_cap_is_shared_across_processes() -> None:
    proc, url = start_redis()
    try:

        async def run() -> None:
            one = SharedInFlight(2, "API key", f"{url}/3", ttl_s=30)
            two = SharedInFlight(2, "API key", f"{url}/3", ttl_s=30)
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(one.hold("k"))
                await stack.enter_async_context(two.hold("k"))
                with pytest.raises(FlashvlError) as refused:
                    async with one.hold("k"):
                        pass
                assert refused.value.status == 429
                async with two.hold("other"):  # another identity has its own count
                    pass
            async with one.hold("k"), two.hold("k"):  # released: room again
                pass
            down = SharedInFlight(1, "API key", "redis://127.0.0.1:1/0", ttl_s=30)
            async with down.hold("k"):  # no Redis: not enforced, never an error
                pass

        asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
