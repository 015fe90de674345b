"""A tiny HTTP client for a flashvl server, on Python's standard library only.

No ComfyUI import here: the nodes (nodes_v3.py, nodes_v1.py) call this, and tests can import it alone.
Every failure becomes a ``FlashvlNodeError`` whose message names the node, says what happened and
what to do about it; ComfyUI shows that message in its error dialog.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import time
import urllib.parse
import uuid
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 120.0
# A 429/503 with Retry-After is retried this many times, waiting at most MAX_RETRY_WAIT_S each time.
RETRIES = 2
MAX_RETRY_WAIT_S = 5.0
USER_AGENT = "flashvl-comfyui/0.1"


class FlashvlNodeError(RuntimeError):
    """A failure the user can act on; the message is meant for people, not for a stack trace."""


def default_server_url() -> str:
    return os.environ.get("FLASHVL_URL", "").strip() or DEFAULT_URL


def api_key() -> str | None:
    """Read at call time from the environment ComfyUI runs in; never a widget, never in the workflow."""
    return os.environ.get("FLASHVL_API_KEY", "").strip() or None


def normalize_url(server_url: str | None, node: str) -> str:
    url = (server_url or "").strip() or default_server_url()
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise FlashvlNodeError(
            f"{node}: server_url {url!r} is not an http(s) URL. Use the address `flashvl serve` prints, "
            f"e.g. {DEFAULT_URL}, or leave it empty to use FLASHVL_URL."
        )
    return url.rstrip("/")


class FlashvlClient:
    """POSTs to one flashvl server on behalf of one node."""

    def __init__(self, server_url: str | None, node: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.node = node
        self.base = normalize_url(server_url, node)
        self.timeout_s = float(timeout_s)

    # ------------------------------------------------------------------ requests

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        return self._post(path, data, "application/json")

    def post_file(self, path: str, field: str, filename: str, content: bytes, content_type: str) -> dict[str, Any]:
        boundary = f"flashvl-{uuid.uuid4().hex}"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        data = head + content + f"\r\n--{boundary}--\r\n".encode()
        return self._post(path, data, f"multipart/form-data; boundary={boundary}")

    def _post(self, path: str, data: bytes, content_type: str) -> dict[str, Any]:
        headers = {"Content-Type": content_type, "Accept": "application/json", "User-Agent": USER_AGENT}
        key = api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        deadline = time.monotonic() + self.timeout_s
        for attempt in range(RETRIES + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(path)
            try:
                status, retry_after, raw = self._exchange(path, data, headers, remaining)
            except TimeoutError:
                raise self._timeout(path) from None
            except OSError as exc:  # refused, unresolvable, reset, TLS failure, ...
                raise self._unreachable(exc) from None
            if 200 <= status < 300:
                return self._decode(path, status, raw)
            wait = _retry_wait(status, retry_after)
            if wait is not None and attempt < RETRIES and time.monotonic() + wait < deadline:
                time.sleep(wait)
                continue
            raise self._http_error(path, status, raw, retry_after)
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(
        self, path: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, str | None, bytes]:
        """One POST; (status, Retry-After, body). A server may answer before reading the whole upload (401,
        413 from Content-Length): then sending fails with a broken pipe, and its answer is read anyway."""
        parts = urllib.parse.urlsplit(self.base)
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(parts.hostname, parts.port, timeout=timeout)
        try:
            # If sending breaks off, the answer the server sent (if any) is still there to read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.request("POST", (parts.path or "") + path, body=data, headers=headers)
            try:
                response = connection.getresponse()
            except http.client.RemoteDisconnected as exc:
                raise ConnectionResetError("the server closed the connection without an answer") from exc
            return response.status, response.getheader("Retry-After"), response.read()
        finally:
            connection.close()

    # ------------------------------------------------------------------ errors

    def _decode(self, path: str, status: int, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise FlashvlNodeError(
                f"{self.node}: {self.base}{path} answered HTTP {status} but not with flashvl's JSON. "
                "Is server_url the address of a flashvl server (not ComfyUI itself or a proxy's page)?"
            )
        return body

    def _timeout(self, path: str) -> FlashvlNodeError:
        return FlashvlNodeError(
            f"{self.node}: the flashvl server at {self.base} did not answer {path} within {self.timeout_s:g}s. "
            "Raise timeout_s on the node, lower concurrency, or check the server's load (GET /metrics)."
        )

    def _unreachable(self, reason: object) -> FlashvlNodeError:
        text = str(reason)
        if isinstance(reason, TimeoutError):
            return self._timeout("the request")
        if isinstance(reason, ConnectionRefusedError) or "refused" in text.lower():
            what = "connection refused: nothing is listening there"
        elif isinstance(reason, socket.gaierror):
            what = f"the host name does not resolve ({text})"
        else:
            what = text
        return FlashvlNodeError(
            f"{self.node}: cannot reach the flashvl server at {self.base} ({what}). Start it "
            "(`flashvl serve`), or set server_url on the node (or FLASHVL_URL before starting ComfyUI) "
            "to where it runs."
        )

    def _http_error(self, path: str, status: int, raw: bytes, retry_after: str | None) -> FlashvlNodeError:
        code, message = _error_fields(raw)
        said = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if status == 401:
            how = (
                "FLASHVL_API_KEY is not set in the environment ComfyUI was started from"
                if api_key() is None
                else "the FLASHVL_API_KEY that ComfyUI was started with is not one this server accepts"
            )
            fix = (
                f"{how}. Set it to a key of this server (`python -m flashvl.security.auth new-key NAME "
                "--scopes infer` makes one) and restart ComfyUI; the key is never stored in the workflow."
            )
        elif status == 403 and code == "insufficient_scope":
            fix = "The API key lacks the scope this endpoint needs (infer); ask for a key with it."
        elif status == 403 and code == "ip_not_allowed":
            fix = "The server does not accept requests from this machine's address: add it to --ip-allowlist."
        elif status == 403:
            fix = "The server refused the request; check its access settings."
        elif status == 413:
            fix = (
                "The image is too large for this server. Downscale it before this node (e.g. 'Scale Image to "
                "Total Pixels', or 'Upscale Image By' with a scale under 1), or raise the server's "
                "--max-image-bytes / --max-image-pixels."
            )
        elif status == 415:
            fix = "The server did not accept the image format; this node sends PNG, so check the server's intake."
        elif status in (404, 405):
            fix = (
                f"{self.base} has no POST {path}: is server_url the address of a flashvl server (not ComfyUI "
                "itself), with nothing after the port?"
            )
        elif status == 429:
            fix = f"The server is rate limiting this key (retry after {retry_after or '?'}s); lower concurrency."
        elif status == 503:
            fix = (
                f"The server is loading or busy (retry after {retry_after or '?'}s); run the workflow again "
                "shortly, or lower concurrency."
            )
        elif status == 504:
            fix = (
                "The server gave up on the answer (its --request-timeout-s); try a smaller image or a simpler question."
            )
        elif status in (400, 422):
            fix = "The server refused this input; the message above says which part."
        else:
            fix = "See the flashvl server's log for this request."
        return FlashvlNodeError(f"{self.node}: the flashvl server at {self.base} refused {path} ({said}). {fix}")


def _error_fields(raw: bytes) -> tuple[str | None, str | None]:
    try:
        body = json.loads(raw)
    except ValueError:
        return None, (raw[:200].decode("utf-8", "replace").strip() or None)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error.get("code"), error.get("message")
    if isinstance(body, dict) and "detail" in body:
        return None, str(body["detail"])[:300]
    return None, None


def _retry_wait(status: int, retry_after: str | None) -> float | None:
    if status not in (429, 503) or retry_after is None:
        return None
    try:
        return min(max(float(retry_after), 0.0), MAX_RETRY_WAIT_S)
    except ValueError:
        return None
