"""SQLite backend for the data plane: the file is the tenant bound to the current context.

One alias (`memories`) serves every tenant. The request pipeline, Celery tasks and management
commands bind a tenant with `memories.tenant_db.bind_tenant_database`; this wrapper opens that
tenant's file and refuses to run a query on a connection opened for another file.

Parked connections. Opening a tenant's file is most of what a request costs when a worker
serves many tenants in turn (bench/README.md, load.py): SQLite reads the schema and creates the
WAL, every statement is compiled anew, and closing removes the WAL again (~1-2 ms a request).
So a connection opened for an API request is parked, not closed, when another tenant is bound:
each thread keeps up to ENGRAM_OPEN_TENANT_FILES of them (within the process's limit on open
files: each holds three), closes the least recently used beyond that and any unused for
PARKED_IDLE_SECONDS, and a tenant's next request takes its own back. A parked connection is
taken back only for the same path and the same file (its inode: a restore may have put another
file there), and only one parked outside any transaction and without errors is kept; only the
connection of the bound file is ever queried. A parked connection gives back its page cache
(~2 MB at most) and keeps ~0.25 MB (schema, compiled statements); `close()` closes them all.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db.backends.sqlite3 import base as sqlite3_base
from django.db.backends.sqlite3.creation import DatabaseCreation as SQLiteCreation
from django.db.utils import DatabaseErrorWrapper
from django.utils.functional import cached_property

from engram_cloud.outages import DATA_PLANE_MARK
from memories.tenant_db import (
    TenantBindingError,
    TenantNotBound,
    current_database_path,
    keep_open_requested,
)

# A parked connection unused for this long is closed at the thread's next park, so a busy
# process does not hold a deleted tenant's file for long.
PARKED_IDLE_SECONDS = 300.0
# The database, its WAL and the WAL's shared-memory index.
FILES_PER_CONNECTION = 3
# Descriptors left for everything else: sockets, the control plane, logs, backups.
RESERVED_FILES = 256


@cache
def parkable_connections() -> int:
    """How many connections the process's limit on open files leaves room for, after raising
    its soft limit to the hard one (once per process; forks inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 16 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    if soft == resource.RLIM_INFINITY:
        soft = wanted
    return max(0, (soft - RESERVED_FILES) // FILES_PER_CONNECTION)


@dataclass(frozen=True)
class Parked:
    connection: Any  # the driver's connection
    inode: int | None
    parked_at: float  # time.monotonic()


def _same_file(path: Path, inode: int | None) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


class DatabaseCreation(SQLiteCreation):
    """Tenant files are never made by the test runner: tests point ENGRAM_DATA_DIR elsewhere."""

    def create_test_db(self, *args: Any, **kwargs: Any) -> str:
        return self.connection.settings_dict["NAME"]

    def destroy_test_db(self, *args: Any, **kwargs: Any) -> None:
        return None


class DataPlaneErrorWrapper(DatabaseErrorWrapper):
    """Marks the driver's error as a tenant file's before Django re-raises it as its own (with
    the driver's error as `__cause__`): engram_cloud.outages counts it and answers 503."""

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_value is not None:
            with contextlib.suppress(AttributeError):
                setattr(exc_value, DATA_PLANE_MARK, True)
        super().__exit__(exc_type, exc_value, traceback)


class DatabaseWrapper(sqlite3_base.DatabaseWrapper):
    creation_class = DatabaseCreation

    @cached_property
    def wrap_database_errors(self) -> DataPlaneErrorWrapper:
        return DataPlaneErrorWrapper(self)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_path: Path | None = None
        # The file's inode when it was opened: a restore that replaces a damaged file puts
        # another in its place, and memories.tenant_db then reopens (backups/services.py).
        self.open_inode: int | None = None
        self.keep_open = False  # opened under a binding that lets it be parked
        self._parked: OrderedDict[Path, Parked] = OrderedDict()

    def put_aside(self) -> None:
        """Another file is being bound: park the open connection for its file's next binding
        if it may be kept, else close it."""
        if self.connection is None:
            return
        capacity = min(settings.ENGRAM_OPEN_TENANT_FILES, parkable_connections())
        if (
            not self.keep_open
            or capacity <= 0
            or self.open_path is None
            or self.in_atomic_block
            or self.needs_rollback
            or self.errors_occurred
            or self.connection.in_transaction
        ):
            self.close_current()
            return
        self.validate_thread_sharing()
        try:
            self.connection.execute("PRAGMA shrink_memory")  # its page cache: up to ~2 MB
        except sqlite3.Error:
            self.close_current()
            return
        now = time.monotonic()
        # Never parked already: taking a connection back removes it (get_new_connection).
        self._parked[self.open_path] = Parked(self.connection, self.open_inode, now)
        self.connection, self.open_path, self.open_inode = None, None, None
        self.run_on_commit = []
        while self._parked:
            path, oldest = next(iter(self._parked.items()))
            if len(self._parked) <= capacity and now - oldest.parked_at < PARKED_IDLE_SECONDS:
                break
            del self._parked[path]
            oldest.connection.close()

    @property
    def parked_paths(self) -> list[Path]:
        """The files of the parked connections, least recently used first."""
        return list(self._parked)

    def close_parked(self, path: Path | None = None) -> None:
        """Close the parked connections (only the one of `path`, if given)."""
        for parked_path in [path] if path is not None else list(self._parked):
            parked = self._parked.pop(parked_path, None)
            if parked is not None:
                parked.connection.close()

    def close_current(self) -> None:
        """Close the open connection only, leaving the parked ones."""
        super().close()

    def close(self) -> None:
        try:
            self.close_current()
        finally:
            self.close_parked()

    def get_connection_params(self) -> dict[str, Any]:
        path = current_database_path()
        if path is None:
            raise TenantNotBound("No tenant database is bound to this context.")
        params = super().get_connection_params()
        # mode=rw: a missing tenant file is an error, never silently created empty.
        params["database"] = f"file:{quote(str(path))}?mode=rw"
        self.open_path = path
        self.keep_open = keep_open_requested()
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        parked = self._parked.pop(self.open_path, None) if self.open_path else None
        if parked is not None:
            if self.open_path is not None and _same_file(self.open_path, parked.inode):
                self.open_inode = parked.inode
                return parked.connection
            parked.connection.close()
        connection = super().get_new_connection(conn_params)
        self.open_inode = os.stat(self.open_path).st_ino if self.open_path else None
        return connection

    def _close(self) -> None:
        super()._close()
        self.open_path = None
        self.open_inode = None

    def _start_transaction_under_autocommit(self) -> None:
        # Savepoint names need only be unique within a transaction, but Django numbers them per
        # connection for its whole life: every nested atomic block of every write was two new
        # statements to compile, which filled the driver's statement cache (128 a connection),
        # pushed out the statements in use and grew each kept connection by up to ~1 MB.
        # Numbered from 1 in each transaction, a few names serve them all.
        self.savepoint_state = 0
        super()._start_transaction_under_autocommit()

    def _cursor(self, name: str | None = None) -> Any:
        bound = current_database_path()
        if self.connection is not None and self.open_path != bound:
            raise TenantBindingError(
                f"The open data-plane connection is for {self.open_path}, "
                f"but {bound} is bound; refusing to query the wrong tenant."
            )
        return super()._cursor(name)
