"""Creating and migrating tenant database files.

A new tenant gets a copy of a template file that has every data-plane migration applied
(one file copy instead of running migrations: milliseconds). The template is built once per
schema version, named after the newest migration, so a deploy with a new migration builds a
new template. `migrate_tenant_database` brings an existing file up to date.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import uuid
from functools import cache
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader

from memories.tenant_db import (
    DATA_PLANE_ALIAS,
    bind_database_file,
    bind_tenant_database,
    tenant_database_path,
)

DATA_PLANE_APP = "memories"


@cache
def schema_version() -> str:
    """The newest data-plane migration, e.g. "0001_initial"."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    leaves = sorted(name for app, name in loader.graph.leaf_nodes() if app == DATA_PLANE_APP)
    return "+".join(leaves)


def template_path() -> Path:
    return Path(settings.ENGRAM_DATA_DIR) / "templates" / f"engram-{schema_version()}.db"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def migrate_bound_database() -> list[str]:
    """Apply pending data-plane migrations to the bound file; returns what was applied."""
    connection = connections[DATA_PLANE_ALIAS]
    executor = MigrationExecutor(connection)
    targets = [node for node in executor.loader.graph.leaf_nodes() if node[0] == DATA_PLANE_APP]
    plan = executor.migration_plan(targets)
    if plan:
        executor.migrate(targets, plan=plan)
    return [migration.name for migration, _ in plan]


def ensure_template() -> Path:
    """The migrated template for this schema version, built if missing (safe to race)."""
    path = template_path()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.building")
    sqlite3.connect(building).close()
    try:
        with bind_database_file(building):
            migrate_bound_database()
            # Closing the last connection checkpoints the WAL into the file and removes it.
            connections[DATA_PLANE_ALIAS].close()
        _fsync(building)
        os.replace(building, path)
    finally:
        for leftover in building.parent.glob(f"{building.name}*"):
            leftover.unlink()
    return path


def create_tenant_database(tenant_id: uuid.UUID | str) -> Path:
    """Copy the template to the tenant's path, durably; refuses to overwrite a file."""
    template = ensure_template()
    target = tenant_database_path(tenant_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise FileExistsError(f"Tenant {tenant_id} already has a database file.")
    partial = target.with_name(target.name + ".provisioning")
    shutil.copyfile(template, partial)
    _fsync(partial)
    os.replace(partial, target)
    _fsync(target.parent)
    return target


def remove_tenant_database(tenant_id: uuid.UUID | str) -> None:
    shutil.rmtree(tenant_database_path(tenant_id).parent, ignore_errors=True)


def migrate_tenant_database(tenant_id: uuid.UUID | str) -> list[str]:
    with bind_tenant_database(tenant_id):
        return migrate_bound_database()
