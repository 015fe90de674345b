"""Who is calling: API keys (stored as sha256 digests) and JWT bearer tokens (PyJWT).

A key is presented as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are
random 256-bit tokens, so a plain sha256 digest is enough at rest (there is nothing to
brute-force); digests are compared with ``hmac.compare_digest``. JWTs are verified with
HS256 (a secret file) or RS256 (a PEM public key or a JWKS file), and ``exp``, ``nbf``,
``iat``, ``aud`` and ``iss`` are checked; ``exp`` is required.

Scopes: ``infer`` (the model routes), ``batch`` (``/jobs``), ``review`` (``/review``, the human
reviewers), ``kb:read`` / ``kb:write`` (the knowledge base, ``/kb``: search and ask / index and delete;
``kb:write`` implies ``kb:read``) and ``admin`` (everything, every principal's jobs and collections,
``/metrics``); ``admin`` implies the others. Which route needs which scope is declared on the route
(flashvl/api/auth.py).

Make a key: ``flashvl keys new NAME --scopes infer,batch`` (flashvl/security/keys.py; the older
``python -m flashvl.security.auth new-key`` still works).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import jwt

from flashvl.config import Settings
from flashvl.errors import FlashvlError

SCOPES = frozenset({"infer", "batch", "review", "admin", "kb:read", "kb:write"})
KEY_PREFIX = "fvl_"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
MIN_HS256_SECRET_BYTES = 32


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``name`` is safe to log (never the key or token)."""

    name: str
    scopes: frozenset[str]
    kind: str  # "api_key" | "jwt" | "anonymous"

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes or (scope == "kb:read" and "kb:write" in self.scopes)


ANONYMOUS = Principal("anonymous", frozenset(SCOPES), "anonymous")


@dataclass(frozen=True)
class ApiKey:
    name: str
    scopes: frozenset[str]
    digest: bytes


class AuthError(FlashvlError):
    """401: no or bad credentials (the message never repeats the credential)."""

    def __init__(self, message: str) -> None:
        super().__init__("unauthorized", message, 401)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key_entry(entry: str) -> ApiKey:
    """``name:infer+batch:<sha256 hex>`` -> ApiKey. Refuses what looks like a plaintext key."""
    parts = entry.strip().split(":")
    if len(parts) < 3:
        raise ValueError("an API key entry is 'name:scope+scope:sha256hex'")
    # scopes may hold ':' themselves (kb:read): the name is the first part, the digest the last
    name, scopes_text, digest = parts[0].strip(), ":".join(parts[1:-1]).strip(), parts[-1].strip()
    scopes = frozenset(s for s in re.split(r"[+| ]", scopes_text) if s)
    if not name or not scopes or scopes - SCOPES:
        raise ValueError(f"API key {name!r}: scopes must be among {sorted(SCOPES)}")
    if not _HEX64.match(digest.lower()):
        raise ValueError(f"API key {name!r}: the third part must be the key's sha256 (64 hex digits), not the key")
    return ApiKey(name, scopes, bytes.fromhex(digest))


def load_api_keys(settings: Settings) -> list[ApiKey]:
    entries = list(settings.api_keys)
    if settings.api_keys_file:
        for line in settings.api_keys_file.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                entries.append(line)
    keys = [parse_key_entry(e) for e in entries]
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise ValueError("API key names must be unique")
    return keys


class Authenticator:
    """Turns request headers into a Principal, or raises AuthError."""

    def __init__(self, settings: Settings) -> None:
        self.keys = load_api_keys(settings)
        self.settings = settings
        self.hs_secret: bytes | None = None
        self.rsa_keys: list[tuple[str | None, Any]] = []  # (kid, key)
        if settings.jwt_secret_file:
            self.hs_secret = settings.jwt_secret_file.read_bytes().strip()
            if len(self.hs_secret) < MIN_HS256_SECRET_BYTES:
                raise ValueError(f"jwt_secret_file: the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes")
        if settings.jwt_public_key_file:
            pem = settings.jwt_public_key_file.read_bytes()
            self.rsa_keys.append((None, _load_pem(pem)))
        if settings.jwt_jwks_file:
            jwks = jwt.PyJWKSet.from_dict(json.loads(settings.jwt_jwks_file.read_text()))
            self.rsa_keys.extend((k.key_id, k.key) for k in jwks.keys if k.key_type == "RSA")
        self.jwt_enabled = self.hs_secret is not None or bool(self.rsa_keys)
        if self.jwt_enabled and not (settings.jwt_audience and settings.jwt_issuer):
            raise ValueError("JWT auth needs jwt_audience and jwt_issuer (both are checked on every token)")

    @property
    def enabled(self) -> bool:
        return bool(self.keys) or self.jwt_enabled

    def authenticate(self, authorization: str | None, api_key_header: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        credential = api_key_header
        if credential is None and authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise AuthError("Use 'Authorization: Bearer <API key or JWT>' or 'X-API-Key: <key>'.")
            credential = value.strip()
        if not credential:
            raise AuthError("This server needs an API key or a JWT: 'Authorization: Bearer <token>'.")
        if self.jwt_enabled and _JWT_SHAPE.match(credential):
            return self._verify_jwt(credential)
        return self._verify_key(credential)

    def _verify_key(self, key: str) -> Principal:
        digest = hashlib.sha256(key.encode("utf-8", "replace")).digest()
        found: ApiKey | None = None
        for candidate in self.keys:  # every entry compared, in constant time each
            if hmac.compare_digest(candidate.digest, digest):
                found = candidate
        if found is None:
            raise AuthError("The API key is not valid.")
        return Principal(f"key:{found.name}", found.scopes, "api_key")

    def _verify_jwt(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("The bearer token is not a valid JWT.") from None
        alg = header.get("alg")
        if alg == "HS256" and self.hs_secret is not None:
            key: Any = self.hs_secret
        elif alg == "RS256" and self.rsa_keys:
            kid = header.get("kid")
            matches = [k for k_id, k in self.rsa_keys if kid is None or k_id is None or k_id == kid]
            if not matches:
                raise AuthError("The JWT's kid names no configured key.")
            key = matches[0]
        else:
            raise AuthError("The JWT's algorithm is not accepted here (HS256 or RS256 as configured).")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                leeway=self.settings.jwt_leeway_s,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("The JWT has expired.") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("The JWT is not valid yet (nbf/iat).") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"The JWT was refused: {type(exc).__name__}.") from None
        raw = claims.get(self.settings.jwt_scope_claim, "")
        scopes = frozenset(raw.split() if isinstance(raw, str) else [str(s) for s in raw or []]) & SCOPES
        return Principal(f"jwt:{str(claims.get('sub', '?'))[:64]}", scopes, "jwt")


def _load_pem(pem: bytes) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(pem)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def make_key(name: str, scopes: str | list[str]) -> tuple[str, str]:
    """A new key and its entry (``name:scope+scope:sha256``) for ``api_keys`` / ``api_keys_file``.

    ``scopes``: a list, or text separated by commas, ``+`` or spaces. Raises ValueError on an
    unknown scope or a name that cannot be an entry's name.
    """
    parts = re.split(r"[,+ ]", scopes) if isinstance(scopes, str) else scopes
    chosen = sorted({s.strip() for s in parts if s.strip()})
    unknown = set(chosen) - SCOPES
    if unknown or not chosen:
        raise ValueError(f"scopes must be among {sorted(SCOPES)}, not {sorted(unknown) or 'none'}")
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", name):
        raise ValueError("a key's name is 1-64 letters, digits or _ . @ - (it is logged and owns jobs)")
    key = new_key()
    entry = f"{name}:{'+'.join(chosen)}:{hash_key(key)}"
    parse_key_entry(entry)
    return key, entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flashvl.security.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("new-key", help="Print a new API key and the entry to configure (its sha256).")
    make.add_argument("name")
    make.add_argument("--scopes", default="infer", help="Comma-separated: infer, batch, review, admin.")
    args = parser.parse_args(argv)
    try:
        key, entry = make_key(args.name, args.scopes)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"key (give to the client, shown once): {key}")
    print(f"entry (put in api_keys or api_keys_file): {entry}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
