"""The owner's backups page: the workspace's backups, and restoring to one or to a time."""

from __future__ import annotations

import datetime as dt
import uuid

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from backups import tasks
from backups.models import BackupRecord, BackupStatus
from memories.tenant_db import maintenance_retry_after
from tenants.console.access import Workspace, render_page, workspace_view
from tenants.permissions import Scope

SHOWN_BACKUPS = 200
RESTORE_EVENTS = ("restore.started", "tenant.restored", "restore.failed")


@workspace_view(Scope.BACKUPS_RESTORE)
def backups(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    tenant = workspace.tenant
    records = BackupRecord.objects.filter(tenant=tenant, status=BackupStatus.COMPLETE).order_by(
        "-taken_at"
    )[:SHOWN_BACKUPS]
    events = tenant.audit_events.filter(action__in=RESTORE_EVENTS).order_by("-created_at", "-id")
    in_progress = maintenance_retry_after(tenant.id) is not None
    return render_page(
        request,
        workspace,
        "console/backups.html",
        {
            "backups": records,
            "restores": events[:10],
            "in_progress": in_progress,
            "oldest": records[len(records) - 1] if records else None,
        },
    )


@require_POST
@workspace_view(Scope.BACKUPS_RESTORE)
def restore(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    tenant = workspace.tenant
    backup_id = request.POST.get("backup", "").strip()
    at_text = request.POST.get("at", "").strip()
    backup, at = None, None
    if bool(backup_id) == bool(at_text):
        messages.error(request, "Choose a backup or a point in time (one of the two).")
        return redirect("console:backups", slug=tenant.slug)
    if backup_id:
        backup = BackupRecord.objects.filter(
            pk=int(backup_id) if backup_id.isdigit() else 0,
            tenant=tenant,
            status=BackupStatus.COMPLETE,
        ).first()
        if backup is None:
            messages.error(request, "No such backup of this workspace.")
            return redirect("console:backups", slug=tenant.slug)
    else:
        at = parse_datetime(at_text)
        if at is None:
            messages.error(request, f"{at_text!r} is not a time (e.g. 2026-12-04 05:30:00).")
            return redirect("console:backups", slug=tenant.slug)
        if timezone.is_naive(at):
            at = at.replace(tzinfo=dt.UTC)  # the page asks for UTC
    tasks.restore_tenant.delay(
        str(tenant.id),
        str(uuid.uuid4()),
        backup_id=backup.pk if backup else None,
        at=at.isoformat() if at else None,
        actor_id=request.user.pk,
    )
    messages.success(request, "Restore requested; this page shows its progress.")
    return redirect("console:backups", slug=tenant.slug)
