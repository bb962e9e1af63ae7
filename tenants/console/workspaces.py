"""Workspaces: the list to switch between, create, rename, delete."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from tenants import services
from tenants.console.access import Workspace, error_text, render_page, workspace_view
from tenants.permissions import Access, Scope, declare


class WorkspaceForm(forms.Form):
    name = forms.CharField(max_length=120)
    slug = forms.CharField(
        max_length=40,
        help_text="3-40 lowercase letters, digits or hyphens; your API host is <slug>.engram.cloud",
    )


@declare(Access.SIGNED_IN)
@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render_page(request, None, "console/home.html", {"form": WorkspaceForm()})


@declare(Access.SIGNED_IN)
@login_required
@require_POST
def create(request: HttpRequest) -> HttpResponse:
    form = WorkspaceForm(request.POST)
    if form.is_valid():
        try:
            tenant = services.provision_tenant(
                slug=form.cleaned_data["slug"].strip().lower(),
                name=form.cleaned_data["name"].strip(),
                owner=request.user,
            )
        except ValidationError as error:
            form.add_error("slug", error_text(error))
        else:
            messages.success(request, f"Workspace {tenant.name} created.")
            return redirect("console:keys", slug=tenant.slug)
    return render_page(request, None, "console/home.html", {"form": form}, status=400)


@workspace_view()
def settings_page(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    return render_page(request, workspace, "console/settings.html")


@require_POST
@workspace_view(Scope.WORKSPACE_MANAGE)
def rename(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    try:
        services.rename_workspace(
            workspace.tenant, request.POST.get("name", ""), actor=request.user
        )
    except ValidationError as error:
        messages.error(request, error_text(error))
    else:
        messages.success(request, "Workspace renamed.")
    return redirect("console:settings", slug=workspace.tenant.slug)


@require_POST
@workspace_view(Scope.WORKSPACE_DELETE)
def delete(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    if request.POST.get("confirm_slug", "").strip() != workspace.tenant.slug:
        messages.error(request, "Type the workspace's slug to confirm the deletion.")
        return redirect("console:settings", slug=workspace.tenant.slug)
    services.delete_workspace(workspace.tenant, actor=request.user)
    messages.success(request, f"Workspace {workspace.tenant.name} and its memories are deleted.")
    return redirect("console:home")
