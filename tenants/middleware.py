"""The /v1 request pipeline (ARCHITECTURE.md §3): authenticate, resolve the tenant and check
it, rate limit, check quotas, bind its database, handle, meter.

Runs for every data-plane API path (REST and MCP alike), so both transports share one
behaviour. Before it, ApiHostGuardMiddleware keeps everything but the API off tenant hosts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from billing import usage
from billing.plans import rate_limit_for
from billing.quotas import check_request_quotas, request_quotas
from billing.ratelimit import Decision, route_group, take_token
from engram_cloud.errors import ApiError, error_response, is_api_path
from engram_cloud.metrics import RATE_LIMITED
from mcp.jsonrpc import render_error
from memories.tenant_db import TenantDatabaseMissing, TenantInMaintenance, bind_tenant_database
from tenants.authentication import Principal, TenantRef, authenticate
from tenants.key_cache import key_cache
from tenants.models import RESERVED_SLUGS, Membership, Tenant, TenantStatus
from tenants.permissions import membership_scopes

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


def serves_api_only(request: HttpRequest) -> bool:
    """Every host under the base domain (a tenant's `{slug}.…`, `api.…`) but the console's."""
    host = request.get_host().rsplit(":", 1)[0].lower()
    suffix = f".{settings.ENGRAM_BASE_DOMAIN}"
    return host.endswith(suffix) and host[: -len(suffix)] not in settings.ENGRAM_CONSOLE_SUBDOMAINS


class ApiHostGuardMiddleware:
    """The API hosts serve the API only: /v1, /mcp, /health and /ready. The console, /admin/,
    /metrics and every other page answer there as an unknown API path does (404 in the error
    envelope), so the hosts agents are given lead nowhere else. The base domain, the console's
    names under it (ENGRAM_CONSOLE_SUBDOMAINS) and every other allowed host serve everything.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not is_api_path(request.path_info) and serves_api_only(request):
            return error_response(request, ApiError(404, "not_found", "Not found."))
        return self.get_response(request)


def authorize_member(principal: Principal, tenant: TenantRef) -> Principal:
    """A person (JWT) acts in a tenant with the scopes of their role there, if they belong."""
    if principal.tenant is not None:
        return principal
    membership = Membership.objects.filter(user_id=principal.user_id, tenant_id=tenant.id).first()
    if membership is None:
        raise ApiError(403, "forbidden", "You are not a member of this tenant.")
    return replace(principal, tenant=tenant, scopes=membership_scopes(membership, tenant.plan_code))


def check_tenant_status(tenant: TenantRef) -> None:
    if tenant.status == TenantStatus.SUSPENDED:
        raise ApiError(403, "tenant_suspended", "This tenant is suspended.")


def admit(request: HttpRequest, principal: Principal) -> tuple[Principal, TenantRef]:
    """Resolve the tenant and check that the principal may act in it.

    A refusal of a principal from the key cache stands only if the cache is current: else the
    key is read again (a tenant reactivated a moment ago in another process is served).
    """
    try:
        tenant = resolve_tenant(request, principal)
        principal = authorize_member(principal, tenant)
        check_tenant_status(tenant)
    except ApiError:
        if key_cache.is_current(principal):
            raise
        return admit(request, authenticate(request, cached=False))
    return principal, tenant


class TenantApiMiddleware:
    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not requires_tenant(request.path_info):
            return self.get_response(request)
        method = request.method or "GET"
        group = route_group(method, request.path_info)
        decision: Decision | None = None
        tenant: TenantRef | None = None
        handled = False
        try:
            principal, tenant = admit(request, authenticate(request))
            gateway = settings.ENGRAM_GATEWAY_ENABLED
            quotas: list[tuple[str, int]] = []
            if gateway:
                quotas = request_quotas(tenant, group, method)
                decision = take_rate_limit_token(tenant, group, quotas)
            # A principal from the key cache is used only if nothing changed since it was read.
            if not key_cache.is_current(principal, decision.epoch if decision else None):
                principal, current = admit(request, authenticate(request, cached=False))
                if gateway and current != tenant:  # e.g. another plan: its limits apply now
                    quotas = request_quotas(current, group, method)
                    decision = take_rate_limit_token(current, group, quotas)
                tenant = current
            request.principal, request.tenant = principal, tenant
            if decision is not None and not decision.allowed:
                raise rate_limited(decision)
            if gateway:
                # A 402 still carries the RateLimit headers.
                metrics = [metric for metric, _ in quotas]
                known = dict(zip(metrics, decision.read, strict=False)) if decision else None
                check_request_quotas(tenant, group, method, known)
            # What the handler adds (searches made, memories created) for metering.
            request.usage = {"searches": 1 if group == "search" else 0, "memories_created": 0}
            handled = True
            with bind_tenant_database(tenant.id, keep_open=True):
                response = self.get_response(request)
        except ApiError as error:
            response = render_error(request, error)
        except TenantInMaintenance as maintenance:
            response = render_error(
                request,
                ApiError(
                    503,
                    "unavailable",
                    "This tenant is in maintenance (a restore); retry shortly.",
                    headers={"Retry-After": str(maintenance.retry_after)},
                    retry_after=maintenance.retry_after,
                ),
            )
        except TenantDatabaseMissing:
            response = render_error(
                request,
                ApiError(503, "unavailable", "This tenant's data is unavailable right now."),
            )
        if decision is not None:
            for name, value in decision.headers().items():
                response[name] = value
        if (
            handled
            and tenant is not None
            and settings.ENGRAM_GATEWAY_ENABLED
            and settings.ENGRAM_METERING_ENABLED
        ):
            usage.record(
                usage.make_event(
                    request_id=request.request_id,
                    tenant_id=str(tenant.id),
                    route=group,
                    method=request.method or "",
                    status_code=response.status_code,
                    **request.usage,
                )
            )
        return response


def take_rate_limit_token(
    tenant: TenantRef, group: str, quotas: Sequence[tuple[str, int]] = ()
) -> Decision | None:
    """A token from the tenant's bucket for `group` (None: its plan has no limit).

    One round trip to Redis: the token bucket's script also reads the month's counters of
    `quotas` (metric, limit) and the key cache's epoch (see the decision's `read`, `epoch`).
    """
    limit = rate_limit_for(tenant)
    if limit is None:
        return None
    return take_token(str(tenant.id), group, limit, usage.quota_counters(tenant.id, quotas))


def rate_limited(decision: Decision) -> ApiError:
    RATE_LIMITED.inc()
    return ApiError(
        429,
        "rate_limited",
        f"Too many {decision.group} requests; retry in {decision.retry_after} s.",
        headers=decision.headers(),
        retry_after=decision.retry_after,
    )
