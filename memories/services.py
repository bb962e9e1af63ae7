"""Memory operations on the bound tenant's database. REST and MCP both call these.

Every write is one `BEGIN IMMEDIATE` transaction on the data-plane alias. Inputs arrive
validated (memories.api.serializers); these functions keep the invariants: tag rows follow
the tag list, every update keeps the previous version, expired memories are never returned.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connections, models, transaction
from django.db.models import Count, Q
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from memories.models import Memory, MemoryTag, MemoryVersion, Tier, content_hash
from memories.tenant_db import DATA_PLANE_ALIAS, current_database_path
from memories.vector_index import store_embeddings

VERSIONED_FIELDS = ("content", "type", "tags", "metadata", "importance", "workspace", "tier")


def expiry_for(tier: str, ttl_seconds: int | None, now: dt.datetime) -> dt.datetime | None:
    """Daily memories expire after their TTL (default ENGRAM_DAILY_TTL_SECONDS)."""
    if tier != Tier.DAILY:
        return None
    return now + dt.timedelta(seconds=ttl_seconds or settings.ENGRAM_DAILY_TTL_SECONDS)


def _write_tags(memory: Memory, tags: Iterable[str]) -> None:
    MemoryTag.objects.bulk_create([MemoryTag(memory=memory, tag=tag) for tag in tags])


def create_memory(
    *,
    content: str,
    type: str = "note",
    tags: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    importance: float = 0.5,
    workspace: str = "default",
    tier: str = Tier.PERMANENT,
    ttl_seconds: int | None = None,
) -> Memory:
    now = timezone.now()
    memory = Memory(
        content=content,
        type=type,
        tags=list(tags or []),
        metadata=metadata or {},
        importance=importance,
        workspace=workspace,
        tier=tier,
        expires_at=expiry_for(tier, ttl_seconds, now),
        content_hash=content_hash(content),
        created_at=now,
        updated_at=now,
    )
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        memory.save()
        _write_tags(memory, memory.tags)
        store_embeddings([memory])
    return memory


_MEMORY_FIELDS = Memory._meta.concrete_fields
# Reading a memory is the hottest path of the API: one statement that counts the access and
# returns the row, instead of an ORM read and an ORM update (bench/api_overhead.py).
_READ_AND_COUNT_ACCESS_SQL = (
    f"UPDATE {Memory._meta.db_table} "
    "SET access_count = access_count + 1, last_accessed_at = %s "
    "WHERE id = %s AND (expires_at IS NULL OR expires_at > %s) "
    f"RETURNING {', '.join(field.column for field in _MEMORY_FIELDS)}"
)


def _from_column(field: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(field, models.JSONField):
        return json.loads(value)
    if isinstance(field, models.DateTimeField):
        # SQLite stores UTC without an offset.
        return value.replace(tzinfo=dt.UTC)
    return value


def get_memory(memory_id: int) -> Memory:
    """One live memory, counting the read as an access. Raises Memory.DoesNotExist."""
    connection = connections[DATA_PLANE_ALIAS]
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        # Access counts are bookkeeping, not acknowledged writes: they commit without an fsync
        # (WAL with synchronous=NORMAL stays consistent; a power cut may lose the last counts).
        cursor.execute("PRAGMA synchronous=NORMAL")
        try:
            cursor.execute(_READ_AND_COUNT_ACCESS_SQL, [now, memory_id, now])
            row = cursor.fetchone()
        finally:
            cursor.execute("PRAGMA synchronous=FULL")
    if row is None:
        raise Memory.DoesNotExist(f"memory {memory_id}")
    values = [_from_column(field, value) for field, value in zip(_MEMORY_FIELDS, row, strict=True)]
    return Memory.from_db(DATA_PLANE_ALIAS, None, values)


def update_memory(memory_id: int, changes: dict[str, Any]) -> Memory:
    """Apply a partial update; the previous state is kept as a MemoryVersion."""
    now = timezone.now()
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        memory = Memory.objects.live(now).get(pk=memory_id)
        MemoryVersion.objects.create(
            memory=memory,
            version=memory.version,
            expires_at=memory.expires_at,
            created_at=memory.updated_at,
            **{name: getattr(memory, name) for name in VERSIONED_FIELDS},
        )
        ttl_seconds = changes.pop("ttl_seconds", None)
        for name, value in changes.items():
            setattr(memory, name, value)
        if "tier" in changes or ttl_seconds is not None:
            memory.expires_at = expiry_for(memory.tier, ttl_seconds, now)
        if "content" in changes:
            memory.content_hash = content_hash(memory.content)
        if "tags" in changes:
            MemoryTag.objects.filter(memory=memory).delete()
            _write_tags(memory, memory.tags)
        memory.version += 1
        memory.updated_at = now
        memory.save()
        if "content" in changes or "tags" in changes:
            store_embeddings([memory])
    return memory


def delete_memory(memory_id: int) -> None:
    """Delete a live memory with its tags and versions. Raises Memory.DoesNotExist."""
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        deleted, _ = Memory.objects.live().filter(pk=memory_id).delete()
    if not deleted:
        raise Memory.DoesNotExist(f"memory {memory_id}")


# --- Listing -------------------------------------------------------------------------------------

SORT_FIELDS = ("created_at", "updated_at", "importance", "access_count")


@dataclass(frozen=True)
class MemoryFilters:
    workspace: str | None = None
    type: str | None = None
    tags: tuple[str, ...] = ()
    tier: str | None = None
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    # Equality on top-level metadata keys.
    metadata: tuple[tuple[str, Any], ...] = ()

    def apply(self, queryset: Any) -> Any:
        for name in ("workspace", "type", "tier"):
            value = getattr(self, name)
            if value is not None:
                queryset = queryset.filter(**{name: value})
        for tag in self.tags:
            queryset = queryset.filter(pk__in=MemoryTag.objects.filter(tag=tag).values("memory_id"))
        if self.created_after is not None:
            queryset = queryset.filter(created_at__gt=self.created_after)
        if self.created_before is not None:
            queryset = queryset.filter(created_at__lt=self.created_before)
        for number, (key, value) in enumerate(self.metadata):
            alias = f"metadata_{number}"
            queryset = queryset.alias(**{alias: KeyTransform(key, "metadata")}).filter(
                **{alias: value}
            )
        return queryset


@dataclass(frozen=True)
class Position:
    """Where a page ended: the sort key's value and the id of the last memory."""

    value: Any
    id: int


@dataclass
class MemoryPage:
    memories: list[Memory] = field(default_factory=list)
    last: Position | None = None


def list_memories(
    filters: MemoryFilters, sort: str, limit: int, after: Position | None = None
) -> MemoryPage:
    """A page of live memories in `sort` order (`-` for descending), keyset-paginated."""
    descending = sort.startswith("-")
    name = sort.lstrip("-")
    queryset = filters.apply(Memory.objects.live())
    if after is not None:
        beyond = "lt" if descending else "gt"
        queryset = queryset.filter(
            Q(**{f"{name}__{beyond}": after.value})
            | Q(**{name: after.value, f"id__{beyond}": after.id})
        )
    order = [f"-{name}", "-id"] if descending else [name, "id"]
    rows = list(queryset.order_by(*order)[: limit + 1])
    page = MemoryPage(memories=rows[:limit])
    if len(rows) > limit:
        last = rows[limit - 1]
        page.last = Position(value=getattr(last, name), id=last.pk)
    return page


# --- Stats ---------------------------------------------------------------------------------------


def storage_bytes() -> int:
    """Bytes on disk of the bound tenant's database, its WAL included."""
    path = current_database_path()
    if path is None:
        return 0
    return sum(
        candidate.stat().st_size
        for candidate in (path, path.with_name(path.name + "-wal"))
        if candidate.exists()
    )


def memory_stats() -> dict[str, Any]:
    live = Memory.objects.live()

    def counts(name: str) -> dict[str, int]:
        rows = live.values(name).annotate(n=Count("id")).order_by(name)
        return {row[name]: row["n"] for row in rows}

    by_type = counts("type")
    return {
        "total_memories": sum(by_type.values()),
        "by_type": by_type,
        "by_workspace": counts("workspace"),
        "by_tier": counts("tier"),
        "storage_bytes": storage_bytes(),
    }
