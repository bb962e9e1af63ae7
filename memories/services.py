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
from django.db.models import Count, F, Max, Q
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from memories.access import access_counter
from memories.models import (
    Memory,
    MemoryLink,
    MemoryTag,
    MemoryVersion,
    Tier,
    content_hash,
)
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
# The columns of a memory's row, in the model's field order.
MEMORY_COLUMNS = tuple(field.column for field in _MEMORY_FIELDS)
# Reading a memory is the hottest path of the API: one prepared statement, not an ORM query
# (bench/api_overhead.py); the access it counts is written later, in batches (access.py).
_SELECT_SQL = f"SELECT {', '.join(MEMORY_COLUMNS)} FROM {Memory._meta.db_table} "
_READ_SQL = _SELECT_SQL + "WHERE id = %s AND (expires_at IS NULL OR expires_at > %s)"


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
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_READ_SQL, [memory_id, connection.ops.adapt_datetimefield_value(now)])
        row = cursor.fetchone()
    if row is None:
        raise Memory.DoesNotExist(f"memory {memory_id}")
    memory = _from_row(row)
    memory.access_count += access_counter.record(memory.pk, now)
    memory.last_accessed_at = now
    return memory


def _from_row(row: tuple[Any, ...]) -> Memory:
    values = [_from_column(field, value) for field, value in zip(_MEMORY_FIELDS, row, strict=True)]
    return Memory.from_db(DATA_PLANE_ALIAS, None, values)


def memory_rows_by_id(memory_ids: list[int]) -> dict[int, tuple[Any, ...]]:
    """Memories by id as stored, as rows of MEMORY_COLUMNS in one statement (search results: no
    liveness check, no access counted, no model instances); a missing id is left out."""
    if not memory_ids:
        return {}
    with connections[DATA_PLANE_ALIAS].cursor() as cursor:
        cursor.execute(
            _SELECT_SQL + "WHERE id IN (SELECT value FROM json_each(%s))", [json.dumps(memory_ids)]
        )
        return {row[0]: row for row in cursor.fetchall()}


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


def purge_expired(now: dt.datetime | None = None) -> int:
    """Delete the bound tenant's expired memories (with their tags, versions and links); how
    many. No read shows them and none can delete them: this gives back the room they hold
    under the plan's limits."""
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        _, deleted = Memory.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted.get(Memory._meta.label, 0)


# --- Listing -------------------------------------------------------------------------------------

SORT_FIELDS = ("created_at", "updated_at", "importance", "access_count")


class MetadataKey(KeyTransform):
    """A top-level key of a memory's metadata, on the data plane's SQLite.

    Django's KeyTransform reads a key of digits as an array index: "2024" would match
    nothing in an object, and "-1" is a JSON path error. Metadata keys are object keys.
    """

    def as_sqlite(self, compiler: Any, connection: Any) -> tuple[str, tuple[Any, ...]]:
        lhs, params = compiler.compile(self.lhs)
        path = "$." + json.dumps(self.key_name)
        types = ",".join(repr(name) for name in connection.ops.jsonfield_datatype_values)
        sql = (
            f"(CASE WHEN JSON_TYPE({lhs}, %s) IN ({types}) "
            f"THEN JSON_TYPE({lhs}, %s) ELSE JSON_EXTRACT({lhs}, %s) END)"
        )
        return sql, (*params, path) * 3


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
            queryset = queryset.alias(**{alias: MetadataKey(key, "metadata")}).filter(
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
    """Bytes the bound tenant's data takes: its database's pages in use.

    Not the file's size: SQLite keeps the pages a delete frees in the file for reuse, so a
    workspace at its plan's storage limit could never make room by deleting memories.
    """
    if current_database_path() is None:
        return 0
    with connections[DATA_PLANE_ALIAS].cursor() as cursor:
        cursor.execute("PRAGMA page_count")
        pages = cursor.fetchone()[0]
        cursor.execute("PRAGMA freelist_count")
        free = cursor.fetchone()[0]
        cursor.execute("PRAGMA page_size")
        size = cursor.fetchone()[0]
    return (pages - free) * size


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


# --- What Engram's MCP tools need beyond REST ----------------------------------------------------


@dataclass(frozen=True)
class EngramFilters(MemoryFilters):
    """The filters of Engram's list and search tools: any of several workspaces or types, and
    types to leave out (Engram's search skips transcript chunks unless asked)."""

    workspaces: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    exclude_types: tuple[str, ...] = ()

    def apply(self, queryset: Any) -> Any:
        queryset = super().apply(queryset)
        if self.workspaces:
            queryset = queryset.filter(workspace__in=self.workspaces)
        if self.types:
            queryset = queryset.filter(type__in=self.types)
        if self.exclude_types:
            queryset = queryset.exclude(type__in=self.exclude_types)
        return queryset


ENGRAM_SORT_FIELDS = ("created_at", "updated_at", "last_accessed_at", "importance", "access_count")


def list_memories_by_offset(
    filters: MemoryFilters,
    *,
    sort_by: str = "created_at",
    descending: bool = True,
    limit: int = 20,
    offset: int = 0,
) -> list[Memory]:
    """Engram's memory_list pages by offset; never-accessed memories sort last either way."""
    key = F(sort_by).desc(nulls_last=True) if descending else F(sort_by).asc(nulls_last=True)
    queryset = filters.apply(Memory.objects.live()).order_by(key, "-id" if descending else "id")
    return list(queryset[offset : offset + limit])


def read_memories(memory_ids: Iterable[int]) -> list[Memory]:
    """Live memories by id, in the order asked (missing ones left out), each read counted as
    get_memory counts it."""
    wanted = list(dict.fromkeys(memory_ids))
    now = timezone.now()
    found = Memory.objects.live(now).in_bulk(wanted)
    memories = [found[memory_id] for memory_id in wanted if memory_id in found]
    for memory in memories:
        memory.access_count += access_counter.record(memory.pk, now)
        memory.last_accessed_at = now
    return memories


def live_duplicate(content: str, workspace: str) -> Memory | None:
    """The oldest live memory of the workspace with exactly this content."""
    return (
        Memory.objects.live()
        .filter(content_hash=content_hash(content), workspace=workspace)
        .order_by("id")
        .first()
    )


def create_memories(records: list[dict[str, Any]]) -> list[Memory]:
    """Create validated memories all together or not at all."""
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        return [create_memory(**fields) for fields in records]


def delete_memories(memory_ids: Iterable[int]) -> list[int]:
    """Delete the live memories among these ids (tags, versions and links with them).

    Returns the ids deleted; ids of no live memory are left alone.
    """
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        found = list(
            Memory.objects.live().filter(pk__in=list(memory_ids)).values_list("pk", flat=True)
        )
        Memory.objects.filter(pk__in=found).delete()
    return sorted(found)


def memory_versions(memory_id: int) -> tuple[Memory, list[MemoryVersion]]:
    """A live memory and its previous versions, oldest first. Raises Memory.DoesNotExist."""
    memory = Memory.objects.live().get(pk=memory_id)
    return memory, list(MemoryVersion.objects.filter(memory=memory).order_by("version"))


def tag_counts() -> list[tuple[str, int]]:
    """Every tag of a live memory with how many live memories carry it, most used first."""
    rows = (
        MemoryTag.objects.filter(memory__in=Memory.objects.live())
        .values("tag")
        .annotate(count=Count("id"))
        .order_by("-count", "tag")
    )
    return [(row["tag"], row["count"]) for row in rows]


def workspace_summaries() -> list[dict[str, Any]]:
    """Each workspace holding live memories: how many, and when one last changed."""
    rows = (
        Memory.objects.live()
        .values("workspace")
        .annotate(memory_count=Count("id"), last_updated_at=Max("updated_at"))
        .order_by("workspace")
    )
    return list(rows)


def recent_memories(since: dt.datetime, filters: MemoryFilters, limit: int) -> list[Memory]:
    """Live memories created or changed since `since`, most recent first."""
    queryset = filters.apply(Memory.objects.live()).filter(updated_at__gte=since)
    return list(queryset.order_by("-updated_at", "-id")[:limit])


# --- Links ---------------------------------------------------------------------------------------

MAX_RELATED = 200


def link_memories(
    from_id: int,
    to_id: int,
    *,
    edge_type: str,
    strength: float | None = None,
    source_context: str | None = None,
    pinned: bool | None = None,
) -> MemoryLink:
    """Link two live memories; linking them again with the same type updates the link.

    Raises ValueError for a link from a memory to itself, Memory.DoesNotExist if either
    memory is not live.
    """
    if from_id == to_id:
        raise ValueError("A memory cannot be linked to itself.")
    given = {"strength": strength, "source_context": source_context, "pinned": pinned}
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        live = set(
            Memory.objects.live().filter(pk__in=[from_id, to_id]).values_list("pk", flat=True)
        )
        for memory_id in (from_id, to_id):
            if memory_id not in live:
                raise Memory.DoesNotExist(f"memory {memory_id}")
        link, _ = MemoryLink.objects.update_or_create(
            from_memory_id=from_id,
            to_memory_id=to_id,
            edge_type=edge_type,
            defaults={name: value for name, value in given.items() if value is not None},
        )
    return link


def unlink_memories(from_id: int, to_id: int, edge_type: str) -> bool:
    """Remove the link of this type from one memory to the other; whether there was one."""
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        deleted, _ = MemoryLink.objects.filter(
            from_memory_id=from_id, to_memory_id=to_id, edge_type=edge_type
        ).delete()
    return bool(deleted)


@dataclass(frozen=True)
class RelatedMemory:
    memory: Memory
    link: MemoryLink
    # "outgoing": the link points from the memory nearer the start to this one.
    direction: str
    depth: int


def related_memories(
    memory_id: int, *, depth: int = 1, edge_type: str | None = None
) -> list[RelatedMemory]:
    """Live memories linked to this one (either direction), breadth first up to `depth` links
    away, each once, by its strongest link at the nearest depth. At most MAX_RELATED.

    Raises Memory.DoesNotExist if the memory is not live.
    """
    now = timezone.now()
    if not Memory.objects.live(now).filter(pk=memory_id).exists():
        raise Memory.DoesNotExist(f"memory {memory_id}")
    seen, frontier, found = {memory_id}, {memory_id}, []
    for level in range(1, depth + 1):
        links = MemoryLink.objects.filter(
            Q(from_memory_id__in=frontier) | Q(to_memory_id__in=frontier)
        )
        if edge_type is not None:
            links = links.filter(edge_type=edge_type)
        reached = []
        for link in links.order_by("-strength", "id"):
            if link.from_memory_id in frontier and link.to_memory_id not in seen:
                reached.append((link, link.to_memory_id, "outgoing"))
            elif link.to_memory_id in frontier and link.from_memory_id not in seen:
                reached.append((link, link.from_memory_id, "incoming"))
        memories = Memory.objects.live(now).in_bulk({other for _, other, _ in reached})
        frontier = set()
        for link, other, direction in reached:
            if other in seen or other not in memories or len(found) >= MAX_RELATED:
                continue
            seen.add(other)
            frontier.add(other)
            found.append(RelatedMemory(memories[other], link, direction, level))
        if not frontier:
            break
    return found
