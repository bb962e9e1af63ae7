"""Control-plane records of tenant backups (the files themselves are in backup storage)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class BackupStatus(models.TextChoices):
    # Written only once the encrypted file is in storage: a record is never for a partial file.
    COMPLETE = "complete"
    # Removed from storage by the pruning task.
    PRUNED = "pruned"
    # The tenant's files as a restore found them, failing their checks: kept as they were (a
    # tar of the database and its WAL, encrypted). Never restored from nor pruned; staff can
    # download and decrypt it (backups.crypto) to inspect it.
    DAMAGED = "damaged"


class BackupReason(models.TextChoices):
    SCHEDULED = "scheduled"
    MANUAL = "manual"
    # The tenant's file as it was just before a restore replaced it.
    PRE_RESTORE = "pre_restore"
    # The tenant's file just after a restore, so later restores to a time start from it.
    POST_RESTORE = "post_restore"


class BackupRecord(models.Model):
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="backups")
    # The object's name in backup storage. A restore to a backup records the restored file as
    # a backup of its own that shares the object of the backup it restored.
    storage_key = models.CharField(max_length=300, db_index=True)
    # Just after the snapshot was read: the backup holds no write made after this time, and
    # every write it lacks is in the change journal, after journal_seq.
    taken_at = models.DateTimeField(default=timezone.now)
    schema_version = models.CharField(max_length=200)
    # Bytes of the encrypted object, and of the database file it holds.
    size = models.BigIntegerField()
    database_size = models.BigIntegerField()
    # SHA-256 of the encrypted object, checked before decrypting.
    sha256 = models.CharField(max_length=64)
    # SHA-256 of the database file it holds (blank: not recorded). A restore whose tenant file
    # is still that file, byte for byte, records it as its pre-restore backup (same object).
    database_sha256 = models.CharField(max_length=64, blank=True, default="")
    # The last change-journal entry the snapshot contains (0: none).
    journal_seq = models.BigIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=BackupStatus.choices, default=BackupStatus.COMPLETE
    )
    reason = models.CharField(
        max_length=16, choices=BackupReason.choices, default=BackupReason.SCHEDULED
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-taken_at"]
        indexes = [models.Index(fields=["tenant", "-taken_at"], name="backup_tenant_idx")]

    def __str__(self) -> str:
        return f"backup {self.pk} of {self.tenant_id} at {self.taken_at:%Y-%m-%d %H:%M:%S}"
