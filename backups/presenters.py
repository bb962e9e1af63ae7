"""How a backup record is shown to commands and pages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backups.models import BackupRecord

if TYPE_CHECKING:
    from backups.services import RestoreResult


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


def replaced_file(result: RestoreResult) -> str:
    """What became of the file a restore replaced, in a sentence for staff."""
    previous = result.previous
    if previous is None:
        return "the replaced database was not backed up"
    if result.damage:
        return (
            f"the replaced database was damaged ({result.damage}); it is kept as it was, "
            f"encrypted, in damaged backup {previous.pk} ({previous.storage_key})"
        )
    return f"the replaced database is backup {previous.pk}"
