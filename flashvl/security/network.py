"""Client addresses: X-Forwarded-For believed only from trusted proxies, and a CIDR allowlist.

The client address is the socket peer, unless the peer is a configured trusted proxy:
then ``X-Forwarded-For`` is walked from the right, skipping trusted proxies, and the
first untrusted address is the client (the standard "rightmost untrusted" rule, so a
client cannot forge its address by sending the header itself).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(cidrs: Iterable[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()]


def _address(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "1.2.3.4:5678"
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _inside(address: IPAddress, networks: list[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


class ClientAddressPolicy:
    """Works out the client address of a request and whether it may be served."""

    def __init__(self, allowlist: Iterable[str], trusted_proxies: Iterable[str]) -> None:
        self.allowlist = parse_networks(allowlist)
        self.trusted = parse_networks(trusted_proxies)

    def client_address(self, peer: str | None, forwarded_for: str | None) -> IPAddress | None:
        """The client's address, or None when it cannot be known (no peer, garbage header)."""
        address = _address(peer) if peer else None
        if address is None or not self.trusted or not _inside(address, self.trusted) or not forwarded_for:
            return address
        for hop in reversed(forwarded_for.split(",")):
            hop_address = _address(hop)
            if hop_address is None:
                return None  # a proxy we trust passed on something unparseable: do not guess
            if not _inside(hop_address, self.trusted):
                return hop_address
            address = hop_address
        return address  # every hop was a trusted proxy: the leftmost one

    def allowed(self, address: IPAddress | None) -> bool:
        if not self.allowlist:
            return True
        return address is not None and _inside(address, self.allowlist)
