"""Backing up tenant databases (and, below, restoring them). Each operation is one function.

A backup: snapshot (backups/snapshot.py) → verify → compress and encrypt (backups/crypto.py)
→ upload to backup storage → BackupRecord. The record is written only after the upload
returned, so a backup killed at any step leaves no record (only scratch files, removed by the
next run, or an orphan object, removed by pruning).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.files import File
from django.utils import timezone

from backups import crypto
from backups.models import BackupReason, BackupRecord, BackupStatus
from backups.snapshot import journal_position, take_snapshot, verify_database
from backups.storage import backup_storage, database_backup_key
from memories.provisioning import schema_version
from memories.tenant_db import TenantDatabaseMissing, tenant_database_path
from tenants.models import Tenant, User
from tenants.services import record_audit


class _HashingWriter:
    """A file wrapper that counts and hashes what is written through it."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.file.write(data)


def work_directory(tenant_id: uuid.UUID | str) -> Path:
    """Scratch space on the same filesystem as the tenant files (so a restore can rename)."""
    path = Path(settings.ENGRAM_DATA_DIR) / "backup-work" / str(tenant_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def tenant_lock(tenant_id: uuid.UUID | str) -> Iterator[Path]:
    """One backup or restore of a tenant at a time on this node.

    An flock: the kernel releases it when its process dies, even by kill -9. Scratch files
    left by a killed run are removed by the next one, which holds the lock.
    """
    work = work_directory(tenant_id)
    with open(work / "lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        for leftover in work.iterdir():
            if leftover.name != "lock":
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        try:
            yield work
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _encrypt(snapshot: Path, target: Path, tenant_id: str, taken_at: str) -> tuple[int, str]:
    header = crypto.BackupHeader(
        tenant_id=tenant_id, schema_version=schema_version(), taken_at=taken_at
    )
    with open(snapshot, "rb") as source, open(target, "wb") as raw:
        writer = _HashingWriter(raw)
        crypto.encrypt_file(source, writer, header)  # type: ignore[arg-type]
        raw.flush()
        os.fsync(raw.fileno())
    return writer.size, writer.sha256.hexdigest()


def back_up_tenant(
    tenant: Tenant,
    *,
    reason: str = BackupReason.MANUAL,
    actor: User | None = None,
    actor_label: str = "",
) -> BackupRecord:
    """Snapshot, verify, encrypt and upload the tenant's database; record it once uploaded."""
    source = tenant_database_path(tenant.id)
    with tenant_lock(tenant.id) as work:
        if not source.exists():
            raise TenantDatabaseMissing(f"Tenant {tenant.slug} has no database file.")
        snapshot = work / "snapshot.sqlite"
        encrypted = work / "snapshot.sqlite.enc"
        taken_at = timezone.now()
        journal_seq = take_snapshot(source, snapshot)
        verify_database(snapshot)
        size, sha256 = _encrypt(snapshot, encrypted, str(tenant.id), taken_at.isoformat())
        name = database_backup_key(tenant.id, taken_at, schema_version())
        with open(encrypted, "rb") as upload:
            stored_name = backup_storage().save(name, File(upload, name=name))
        record = BackupRecord.objects.create(
            tenant=tenant,
            storage_key=stored_name,
            taken_at=taken_at,
            schema_version=schema_version(),
            size=size,
            database_size=snapshot.stat().st_size,
            sha256=sha256,
            journal_seq=journal_seq,
            reason=reason,
            status=BackupStatus.COMPLETE,
        )
        snapshot.unlink()
        encrypted.unlink()
    if reason == BackupReason.MANUAL or actor is not None:
        record_audit(
            tenant=tenant,
            action="backup.created",
            target=str(record.pk),
            actor=actor,
            actor_label=actor_label,
            metadata={"storage_key": stored_name, "size": size, "reason": reason},
        )
    return record


def latest_backup(tenant_id: uuid.UUID | str) -> BackupRecord | None:
    return (
        BackupRecord.objects.filter(tenant_id=tenant_id, status=BackupStatus.COMPLETE)
        .order_by("-taken_at")
        .first()
    )


def changed_since_last_backup(tenant: Tenant) -> bool:
    """Has a memory, version or link been written since the tenant's newest backup?"""
    last = latest_backup(tenant.id)
    if last is None:
        return True
    path = tenant_database_path(tenant.id)
    if not path.exists():
        return False
    live = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30)
    try:
        return journal_position(live) > last.journal_seq
    finally:
        live.close()
