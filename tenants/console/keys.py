"""API keys: create (the secret is shown once, on the page that answers the form), list,
revoke, rotate with a grace period."""

from __future__ import annotations

import datetime as dt
import json

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from tenants import services
from tenants.console.access import Workspace, error_text, render_page, workspace_view
from tenants.models import ApiKey
from tenants.permissions import ALL_SCOPES, DEFAULT_KEY_SCOPES, Scope

EXPIRY_CHOICES = [("", "Never"), ("30", "In 30 days"), ("90", "In 90 days"), ("365", "In a year")]


class KeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=[(scope.value, scope.value) for scope in sorted(ALL_SCOPES)],
        widget=forms.CheckboxSelectMultiple,
        initial=sorted(DEFAULT_KEY_SCOPES),
    )
    expires_in_days = forms.ChoiceField(choices=EXPIRY_CHOICES, required=False)

    def expires_at(self) -> dt.datetime | None:
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + dt.timedelta(days=int(days)) if days else None


def api_host(workspace: Workspace, request: HttpRequest) -> str:
    """Where this workspace's agents send requests."""
    if settings.DEBUG or settings.ENGRAM_BASE_DOMAIN == "localhost":
        return request.build_absolute_uri("/").rstrip("/")
    return f"https://{workspace.tenant.slug}.{settings.ENGRAM_BASE_DOMAIN}"


def _keys_page(
    request: HttpRequest,
    workspace: Workspace,
    form: KeyForm | None = None,
    status: int = 200,
    created: tuple[ApiKey, str] | None = None,
) -> HttpResponse:
    context: dict[str, object] = {
        "keys": workspace.tenant.api_keys.select_related("created_by"),
        "form": form or KeyForm(),
        "grace_hours": settings.ENGRAM_KEY_ROTATION_GRACE_SECONDS // 3600,
        "now": timezone.now(),
    }
    if created is not None:
        key, secret = created
        host = api_host(workspace, request)
        context.update(
            created_key=key,
            secret=secret,
            curl=(
                f"curl -X POST {host}/v1/memories \\\n"
                f'  -H "Authorization: Bearer {secret}" \\\n'
                '  -H "Content-Type: application/json" \\\n'
                '  -d \'{"content": "Deploys go through the blue-green script"}\''
            ),
            mcp_config=json.dumps(
                {
                    "mcpServers": {
                        "engram": {
                            "type": "http",
                            "url": f"{host}/v1/mcp",
                            "headers": {"Authorization": f"Bearer {secret}"},
                        }
                    }
                },
                indent=2,
            ),
        )
    return render_page(request, workspace, "console/keys.html", context, status=status)


@workspace_view()
def keys(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    return _keys_page(request, workspace)


@never_cache
@require_POST
@workspace_view(Scope.KEYS_MANAGE)
def create(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    form = KeyForm(request.POST)
    if form.is_valid():
        try:
            created = services.create_api_key(
                tenant=workspace.tenant,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                created_by=request.user,
                expires_at=form.expires_at(),
            )
        except ValidationError as error:
            form.add_error(None, error_text(error))
        else:
            return _keys_page(request, workspace, created=created)
    return _keys_page(request, workspace, form, status=400)


def _key_of(workspace: Workspace, key_id: int) -> ApiKey:
    return get_object_or_404(ApiKey, pk=key_id, tenant=workspace.tenant)


@require_POST
@workspace_view(Scope.KEYS_MANAGE)
def revoke(request: HttpRequest, workspace: Workspace, key_id: int) -> HttpResponse:
    key = services.revoke_api_key(_key_of(workspace, key_id), actor=request.user)
    messages.success(request, f"Key {key.prefix}… revoked; it is refused from now on.")
    return redirect("console:keys", slug=workspace.tenant.slug)


@never_cache
@require_POST
@workspace_view(Scope.KEYS_MANAGE)
def rotate(request: HttpRequest, workspace: Workspace, key_id: int) -> HttpResponse:
    try:
        created = services.rotate_api_key(_key_of(workspace, key_id), actor=request.user)
    except ValidationError as error:
        messages.error(request, error_text(error))
        return redirect("console:keys", slug=workspace.tenant.slug)
    return _keys_page(request, workspace, created=created)
