"""Backing up tenant databases (and, below, restoring them). Each operation is one function.

A backup: snapshot (backups/snapshot.py) → verify → compress and encrypt (backups/crypto.py)
→ upload to backup storage → BackupRecord. The record is written only after the upload
returned, so a backup killed at any step leaves no record (only scratch files, removed by the
next run, or an orphan object, removed by pruning).

A restore: maintenance → back up the current file → download, authenticate, decrypt, verify
→ migrate, replay the journal to the time asked (backups/journal.py) → copy into the live
file in one transaction → back up the result → maintenance lifted.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.files import File
from django.db import connections
from django.utils import timezone

from backups import crypto, journal
from backups.models import BackupReason, BackupRecord, BackupStatus
from backups.snapshot import SnapshotInvalid, journal_position, take_snapshot, verify_database
from backups.storage import backup_storage, database_backup_key
from memories.provisioning import migrate_bound_database, schema_version
from memories.tenant_db import (
    DATA_PLANE_ALIAS,
    TenantDatabaseMissing,
    bind_database_file,
    maintenance_marker,
    tenant_database_path,
)
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


def _back_up_locked(tenant: Tenant, work: Path, reason: str) -> BackupRecord:
    source = tenant_database_path(tenant.id)
    if not source.exists():
        raise TenantDatabaseMissing(f"Tenant {tenant.slug} has no database file.")
    snapshot = work / "snapshot.sqlite"
    encrypted = work / "snapshot.sqlite.enc"
    journal_seq = take_snapshot(source, snapshot)
    # After the snapshot: it holds no write made after this time (later ones are journaled).
    taken_at = timezone.now()
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
    return record


def back_up_tenant(
    tenant: Tenant,
    *,
    reason: str = BackupReason.MANUAL,
    actor: User | None = None,
    actor_label: str = "",
) -> BackupRecord:
    """Snapshot, verify, encrypt and upload the tenant's database; record it once uploaded."""
    with tenant_lock(tenant.id) as work:
        record = _back_up_locked(tenant, work, reason)
    if reason == BackupReason.MANUAL:
        record_audit(
            tenant=tenant,
            action="backup.created",
            target=str(record.pk),
            actor=actor,
            actor_label=actor_label,
            metadata={"storage_key": record.storage_key, "size": record.size},
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


# --- Restore -------------------------------------------------------------------------------------


class RestoreRefused(Exception):
    """The restore cannot be done as asked (no such backup, a time out of range...)."""


@dataclass(frozen=True)
class RestoreResult:
    backup: BackupRecord
    # The time restored to (None: the backup as it is).
    at: dt.datetime | None
    journal_entries: int
    previous: BackupRecord | None


def backup_before(tenant: Tenant, at: dt.datetime) -> BackupRecord:
    """The newest complete backup taken at or before `at`: where a restore to `at` starts."""
    if at > timezone.now():
        raise RestoreRefused("That time is in the future.")
    base = (
        BackupRecord.objects.filter(tenant=tenant, status=BackupStatus.COMPLETE, taken_at__lte=at)
        .order_by("-taken_at")
        .first()
    )
    if base is None:
        raise RestoreRefused("No backup of this tenant is that old: choose a later time.")
    return base


def _journal_source(tenant: Tenant, at: dt.datetime) -> BackupRecord:
    source = (
        BackupRecord.objects.filter(tenant=tenant, status=BackupStatus.COMPLETE, taken_at__gte=at)
        .order_by("taken_at")
        .first()
    )
    if source is None:
        raise RestoreRefused("No backup reaches that time yet.")
    return source


def download_backup(record: BackupRecord, work: Path, name: str) -> Path:
    """Fetch, check and decrypt a backup into `work/name` (a database file); verify it."""
    encrypted = work / f"{name}.enc"
    digest = hashlib.sha256()
    with backup_storage().open(record.storage_key, "rb") as remote, open(encrypted, "wb") as local:
        while block := remote.read(crypto.CHUNK_SIZE):
            digest.update(block)
            local.write(block)
    if digest.hexdigest() != record.sha256:
        raise crypto.BackupUnreadable("The stored backup does not match its checksum.")
    database = work / name
    with open(encrypted, "rb") as source, open(database, "wb") as target:
        crypto.decrypt_file(source, target, tenant_id=str(record.tenant_id))
    encrypted.unlink()
    try:
        verify_database(database)
    except SnapshotInvalid as error:
        raise crypto.BackupUnreadable(f"The backup's database is damaged: {error}") from None
    return database


def _prepare(database: Path, entries: list[tuple], base_seq: int) -> int:
    """Bring the restored copy to this schema version, then replay the journal onto it."""
    with bind_database_file(database):
        try:
            migrate_bound_database()
            replayed = journal.replay(entries, base_seq) if entries else 0
        finally:
            connections[DATA_PLANE_ALIAS].close()
    return replayed


def _copy_into_live(database: Path, live: Path) -> None:
    """Replace the live database's content with the restored copy's, in one transaction.

    SQLite's backup API writing into the live file: other processes' connections stay valid
    and see the old content or the new, never a mix; a process killed half-way leaves an
    uncommitted transaction that SQLite rolls back, so the old content stays. Swapping the
    file itself would leave other processes' open connections on the old file, and their
    WAL cleanup could delete the new file's WAL.
    """
    restored = sqlite3.connect(database)
    target = sqlite3.connect(live, timeout=60)
    try:
        changes_before = target.execute(
            "SELECT coalesce(max(seq), 0) FROM memories_change"
        ).fetchone()[0]
        # Per-process search caches catch up from memories_change: a sequence past any they
        # saw, with nothing before it, makes them reload the tenant from scratch.
        restored.execute("DELETE FROM memories_change")
        restored.execute(
            "INSERT INTO memories_change(seq, memory_id) VALUES (?, 0)", [changes_before + 2]
        )
        restored.commit()
        restored.backup(target)
    finally:
        target.close()
        restored.close()


@contextmanager
def maintenance(tenant: Tenant) -> Iterator[None]:
    """The tenant's requests get 503 `unavailable` with Retry-After for the block."""
    marker = maintenance_marker(tenant.id)
    marker.write_text(f"{time.time() + settings.ENGRAM_RESTORE_MAX_SECONDS} {os.getpid()}")
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def restore_tenant(
    tenant: Tenant,
    *,
    backup: BackupRecord | None = None,
    at: dt.datetime | None = None,
    actor: User | None = None,
    actor_label: str = "",
) -> RestoreResult:
    """Restore the tenant to a backup, or to a time (newest backup before it + the journal).

    The tenant is in maintenance throughout; its current database is first backed up (that
    backup is its own record, restorable like any other). Nothing is replaced until the
    backup has been downloaded, authenticated, decrypted, verified and migrated.
    """
    if (backup is None) == (at is None):
        raise RestoreRefused("Restore to a backup or to a time, not both.")
    if backup is not None and (
        backup.tenant_id != tenant.id or backup.status != BackupStatus.COMPLETE
    ):
        raise RestoreRefused("No such backup of this tenant.")
    base = backup if backup is not None else backup_before(tenant, at)  # type: ignore[arg-type]
    live = tenant_database_path(tenant.id)
    if not live.exists():
        raise TenantDatabaseMissing(f"Tenant {tenant.slug} has no database file.")
    record_audit(
        tenant=tenant,
        action="restore.started",
        target=str(base.pk),
        actor=actor,
        actor_label=actor_label,
        metadata={"backup": base.pk, "at": at.isoformat() if at else None},
    )
    with tenant_lock(tenant.id) as work, maintenance(tenant):
        _drain(live)
        previous = _back_up_locked(tenant, work, BackupReason.PRE_RESTORE)
        entries: list[tuple] = []
        if at is not None:
            source = _journal_source(tenant, at)
            journal_copy = download_backup(source, work, "journal.sqlite")
            entries = journal.read_entries(journal_copy, base.journal_seq, at)
        database = download_backup(base, work, "restored.sqlite")
        replayed = _prepare(database, entries, base.journal_seq)
        _copy_into_live(database, live)
        _back_up_locked(tenant, work, BackupReason.POST_RESTORE)
    record_audit(
        tenant=tenant,
        action="tenant.restored",
        target=str(base.pk),
        actor=actor,
        actor_label=actor_label,
        metadata={
            "backup": base.pk,
            "at": at.isoformat() if at else None,
            "journal_entries": replayed,
            "previous_backup": previous.pk,
        },
    )
    return RestoreResult(backup=base, at=at, journal_entries=replayed, previous=previous)


def _drain(live: Path) -> None:
    """Wait for a write begun before maintenance to commit (new ones cannot start)."""
    connection = sqlite3.connect(live, timeout=60)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()
    finally:
        connection.close()


# --- Retention -----------------------------------------------------------------------------------


def backups_to_keep(records: list[BackupRecord], now: dt.datetime) -> set[int]:
    """Grandfather-father-son: the newest backup of each of the last N hours, days and weeks
    (ENGRAM_BACKUP_KEEP_HOURLY / _DAILY / _WEEKLY), and always the newest of all."""
    newest_first = sorted(records, key=lambda record: record.taken_at, reverse=True)
    keep = {newest_first[0].pk} if newest_first else set()
    periods = (
        (settings.ENGRAM_BACKUP_KEEP_HOURLY, dt.timedelta(hours=1), "%Y-%m-%dT%H"),
        (settings.ENGRAM_BACKUP_KEEP_DAILY, dt.timedelta(days=1), "%Y-%m-%d"),
        (settings.ENGRAM_BACKUP_KEEP_WEEKLY, dt.timedelta(weeks=1), "%G-W%V"),
    )
    for count, length, bucket_format in periods:
        since = now - count * length
        seen: set[str] = set()
        for record in newest_first:
            bucket = record.taken_at.astimezone(dt.UTC).strftime(bucket_format)
            if record.taken_at > since and bucket not in seen:
                seen.add(bucket)
                keep.add(record.pk)
    return keep


def prune_tenant_backups(tenant: Tenant, now: dt.datetime | None = None) -> list[int]:
    """Delete the backups retention does not keep, and the journal entries no kept backup
    needs; returns the ids of the pruned backups."""
    now = now or timezone.now()
    records = list(BackupRecord.objects.filter(tenant=tenant, status=BackupStatus.COMPLETE))
    keep = backups_to_keep(records, now)
    pruned = [record for record in records if record.pk not in keep]
    storage = backup_storage()
    for record in pruned:
        storage.delete(record.storage_key)
        record.status = BackupStatus.PRUNED
        record.save(update_fields=["status"])
    kept = [record for record in records if record.pk in keep]
    if kept:
        _prune_journal(tenant, min(record.journal_seq for record in kept))
    return [record.pk for record in pruned]


def _prune_journal(tenant: Tenant, up_to_seq: int) -> None:
    """Entries up to the oldest kept backup's position are in every backup a restore uses."""
    live = tenant_database_path(tenant.id)
    if up_to_seq <= 0 or not live.exists():
        return
    connection = sqlite3.connect(live, timeout=30)
    try:
        with connection:
            connection.execute("DELETE FROM memories_journal WHERE seq <= ?", [up_to_seq])
    finally:
        connection.close()
