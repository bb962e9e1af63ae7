"""Backup storage (django-storages): the local filesystem, or S3/R2 when a bucket is set.

Object names, per tenant:
- `tenants/{tenant_id}/db/{timestamp}_v{schema_version}.sqlite.enc` — encrypted database backups;
- `tenants/{tenant_id}/exports/{timestamp}.json` — export files.
"""

from __future__ import annotations

import datetime as dt
import uuid

from django.core.files.storage import Storage, storages


def backup_storage() -> Storage:
    return storages["backups"]


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def database_backup_key(tenant_id: uuid.UUID | str, taken_at: dt.datetime, schema: str) -> str:
    return f"tenants/{tenant_id}/db/{stamp(taken_at)}_v{schema}.sqlite.enc"


def export_key(tenant_id: uuid.UUID | str, exported_at: dt.datetime) -> str:
    return f"tenants/{tenant_id}/exports/{stamp(exported_at)}.json"
