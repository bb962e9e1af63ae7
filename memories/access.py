"""Counting reads as accesses without a write per read.

A read of a memory counts as an access (Engram's access_count and last_accessed_at). Writing
that on every read would turn every GET into a write transaction with an fsync, contending
with real writers. Instead each process gathers counts per tenant and writes them in one
transaction when a read finds the last flush older than FLUSH_SECONDS (after that read's
response is sent: engram_cloud.after_response), and all of them when a web worker exits
(gunicorn.conf.py). The window is minutes, not seconds: with many tenants a
process sees each one rarely, and a shorter window made nearly every read of such a tenant a
write transaction of its own (bench/load.py). A read answers with the count including this
process's unflushed ones. Access counts are bookkeeping, not acknowledged writes: a process
that is killed loses at most its unflushed counts.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import defaultdict
from pathlib import Path

from django.db import connections, transaction

from engram_cloud import after_response
from memories.models import Memory
from memories.tenant_db import (
    DATA_PLANE_ALIAS,
    TenantDatabaseMissing,
    TenantInMaintenance,
    bind_tenant_database,
    current_database_path,
)

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 300.0


class AccessCounter:
    def __init__(self) -> None:
        self._pending: dict[Path, dict[int, list]] = defaultdict(dict)
        self._flushed_at: dict[Path, float] = {}
        self._lock = threading.Lock()

    def record(self, memory_id: int, when: dt.datetime) -> int:
        """Count one access of a memory of the bound tenant; returns its unflushed count."""
        path = current_database_path()
        assert path is not None, "bind a tenant database first"
        with self._lock:
            entry = self._pending[path].setdefault(memory_id, [0, when])
            entry[0] += 1
            entry[1] = when
            count = entry[0]
            now = time.monotonic()
            due = now - self._flushed_at.setdefault(path, now) >= FLUSH_SECONDS
            if due:
                self._flushed_at[path] = now  # one flush deferred, not one per read until it runs
        if due:
            after_response.defer(lambda: self.flush_tenant(path))
        return count

    def pending(self, memory_id: int) -> int:
        path = current_database_path()
        with self._lock:
            entry = self._pending.get(path, {}).get(memory_id) if path else None
        return entry[0] if entry else 0

    def flush(self) -> None:
        """Write the bound tenant's gathered counts in one transaction."""
        path = current_database_path()
        assert path is not None, "bind a tenant database first"
        with self._lock:
            counts = self._pending.pop(path, {})
            self._flushed_at[path] = time.monotonic()
        if not counts:
            return
        connection = connections[DATA_PLANE_ALIAS]
        adapt = connection.ops.adapt_datetimefield_value
        with transaction.atomic(using=DATA_PLANE_ALIAS), connection.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {Memory._meta.db_table} SET access_count = access_count + %s, "
                "last_accessed_at = max(coalesce(last_accessed_at, ''), %s) WHERE id = %s",
                [(count, adapt(when), memory_id) for memory_id, (count, when) in counts.items()],
            )

    def flush_tenant(self, path: Path) -> bool:
        """Write the gathered counts of the tenant whose file is `path` (binding it unless it
        is bound already); whether they were written. A tenant being restored keeps them for
        a later flush; one whose file is gone (deleted) loses them: nothing is left to count."""
        if current_database_path() == path:
            self.flush()
            return True
        try:
            with bind_tenant_database(path.parent.name, keep_open=True):
                self.flush()
        except TenantInMaintenance:
            return False
        except TenantDatabaseMissing:
            with self._lock:
                self._pending.pop(path, None)
            return False
        return True

    def flush_all(self) -> int:
        """Write every tenant's gathered counts (a process about to exit), as flush_tenant
        does; how many tenants' were written."""
        with self._lock:
            paths = [path for path, counts in self._pending.items() if counts]
        written = 0
        for path in paths:
            try:
                written += self.flush_tenant(path)
            except Exception:
                logger.warning("access counts of %s not written", path, exc_info=True)
            finally:
                connections[DATA_PLANE_ALIAS].close()
        return written


access_counter = AccessCounter()
