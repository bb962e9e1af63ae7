"""JWT bearer tokens for console users and SDKs, checked against the identity provider's JWKS.

Only asymmetric algorithms (RS256, ES256) are accepted, with the key chosen by the token's
`kid` from the JWKS: `alg: none` and HMAC tokens signed with a public key (algorithm
confusion) are refused. `iss`, `aud`, `exp` and `nbf` are enforced with 60 s of clock skew.
The JWKS is cached; an unknown `kid` refreshes it, at most once a minute, so keys rotated by
the provider are picked up without a restart and junk `kid`s cannot make us hammer it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import jwt
from django.conf import settings

logger = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = ("RS256", "ES256")
REFRESH_INTERVAL_SECONDS = 60.0


class InvalidToken(Exception):
    """The token is not one we accept (the caller answers 401 without saying why)."""


class JwksCache:
    """The provider's signing keys by `kid`, fetched lazily and refreshed on an unknown one."""

    def __init__(self) -> None:
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._url = ""
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._keys, self._fetched_at, self._url = {}, float("-inf"), ""

    def key(self, kid: str) -> jwt.PyJWK:
        url = settings.ENGRAM_JWT_JWKS_URL
        with self._lock:
            if url != self._url:
                self._keys, self._fetched_at, self._url = {}, float("-inf"), url
            if kid not in self._keys and time.monotonic() - self._fetched_at >= (
                REFRESH_INTERVAL_SECONDS
            ):
                self._refresh(url)
            try:
                return self._keys[kid]
            except KeyError:
                raise InvalidToken("unknown kid") from None

    def _refresh(self, url: str) -> None:
        self._fetched_at = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=settings.ENGRAM_JWT_JWKS_TIMEOUT_SECONDS) as r:
                document = json.loads(r.read())
        except (urllib.error.URLError, TimeoutError, OSError, ValueError):
            logger.warning("could not fetch the JWKS from %s", url, exc_info=True)
            return
        keys = {}
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(entry, dict) or "kid" not in entry:
                continue
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue
            if key.algorithm_name in ALLOWED_ALGORITHMS:
                keys[entry["kid"]] = key
        self._keys = keys


jwks = JwksCache()


def decode_token(token: str) -> dict[str, Any]:
    """The verified claims of a token, or InvalidToken."""
    if not settings.ENGRAM_JWT_JWKS_URL:
        raise InvalidToken("JWT authentication is not configured")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("malformed") from None
    algorithm, kid = header.get("alg"), header.get("kid")
    if algorithm not in ALLOWED_ALGORITHMS or not isinstance(kid, str):
        raise InvalidToken("algorithm or kid not accepted")
    key = jwks.key(kid)
    if key.algorithm_name != algorithm:
        raise InvalidToken("algorithm does not match the key")
    try:
        return jwt.decode(
            token,
            key=key.key,
            algorithms=[algorithm],
            audience=settings.ENGRAM_JWT_AUDIENCE,
            issuer=settings.ENGRAM_JWT_ISSUER,
            leeway=settings.ENGRAM_JWT_LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.PyJWTError:
        raise InvalidToken("invalid claims or signature") from None
