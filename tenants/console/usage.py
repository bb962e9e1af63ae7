"""The usage dashboard: this period against the plan's limits, and 30 days per day (the chart
is drawn in the browser from `console_api`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from billing.models import DailyUsage
from billing.plans import plans
from billing.quotas import memories_in_use
from billing.usage import METRICS, month_usage
from memories.services import storage_bytes
from memories.tenant_db import bind_tenant_database
from tenants.console.access import Workspace, render_page, workspace_view
from tenants.models import Tenant

CHART_DAYS = 30


def period_usage(tenant: Tenant) -> list[dict[str, Any]]:
    """Each metered quantity this month with its plan limit (None: unlimited)."""
    plan = plans.get(tenant.plan_id)
    with bind_tenant_database(tenant.id):
        memories, storage = memories_in_use(), storage_bytes()
    rows = [
        ("Memories stored", memories, plan.max_memories, False),
        (
            "Searches this month",
            month_usage(str(tenant.id), "searches"),
            plan.max_searches_per_month,
            False,
        ),
        (
            "API calls this month",
            month_usage(str(tenant.id), "api_calls"),
            plan.max_api_calls_per_month,
            False,
        ),
        ("Storage used", storage, plan.max_storage_bytes, True),
    ]
    return [
        {
            "label": label,
            "used": used,
            "limit": limit,
            "is_bytes": is_bytes,
            "percent": min(100, round(100 * used / limit)) if limit else None,
        }
        for label, used, limit, is_bytes in rows
    ]


def daily_usage(tenant: Tenant, days: int = CHART_DAYS) -> list[dict[str, Any]]:
    """The last `days` UTC days, oldest first, with zeros for days without traffic."""
    today = timezone.now().astimezone(dt.UTC).date()
    first = today - dt.timedelta(days=days - 1)
    rows = {row.day: row for row in DailyUsage.objects.filter(tenant=tenant, day__gte=first)}
    series = []
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        row = rows.get(day)
        series.append({"day": day.isoformat(), **{name: getattr(row, name, 0) for name in METRICS}})
    return series


@workspace_view()
def usage(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    context = {
        "period": period_usage(workspace.tenant),
        "plan": plans.get(workspace.tenant.plan_id),
        "month_start": timezone.now().astimezone(dt.UTC).date().replace(day=1),
    }
    return render_page(request, workspace, "console/usage.html", context)
