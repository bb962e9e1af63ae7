"""The console's JSON endpoints (django-ninja), for pages that draw in the browser.

Session authentication: the signed-in user's cookie, with Django's CSRF check on unsafe
methods (ninja's `django_auth`). Another workspace's data answers 404, as the pages do.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest
from ninja import NinjaAPI, Schema
from ninja.errors import HttpError
from ninja.security import django_auth

from tenants.console.access import workspace_for
from tenants.console.usage import CHART_DAYS, daily_usage
from tenants.permissions import Access, Scope, declare

api = NinjaAPI(
    title="Engram Cloud console",
    urls_namespace="console_api",
    auth=django_auth,
    docs_url=None,
    openapi_url=None,
)


class DayUsage(Schema):
    day: str
    api_calls: int
    searches: int
    memories_created: int


class DailyUsageOut(Schema):
    workspace: str
    days: list[DayUsage]


@api.get("/w/{slug}/usage/daily", response=DailyUsageOut, url_name="usage_daily")
@declare(Access.WORKSPACE, Scope.MEMORIES_READ)
def usage_daily(request: HttpRequest, slug: str, days: int = CHART_DAYS) -> dict:
    try:
        workspace = workspace_for(request, slug)
    except Http404:
        raise HttpError(404, "No such workspace.") from None
    if not workspace.can(Scope.MEMORIES_READ):
        raise HttpError(403, "Your role does not allow this.")
    days = max(1, min(days, 90))
    return {"workspace": workspace.tenant.slug, "days": daily_usage(workspace.tenant, days)}
