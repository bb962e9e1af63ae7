"""How a backup record is shown to commands and pages."""

from __future__ import annotations

from typing import Any

from backups.models import BackupRecord


def backup_json(record: BackupRecord) -> dict[str, Any]:
    return {
        "id": record.pk,
        "tenant_id": str(record.tenant_id),
        "storage_key": record.storage_key,
        "taken_at": record.taken_at.isoformat(),
        "schema_version": record.schema_version,
        "size": record.size,
        "database_size": record.database_size,
        "sha256": record.sha256,
        "journal_seq": record.journal_seq,
        "reason": record.reason,
        "status": record.status,
    }
