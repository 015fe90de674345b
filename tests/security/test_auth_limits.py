"""Auth (API keys, JWT), client addresses, limits and the serve guard, in-process (no models, no network)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flashvl.config import Settings
from flashvl.errors import FlashvlError
from flashvl.pipeline.admission import ModelGate
from flashvl.security.auth import Authenticator, AuthError, hash_key, new_key, parse_key_entry
from flashvl.security.limits import InFlight, RateLimits
from flashvl.security.middleware import is_public
from flashvl.security.network import ClientAddressPolicy
from flashvl.security.startup import serve_refusal

AUD, ISS = "flashvl-test", "https://issuer.test"
SECRET = b"s" * 40


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _token(key: object, alg: str = "HS256", headers: dict | None = None, **claims: object) -> str:
    now = int(time.time())
    body = {"sub": "alice", "aud": AUD, "iss": ISS, "exp": now + 60, "iat": now, "scope": "infer"} | claims
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[rsa.RSAPrivateKey, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, pem


def test_keys_are_stored_hashed_and_scoped(tmp_path: Path) -> None:
    infer_key, admin_key = new_key(), new_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# comment\nops:admin:{hash_key(admin_key)}\n")
    auth = Authenticator(Settings(api_keys=[f"app:infer:{hash_key(infer_key)}"], api_keys_file=keys_file))
    app = auth.authenticate(f"Bearer {infer_key}", None)
    assert app.name == "key:app" and app.has("infer") and not app.has("batch") and not app.has("admin")
    ops = auth.authenticate(None, admin_key)
    assert ops.has("admin") and ops.has("batch")
    for bad in ("Bearer " + infer_key[:-1] + "x", "Basic abc", "Bearer ", None):
        with pytest.raises(AuthError) as info:
            auth.authenticate(bad, None)
        assert infer_key not in info.value.message


@pytest.mark.parametrize(
    "entry", ["app:infer:fvl_plaintextkeyhere", "app:root:" + "a" * 64, "app::" + "a" * 64, "justakey"]
)
def test_bad_key_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_key_entry(entry)


def test_hs256_jwt_claims_are_checked(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET)
    auth = Authenticator(Settings(jwt_secret_file=secret_file, jwt_audience=AUD, jwt_issuer=ISS, jwt_leeway_s=0))
    ok = auth.authenticate("Bearer " + _token(SECRET, scope="infer batch"), None)
    assert ok.name == "jwt:alice" and ok.has("batch") and not ok.has("admin")
    now = int(time.time())
    refused = {
        "expired": _token(SECRET, exp=now - 5),
        "no exp": _token(SECRET, exp=None),
        "not yet": _token(SECRET, nbf=now + 600),
        "wrong aud": _token(SECRET, aud="someone-else"),
        "no aud": _token(SECRET, aud=None),
        "wrong iss": _token(SECRET, iss="https://evil.test"),
        "wrong secret": _token(b"x" * 40),
        "alg none": jwt.encode({"sub": "a", "aud": AUD, "iss": ISS, "exp": now + 60}, None, algorithm="none"),
    }
    for why, token in refused.items():
        with pytest.raises(AuthError):
            auth.authenticate(f"Bearer {token}", None)
            pytest.fail(why)


def test_rs256_with_pem_and_jwks(tmp_path: Path, rsa_pair: tuple[rsa.RSAPrivateKey, bytes]) -> None:
    private, pem = rsa_pair
    (tmp_path / "pub.pem").write_bytes(pem)
    auth = Authenticator(Settings(jwt_public_key_file=tmp_path / "pub.pem", jwt_audience=AUD, jwt_issuer=ISS))
    assert auth.authenticate("Bearer " + _token(private, "RS256"), None).has("infer")
    # Algorithm confusion: an HS256 token "signed" with the public key must not pass.
    with pytest.raises(AuthError):
        auth.authenticate(
            "Bearer " + jwt.encode({"aud": AUD, "iss": ISS, "exp": int(time.time()) + 60}, "k" * 40, algorithm="HS256"),
            None,
        )
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key())) | {"kid": "k1", "use": "sig"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    jwks_auth = Authenticator(Settings(jwt_jwks_file=tmp_path / "jwks.json", jwt_audience=AUD, jwt_issuer=ISS))
    assert jwks_auth.authenticate("Bearer " + _token(private, "RS256", headers={"kid": "k1"}), None).name == "jwt:alice"
    with pytest.raises(AuthError):
        jwks_auth.authenticate("Bearer " + _token(private, "RS256", headers={"kid": "other"}), None)


def test_jwt_needs_audience_and_issuer_and_a_long_secret(tmp_path: Path) -> None:
    (tmp_path / "s").write_bytes(SECRET)
    (tmp_path / "short").write_bytes(b"short")
    with pytest.raises(ValueError):
        Authenticator(Settings(jwt_secret_file=tmp_path / "s"))
    with pytest.raises(ValueError):
        Authenticator(Settings(jwt_secret_file=tmp_path / "short", jwt_audience=AUD, jwt_issuer=ISS))


def test_public_paths() -> None:
    # Which scope a route needs is declared on the route (tests/security/test_route_scopes.py);
    # the gate only knows which paths need a credential at all.
    s = Settings()
    assert is_public("/healthz", s) and is_public("/static/app.js", s)
    assert is_public("/", s) and is_public("/metrics", s)
    assert not is_public("/metrics", Settings(metrics_public=False))
    assert not is_public("/openapi.json", s) and is_public("/openapi.json", Settings(docs_public=True))
    assert not is_public("/infer", s) and not is_public("/jobs", s) and not is_public("/review", s)


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    policy = ClientAddressPolicy(["10.0.0.0/8"], ["192.0.2.10/32"])
    # A client sending the header itself cannot pick its address.
    assert str(policy.client_address("203.0.113.5", "10.1.1.1")) == "203.0.113.5"
    # Through the trusted proxy: the rightmost untrusted hop is the client.
    assert str(policy.client_address("192.0.2.10", "10.9.9.9, 10.1.1.1")) == "10.1.1.1"
    assert str(policy.client_address("192.0.2.10", "10.1.1.1, 192.0.2.10")) == "10.1.1.1"
    assert policy.client_address("192.0.2.10", "garbage") is None
    assert policy.allowed(policy.client_address("192.0.2.10", "10.1.1.1"))
    assert not policy.allowed(policy.client_address("203.0.113.5", "10.1.1.1"))
    assert not policy.allowed(None)
    assert str(policy.client_address("::ffff:10.0.0.1", None)) == "10.0.0.1"
    assert ClientAddressPolicy([], []).allowed(None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_serve_refuses_public_interface_without_auth(host: str) -> None:
    assert "insecure-no-auth-on-public-interface" in (serve_refusal(Settings(host=host)) or "")
    assert serve_refusal(Settings(host=host, insecure_no_auth_on_public_interface=True)) is None
    assert serve_refusal(Settings(host=host, api_keys=[f"a:infer:{hash_key('k')}"])) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_serve_allows_loopback_without_auth(host: str) -> None:
    assert serve_refusal(Settings(host=host)) is None


@pytest.mark.anyio
async def test_rate_limit_admits_exactly_the_limit() -> None:
    limits = RateLimits("50/minute", "", "memory://")
    admitted = refused = 0
    for _ in range(120):
        try:
            await limits.hit("key", "alice")
            admitted += 1
        except FlashvlError as exc:
            assert exc.status == 429 and exc.retry_after and exc.retry_after >= 1
            refused += 1
    assert (admitted, refused) == (50, 70)
    await limits.hit("key", "bob")  # counted per identity


@pytest.mark.anyio
async def test_in_flight_cap_and_no_leftover_entries() -> None:
    flight = InFlight(2, "API key")
    async with flight.hold("a"), flight.hold("a"):
        with pytest.raises(FlashvlError) as info:
            async with flight.hold("a"):
                pass
        assert info.value.status == 429
    assert flight.counts == {}


@pytest.mark.anyio
async def test_model_gate_is_a_bounded_fifo() -> None:
    gate = ModelGate(max_concurrent=1, max_queue=2, queue_timeout_s=0.5)
    order: list[int] = []
    release = asyncio.Event()

    async def job(n: int) -> None:
        async with gate.slot():
            order.append(n)
            await release.wait()

    first = asyncio.create_task(job(0))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(job(n)) for n in (1, 2)]
    await asyncio.sleep(0)
    assert gate.queued == 2
    with pytest.raises(FlashvlError) as full:
        async with gate.slot():
            pass
    assert full.value.status == 503 and full.value.retry_after
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == [0, 1, 2] and gate.active == 0 and gate.queued == 0
    # A waiter that times out leaves the queue and gets a 503.
    release.clear()
    holder = asyncio.create_task(job(3))
    await asyncio.sleep(0)
    with pytest.raises(FlashvlError) as late:
        async with gate.slot():
            pass
    assert late.value.code == "server_busy" and gate.queued == 0
    release.set()
    await holder
    assert gate.active == 0
