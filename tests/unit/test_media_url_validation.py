"""URL validation for image fetches: schemes, strict parsing, host allowlist, address policy.

No traffic at all: addresses like 10.0.0.1 or 169.254.169.254 are only handed to the
validator. The fetcher's behaviour on the wire is in test_media_fetch.py.
"""

from __future__ import annotations

import ipaddress

import pytest

from flashvl.config import Settings
from flashvl.errors import MediaError
from flashvl.media import build_pinned_request, check_address, resolve_target, validate_url
from flashvl.media.fetch import build_client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ----------------------------------------------------------------- validator, no traffic


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "gopher://x/", "javascript:alert(1)", "//x.com/a"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(MediaError) as caught:
        validate_url(url, Settings())
    assert (caught.value.code, caught.value.status) == ("unsupported_url_scheme", 400)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1\\@example.com/",
        "http://example.com\\@127.0.0.1/",
        "http://example.com/a\\b.png",
        "http://exa\tmple.com/",
        "http://example.com/a b.png",
        "http://example.com/a\n.png",
        "http://user@example.com/",
        "http://user:pw@example.com/",
        "http:///a.png",
        "http://:80/",
        "http:example.com/a.png",
        "http://%6c%6f%63alhost/",
        "http://[::1%25lo]/",
        "http://[not-v6]/",
        "http://1.2.3.256/",
        "http://0x1g.1/",
        "http://example..com/",
        "http://example.com:99999/",
        "http://example.com:0/",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(MediaError) as caught:
        validate_url(url, Settings())
    assert (caught.value.code, caught.value.status) == ("invalid_url", 400)


def test_host_is_normalised() -> None:
    target = validate_url("HTTPS://Img.Example.COM.:8443/a/b.png?x=1#frag", Settings())
    assert (target.scheme, target.host, target.port, target.path) == (
        "https",
        "img.example.com",
        8443,
        "/a/b.png?x=1",
    )
    assert target.host_header == "img.example.com:8443"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("img.example.com", True),
        ("a.b.example.com", True),
        ("cdn.test", True),
        ("example.com", False),
        ("evil-example.com", False),
        ("example.com.evil.net", False),
        ("sub.cdn.test", False),
    ],
)
def test_host_allowlist(host: str, allowed: bool) -> None:
    settings = Settings(fetch_allow_hosts=[".example.com", "cdn.test"])
    if allowed:
        assert validate_url(f"http://{host}/a.png", settings).host == host
        return
    with pytest.raises(MediaError) as caught:
        validate_url(f"http://{host}/a.png", settings)
    assert (caught.value.code, caught.value.status) == ("url_host_not_allowed", 403)


BLOCKED = [
    "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "127.0.0.1", "127.8.9.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1",
    "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "fec0::1", "ff02::1",
    "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:127.0.0.1", "::127.0.0.1",
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",  # local-use NAT64
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, client 192.0.2.45
]  # fmt: skip
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "2002:808:808::1",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", BLOCKED)
def test_non_public_addresses_are_blocked(address: str) -> None:
    with pytest.raises(MediaError) as caught:
        check_address(ipaddress.ip_address(address), Settings())
    assert (caught.value.code, caught.value.status) == ("url_address_blocked", 403)
    assert "fetch_allow_cidrs" in caught.value.message


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    check_address(ipaddress.ip_address(address), Settings())


def test_allow_cidrs_open_a_private_network_and_its_mapped_form() -> None:
    settings = Settings(fetch_allow_cidrs=["10.0.0.0/8"])
    check_address(ipaddress.ip_address("10.1.2.3"), settings)
    check_address(ipaddress.ip_address("::ffff:10.1.2.3"), settings)
    with pytest.raises(MediaError):
        check_address(ipaddress.ip_address("192.168.0.1"), settings)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://2852039166/",
        "http://0251.0376.0251.0376/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00::1]/",
    ],
)
def test_ip_literals_in_every_spelling_are_checked(url: str) -> None:
    with pytest.raises(MediaError) as caught:
        validate_url(url, Settings())
    assert caught.value.code == "url_address_blocked"


@pytest.mark.anyio
async def test_a_name_is_refused_if_any_of_its_addresses_is_private() -> None:
    async def split_horizon(host: str, port: int) -> list[ipaddress.IPv4Address]:
        return [ipaddress.IPv4Address("8.8.8.8"), ipaddress.IPv4Address("10.0.0.1")]

    target = validate_url("http://images.example/a.png", Settings())
    with pytest.raises(MediaError) as caught:
        await resolve_target(target, Settings(), split_horizon)
    assert caught.value.code == "url_address_blocked"


def test_pinned_request_dials_the_address_and_names_the_host() -> None:
    client = build_client(Settings())
    target = validate_url("https://img.example.com:8443/a.png?x=1", Settings())
    request = build_pinned_request(client, target, ipaddress.ip_address("93.184.216.34"))
    assert (request.url.host, request.url.port, request.url.raw_path) == (
        "93.184.216.34",
        8443,
        b"/a.png?x=1",
    )
    assert request.headers["host"] == "img.example.com:8443"
    assert request.extensions["sni_hostname"] == "img.example.com"  # TLS SNI + cert check use the name
