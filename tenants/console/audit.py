"""The audit log of a workspace, for its admins."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse

from tenants.console.access import Workspace, render_page, workspace_view
from tenants.permissions import Scope

PAGE_SIZE = 100


@workspace_view(Scope.AUDIT_VIEW)
def audit(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    events = workspace.tenant.audit_events.select_related("actor").order_by("-created_at", "-id")
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    return render_page(request, workspace, "console/audit.html", {"page": page})
