"""The URL fetcher on the wire: refusals without connecting, address pinning, redirects,
byte caps and deadlines. (Validation without traffic: test_media_url_validation.py.)

Traffic goes to 127.0.0.1/127.0.0.2/::1 only: a real threaded HTTP server and bare
listening sockets ("watchers") that record whether anything connected.
"""

from __future__ import annotations

import io
import ipaddress
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from flashvl.config import Settings
from flashvl.errors import MediaError
from flashvl.media.fetch import UrlFetcher, build_client

PNG = (lambda b: (Image.new("RGB", (8, 8), (0, 128, 255)).save(b, "PNG"), b.getvalue())[1])(io.BytesIO())
LOCAL_ONLY = ["127.0.0.1/32"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Handler(BaseHTTPRequestHandler):
    """Routes for every behaviour the fetcher must cope with."""

    server: ImageServer

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.seen.append((parts.path, self.headers.get("Host")))
        self.server.cookies.append(self.headers.get("Cookie"))
        route = getattr(self, "route_" + parts.path.strip("/").replace("-", "_"), None)
        if route is None:
            self.send_error(404)
            return
        route(query)

    def route_img(self, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def route_cookie(self, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Set-Cookie", "session=secret; Path=/")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def route_redirect(self, query: dict[str, str]) -> None:
        self.send_response(302)
        self.send_header("Location", query["to"])
        self.end_headers()

    def route_hops(self, query: dict[str, str]) -> None:
        left = int(query["n"])
        if left == 0:
            self.route_img(query)
            return
        self.send_response(301)
        self.send_header("Location", f"/hops?n={left - 1}")
        self.end_headers()

    def route_endless(self, query: dict[str, str]) -> None:
        """No Content-Length, never ends: only a client-side cap stops it."""
        self.send_response(200)
        self.end_headers()
        chunk = PNG + b"\x00" * (65536 - len(PNG))
        try:
            while True:
                self.wfile.write(chunk)
                self.server.endless_sent += len(chunk)
        except OSError:
            self.server.endless_done.set()

    def route_lying_length(self, query: dict[str, str]) -> None:
        """Announces 10 GB, then sends nothing for a while."""
        self.send_response(200)
        self.send_header("Content-Length", str(10**10))
        self.end_headers()
        self.wfile.flush()
        time.sleep(5)

    def route_slow_headers(self, query: dict[str, str]) -> None:
        time.sleep(3)
        self.route_img(query)

    def route_drip(self, query: dict[str, str]) -> None:
        """Each byte arrives quickly, the whole body slowly: only a total deadline stops it."""
        self.send_response(200)
        self.send_header("Content-Length", "40")
        self.end_headers()
        try:
            for _ in range(40):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def route_gzip(self, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"abcd")


class ImageServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, host: str, port: int = 0) -> None:
        super().__init__((host, port), Handler)
        self.seen: list[tuple[str, str | None]] = []
        self.cookies: list[str | None] = []
        self.endless_sent = 0
        self.endless_done = threading.Event()

    @property
    def port(self) -> int:
        return self.server_address[1]


class Watcher:
    """A listening socket that only records whether anyone connected."""

    def __init__(self, host: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def saw_connection(self) -> bool:
        """True if a connection is waiting. The kernel queues it at connect time, so
        after the fetch returned a short poll is enough."""
        readable, _, _ = select.select([self.sock], [], [], 0.3)
        return bool(readable)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[ImageServer]:
    srv = ImageServer("127.0.0.1")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def watcher() -> Iterator[Watcher]:
    w = Watcher("127.0.0.1")
    yield w
    w.close()


async def fetch(url: str, settings: Settings, resolver=None) -> bytes:  # type: ignore[no-untyped-def]
    client = build_client(settings)
    try:
        return await UrlFetcher(settings, client, resolver).fetch(url)
    finally:
        await client.aclose()


async def refusal(url: str, settings: Settings, resolver=None) -> MediaError:  # type: ignore[no-untyped-def]
    with pytest.raises(MediaError) as caught:
        await fetch(url, settings, resolver)
    return caught.value


# ----------------------------------------------------------------- real traffic on loopback


LOOPBACK_SPELLINGS = [
    "127.0.0.1", "2130706433", "0x7f000001", "0x7f.1", "017700000001", "0177.0.0.1", "127.1",
    "[::ffff:127.0.0.1]", "0.0.0.0", "localhost", "localhost.", "LOCALHOST",
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_loopback_in_any_spelling_is_refused_without_connecting(host: str, watcher: Watcher) -> None:
    error = await refusal(f"http://{host}:{watcher.port}/img", Settings())
    assert (error.code, error.status) == ("url_address_blocked", 403)
    assert not watcher.saw_connection()


@pytest.mark.anyio
async def test_ipv6_loopback_is_refused_without_connecting() -> None:
    watcher = Watcher("::1")
    try:
        error = await refusal(f"http://[::1]:{watcher.port}/img", Settings())
        assert error.code == "url_address_blocked"
        assert not watcher.saw_connection()
    finally:
        watcher.close()


@pytest.mark.anyio
async def test_watcher_does_see_a_connection_when_one_is_allowed(watcher: Watcher) -> None:
    """Proves the watcher can tell: with loopback allowed, the same fetch does connect."""
    with pytest.raises(MediaError):
        await fetch(f"http://127.0.0.1:{watcher.port}/img", Settings(fetch_allow_cidrs=LOCAL_ONLY, fetch_timeout_s=1))
    assert watcher.saw_connection()


@pytest.mark.anyio
async def test_allowed_fetch_returns_the_bytes(server: ImageServer) -> None:
    body = await fetch(f"http://127.0.0.1:{server.port}/img", Settings(fetch_allow_cidrs=LOCAL_ONLY))
    assert body == PNG


@pytest.mark.anyio
async def test_redirect_into_a_blocked_address_is_refused(server: ImageServer) -> None:
    watcher = Watcher("127.0.0.2")
    try:
        url = f"http://127.0.0.1:{server.port}/redirect?to=http://127.0.0.2:{watcher.port}/img"
        error = await refusal(url, Settings(fetch_allow_cidrs=LOCAL_ONLY))
        assert (error.code, error.status) == ("url_address_blocked", 403)
        assert server.seen[0][0] == "/redirect"
        assert not watcher.saw_connection()
    finally:
        watcher.close()


@pytest.mark.anyio
async def test_redirects_are_followed_up_to_the_limit(server: ImageServer) -> None:
    settings = Settings(fetch_allow_cidrs=LOCAL_ONLY, fetch_max_redirects=3)
    assert await fetch(f"http://127.0.0.1:{server.port}/hops?n=3", settings) == PNG
    error = await refusal(f"http://127.0.0.1:{server.port}/hops?n=4", settings)
    assert (error.code, error.status) == ("too_many_redirects", 400)


@pytest.mark.anyio
async def test_dns_answer_is_used_once_and_pinned(server: ImageServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the first answer (allowed) is validated, the second would point at a
    watcher on 127.0.0.2. The system resolver is swapped for one that rebinds; every other
    name still goes to the real one."""
    rebound = Watcher("127.0.0.2", server.port)
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding_getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != "rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    try:
        body = await fetch(f"http://rebind.test:{server.port}/img", Settings(fetch_allow_cidrs=LOCAL_ONLY))
        assert body == PNG
        assert lookups == ["rebind.test"]
        assert server.seen == [("/img", f"rebind.test:{server.port}")]
        assert not rebound.saw_connection()
    finally:
        rebound.close()


@pytest.mark.anyio
async def test_connection_that_lands_elsewhere_is_refused(server: ImageServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The peer check. Nothing real sends a pinned connection elsewhere, so this test
    rewrites httpcore's connect (a stand-in for a hostile network layer) to dial
    127.0.0.2, where a second real server answers."""
    from httpcore._backends.anyio import AnyIOBackend

    other = ImageServer("127.0.0.2", server.port)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    original = AnyIOBackend.connect_tcp

    async def misrouted(self, host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        return await original(self, "127.0.0.2", port, *args, **kwargs)

    monkeypatch.setattr(AnyIOBackend, "connect_tcp", misrouted)
    try:
        error = await refusal(f"http://127.0.0.1:{server.port}/img", Settings(fetch_allow_cidrs=["127.0.0.0/8"]))
        assert (error.code, error.status) == ("url_address_blocked", 403)
        assert "validated address 127.0.0.1" in error.message
    finally:
        other.shutdown()
        other.server_close()


@pytest.mark.anyio
async def test_endless_body_is_cut_off_at_the_cap(server: ImageServer) -> None:
    settings = Settings(fetch_allow_cidrs=LOCAL_ONLY, max_image_bytes=256 * 1024, fetch_timeout_s=20)
    error = await refusal(f"http://127.0.0.1:{server.port}/endless", settings)
    assert (error.code, error.status) == ("image_too_large_bytes", 413)
    assert server.endless_done.wait(10)  # the server noticed the hang-up
    assert server.endless_sent < 32 * 1024 * 1024  # cap + socket buffers, not the whole stream


@pytest.mark.anyio
async def test_announced_length_over_the_cap_is_refused_before_the_body(server: ImageServer) -> None:
    # The body never arrives: only the Content-Length check can answer before the deadline.
    settings = Settings(fetch_allow_cidrs=LOCAL_ONLY, fetch_timeout_s=2.5)
    error = await refusal(f"http://127.0.0.1:{server.port}/lying-length", settings)
    assert (error.code, error.status) == ("image_too_large_bytes", 413)


@pytest.mark.anyio
async def test_slow_server_hits_the_timeout(server: ImageServer) -> None:
    settings = Settings(fetch_allow_cidrs=LOCAL_ONLY, fetch_timeout_s=0.5)
    error = await refusal(f"http://127.0.0.1:{server.port}/slow-headers", settings)
    assert (error.code, error.status) == ("fetch_timeout", 504)


@pytest.mark.anyio
async def test_dripping_body_hits_the_total_deadline(server: ImageServer) -> None:
    # Every byte comes within the 1 s read timeout; the 4 s body only trips the total deadline.
    settings = Settings(fetch_allow_cidrs=LOCAL_ONLY, fetch_timeout_s=1.0)
    error = await refusal(f"http://127.0.0.1:{server.port}/drip", settings)
    assert (error.code, error.status) == ("fetch_timeout", 504)


@pytest.mark.anyio
async def test_upstream_error_status_is_reported(server: ImageServer) -> None:
    error = await refusal(f"http://127.0.0.1:{server.port}/missing", Settings(fetch_allow_cidrs=LOCAL_ONLY))
    assert (error.code, error.status) == ("fetch_failed", 400)
    assert "404" in error.message


@pytest.mark.anyio
async def test_compressed_body_is_refused(server: ImageServer) -> None:
    error = await refusal(f"http://127.0.0.1:{server.port}/gzip", Settings(fetch_allow_cidrs=LOCAL_ONLY))
    assert error.code == "fetch_failed"
    assert "gzip" in error.message


@pytest.mark.anyio
async def test_proxy_environment_and_cookies_are_ignored(
    server: ImageServer, watcher: Watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{watcher.port}")
    settings = Settings(fetch_allow_cidrs=LOCAL_ONLY)
    client = build_client(settings)
    try:
        fetcher = UrlFetcher(settings, client)
        assert await fetcher.fetch(f"http://127.0.0.1:{server.port}/cookie") == PNG
        assert await fetcher.fetch(f"http://127.0.0.1:{server.port}/img") == PNG
    finally:
        await client.aclose()
    assert not watcher.saw_connection()  # no proxy
    assert server.cookies == [None, None]  # the Set-Cookie was not kept


@pytest.mark.anyio
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a test certificate")
async def test_https_pins_the_address_and_verifies_the_name(tmp_path: Path) -> None:
    """A real TLS server on 127.0.0.1 with a certificate for img.test: the pinned
    connection sends SNI img.test and verifies the certificate against that name."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert),
            *("-days", "1", "-subj", "/CN=img.test", "-addext", "subjectAltName=DNS:img.test"),
        ],
        check=True,
        capture_output=True,
    )
    srv = ImageServer("127.0.0.1")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    sni_names: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, ctx: sni_names.append(name)
    srv.socket = server_tls.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    async def to_loopback(host: str, port: int) -> list[ipaddress.IPv4Address]:
        return [ipaddress.IPv4Address("127.0.0.1")]

    settings = Settings(fetch_allow_cidrs=LOCAL_ONLY)
    try:
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=cert), trust_env=False) as client:
            fetcher = UrlFetcher(settings, client, to_loopback)
            assert await fetcher.fetch(f"https://img.test:{srv.port}/img") == PNG
            with pytest.raises(MediaError) as caught:  # same address, a name the certificate lacks
                await fetcher.fetch(f"https://other.test:{srv.port}/img")
    finally:
        srv.shutdown()
        srv.server_close()
    assert sni_names == ["img.test", "other.test"]
    assert srv.seen == [("/img", f"img.test:{srv.port}")]
    assert caught.value.code == "fetch_failed"
    assert "certificate verify failed" in caught.value.message
