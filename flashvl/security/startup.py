"""Checks ``serve`` makes before binding: credentials load, and no open server on a public interface."""

from __future__ import annotations

import ipaddress

from flashvl.config import Settings
from flashvl.security.auth import Authenticator
from flashvl.security.limits import RateLimits

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback_host(host: str) -> bool:
    host = host.strip().strip("[]").lower().rstrip(".")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or "0.0.0.0"/"::" style wildcard is not loopback-only


def serve_refusal(settings: Settings) -> str | None:
    """Why ``serve`` must not start with these settings, or None. Also validates the auth config."""
    try:
        auth = Authenticator(settings)
        RateLimits(settings.rate_limit_per_key, settings.rate_limit_per_ip, settings.rate_limit_storage)
    except (ValueError, OSError) as exc:
        return f"invalid security settings: {exc}"
    if auth.enabled or is_loopback_host(settings.host) or settings.insecure_no_auth_on_public_interface:
        return None
    return (
        f"refusing to serve on {settings.host!r} with no authentication: anyone who reaches it could use it. "
        "Configure API keys (--api-keys / --api-keys-file) or JWT (--jwt-*), bind 127.0.0.1, or pass "
        "--insecure-no-auth-on-public-interface if something in front of flashvl authenticates."
    )
