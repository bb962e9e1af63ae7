"""Backing up tenant databases (and, below, restoring them). Each operation is one function.

A backup: snapshot (backups/snapshot.py) → compress, encrypt (backups/crypto.py) and upload
to backup storage while the snapshot is verified → BackupRecord. The record is written only
after the upload returned and the checks passed, so a backup killed at any step leaves no
record (only scratch files, removed by the next run, or an orphan object no record names).

A restore: maintenance → back up the current file (unless it is still, byte for byte, the
newest backup's) → download, authenticate, decrypt, verify → migrate, replay the journal to
the time asked (backups/journal.py) → copy into the live file in one transaction → back up
the result → maintenance lifted. A current file that fails its checks (the usual reason to
restore) is kept as it is, encrypted, in a `damaged` backup, and is then replaced."""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from backups.snapshot import (
    SnapshotInvalid,
    fsync_path,
    journal_position,
    take_snapshot,
    verify_database,
)
from backups.storage import (
    ScratchFile,
    backup_storage,
    damaged_backup_key,
    database_backup_key,
    database_backup_prefix,
    export_key,
    open_stored,
)
from memories.portability import export_memories
from memories.provisioning import migrate_bound_database, schema_version
from memories.tenant_db import (
    DATA_PLANE_ALIAS,
    TenantDatabaseMissing,
    bind_database_file,
    bind_tenant_database,
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


class _HashingReader:
    """A stream wrapper that hashes what is read through it. read(n) returns n bytes unless
    the stream ends (an HTTP response body may return fewer)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.sha256 = hashlib.sha256()

    def read(self, size: int) -> bytes:
        parts = []
        while size > 0 and (part := self.stream.read(size)):
            parts.append(part)
            size -= len(part)
        data = b"".join(parts)
        self.sha256.update(data)
        return data

    def read_to_end(self) -> None:
        while self.read(crypto.CHUNK_SIZE):
            pass


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


def _encrypt(snapshot: Path, target: Path, tenant_id: str, taken_at: str) -> tuple[int, str, str]:
    """Compress and encrypt the snapshot into `target`; returns the encrypted file's size and
    SHA-256, and the snapshot's SHA-256."""
    header = crypto.BackupHeader(
        tenant_id=tenant_id, schema_version=schema_version(), taken_at=taken_at
    )
    with open(snapshot, "rb") as plain, open(target, "wb") as raw:
        reader, writer = _HashingReader(plain), _HashingWriter(raw)
        crypto.encrypt_file(reader, writer, header)  # type: ignore[arg-type]
    return writer.size, writer.sha256.hexdigest(), reader.sha256.hexdigest()


def _upload_backup_file(
    tenant: Tenant, work: Path, *, unless_same_as: BackupRecord | None = None
) -> dict[str, Any]:
    """Snapshot, check, encrypt and upload the tenant's file; returns the record's fields.
    Files and storage only (no database query), so it can run beside other work.

    `unless_same_as`: when the snapshot is that backup's database byte for byte, nothing is
    uploaded: the fields returned share its object.
    """
    source = tenant_database_path(tenant.id)
    if not source.exists():
        raise TenantDatabaseMissing(f"Tenant {tenant.slug} has no database file.")
    snapshot = work / "snapshot.sqlite"
    encrypted = work / "snapshot.sqlite.enc"
    journal_seq = take_snapshot(source, snapshot)
    # After the snapshot: it holds no write made after this time (later ones are journaled).
    taken_at = timezone.now()
    if unless_same_as is not None and _holds(unless_same_as, snapshot, journal_seq):
        snapshot.unlink()
        return _same_object(unless_same_as, taken_at)
    # The checks read the copy while it is compressed, encrypted and uploaded (SQLite, zstd,
    # AES and sockets release the GIL); an object whose copy fails them is deleted, and a
    # record is written only for one that passed.
    with ThreadPoolExecutor(max_workers=1) as pool:
        verified = pool.submit(verify_database, snapshot)
        size, sha256, database_sha256 = _encrypt(
            snapshot, encrypted, str(tenant.id), taken_at.isoformat()
        )
        stored_name = _store(encrypted, database_backup_key(tenant.id, taken_at, schema_version()))
        try:
            verified.result()
        except SnapshotInvalid:
            backup_storage().delete(stored_name)
            raise
    fields = {
        "storage_key": stored_name,
        "taken_at": taken_at,
        "schema_version": schema_version(),
        "size": size,
        "database_size": snapshot.stat().st_size,
        "sha256": sha256,
        "database_sha256": database_sha256,
        "journal_seq": journal_seq,
    }
    snapshot.unlink()
    encrypted.unlink(missing_ok=True)  # moved into local storage
    return fields


def _upload_damaged_file(tenant: Tenant, work: Path) -> dict[str, Any]:
    """Keep the tenant's files as they are (the database and its WAL, in a tar archive),
    encrypted like any backup, for a file that fails its checks; returns the record's fields."""
    live = tenant_database_path(tenant.id)
    archive = work / "damaged.tar"
    encrypted = work / "damaged.tar.enc"
    taken_at = timezone.now()
    with tarfile.open(archive, "w") as tar:
        for path in (live, live.with_name(live.name + "-wal")):
            if path.exists():
                tar.add(path, arcname=path.name)
    size, sha256, _ = _encrypt(archive, encrypted, str(tenant.id), taken_at.isoformat())
    fields = {
        "storage_key": _store(encrypted, damaged_backup_key(tenant.id, taken_at)),
        "taken_at": taken_at,
        "schema_version": schema_version(),
        "size": size,
        "database_size": archive.stat().st_size,
        "sha256": sha256,
    }
    archive.unlink()
    encrypted.unlink(missing_ok=True)  # moved into local storage
    return fields


def _holds(record: BackupRecord, snapshot: Path, journal_seq: int) -> bool:
    """Is the snapshot, byte for byte, the database file that backup holds? (Its journal
    position and size first: a changed tenant costs no hashing.)"""
    if not record.database_sha256 or record.journal_seq != journal_seq:
        return False
    if record.database_size != snapshot.stat().st_size:
        return False
    with open(snapshot, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest() == record.database_sha256


def _same_object(record: BackupRecord, taken_at: dt.datetime) -> dict[str, Any]:
    """The fields of a record of the same database file as `record` (sharing its object)."""
    fields = (
        "storage_key",
        "schema_version",
        "size",
        "database_size",
        "sha256",
        "database_sha256",
        "journal_seq",
    )
    return {name: getattr(record, name) for name in fields} | {"taken_at": taken_at}


def _store(path: Path, name: str) -> str:
    """Upload a file to backup storage as `name`; returns the name it was stored under."""
    with open(path, "rb") as upload:
        return backup_storage().save(name, ScratchFile(upload, name=name))


def _record(
    tenant: Tenant, reason: str, fields: dict[str, Any], status: str = BackupStatus.COMPLETE
) -> BackupRecord:
    return BackupRecord.objects.create(tenant=tenant, reason=reason, status=status, **fields)


def back_up_tenant(
    tenant: Tenant,
    *,
    reason: str = BackupReason.MANUAL,
    actor: User | None = None,
    actor_label: str = "",
) -> BackupRecord:
    """Snapshot, verify, encrypt and upload the tenant's database; record it once uploaded."""
    with tenant_lock(tenant.id) as work:
        record = _record(tenant, reason, _upload_backup_file(tenant, work))
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


# SQLite's messages for a file that is not, or no longer, a sound database.
DAMAGE_MESSAGES = ("file is not a database", "database disk image is malformed")

# What a restore asked for wrongly, or of an unusable backup, raises: nothing was changed.
RESTORE_REFUSALS = (
    RestoreRefused,
    crypto.BackupUnreadable,
    journal.JournalGap,
    TenantDatabaseMissing,
)


@dataclass(frozen=True)
class RestoreResult:
    backup: BackupRecord
    # The time restored to (None: the backup as it is).
    at: dt.datetime | None
    journal_entries: int
    previous: BackupRecord | None
    # Why the replaced file failed its checks ("": it passed; `previous` is then complete).
    damage: str = ""


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
    """Fetch, check and decrypt a backup into `work/name` (a database file); verify it.

    One pass as the object arrives: its checksum and its decryption are computed together,
    and a file that does not match its checksum is reported as such, whatever failed first.
    """
    database = work / name
    with open_stored(record.storage_key) as remote, open(database, "wb") as target:
        reader = _HashingReader(remote)
        try:
            crypto.decrypt_file(reader, target, tenant_id=str(record.tenant_id))  # type: ignore[arg-type]
        except crypto.BackupUnreadable:
            reader.read_to_end()
            _check_sum(reader, record)
            raise
        _check_sum(reader, record)  # decrypt_file read up to the end
    try:
        # Quick: the bytes are authenticated as those of a snapshot that passed the full
        # checks before it was uploaded.
        verify_database(database, quick=True)
    except SnapshotInvalid as error:
        raise crypto.BackupUnreadable(f"The backup's database is damaged: {error}") from None
    return database


def _check_sum(reader: _HashingReader, record: BackupRecord) -> None:
    if reader.sha256.hexdigest() != record.sha256:
        raise crypto.BackupUnreadable("The stored backup does not match its checksum.")


def _prepare(database: Path, entries: list[tuple], base_seq: int) -> int:
    """Bring the restored copy to this schema version, then replay the journal onto it."""
    with bind_database_file(database):
        try:
            migrate_bound_database()
            replayed = journal.replay(entries, base_seq) if entries else 0
        finally:
            connections[DATA_PLANE_ALIAS].close()
    return replayed


def _copy_into_live(database: Path, live: Path, *, damaged: bool) -> None:
    """Replace the live database's content with the restored copy's, in one transaction.

    SQLite's backup API writing into the live file: other processes' connections stay valid
    and see the old content or the new, never a mix; a process killed half-way leaves an
    uncommitted transaction that SQLite rolls back, so the old content stays. Swapping the
    file itself would leave other processes' open connections on the old file, and their
    WAL cleanup could delete the new file's WAL.

    `damaged`: a live file whose header or size SQLite refuses cannot be written into; the
    restored copy then takes its place (its bytes are in a `damaged` backup already). Every
    query on a connection to the old file fails, which closes it (engram_cloud.outages).
    """
    restored = sqlite3.connect(database)
    target = sqlite3.connect(live, timeout=60)
    try:
        # Per-process search caches catch up from memories_change: a sequence past any they
        # saw, with nothing before it, makes them reload the tenant from scratch.
        restored.execute("DELETE FROM memories_change")
        restored.execute(
            "INSERT INTO memories_change(seq, memory_id) VALUES (?, 0)",
            [_change_sequence(target) + 2],
        )
        restored.commit()
        try:
            restored.backup(target)
            return
        except sqlite3.DatabaseError as error:
            if not (damaged and _is_damage(error)):
                raise
    finally:
        target.close()
        restored.close()
    _replace_file(database, live)


def _change_sequence(live: sqlite3.Connection) -> int:
    """The live file's newest memories_change sequence; for a file that cannot be read, one
    past any it can have reached (a write each microsecond since 1970)."""
    try:
        return live.execute("SELECT coalesce(max(seq), 0) FROM memories_change").fetchone()[0]
    except sqlite3.DatabaseError:
        return int(time.time() * 1_000_000)


def _replace_file(database: Path, live: Path) -> None:
    fsync_path(database)
    for suffix in ("-wal", "-shm"):
        live.with_name(live.name + suffix).unlink(missing_ok=True)
    os.replace(database, live)
    fsync_path(live.parent)


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
    reference: str = "",
) -> RestoreResult:
    """Restore the tenant to a backup, or to a time (newest backup before it + the journal).

    The tenant is in maintenance throughout; its current database is first backed up (that
    backup is its own record, restorable like any other). Nothing is replaced until the
    backup has been downloaded, authenticated, decrypted, verified and migrated. Audited:
    `restore.started`, then `tenant.restored` or `restore.failed` (with the reason).
    """
    audit = {"tenant": tenant, "actor": actor, "actor_label": actor_label}
    asked = {"at": at.isoformat() if at else None, "reference": reference}
    try:
        base = _restore_base(tenant, backup, at)
        record_audit(
            action="restore.started",
            target=str(base.pk),
            metadata={"backup": base.pk, **asked},
            **audit,
        )
        previous, damage, replayed = _restore_locked(tenant, base, at)
    except Exception as error:
        record_audit(
            action="restore.failed",
            target=str(backup.pk if backup else ""),
            metadata={"error": str(error)[:500], **asked},
            **audit,
        )
        raise
    record_audit(
        action="tenant.restored",
        target=str(base.pk),
        metadata={
            "backup": base.pk,
            "journal_entries": replayed,
            "previous_backup": previous.pk,
            **({"previous_damaged": damage, "damaged_key": previous.storage_key} if damage else {}),
            **asked,
        },
        **audit,
    )
    return RestoreResult(
        backup=base, at=at, journal_entries=replayed, previous=previous, damage=damage
    )


def _restore_base(
    tenant: Tenant, backup: BackupRecord | None, at: dt.datetime | None
) -> BackupRecord:
    if (backup is None) == (at is None):
        raise RestoreRefused("Restore to a backup or to a time, not both.")
    if backup is not None:
        if backup.tenant_id != tenant.id or backup.status != BackupStatus.COMPLETE:
            raise RestoreRefused("No such backup of this tenant.")
        return backup
    return backup_before(tenant, at)  # type: ignore[arg-type]


def _restore_locked(
    tenant: Tenant, base: BackupRecord, at: dt.datetime | None
) -> tuple[BackupRecord, str, int]:
    """The restore itself; returns the replaced file's backup, why that file failed its
    checks ("" if it passed) and the journal entries replayed."""
    live = tenant_database_path(tenant.id)
    if not live.exists():
        raise TenantDatabaseMissing(f"Tenant {tenant.slug} has no database file.")
    with tenant_lock(tenant.id) as work, maintenance(tenant):
        _drain(live)
        # The file about to be replaced is backed up while the backup to restore is fetched
        # (unless it is still the newest backup's file, byte for byte: nothing to upload).
        newest = latest_backup(tenant.id)
        with ThreadPoolExecutor(max_workers=1) as pool:
            replaced = pool.submit(_back_up_replaced_file, tenant, work, newest)
            database = download_backup(base, work, "restored.sqlite")
            status, fields, damage = replaced.result()
            previous = _record(tenant, BackupReason.PRE_RESTORE, fields, status)
        entries: list[tuple] = []
        if at is not None:
            source = _journal_source(tenant, at)
            # Most often the backup just taken: the live file (unchanged since) holds its journal.
            journal_copy = (
                live
                if source.pk == previous.pk
                else download_backup(source, work, "journal.sqlite")
            )
            entries = journal.read_entries(journal_copy, base.journal_seq, at)
        replayed = _prepare(database, entries, base.journal_seq)
        _copy_into_live(database, live, damaged=bool(damage))
        if entries:
            _record(tenant, BackupReason.POST_RESTORE, _upload_backup_file(tenant, work))
        else:
            # The live file now holds exactly the base backup: a record of it (the same
            # object) starts the restored history for later restores to a time.
            _record(tenant, BackupReason.POST_RESTORE, _same_object(base, timezone.now()))
    return previous, damage, replayed


def _back_up_replaced_file(
    tenant: Tenant, work: Path, newest: BackupRecord | None
) -> tuple[str, dict[str, Any], str]:
    """Back up the file a restore replaces: (the record's status, its fields, the damage).
    A file that cannot be snapshotted or fails its checks is kept as it is instead."""
    try:
        return BackupStatus.COMPLETE, _upload_backup_file(tenant, work, unless_same_as=newest), ""
    except (SnapshotInvalid, sqlite3.DatabaseError) as error:
        if not _is_damage(error):
            raise  # locked, disk full...: the restore fails, nothing was changed
        for leftover in ("snapshot.sqlite", "snapshot.sqlite.enc"):
            (work / leftover).unlink(missing_ok=True)
        return BackupStatus.DAMAGED, _upload_damaged_file(tenant, work), str(error)[:500]


def _drain(live: Path) -> None:
    """Wait for a write begun before maintenance to commit (new ones cannot start). A file
    SQLite cannot open as a database has none."""
    connection = sqlite3.connect(live, timeout=60)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()
    except sqlite3.DatabaseError as error:
        if not _is_damage(error):
            raise
    finally:
        connection.close()


def _is_damage(error: Exception) -> bool:
    """Does the error say the file itself is damaged (not busy, nor on a full disk)?"""
    return isinstance(error, SnapshotInvalid) or str(error).startswith(DAMAGE_MESSAGES)


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


# An object of the tenant's backups no record names is deleted once this old: a backup killed
# between its upload and its record leaves one, and a backup in progress is never this old.
ORPHAN_AGE = dt.timedelta(hours=24)


def prune_tenant_backups(tenant: Tenant, now: dt.datetime | None = None) -> list[int]:
    """Delete the backups retention does not keep, the journal entries no kept backup needs
    and the orphan objects; returns the ids of the pruned backups."""
    now = now or timezone.now()
    _delete_orphans(tenant, now)
    records = list(BackupRecord.objects.filter(tenant=tenant, status=BackupStatus.COMPLETE))
    keep = backups_to_keep(records, now)
    pruned = [record for record in records if record.pk not in keep]
    storage = backup_storage()
    kept_keys = {record.storage_key for record in records if record.pk in keep}
    for record in pruned:
        # A restore's record may share its object with the backup it restored.
        if record.storage_key not in kept_keys:
            storage.delete(record.storage_key)
        record.status = BackupStatus.PRUNED
        record.save(update_fields=["status"])
    kept = [record for record in records if record.pk in keep]
    if kept:
        _prune_journal(tenant, min(record.journal_seq for record in kept))
    return [record.pk for record in pruned]


def _delete_orphans(tenant: Tenant, now: dt.datetime) -> None:
    storage = backup_storage()
    prefix = database_backup_prefix(tenant.id)
    try:
        names = [prefix + name for name in storage.listdir(prefix)[1]]
    except FileNotFoundError:  # local storage: no backup of this tenant yet
        return
    recorded = set(
        BackupRecord.objects.filter(tenant=tenant, storage_key__in=names)
        .exclude(status=BackupStatus.PRUNED)
        .values_list("storage_key", flat=True)
    )
    for name in names:
        if name not in recorded and storage.get_modified_time(name) < now - ORPHAN_AGE:
            storage.delete(name)


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


# --- Schedule ------------------------------------------------------------------------------------


def backup_overdue(tenant: Tenant, last_taken_at: dt.datetime | None, now: dt.datetime) -> bool:
    """Is the tenant's newest backup older than the schedule allows?

    The daily pass backs every tenant up, so a backup older than a day (plus two frequent
    intervals of grace) is overdue; so is one older than two intervals of a tenant written
    since (the frequent pass should have caught it).
    """
    if last_taken_at is None:
        return True
    interval = dt.timedelta(seconds=settings.ENGRAM_BACKUP_INTERVAL_SECONDS)
    age = now - last_taken_at
    if age > dt.timedelta(days=1) + 2 * interval:
        return True
    return age > 2 * interval and changed_since_last_backup(tenant)


# --- Exports -------------------------------------------------------------------------------------


def export_to_storage(tenant: Tenant) -> str:
    """Write the tenant's export file (GET /v1/export's) to `tenants/{id}/exports/{ts}.json`
    in backup storage; returns the object's name. Spooled through a scratch file, so a
    tenant of any size is never held in memory."""
    exported_at = timezone.now()
    name = export_key(tenant.id, exported_at)
    with tempfile.TemporaryFile(dir=work_directory(tenant.id)) as scratch:
        with bind_tenant_database(tenant.id):
            for chunk in export_memories():
                scratch.write(chunk.encode("utf-8"))
        scratch.seek(0)
        stored = backup_storage().save(name, File(scratch, name=name))
    record_audit(
        tenant=tenant,
        action="export.stored",
        target=stored,
        actor_label="command",
        metadata={"storage_key": stored},
    )
    return stored
