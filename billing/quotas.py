"""Plan quotas: hard limits answered with 402 `quota_exceeded`, never with a 429.

Monthly API calls and searches are checked on every request from the usage counters
(billing/usage.py), read in the rate limiter's round trip to Redis (tenants/middleware.py).
Stored memories and storage bytes are checked where data is added, inside the write
transaction, from a trigger-kept counter in the tenant's own database and the pages its data
takes. Expired memories are purged when their room is needed.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.conf import settings
from django.db import connections
from django.utils import timezone

from billing.plans import plans
from billing.usage import month_usage
from engram_cloud.errors import ApiError
from engram_cloud.metrics import QUOTA_EXCEEDED
from memories.models import Memory
from memories.services import purge_expired, storage_bytes
from memories.tenant_db import DATA_PLANE_ALIAS
from tenants.authentication import TenantRef


def upgrade_url(tenant: TenantRef) -> str:
    """Where to raise the limit: the workspace's billing page unless ENGRAM_UPGRADE_URL says."""
    return settings.ENGRAM_UPGRADE_URL.replace("{slug}", tenant.slug)


def quota_exceeded(
    tenant: TenantRef, metric: str, current: int, limit: int, **details: object
) -> ApiError:
    QUOTA_EXCEEDED.inc()
    return ApiError(
        402,
        "quota_exceeded",
        f"This workspace has reached its plan's limit of {limit} {metric.replace('_', ' ')}.",
        metric=metric,
        current=current,
        limit=limit,
        upgrade_url=upgrade_url(tenant),
        **details,
    )


# Reads (exports included) are never refused by the monthly API-call quota: a workspace over
# it, after a downgrade say, can still read and take its data out. MCP requests are all POSTs:
# which of them change memories is only known once parsed (`require_monthly_quota`).
UNMETERED_BY_QUOTA = frozenset({"GET", "HEAD", "OPTIONS"})


def request_quotas(tenant: TenantRef, group: str, method: str) -> list[tuple[str, int]]:
    """The monthly counters a request is checked against: (metric, limit). API calls for
    anything but a read, searches for a search."""
    plan = plans.get(tenant.plan_code)
    checks = []
    if method not in UNMETERED_BY_QUOTA and group != "mcp":
        checks.append(("api_calls", plan.max_api_calls_per_month))
    if group == "search":
        checks.append(("searches", plan.max_searches_per_month))
    return [(metric, limit) for metric, limit in checks if limit is not None]


def check_request_quotas(
    tenant: TenantRef, group: str, method: str, known: Mapping[str, int | None] | None = None
) -> None:
    """Before a request is handled: its monthly API calls (not for reads), and searches for
    a search.

    `known` holds the counts the rate limiter's round trip just read, this process's unsent
    part included (None where the cache had no counter: read and seeded here).
    """
    for metric, limit in request_quotas(tenant, group, method):
        current = month_usage(str(tenant.id), metric, known=(known or {}).get(metric))
        if current >= limit:
            raise quota_exceeded(tenant, f"{metric}_per_month", current, limit)


def require_monthly_quota(tenant: TenantRef, metric: str) -> None:
    """For transports that only know what a call is once parsed (MCP): `searches` before a
    search, `api_calls` before a tool that changes memories."""
    limit = getattr(plans.get(tenant.plan_code), f"max_{metric}_per_month")
    if limit is not None:
        current = month_usage(str(tenant.id), metric)
        if current >= limit:
            raise quota_exceeded(tenant, f"{metric}_per_month", current, limit)


def stored_memories() -> int:
    """Memories in the bound tenant's database (expired ones included until a write that
    needs their room purges them)."""
    with connections[DATA_PLANE_ALIAS].cursor() as cursor:
        cursor.execute("SELECT value FROM memories_counter WHERE name = 'memories'")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def memories_in_use() -> int:
    """The bound tenant's live memories, as reads count them: what it is shown against the
    memories quota (the expired ones still stored give their room back when it is needed)."""
    return stored_memories() - Memory.objects.filter(expires_at__lte=timezone.now()).count()


def require_capacity(tenant: TenantRef, adding: int = 1) -> None:
    """Before adding memories to the bound tenant: room for them in count and storage.

    Call it inside the write transaction: with BEGIN IMMEDIATE writers are serialised, so
    two concurrent creates cannot both take the last slot.
    """
    plan = plans.get(tenant.plan_code)
    if plan.max_memories is not None:
        current = stored_memories()
        if current + adding > plan.max_memories and purge_expired():
            current = stored_memories()
        if current + adding > plan.max_memories:
            raise quota_exceeded(tenant, "memories", current, plan.max_memories)
    require_storage(tenant)


def require_storage(tenant: TenantRef) -> None:
    """Before anything adds data to the bound tenant (a memory, an update, which keeps the
    previous version, an import): room under the plan's storage limit. Deletes make room."""
    limit = plans.get(tenant.plan_code).max_storage_bytes
    if limit is not None:
        used = storage_bytes()
        if used >= limit and purge_expired():
            used = storage_bytes()
        if used >= limit:
            raise quota_exceeded(tenant, "storage_bytes", used, limit)
