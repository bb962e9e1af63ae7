"""The /v1 request pipeline: authenticate, resolve the tenant, check it, bind its database.

Runs for every data-plane API path (REST and MCP alike), so both transports share one
behaviour. Later stages (rate limits, quotas, metering) wrap `get_response` here too.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from engram_cloud.errors import ApiError, error_response
from memories.tenant_db import TenantDatabaseMissing, bind_tenant_database
from tenants.authentication import Principal, TenantRef, authenticate
from tenants.models import RESERVED_SLUGS, Tenant, TenantStatus

TENANT_HEADER = "X-Engram-Tenant"
PUBLIC_API_PATHS = frozenset({"/v1/openapi.json"})

Handler = Callable[[HttpRequest], HttpResponse]


def requires_tenant(path: str) -> bool:
    return (path.startswith("/v1/") or path == "/mcp") and path not in PUBLIC_API_PATHS


def host_tenant_slug(request: HttpRequest) -> str | None:
    """The slug in `{slug}.{ENGRAM_BASE_DOMAIN}`, if the request came to such a host."""
    host = request.get_host().rsplit(":", 1)[0].lower()
    suffix = f".{settings.ENGRAM_BASE_DOMAIN}"
    if not host.endswith(suffix):
        return None
    label = host[: -len(suffix)]
    if not label or "." in label or label in RESERVED_SLUGS:
        return None
    return label


def resolve_tenant(request: HttpRequest, principal: Principal) -> TenantRef:
    from_host = host_tenant_slug(request)
    from_header = request.headers.get(TENANT_HEADER, "").strip().lower() or None
    named = {slug for slug in (from_host, from_header) if slug}
    if principal.tenant is not None:
        # An API key is bound to its tenant; naming any other is refused without a lookup,
        # so a key cannot probe which other slugs exist.
        if any(slug != principal.tenant.slug for slug in named):
            raise ApiError(403, "tenant_mismatch", "This credential belongs to a different tenant.")
        return principal.tenant
    if not named:
        raise ApiError(
            400, "tenant_required", f"Name the tenant with its host or the {TENANT_HEADER} header."
        )
    if len(named) > 1:
        raise ApiError(400, "tenant_ambiguous", "The host and the tenant header disagree.")
    tenant = Tenant.objects.exclude(status=TenantStatus.DELETED).filter(slug=named.pop()).first()
    if tenant is None:
        raise ApiError(404, "tenant_not_found", "No such tenant.")
    return TenantRef.of(tenant)


def check_tenant_status(tenant: TenantRef) -> None:
    if tenant.status == TenantStatus.SUSPENDED:
        raise ApiError(403, "tenant_suspended", "This tenant is suspended.")


class TenantApiMiddleware:
    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not requires_tenant(request.path_info):
            return self.get_response(request)
        try:
            principal = authenticate(request)
            tenant = resolve_tenant(request, principal)
            check_tenant_status(tenant)
        except ApiError as error:
            return error_response(request, error)
        request.principal = principal
        request.tenant = tenant
        try:
            with bind_tenant_database(tenant.id):
                return self.get_response(request)
        except TenantDatabaseMissing:
            return error_response(
                request,
                ApiError(503, "unavailable", "This tenant's data is unavailable right now."),
            )
