"""Backup storage (django-storages): the local filesystem, or S3/R2 when a bucket is set
(backups/s3.py).

Object names, per tenant:
- `tenants/{tenant_id}/db/{timestamp}_v{schema_version}.sqlite.enc` — encrypted database backups;
- `tenants/{tenant_id}/db/{timestamp}.damaged.tar.enc` — a damaged file a restore replaced, kept
  as it was (a tar of the database and its WAL), encrypted;
- `tenants/{tenant_id}/exports/{timestamp}.json` — export files.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import BinaryIO

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages


def backup_storage() -> Storage:
    return storages["backups"]


class ScratchFile(File):
    """A file on this node's disk, handed to storage by its path (Django's
    `temporary_file_path()`): the local filesystem storage moves it into place (it is gone
    afterwards), the S3 storage uploads it from its path (backups/s3.py)."""

    def temporary_file_path(self) -> str:
        return self.file.name


def open_stored(name: str) -> BinaryIO:
    """A stored object, to be read once from its start."""
    storage = backup_storage()
    if isinstance(storage, FileSystemStorage):
        return storage.open(name, "rb")
    return storage.open_stream(name)  # type: ignore[attr-defined]  # backups.s3.S3BackupStorage


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def database_backup_prefix(tenant_id: uuid.UUID | str) -> str:
    return f"tenants/{tenant_id}/db/"


def database_backup_key(tenant_id: uuid.UUID | str, taken_at: dt.datetime, schema: str) -> str:
    return f"{database_backup_prefix(tenant_id)}{stamp(taken_at)}_v{schema}.sqlite.enc"


def damaged_backup_key(tenant_id: uuid.UUID | str, taken_at: dt.datetime) -> str:
    return f"{database_backup_prefix(tenant_id)}{stamp(taken_at)}.damaged.tar.enc"


def export_key(tenant_id: uuid.UUID | str, exported_at: dt.datetime) -> str:
    return f"tenants/{tenant_id}/exports/{stamp(exported_at)}.json"
