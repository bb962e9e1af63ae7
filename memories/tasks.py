"""Celery tasks of the data plane. Tasks take ids, not objects, and are safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import DatabaseError

from memories import services
from memories.tenant_db import TenantDatabaseMissing, TenantInMaintenance, bind_tenant_database
from tenants.models import Tenant, TenantStatus

logger = logging.getLogger(__name__)


@shared_task(name="memories.tasks.purge_expired_memories")
def purge_expired_memories() -> int:
    """Delete every tenant's expired memories; how many. No read shows them, but until they
    are deleted they hold disk and the plan's room (writes also purge when they need it).

    A tenant being restored, without a file, or whose file fails is skipped (and logged):
    the next pass gets it, and no tenant stops the others."""
    purged = 0
    for tenant_id in Tenant.objects.exclude(status=TenantStatus.DELETED).values_list(
        "id", flat=True
    ):
        try:
            with bind_tenant_database(tenant_id):
                purged += services.purge_expired()
        except (TenantInMaintenance, TenantDatabaseMissing):
            continue
        except DatabaseError:
            logger.exception("purging expired memories failed", extra={"tenant_id": str(tenant_id)})
    return purged
