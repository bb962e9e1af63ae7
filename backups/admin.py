"""Staff views of backups: every backup record, and the tenants whose backup is overdue."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Max, Q
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from backups.models import BackupRecord, BackupStatus
from backups.services import backup_overdue
from tenants.admin import ReadOnlyAdmin
from tenants.models import Tenant, TenantStatus

COMPLETE_BACKUPS = Q(backups__status=BackupStatus.COMPLETE)


@admin.register(BackupRecord)
class BackupRecordAdmin(ReadOnlyAdmin):
    """Read-only: backups are made by the schedule, `backup_tenant` and the tenant actions."""

    list_display = ["id", "tenant", "taken_at", "reason", "status", "size", "schema_version"]
    list_filter = ["status", "reason"]
    search_fields = ["tenant__slug", "storage_key", "sha256"]
    date_hierarchy = "taken_at"
    list_select_related = ["tenant"]

    def get_urls(self) -> list:
        overdue = path(
            "overdue/",
            self.admin_site.admin_view(self.overdue_view),
            name="backups_backuprecord_overdue",
        )
        return [overdue, *super().get_urls()]

    def overdue_view(self, request: HttpRequest) -> TemplateResponse:
        now = timezone.now()
        tenants = (
            Tenant.objects.exclude(status=TenantStatus.DELETED)
            .annotate(last_backup=Max("backups__taken_at", filter=COMPLETE_BACKUPS))
            .order_by("last_backup", "slug")
        )
        rows = [
            {"tenant": tenant, "last_backup": tenant.last_backup}
            for tenant in tenants
            if backup_overdue(tenant, tenant.last_backup, now)
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Tenants whose backup is overdue",
            "rows": rows,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/backups/overdue.html", context)
