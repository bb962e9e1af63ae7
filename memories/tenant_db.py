"""Binding a tenant's SQLite file to the current context.

The data plane is one file per tenant at {ENGRAM_DATA_DIR}/tenants/{tenant_id}/engram.db.
`bind_tenant_database` sets the file for the current context (thread or task); the context's
connection, if open on another file, is put aside first. Commands and tasks close it: they hold
one tenant file open at a time. The API's requests (`keep_open=True`) park it instead, up to
ENGRAM_OPEN_TENANT_FILES per thread (memories/db_backend/base.py), so that a worker serving
many tenants in turn does not reopen a file on every request.
"""

from __future__ import annotations

import contextvars
import math
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import OperationalError, connections

DATA_PLANE_ALIAS = "memories"

_bound_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "engram_tenant_database", default=None
)
# Whether a connection opened under the current binding may be parked when another file is
# bound (the API's requests), or is closed then (commands, tasks, console pages).
_keep_open: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "engram_tenant_keep_open", default=False
)


class TenantBindingError(RuntimeError):
    """A data-plane query was attempted against another tenant's open connection."""


class TenantNotBound(OperationalError):
    """A data-plane query was attempted with no tenant bound: there is no database to use.

    An OperationalError, so Django's tooling that probes every alias (makemigrations,
    checks) treats the data plane like any database it cannot reach.
    """


class TenantDatabaseMissing(RuntimeError):
    """The tenant's database file does not exist (never provisioned, or removed)."""


class TenantInMaintenance(RuntimeError):
    """The tenant's database is being restored: nothing may use it until that ends."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"The tenant is in maintenance; retry in {retry_after} s.")
        self.retry_after = retry_after


# Longest a client is told to wait; a restore usually ends within it.
MAINTENANCE_RETRY_AFTER_SECONDS = 30


def tenant_directory(tenant_id: uuid.UUID | str) -> Path:
    return Path(settings.ENGRAM_DATA_DIR) / "tenants" / str(tenant_id)


def tenant_database_path(tenant_id: uuid.UUID | str) -> Path:
    return tenant_directory(tenant_id) / "engram.db"


def maintenance_marker(tenant_id: uuid.UUID | str) -> Path:
    """While this file exists, the tenant is in maintenance. It holds the epoch second the
    maintenance ends at and the id of the process doing it. A file, not a cache entry: every
    process on the tenant's node sees it; a restore killed half-way leaves a marker that is
    ignored once its process is gone or its time is up."""
    return tenant_directory(tenant_id) / "maintenance"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def maintenance_retry_after(tenant_id: uuid.UUID | str) -> int | None:
    """Seconds to tell a client to wait, or None when the tenant is not in maintenance."""
    try:
        ends, pid = maintenance_marker(tenant_id).read_text().split()
        remaining = float(ends) - time.time()
        alive = _process_alive(int(pid))
    except (FileNotFoundError, ValueError):
        return None
    if remaining <= 0 or not alive:
        return None
    return max(1, min(math.ceil(remaining), MAINTENANCE_RETRY_AFTER_SECONDS))


def current_database_path() -> Path | None:
    return _bound_path.get()


def keep_open_requested() -> bool:
    return _keep_open.get()


@contextmanager
def bind_database_file(path: Path, *, keep_open: bool = False) -> Iterator[None]:
    """Bind an explicit SQLite file (tenant files, the schema template) for the block.
    `keep_open`: a connection opened in the block may be parked for the file's next binding."""
    connection = connections[DATA_PLANE_ALIAS]
    if connection.in_atomic_block:
        raise TenantBindingError("Cannot rebind the data plane inside a transaction.")
    previous = _bound_path.get()
    if connection.connection is not None and connection.open_path != path:
        connection.put_aside()
    token, keep_token = _bound_path.set(path), _keep_open.set(keep_open)
    try:
        yield
    finally:
        _bound_path.reset(token)
        _keep_open.reset(keep_token)
        if (
            previous is not None
            and connection.connection is not None
            and (connection.open_path != previous)
        ):
            connection.put_aside()


@contextmanager
def bind_tenant_database(tenant_id: uuid.UUID | str, *, keep_open: bool = False) -> Iterator[None]:
    """Bind the tenant's file for the block; every `memories` query inside goes there.
    `keep_open` (the API's requests): its connection may be parked when another is bound."""
    retry_after = maintenance_retry_after(tenant_id)
    if retry_after is not None:
        raise TenantInMaintenance(retry_after)
    path = tenant_database_path(tenant_id)
    connection = connections[DATA_PLANE_ALIAS]
    already_open = connection.open_path == path
    if already_open and _replaced(connection, path):
        connection.close_current()  # it would go on reading and writing a file no longer there
        already_open = False
    if not already_open and not path.exists():
        raise TenantDatabaseMissing(f"Tenant {tenant_id} has no database file.")
    with bind_database_file(path, keep_open=keep_open):
        yield


def _replaced(connection: Any, path: Path) -> bool:
    """Is the open connection's file no longer the one at `path` (a restore put another
    there)? A missing file is left to the code that removed it."""
    if connection.in_atomic_block:
        return False
    try:
        return os.stat(path).st_ino != connection.open_inode
    except FileNotFoundError:
        return False


def tenant_file_stats(tenant_id: uuid.UUID | str) -> tuple[int | None, int]:
    """(memories stored, bytes on disk with the WAL) of a tenant's file, read without binding
    (for staff pages listing many tenants); (None, 0) when the file is missing or unreadable."""
    path = tenant_database_path(tenant_id)
    size = sum(
        candidate.stat().st_size
        for candidate in (path, path.with_name(path.name + "-wal"))
        if candidate.exists()
    )
    try:
        connection = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return None, size
    try:
        row = connection.execute(
            "SELECT value FROM memories_counter WHERE name = 'memories'"
        ).fetchone()
        return (row[0] if row else 0), size
    except sqlite3.Error:
        return None, size
    finally:
        connection.close()
