"""Celery tasks of backups. Tasks take ids, not objects, and are safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from backups import services
from backups.models import BackupReason, BackupRecord, BackupStatus
from tenants.models import Tenant, TenantStatus


@shared_task(name="backups.tasks.back_up_tenant")
def back_up_tenant(tenant_id: str, requested_at: str, reason: str = BackupReason.SCHEDULED) -> int:
    """Back the tenant up unless a backup taken since `requested_at` exists (a retry or a
    duplicate delivery of the same request); returns the backup's id."""
    since = parse_datetime(requested_at) or timezone.now()
    done = BackupRecord.objects.filter(
        tenant_id=tenant_id, status=BackupStatus.COMPLETE, taken_at__gte=since
    ).first()
    if done is not None:
        return done.pk
    tenant = Tenant.objects.get(pk=tenant_id)
    return services.back_up_tenant(tenant, reason=reason).pk


def _enqueue(tenants: list[Tenant]) -> list[str]:
    requested_at = timezone.now().isoformat()
    for tenant in tenants:
        back_up_tenant.delay(str(tenant.id), requested_at, BackupReason.SCHEDULED)
    return [str(tenant.id) for tenant in tenants]


def _backed_up_tenants() -> list[Tenant]:
    return list(Tenant.objects.exclude(status=TenantStatus.DELETED))


@shared_task(name="backups.tasks.back_up_changed_tenants")
def back_up_changed_tenants() -> list[str]:
    """The frequent pass: only tenants written since their last backup."""
    return _enqueue([t for t in _backed_up_tenants() if services.changed_since_last_backup(t)])


@shared_task(name="backups.tasks.back_up_all_tenants")
def back_up_all_tenants() -> list[str]:
    """The daily pass: every tenant, changed or not."""
    return _enqueue(_backed_up_tenants())


@shared_task(name="backups.tasks.prune_backups")
def prune_backups() -> int:
    """Apply the retention policy to every tenant's backups; returns how many were pruned."""
    return sum(len(services.prune_tenant_backups(tenant)) for tenant in _backed_up_tenants())
