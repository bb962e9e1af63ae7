"""Who is calling: credentials on a `/v1` request become a Principal bound to one tenant.

API keys arrive as `Authorization: Bearer ek_…` or `X-API-Key: ek_…` (both at once is an
error). A bearer token that is not an API key is a JWT (tenants/jwt_auth.py) of a person, who
then acts in the tenant they name with the scopes of their role there.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication

from engram_cloud import after_response
from engram_cloud.errors import ApiError, unauthorized
from tenants import api_keys
from tenants.jwt_auth import InvalidToken, decode_token
from tenants.key_cache import key_cache
from tenants.models import ApiKey, Tenant, TenantStatus, User

LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TenantRef:
    """What the request pipeline needs of a tenant, without loading the whole row."""

    id: uuid.UUID
    slug: str
    status: str
    plan_code: str
    # Staff overrides of the plan's rate limit.
    rate_limit_per_minute: int | None = None
    rate_limit_burst: int | None = None

    @classmethod
    def of(cls, tenant: Tenant) -> TenantRef:
        return cls(
            id=tenant.id,
            slug=tenant.slug,
            status=tenant.status,
            plan_code=tenant.plan_id,
            rate_limit_per_minute=tenant.rate_limit_per_minute,
            rate_limit_burst=tenant.rate_limit_burst,
        )


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `tenant` is the key's tenant, or None for a JWT until resolved."""

    scopes: frozenset[str]
    tenant: TenantRef | None = None
    key_id: int | None = None
    key_prefix: str | None = None
    user_id: int | None = None
    # Set when the principal came from the key cache: the epoch it was read at, to be checked
    # before the request is served (tenants/key_cache.py). None: read for this request.
    cached_epoch: int | None = None

    is_authenticated = True


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


def authenticate(request: HttpRequest, *, cached: bool = True) -> Principal:
    """The request's principal; an API key's may come from the key cache unless `cached` is
    False."""
    token = credential_from(request)
    if token.startswith("ek_"):
        return authenticate_api_key(token, cached=cached)
    return authenticate_bearer_token(token)


# The lookup runs on every API request (with Redis, on those the key cache cannot answer), so
# it is one hand-written indexed query: building it through the ORM costs more than the rest of
# a memory read (bench/api_overhead.py).
_KEY_LOOKUP_SQL = (
    "SELECT k.id, k.prefix, k.digest, k.scopes, k.expires_at, k.revoked_at, k.last_used_at, "
    "t.id, t.slug, t.status, t.plan_id, t.rate_limit_per_minute, t.rate_limit_burst "
    f"FROM {ApiKey._meta.db_table} k JOIN {Tenant._meta.db_table} t ON t.id = k.tenant_id "
    "WHERE k.digest = %s"
)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive UTC datetimes, PostgreSQL aware ones."""
    if value is not None and timezone.is_naive(value):
        return value.replace(tzinfo=dt.UTC)
    return value


def authenticate_api_key(
    key: str, now: dt.datetime | None = None, *, cached: bool = True
) -> Principal:
    if not api_keys.is_well_formed(key):
        raise unauthorized()
    digest = api_keys.key_digest(key)
    now = now or timezone.now()
    if cached and (principal := key_cache.get(digest, now)) is not None:
        return principal
    # Before the lookup: a change committed after it bumps past this epoch.
    epoch = key_cache.epoch()
    with connection.cursor() as cursor:
        cursor.execute(_KEY_LOOKUP_SQL, [digest])
        row = cursor.fetchone()
    if row is None or not hmac.compare_digest(row[2], digest):
        raise unauthorized()
    key_id, prefix, _, scopes, expires_at, revoked_at, last_used_at = row[:7]
    tenant_id, slug, status, plan_code, per_minute, burst = row[7:]
    expires_at = _aware(expires_at)
    if revoked_at is not None or (expires_at is not None and expires_at <= now):
        raise unauthorized()
    if status == TenantStatus.DELETED:
        raise unauthorized()
    _touch_last_used(key_id, _aware(last_used_at), now)
    principal = Principal(
        scopes=frozenset(json.loads(scopes) if isinstance(scopes, str) else scopes),
        tenant=TenantRef(
            id=uuid.UUID(str(tenant_id)),
            slug=slug,
            status=status,
            plan_code=plan_code,
            rate_limit_per_minute=per_minute,
            rate_limit_burst=burst,
        ),
        key_id=key_id,
        key_prefix=prefix,
    )
    if epoch is not None:
        key_cache.put(digest, principal, expires_at, epoch)
    return principal


def authenticate_bearer_token(token: str) -> Principal:
    """A JWT of a person with an account; their scopes come with the tenant they name."""
    try:
        claims = decode_token(token)
    except InvalidToken:
        raise unauthorized() from None
    email = claims.get(settings.ENGRAM_JWT_EMAIL_CLAIM)
    user_id = (
        User.objects.filter(email__iexact=email, is_active=True)
        .values_list("pk", flat=True)
        .first()
        if isinstance(email, str)
        else None
    )
    if user_id is None:
        raise unauthorized()
    return Principal(scopes=frozenset(), user_id=user_id)


def _touch_last_used(key_id: int, last_used_at: dt.datetime | None, now: dt.datetime) -> None:
    """Write last_used_at at most once a minute per key, never on every request, and after the
    response (with many tenants a worker sees each key about once a minute: most of its
    requests would otherwise wait for this write)."""
    if last_used_at is not None and now - last_used_at < LAST_USED_RESOLUTION:
        return
    after_response.defer(lambda: _write_last_used(key_id, now))


def _write_last_used(key_id: int, now: dt.datetime) -> None:
    try:
        ApiKey.objects.filter(pk=key_id).update(last_used_at=now)
    except DatabaseError:
        # Best effort: a busy control plane must not fail what it only describes.
        logger.warning("could not record last_used_at of key %s", key_id, exc_info=True)


class PrincipalAuthentication(BaseAuthentication):
    """DRF's view of the principal that TenantApiMiddleware authenticated."""

    def authenticate(self, request: Any) -> tuple[Principal, Principal] | None:
        principal = getattr(request._request, "principal", None)
        if principal is None:
            return None
        return principal, principal

    def authenticate_header(self, request: Any) -> str:
        return "Bearer"


class PrincipalAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI document describes the credentials PrincipalAuthentication accepts."""

    target_class = PrincipalAuthentication
    name = ["ApiKeyBearer", "ApiKeyHeader"]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, str]]:
        return [
            {"type": "http", "scheme": "bearer", "description": "An API key (ek_live_…) or a JWT."},
            {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        ]
