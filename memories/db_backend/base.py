"""SQLite backend for the data plane: the file is the tenant bound to the current context.

One alias (`memories`) serves every tenant. The request pipeline, Celery tasks and management
commands bind a tenant with `memories.tenant_db.bind_tenant_database`; this wrapper opens that
tenant's file and refuses to run a query on a connection opened for another file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.db.backends.sqlite3 import base as sqlite3_base
from django.db.backends.sqlite3.creation import DatabaseCreation as SQLiteCreation
from django.db.utils import DatabaseErrorWrapper
from django.utils.functional import cached_property

from engram_cloud.outages import DATA_PLANE_MARK
from memories.tenant_db import TenantBindingError, TenantNotBound, current_database_path


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

    def get_connection_params(self) -> dict[str, Any]:
        path = current_database_path()
        if path is None:
            raise TenantNotBound("No tenant database is bound to this context.")
        params = super().get_connection_params()
        # mode=rw: a missing tenant file is an error, never silently created empty.
        params["database"] = f"file:{quote(str(path))}?mode=rw"
        self.open_path = path
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        self.open_inode = os.stat(self.open_path).st_ino if self.open_path else None
        return connection

    def _close(self) -> None:
        super()._close()
        self.open_path = None
        self.open_inode = None

    def _cursor(self, name: str | None = None) -> Any:
        bound = current_database_path()
        if self.connection is not None and self.open_path != bound:
            raise TenantBindingError(
                f"The open data-plane connection is for {self.open_path}, "
                f"but {bound} is bound; refusing to query the wrong tenant."
            )
        return super()._cursor(name)
