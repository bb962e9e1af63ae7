"""Who may see a workspace page, and what they may do there (asked of the permission table).

Someone who does not belong to a workspace gets 404 for all of its pages, so nothing tells
them whether it exists; a member whose role does not allow an action gets 403.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from tenants.models import Membership, Tenant, TenantStatus
from tenants.permissions import Access, Scope, declare, grants, membership_scopes


@dataclass
class Workspace:
    tenant: Tenant
    membership: Membership

    @property
    def role(self) -> str:
        return self.membership.role

    @functools.cached_property
    def scopes(self) -> frozenset[Scope]:
        return membership_scopes(self.membership, self.tenant.plan_id)

    def can(self, action: Scope) -> bool:
        return grants(self.scopes, action)

    def permissions(self) -> dict[str, bool]:
        """Every action by name (`members_manage`, …) for templates to show or hide controls."""
        return {scope.name.lower(): self.can(scope) for scope in Scope}


def workspace_for(request: HttpRequest, slug: str) -> Workspace:
    membership = (
        Membership.objects.select_related("tenant", "tenant__plan")
        .filter(user=request.user, tenant__slug=slug)
        .exclude(tenant__status=TenantStatus.DELETED)
        .first()
    )
    if membership is None:
        raise Http404("No such workspace.")
    return Workspace(tenant=membership.tenant, membership=membership)


View = Callable[..., HttpResponse]


def workspace_view(action: Scope = Scope.MEMORIES_READ) -> Callable[[View], View]:
    """A page of workspace `slug`: members only (else 404), and the role must allow `action`."""

    def decorate(view: View) -> View:
        @login_required
        @functools.wraps(view)
        def wrapped(request: HttpRequest, slug: str, **kwargs: Any) -> HttpResponse:
            workspace = workspace_for(request, slug)
            if not workspace.can(action):
                raise PermissionDenied(f"Your role ({workspace.role}) does not allow this.")
            return view(request, workspace, **kwargs)

        return declare(Access.WORKSPACE, action)(wrapped)

    return decorate


def render_page(
    request: HttpRequest,
    workspace: Workspace | None,
    template: str,
    context: dict[str, Any] | None = None,
    status: int = 200,
) -> HttpResponse:
    """Render a console page with what the layout needs: the workspace, the switcher, the
    role's permissions."""
    page: dict[str, Any] = {"workspace": workspace, "base_domain": settings.ENGRAM_BASE_DOMAIN}
    if request.user.is_authenticated:
        page["my_workspaces"] = [
            m.tenant
            for m in Membership.objects.select_related("tenant")
            .filter(user=request.user)
            .exclude(tenant__status=TenantStatus.DELETED)
            .order_by("tenant__name")
        ]
    if workspace is not None:
        page["tenant"] = workspace.tenant
        page["can"] = workspace.permissions()
    page.update(context or {})
    return render(request, template, page, status=status)


def error_text(error: ValidationError) -> str:
    return " ".join(error.messages)
