"""Who is calling: credentials on a `/v1` request become a Principal bound to one tenant.

API keys arrive as `Authorization: Bearer ek_…` or `X-API-Key: ek_…` (both at once is an
error). A bearer token that is not an API key is a JWT; JWT support plugs in at
`authenticate_bearer_token` (the gateway issue) and until then such tokens are refused.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication

from engram_cloud.errors import ApiError, unauthorized
from tenants import api_keys
from tenants.models import ApiKey, Tenant, TenantStatus, User

LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `tenant` is the key's tenant, or None for a JWT until resolved."""

    scopes: frozenset[str]
    tenant: Tenant | None = None
    api_key: ApiKey | None = None
    user: User | None = None

    is_authenticated = True

    @property
    def key_prefix(self) -> str | None:
        return self.api_key.prefix if self.api_key else None


def credential_from(request: HttpRequest) -> str:
    """The one credential on the request, or an error if there are none or two."""
    authorization = request.headers.get("Authorization")
    api_key_header = request.headers.get("X-API-Key")
    if authorization is not None and api_key_header is not None:
        raise ApiError(
            400,
            "conflicting_credentials",
            "Send either an Authorization header or an X-API-Key header, not both.",
        )
    if api_key_header is not None:
        return api_key_header.strip()
    if authorization is None:
        raise unauthorized()
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized()
    return token.strip()


def authenticate(request: HttpRequest) -> Principal:
    token = credential_from(request)
    if token.startswith("ek_"):
        return authenticate_api_key(token)
    return authenticate_bearer_token(token)


def authenticate_api_key(key: str, now: dt.datetime | None = None) -> Principal:
    if not api_keys.is_well_formed(key):
        raise unauthorized()
    digest = api_keys.key_digest(key)
    api_key = (
        ApiKey.objects.select_related("tenant__plan")
        .exclude(tenant__status=TenantStatus.DELETED)
        .filter(digest=digest)
        .first()
    )
    now = now or timezone.now()
    if api_key is None or not hmac.compare_digest(api_key.digest, digest):
        raise unauthorized()
    if api_key.revoked_at is not None or (api_key.expires_at and api_key.expires_at <= now):
        raise unauthorized()
    _touch_last_used(api_key, now)
    return Principal(scopes=frozenset(api_key.scopes), tenant=api_key.tenant, api_key=api_key)


def authenticate_bearer_token(token: str) -> Principal:
    """JWTs are validated here once the gateway configures a JWKS; none is configured yet."""
    raise unauthorized()


def _touch_last_used(api_key: ApiKey, now: dt.datetime) -> None:
    """Write last_used_at at most once a minute per key, never on every request."""
    if api_key.last_used_at is not None and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now


class PrincipalAuthentication(BaseAuthentication):
    """DRF's view of the principal that TenantApiMiddleware authenticated."""

    def authenticate(self, request: Any) -> tuple[Principal, Principal] | None:
        principal = getattr(request._request, "principal", None)
        if principal is None:
            return None
        return principal, principal

    def authenticate_header(self, request: Any) -> str:
        return "Bearer"
