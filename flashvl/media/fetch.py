"""SSRF-safe image download (peer pain points 1, 2 and 7).

Every hop of a fetch goes: strict URL parse -> host allowlist -> one DNS lookup ->
every resolved address checked -> connect to that exact address (Host header and
TLS SNI carry the name, so there is no second lookup to rebind) -> the peer address
of the open socket re-checked -> body streamed under a byte cap and a total deadline.
Redirects are followed by hand, each target going through the same steps.

Timeouts answer ``fetch_timeout`` with HTTP 504: the service is acting as a gateway
to the image host, and the host was too slow.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import urljoin, urlsplit

import httpx

from flashvl.config import Settings
from flashvl.errors import MediaError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

MAX_URL_LENGTH = 8192
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_CHARS = frozenset(string.ascii_lowercase + string.digits + "-_.")
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


@dataclass(frozen=True)
class ParsedTarget:
    """A URL that passed syntax and policy checks, ready to be resolved."""

    scheme: str
    host: str  # lower-case, IDNA, no trailing dot; an IP literal is in canonical form
    port: int
    path: str  # path plus query, never empty
    ip: IPAddress | None  # set when the host is an IP literal (no DNS lookup then)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.path}"


def _invalid(url: str, why: str) -> MediaError:
    shown = url if len(url) <= 200 else url[:200] + "..."
    return MediaError("invalid_url", f"Image URL {shown!r} is not accepted: {why}.", 400)


def parse_ipv4_like(host: str) -> ipaddress.IPv4Address | None:
    """Read ``host`` the way browsers and ``inet_aton`` do (WHATWG "IPv4 parser").

    ``2130706433``, ``0x7f.1``, ``0177.0.0.1`` and ``127.1`` are all 127.0.0.1 to a
    resolver, so they are normalised and checked as such. Returns None for ordinary
    names; raises ValueError for a host that ends in a number but is not an address.
    """
    labels = host.split(".")
    last = labels[-1]
    if not (last.isdigit() or (last[:2] == "0x" and all(c in string.hexdigits for c in last[2:]))):
        return None
    if len(labels) > 4:
        raise ValueError("too many parts for an IPv4 address")
    numbers = []
    for label in labels:
        if label.startswith("0x"):
            digits, base = label[2:] or "0", 16
        elif len(label) > 1 and label.startswith("0"):
            digits, base = label[1:], 8
        else:
            digits, base = label, 10
        try:
            if not digits.isalnum():  # int() would also take "1_0", "+1", " 1"
                raise ValueError
            numbers.append(int(digits, base))
        except ValueError:
            raise ValueError(f"{label!r} is not a number") from None
    *head, tail = numbers
    if any(n > 255 for n in head) or tail >= 256 ** (5 - len(numbers)):
        raise ValueError("an address part is out of range")
    value = tail + sum(n << (8 * (3 - i)) for i, n in enumerate(head))
    return ipaddress.IPv4Address(value)


def _normalise_host(url: str, raw_host: str, bracketed: bool) -> tuple[str, IPAddress | None]:
    if bracketed:
        try:
            ip6 = ipaddress.IPv6Address(raw_host)
        except ValueError as exc:
            raise _invalid(url, "the bracketed host is not an IPv6 address (zone ids are refused)") from exc
        return str(ip6), ip6
    host = raw_host.lower()
    if host.endswith("."):
        host = host[:-1]
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as exc:
        raise _invalid(url, "the host name is not valid IDNA") from exc
    if not host or set(host) - _HOST_CHARS or "" in host.split("."):
        raise _invalid(url, "the host is empty or contains characters a host name cannot have")
    try:
        ip4 = parse_ipv4_like(host)
    except ValueError as exc:
        raise _invalid(url, f"the host looks like an IPv4 address but is not one ({exc})") from exc
    return (str(ip4), ip4) if ip4 is not None else (host, None)


def _host_allowed(host: str, allow_hosts: list[str]) -> bool:
    for entry in allow_hosts:
        entry = entry.strip().lower().rstrip(".")
        if entry.startswith(".") and host.endswith(entry):
            return True
        if host == entry:
            return True
    return False


def validate_url(url: str, settings: Settings) -> ParsedTarget:
    """Parse an http(s) URL strictly and apply the host allowlist and IP-literal checks."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in _DEFAULT_PORTS:
        raise MediaError(
            "unsupported_url_scheme",
            f"Image URL scheme {scheme or '(none)'!r} is not supported; use http(s), data: or file:.",
            400,
        )
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(url, f"it is longer than {MAX_URL_LENGTH} characters")
    if "\\" in url:
        raise _invalid(url, "it contains a backslash")
    if any(ord(c) < 0x21 or ord(c) == 0x7F or c.isspace() for c in url):
        raise _invalid(url, "it contains whitespace or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. a bracketed host that is no IPv6 address
        raise _invalid(url, str(exc)) from exc
    netloc = parts.netloc
    if not url[len(scheme) :].startswith("://") or not netloc:
        raise _invalid(url, "it has no host")
    if "@" in netloc:
        raise _invalid(url, "user names and passwords in URLs are refused")
    if "%" in netloc:
        raise _invalid(url, "percent-encoded hosts are refused")
    try:
        port = parts.port
    except ValueError as exc:
        raise _invalid(url, "the port is not a number between 1 and 65535") from exc
    port = port if port is not None else _DEFAULT_PORTS[scheme]
    if port == 0:
        raise _invalid(url, "port 0 is not a port")
    bracketed = netloc.startswith("[")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise _invalid(url, "it has no host")
    host, ip = _normalise_host(url, raw_host, bracketed)
    if settings.fetch_allow_hosts and not _host_allowed(host, settings.fetch_allow_hosts):
        raise MediaError(
            "url_host_not_allowed",
            f"Image URL host {host!r} is not in the allowed hosts (setting fetch_allow_hosts).",
            403,
        )
    path = parts.path or "/"
    target = ParsedTarget(scheme, host, port, path + (f"?{parts.query}" if parts.query else ""), ip)
    if ip is not None:
        check_address(ip, settings)
    return target


def _block_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address, or None if it is one."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _block_reason(ip.ipv4_mapped)
        if ip in _IPV4_COMPATIBLE:
            return "an unspecified, loopback or IPv4-compatible IPv6 address"
        if ip in _NAT64_LOCAL:
            return "a local-use NAT64 address"
        embedded: list[ipaddress.IPv4Address] = []
        if ip in _NAT64_WELL_KNOWN:
            embedded = [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
        elif ip.sixtofour is not None:
            embedded = [ip.sixtofour]
        elif ip.teredo is not None:
            embedded = list(ip.teredo)
        if embedded:
            reasons = [r for r in map(_block_reason, embedded) if r]
            return f"an IPv6 address embedding {reasons[0]}" if reasons else None
        if ip.is_site_local:
            return "a site-local IPv6 address"
    for flag, reason in (
        ("is_unspecified", "the unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address (cloud metadata lives here)"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private-network address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(ip, flag):
            return reason
    return None if ip.is_global else "not a globally routable address"


def _allowed_by_cidrs(ip: IPAddress, cidrs: list[str]) -> bool:
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
        if any(c.version == network.version and c in network for c in candidates):
            return True
    return False


def check_address(ip: IPAddress, settings: Settings) -> None:
    """Refuse a non-public address unless ``fetch_allow_cidrs`` lets it through."""
    reason = _block_reason(ip)
    if reason is None or _allowed_by_cidrs(ip, settings.fetch_allow_cidrs):
        return
    raise MediaError(
        "url_address_blocked",
        f"Image URL resolves to {ip}, {reason}. To let image URLs reach it, add its network to the "
        "setting fetch_allow_cidrs (FLASHVL_FETCH_ALLOW_CIDRS).",
        403,
    )


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """All addresses for ``host`` from the system resolver, run off the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def resolve_target(target: ParsedTarget, settings: Settings, resolver: Resolver) -> list[IPAddress]:
    """The addresses to connect to; refuses if ANY address the name resolves to is blocked."""
    if target.ip is not None:
        return [target.ip]
    try:
        addresses = await resolver(target.host, target.port)
    except OSError as exc:
        raise MediaError("fetch_failed", f"Could not resolve image host {target.host!r}: {exc}", 400) from exc
    if not addresses:
        raise MediaError("fetch_failed", f"Image host {target.host!r} has no addresses.", 400)
    for address in addresses:
        check_address(address, settings)
    return addresses


def build_client(settings: Settings) -> httpx.AsyncClient:
    """The one HTTP client: no env proxies, no cookies, no automatic redirects, no keep-alive.

    Keep-alive is off because pooled connections are keyed by IP: a connection opened
    for one host name must never carry a request for another name on the same address.
    """
    timeout = httpx.Timeout(settings.fetch_timeout_s, connect=settings.fetch_connect_timeout_s)
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=timeout,
        limits=httpx.Limits(max_keepalive_connections=0),
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        headers={"User-Agent": "flashvl-image-fetch/1", "Accept": "image/*", "Accept-Encoding": "identity"},
    )


def build_pinned_request(client: httpx.AsyncClient, target: ParsedTarget, address: IPAddress) -> httpx.Request:
    """A GET to ``address`` itself; the name travels in Host and (https) the TLS SNI,
    against which the certificate is still verified."""
    url = httpx.URL(scheme=target.scheme, host=str(address), port=target.port).join(target.path)
    extensions = {"sni_hostname": target.host} if target.scheme == "https" and target.ip is None else {}
    return client.build_request("GET", url, headers={"Host": target.host_header}, extensions=extensions)


def _verify_peer(response: httpx.Response, expected: IPAddress) -> None:
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    try:
        actual = ipaddress.ip_address(str(peer[0]).split("%", 1)[0]) if peer else None
    except ValueError:
        actual = None
    if actual != expected:
        raise MediaError(
            "url_address_blocked",
            f"The connection for an image URL ended at {actual}, not the validated address {expected}.",
            403,
        )


class UrlFetcher:
    """Downloads one image URL at a time under the policy in ``Settings``."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient, resolver: Resolver | None = None) -> None:
        self._settings = settings
        self._client = client
        self._resolver = resolver or system_resolver

    async def fetch(self, url: str) -> bytes:
        """The body of ``url`` (at most ``max_image_bytes``), following checked redirects."""
        try:
            async with asyncio.timeout(self._settings.fetch_timeout_s):
                return await self._fetch_following_redirects(url)
        except httpx.InvalidURL as exc:  # a redirect target httpx cannot even represent
            raise MediaError("invalid_url", "The image URL (or a redirect it sent) is not a valid URL.", 400) from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise MediaError(
                "fetch_timeout",
                f"Downloading the image URL took longer than {self._settings.fetch_timeout_s} s "
                "(settings fetch_timeout_s, fetch_connect_timeout_s).",
                504,
            ) from exc

    async def _fetch_following_redirects(self, url: str) -> bytes:
        for _hop in range(self._settings.fetch_max_redirects + 1):
            target = validate_url(url, self._settings)
            addresses = await resolve_target(target, self._settings, self._resolver)
            location = await self._fetch_one(target, addresses)
            if isinstance(location, bytes):
                return location
            url = urljoin(target.url, location)
        raise MediaError(
            "too_many_redirects",
            f"The image URL redirected more than {self._settings.fetch_max_redirects} times "
            "(setting fetch_max_redirects).",
            400,
        )

    async def _fetch_one(self, target: ParsedTarget, addresses: list[IPAddress]) -> bytes | str:
        """Body bytes, or the Location of a redirect. Tries each validated address in turn."""
        for index, address in enumerate(addresses):
            request = build_pinned_request(self._client, target, address)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.ConnectError as exc:
                if index + 1 < len(addresses):
                    continue
                raise MediaError("fetch_failed", f"Could not connect to image host {target.host!r}: {exc}") from exc
            except httpx.TimeoutException:
                raise
            except httpx.HTTPError as exc:
                raise MediaError("fetch_failed", f"Fetching the image URL failed: {exc}") from exc
            try:
                _verify_peer(response, address)
                return await self._read_response(response)
            finally:
                await response.aclose()
        raise AssertionError("unreachable: addresses is never empty")

    async def _read_response(self, response: httpx.Response) -> bytes | str:
        if response.status_code in _REDIRECT_STATUSES:
            location = response.headers.get("location")
            if not location:
                raise MediaError("fetch_failed", f"The image URL answered {response.status_code} without Location.")
            return location
        if not 200 <= response.status_code < 300:
            raise MediaError(
                "fetch_failed",
                f"The image URL answered HTTP {response.status_code} {response.reason_phrase}.",
            )
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise MediaError("fetch_failed", f"The image host sent a {encoding!r}-encoded body; identity was asked.")
        cap = self._settings.max_image_bytes
        too_large = MediaError(
            "image_too_large_bytes",
            f"The image at the URL is larger than {cap} bytes (setting max_image_bytes).",
            413,
        )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise too_large
        body = bytearray()
        try:
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > cap:
                    raise too_large
        except httpx.TimeoutException:
            raise
        except httpx.HTTPError as exc:
            raise MediaError("fetch_failed", f"The image download broke off: {exc}") from exc
        return bytes(body)
