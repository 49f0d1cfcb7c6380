"""Who is calling: OAuth2/OIDC bearer JWTs checked against a JWKS, or hashed API keys.

Why both: services call with tokens from the organisation's identity provider; notebooks and CI jobs use
long-lived API keys. API keys are never stored in clear: the keys file holds ``sha256:`` or ``scrypt:``
hashes only, and a clear-text entry makes the server refuse to start. A server bound to anything but a
loopback address refuses to start without one of the two mechanisms configured, so a laptop default can
never end up on a network unauthenticated.

Keys file (``FRAUDGEN_API_KEYS_FILE``, JSON)::

    {"keys": [{"id": "ci-bot", "hash": "scrypt:16384:8:1:<salt hex>:<hash hex>",
               "scopes": ["generate:read", "generate:write"]}]}

A key is presented as ``X-API-Key: <id>.<secret>``; the hash covers the whole presented string.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jwt

from fraudgen.config import Settings

SCOPE_READ = "generate:read"
SCOPE_WRITE = "generate:write"
ALL_SCOPES = frozenset({SCOPE_READ, SCOPE_WRITE})
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AuthError(Exception):
    """401 (who are you?) or 403 (not allowed); ``headers`` carries WWW-Authenticate."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class AuthConfigError(ValueError):
    """The auth configuration is unusable (missing issuer/audience, clear-text key, insecure bind)."""


@dataclass(frozen=True)
class Principal:
    id: str
    kind: Literal["jwt", "api_key", "anonymous"]
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def log_id(self) -> str:
        """Principal ids are personal data: logs carry a short hash only."""
        return hashlib.sha256(self.id.encode()).hexdigest()[:12]


# --- API keys -------------------------------------------------------------------------------------------


def hash_api_key(key: str, method: Literal["scrypt", "sha256"] = "scrypt") -> str:
    """The keys-file form of a key. scrypt is the default; sha256 suits long random keys only."""
    if method == "sha256":
        return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(key.encode(), salt=salt, **_SCRYPT, dklen=32)
    return f"scrypt:{_SCRYPT['n']}:{_SCRYPT['r']}:{_SCRYPT['p']}:{salt.hex()}:{digest.hex()}"


def new_api_key(key_id: str, scopes: frozenset[str] = ALL_SCOPES) -> tuple[str, dict[str, Any]]:
    """A fresh random key and the entry to append to the keys file (the key itself is shown once)."""
    if not key_id or "." in key_id:
        raise ValueError("API key id must be non-empty and contain no '.'")
    key = f"{key_id}.{secrets.token_urlsafe(32)}"
    return key, {"id": key_id, "hash": hash_api_key(key), "scopes": sorted(scopes)}


def _verify_hash(key: str, stored: str) -> bool:
    kind, _, rest = stored.partition(":")
    if kind == "sha256":
        return hmac.compare_digest(hashlib.sha256(key.encode()).hexdigest(), rest)
    if kind == "scrypt":
        n, r, p, salt, digest = rest.split(":")
        got = hashlib.scrypt(
            key.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2
        )
        return hmac.compare_digest(got.hex(), digest)
    return False


def load_api_keys(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """``{key id: (hash, scopes)}``; refuses clear-text or malformed entries, naming the entry."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AuthConfigError(f"FRAUDGEN_API_KEYS_FILE {path}: cannot read JSON ({exc})") from exc
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise AuthConfigError(f"FRAUDGEN_API_KEYS_FILE {path}: expected {{'keys': [...]}}")
    keys: dict[str, tuple[str, frozenset[str]]] = {}
    for index, entry in enumerate(entries):
        where = f"FRAUDGEN_API_KEYS_FILE {path}: keys[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise AuthConfigError(f"{where}: needs a non-empty 'id'")
        stored = entry.get("hash")
        if not isinstance(stored, str) or not _well_formed_hash(stored):
            raise AuthConfigError(
                f"{where}: 'hash' must be 'sha256:<64 hex>' or 'scrypt:n:r:p:<salt>:<hash>' "
                "(clear-text keys are refused)"
            )
        scopes = entry.get("scopes", sorted(ALL_SCOPES))
        if not isinstance(scopes, list) or not set(scopes) <= ALL_SCOPES:
            raise AuthConfigError(f"{where}: 'scopes' must be a subset of {sorted(ALL_SCOPES)}")
        keys[entry["id"]] = (stored, frozenset(scopes))
    return keys


def _well_formed_hash(stored: str) -> bool:
    kind, _, rest = stored.partition(":")
    hexdigits = set("0123456789abcdef")
    if kind == "sha256":
        return len(rest) == 64 and set(rest) <= hexdigits
    if kind == "scrypt":
        parts = rest.split(":")
        return (
            len(parts) == 5
            and all(p.isdigit() for p in parts[:3])
            and all(parts[3:])
            and set(parts[3] + parts[4]) <= hexdigits
        )
    return False


# --- the authenticator ----------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_configured(settings: Settings) -> bool:
    return bool(settings.auth_jwks_url or settings.api_keys_file)


def ensure_bind_allowed(host: str, settings: Settings) -> None:
    """Refuse to serve a non-loopback address without authentication."""
    if not is_loopback(host) and not auth_configured(settings):
        raise AuthConfigError(
            f"refusing to serve on {host}: authentication is mandatory off loopback; set "
            "FRAUDGEN_AUTH_JWKS_URL (+ FRAUDGEN_AUTH_ISSUER, FRAUDGEN_AUTH_AUDIENCE) "
            "or FRAUDGEN_API_KEYS_FILE"
        )


class Authenticator:
    """Turns request headers into a Principal. Stateless apart from caches, so one per replica."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = auth_configured(settings)
        self._keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file else {}
        self._verified: dict[str, Principal] = {}  # sha256(presented key) → principal: scrypt once per key
        self._jwks: jwt.PyJWKClient | None = None
        if settings.auth_jwks_url:
            if not settings.auth_issuer or not settings.auth_audience:
                raise AuthConfigError(
                    "FRAUDGEN_AUTH_JWKS_URL is set: "
                    "FRAUDGEN_AUTH_ISSUER and FRAUDGEN_AUTH_AUDIENCE are required"
                )
            self._jwks = jwt.PyJWKClient(settings.auth_jwks_url, cache_jwk_set=True, lifespan=300, timeout=5)

    def authenticate(self, headers: Any, client_host: str | None) -> Principal:
        """Blocking (a JWKS fetch may hit the network): call it from a worker thread."""
        if not self.enabled:
            return Principal(id=f"anonymous:{client_host or 'unknown'}", kind="anonymous", scopes=ALL_SCOPES)
        api_key = headers.get("x-api-key")
        if api_key:
            return self._api_key(api_key)
        authorization = headers.get("authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return self._jwt(token.strip())
        raise AuthError(401, "authentication required: send a bearer token or an X-API-Key", _challenge())

    def _api_key(self, presented: str) -> Principal:
        fingerprint = hashlib.sha256(presented.encode()).hexdigest()
        cached = self._verified.get(fingerprint)
        if cached is not None:
            return cached
        key_id, _, _ = presented.partition(".")
        entry = self._keys.get(key_id)
        if entry is None or not _verify_hash(presented, entry[0]):
            raise AuthError(401, "invalid API key", _challenge("invalid_token"))
        principal = Principal(id=f"key:{key_id}", kind="api_key", scopes=entry[1])
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[fingerprint] = principal
        return principal

    def _jwt(self, token: str) -> Principal:
        if self._jwks is None:
            raise AuthError(401, "bearer tokens are not accepted by this server", _challenge("invalid_token"))
        try:
            signing_key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                signing_key.key,
                algorithms=self.settings.api_jwt_algorithms,
                audience=self.settings.auth_audience,
                issuer=self.settings.auth_issuer,
                leeway=self.settings.api_jwt_leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthError(503, "identity provider JWKS unreachable", {"Retry-After": "5"}) from exc
        except jwt.ExpiredSignatureError as exc:
            raise AuthError(401, "token expired", _challenge("invalid_token")) from exc
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise AuthError(401, f"invalid token: {exc}", _challenge("invalid_token")) from exc
        return Principal(id=f"jwt:{claims['sub']}", kind="jwt", scopes=token_scopes(claims))


def token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """OAuth2 ``scope`` (space separated), Azure-style ``scp`` or Auth0-style ``permissions``."""
    found: set[str] = set()
    for name in ("scope", "scp", "permissions"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(str(v) for v in value)
    return frozenset(found)


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise AuthError(
            403,
            f"missing scope {scope}",
            {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )


def _challenge(error: str | None = None) -> dict[str, str]:
    value = 'Bearer realm="fraudgen"' + (f', error="{error}"' if error else "")
    return {"WWW-Authenticate": value}
