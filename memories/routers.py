from __future__ import annotations

from typing import Any

from memories.tenant_db import DATA_PLANE_ALIAS

DATA_PLANE_APPS = frozenset({"memories"})


class TenantDatabaseRouter:
    """Send the data-plane models to the tenant alias and keep everything else off it."""

    def db_for_read(self, model: type, **hints: Any) -> str:
        return DATA_PLANE_ALIAS if model._meta.app_label in DATA_PLANE_APPS else "default"

    db_for_write = db_for_read

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        plane1 = obj1._meta.app_label in DATA_PLANE_APPS
        plane2 = obj2._meta.app_label in DATA_PLANE_APPS
        return plane1 == plane2

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return (db == DATA_PLANE_ALIAS) == (app_label in DATA_PLANE_APPS)
