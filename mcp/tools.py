"""Engram's 20 memory tools, with Engram's names and arguments (ENGRAM_TOOLS.md).

Each tool validates its arguments with the REST API's rules (MemoryWriteSerializer,
SearchRequestSerializer) on top of its schema and calls the same memories services as REST.
Where Engram Cloud differs from Engram OSS, the tool's description says so:
- Engram's memory fields Engram Cloud has no column for (event_time, event_duration_seconds,
  trigger_pattern, summary_of_id, media_url) are kept in the memory's metadata under the same
  names, so nothing an agent sends is dropped.
- Options that steer machinery Engram Cloud does not have (defer_embedding, rerank,
  rerank_strategy, include_entities, include_decayed, include_embeddings) are accepted and
  have no effect.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework import serializers

from billing.models import Plan
from billing.quotas import (
    quota_exceeded,
    require_capacity,
    require_monthly_quota,
    require_storage,
)
from mcp.registry import Call, Hint, ToolFailed, tool
from mcp.schema import (
    Schema,
    array,
    boolean,
    closed_object,
    free_object,
    integer,
    number,
    string,
    validate,
)
from memories import portability, search, services
from memories.api.search import (
    MAX_QUERY_CHARS,
    MAX_RESULTS,
    SearchRequestSerializer,
    explained_results,
)
from memories.api.serializers import (
    MAX_CONTENT_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TTL_SECONDS,
    MemoryWriteSerializer,
    iso,
    memory_representation,
)
from memories.models import EdgeType, Memory, MemoryLink, MemoryType, Tier
from memories.tenant_db import DATA_PLANE_ALIAS
from tenants.authentication import TenantRef
from tenants.permissions import Scope

MAX_ID = 2**63 - 1
MAX_BATCH = 100
MAX_FILTER_TAGS = 10
MAX_RELATED_DEPTH = 5
# A tool result is one JSON-RPC response held in memory; larger exports use GET /v1/export.
MAX_EXPORT_MEMORIES = 10_000
MAX_FILTER_NESTING = 5
ENGRAM_SEARCH_MIN_SCORE = 0.1
COMPACT_TITLE_CHARS = 80
TIMEFRAMES = {
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
}
_PRIVATE = re.compile(r"<private>.*?</private>", re.DOTALL | re.IGNORECASE)

# --- Argument schemas shared by several tools ----------------------------------------------------

MEMORY_TYPES = list(MemoryType.values)


def memory_id(description: str = "The memory's id.") -> Schema:
    return integer(description, minimum=1, maximum=MAX_ID)


def memory_type(description: str) -> Schema:
    return string(description, enum=MEMORY_TYPES)


WORKSPACE = string(
    "A workspace (namespace) inside the tenant: 1-64 of a-z, 0-9, '_' or '-'.",
    pattern="^[a-z0-9_-]{1,64}$",
)
TIER = string("permanent, or daily (expires after its TTL).", enum=list(Tier.values))
TAG = string("A tag.", minLength=1, maxLength=MAX_TAG_CHARS)
EDGE_TYPE = string("The kind of link.", enum=list(EdgeType.values))
FILTER = free_object(
    'Equality conditions: {"workspace"|"type"|"tier"|"tags"|"metadata.<key>": value}, '
    'a value may also be written {"eq": value}; {"AND": [filters]} combines them.'
)

ENGRAM_EXTRA_FIELDS = (
    "event_time",
    "event_duration_seconds",
    "trigger_pattern",
    "summary_of_id",
    "media_url",
)
WRITE_FIELDS = (
    "content",
    "type",
    "memory_type",
    "tags",
    "metadata",
    "importance",
    "workspace",
    "tier",
    "ttl_seconds",
)

CREATE_PROPERTIES: dict[str, Schema] = {
    "content": string("What to remember.", minLength=1, maxLength=MAX_CONTENT_CHARS),
    "memory_type": memory_type("The memory's type (default note)."),
    "type": memory_type("Same as memory_type."),
    "tags": array(TAG, "Tags to find it by.", maxItems=MAX_TAGS),
    "metadata": free_object("Any JSON object (at most 64 KB)."),
    "importance": number("0 to 1, default 0.5.", minimum=0, maximum=1),
    "workspace": WORKSPACE,
    "tier": TIER,
    "defer_embedding": boolean("Accepted for Engram compatibility; vectors are always computed."),
    "ttl_seconds": integer(
        "Seconds until a daily memory expires (implies tier daily).",
        minimum=1,
        maximum=MAX_TTL_SECONDS,
    ),
    "event_time": string("When the remembered event happened (ISO 8601); kept in metadata."),
    "event_duration_seconds": integer("How long the event lasted; kept in metadata.", minimum=0),
    "trigger_pattern": string("Engram's trigger pattern; kept in metadata.", maxLength=1000),
    "summary_of_id": memory_id("The memory this one summarises; kept in metadata."),
    "media_url": string(
        "A URL of the media the memory is about; kept in metadata.", maxLength=2048
    ),
}


# --- Helpers -------------------------------------------------------------------------------------


def describe_errors(errors: Any, path: str = "") -> list[str]:
    """DRF's nested errors as "field: message" lines."""
    if isinstance(errors, dict):
        return [
            line
            for name, value in errors.items()
            for line in describe_errors(
                value, path if name == "non_field_errors" else f"{path}.{name}".lstrip(".")
            )
        ]
    if isinstance(errors, list) and all(isinstance(item, str) for item in errors):
        return [f"{path or 'arguments'}: {' '.join(errors)}"] if errors else []
    if isinstance(errors, list):
        return [
            line
            for index, item in enumerate(errors)
            for line in describe_errors(item, f"{path}[{index}]")
        ]
    return [f"{path or 'arguments'}: {errors}"]


def validated(
    serializer_class: type[serializers.Serializer], data: Any, path: str = "", **kwargs: Any
) -> dict[str, Any]:
    serializer = serializer_class(data=data, **kwargs)
    if not serializer.is_valid():
        raise ToolFailed(
            "Invalid arguments: " + "; ".join(describe_errors(serializer.errors, path))
        )
    return dict(serializer.validated_data)


def not_found(memory_id: int) -> ToolFailed:
    return ToolFailed(f"Memory {memory_id} not found.")


def with_engram_extras(metadata: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """The metadata with Engram's extra memory fields in it; a null removes one."""
    merged = dict(metadata)
    for name in ENGRAM_EXTRA_FIELDS:
        if name not in arguments:
            continue
        value = arguments[name]
        if value is None:
            merged.pop(name, None)
        elif name == "event_time":
            try:
                merged[name] = iso(serializers.DateTimeField().to_internal_value(value))
            except serializers.ValidationError:
                raise ToolFailed(
                    "Invalid arguments: event_time: must be an ISO 8601 date and time."
                ) from None
        else:
            merged[name] = value
    return merged


def memory_fields(
    arguments: dict[str, Any],
    *,
    partial: bool = False,
    metadata_base: dict[str, Any] | None = None,
    path: str = "",
) -> dict[str, Any]:
    """The memory fields among the arguments, validated as POST/PATCH /v1/memories does."""
    data = {name: arguments[name] for name in WRITE_FIELDS if name in arguments}
    if any(name in arguments for name in ENGRAM_EXTRA_FIELDS):
        data["metadata"] = with_engram_extras(data.get("metadata", metadata_base or {}), arguments)
    return validated(MemoryWriteSerializer, data, path, partial=partial)


def link_representation(link: MemoryLink) -> dict[str, Any]:
    return {
        "id": link.pk,
        "from_id": link.from_memory_id,
        "to_id": link.to_memory_id,
        "edge_type": link.edge_type,
        "strength": link.strength,
        "source_context": link.source_context,
        "pinned": link.pinned,
        "created_at": iso(link.created_at),
    }


def stats_with_plan(tenant: TenantRef) -> dict[str, Any]:
    """What GET /v1/stats answers."""
    stats = services.memory_stats()
    plan = Plan.objects.get(code=tenant.plan_code)
    stats["plan"] = {"code": plan.code, "name": plan.name, "limits": plan.limits()}
    stats["usage"] = {"memories": stats["total_memories"], "storage_bytes": stats["storage_bytes"]}
    return stats


# --- Filters (memory_list, memory_search, recent_activity) ---------------------------------------

FILTER_CONDITIONS = closed_object(
    {
        "workspace": WORKSPACE,
        "type": memory_type("A type."),
        "memory_type": memory_type("A type."),
        "tier": TIER,
        "tags": {"type": ["string", "array"], "items": TAG, "maxItems": MAX_FILTER_TAGS},
    }
)


def filter_conditions(spec: dict[str, Any]) -> dict[str, Any]:
    """Engram's `filter` argument, as far as Engram Cloud supports it: equalities joined by AND.

    Anything else (OR, comparisons, unknown fields) is refused with a message saying what is
    supported, rather than silently matching more than the agent asked for.
    """
    conditions: dict[str, Any] = {}

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict):
            if set(value) != {"eq"}:
                raise ToolFailed(f'filter.{key}: only equality ({{"eq": value}}) is supported.')
            value = value["eq"]
        if key in conditions and conditions[key] != value:
            raise ToolFailed(f"filter.{key}: the filter asks for two different values.")
        conditions[key] = value

    def walk(node: dict[str, Any], depth: int) -> None:
        if depth > MAX_FILTER_NESTING:
            raise ToolFailed(f"filter: AND may nest at most {MAX_FILTER_NESTING} levels.")
        for key, value in node.items():
            if key == "AND":
                if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                    raise ToolFailed("filter.AND: must be a list of filters.")
                for item in value:
                    walk(item, depth + 1)
            elif key in FILTER_CONDITIONS["properties"] or key.startswith("metadata."):
                add(key, value)
            else:
                raise ToolFailed(
                    f"filter: {key!r} is not supported; use workspace, type, tier, tags or "
                    "metadata.<key>."
                )

    walk(spec, 0)
    return conditions


def _one(name: str, *values: Any) -> Any:
    """The one value given for a field several arguments can set, or None."""
    given = {json.dumps(value, sort_keys=True): value for value in values if value is not None}
    if len(given) > 1:
        raise ToolFailed(f"Invalid arguments: {name} is given twice with different values.")
    return next(iter(given.values()), None)


def engram_filters(
    arguments: dict[str, Any], *, exclude_types: tuple[str, ...] = ()
) -> services.EngramFilters:
    conditions = filter_conditions(arguments.get("filter", {}))
    metadata = dict(arguments.get("metadata_filter", {}))
    for key in [key for key in conditions if key.startswith("metadata.")]:
        metadata[key.removeprefix("metadata.")] = conditions.pop(key)
    try:
        conditions = validate(FILTER_CONDITIONS, conditions)
    except ValueError as error:
        raise ToolFailed(f"Invalid arguments: filter: {error}") from None
    for key, value in metadata.items():
        if isinstance(value, dict | list):
            raise ToolFailed(f"Invalid arguments: metadata filter {key!r} must be a plain value.")
    tags = conditions.get("tags", [])
    tags = [tags] if isinstance(tags, str) else tags
    return services.EngramFilters(
        workspace=_one("workspace", arguments.get("workspace"), conditions.get("workspace")),
        type=_one(
            "type",
            arguments.get("type"),
            arguments.get("memory_type"),
            conditions.get("type"),
            conditions.get("memory_type"),
        ),
        tier=_one("tier", arguments.get("tier"), conditions.get("tier")),
        tags=tuple(dict.fromkeys([*arguments.get("tags", ()), *tags])),
        metadata=tuple(metadata.items()),
        workspaces=tuple(arguments.get("workspaces", ())),
        types=tuple(arguments.get("include_types", ())),
        exclude_types=exclude_types,
    )


# --- Search --------------------------------------------------------------------------------------


def run_search(
    arguments: dict[str, Any], call: Call, *, exclude_types: tuple[str, ...]
) -> list[dict]:
    """Search as POST /v1/search does (a search counts towards the plan's monthly searches),
    answering in Engram's result shape."""
    params = {
        name: arguments[name]
        for name in ("query", "limit", "min_score", "strategy", "explain")
        if name in arguments
    }
    params.setdefault("min_score", ENGRAM_SEARCH_MIN_SCORE)
    params = validated(SearchRequestSerializer, params)
    filters = engram_filters(arguments, exclude_types=exclude_types)
    require_monthly_quota(call.tenant, "searches")
    call.count("searches")
    outcome = search.search(
        params["query"],
        strategy=params["strategy"],
        filters=filters,
        limit=params["limit"],
        min_score=params["min_score"],
    )
    return explained_results(outcome, explain=params["explain"], match_key="match_info")


def find_duplicate(content: str, workspace: str, threshold: float | None) -> Memory | None:
    """A live memory of the workspace with this content, or (with a threshold) one whose
    meaning is at least that similar (cosine similarity of the embeddings)."""
    exact = services.live_duplicate(content, workspace)
    if exact is not None or threshold is None:
        return exact
    outcome = search.search(
        content,
        strategy="semantic",
        filters=services.MemoryFilters(workspace=workspace),
        limit=1,
        min_score=threshold,
    )
    if not outcome.hits:
        return None
    return Memory.objects.live().filter(pk=outcome.hits[0].memory_id).first()


# --- The tools -----------------------------------------------------------------------------------


@tool(
    "memory_create",
    description=(
        "Store a memory. dedup_mode: allow (default) stores it anyway; reject fails, skip "
        "returns the existing memory and merge adds the tags and metadata to it, when the "
        "workspace already holds the same content (or, with dedup_threshold, content at least "
        "that similar in meaning)."
    ),
    properties={
        **CREATE_PROPERTIES,
        "dedup_mode": string(
            "What to do with a duplicate.", enum=["reject", "merge", "skip", "allow"]
        ),
        "dedup_threshold": number(
            "Similarity (0-1) from which a memory counts as a duplicate.", minimum=0, maximum=1
        ),
    },
    required=("content",),
    hint=Hint.MUTATING,
    idempotent=False,
)
def memory_create(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    fields = memory_fields(arguments)
    mode = arguments.get("dedup_mode", "allow")
    if mode != "allow":
        workspace = fields.get("workspace", "default")
        existing = find_duplicate(fields["content"], workspace, arguments.get("dedup_threshold"))
        if existing is not None:
            if mode == "reject":
                raise ToolFailed(
                    f"Memory {existing.pk} in workspace {workspace!r} already holds this content."
                )
            if mode == "merge":
                require_storage(call.tenant)
                existing = merge_into(existing, fields)
            return memory_representation(existing)
    return memory_representation(create_counted(call, [fields])[0])


def create_counted(call: Call, records: list[dict[str, Any]]) -> list[Memory]:
    """Create memories as POST /v1/memories does: within the plan's room, and metered."""
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        require_capacity(call.tenant, adding=len(records))
        created = services.create_memories(records)
    call.count("memories_created", len(created))
    return created


def merge_into(existing: Memory, fields: dict[str, Any]) -> Memory:
    changes = validated(
        MemoryWriteSerializer,
        {
            "tags": [*existing.tags, *fields.get("tags", [])],
            "metadata": {**existing.metadata, **fields.get("metadata", {})},
            "importance": max(existing.importance, fields.get("importance", 0.0)),
        },
        partial=True,
    )
    try:
        return services.update_memory(existing.pk, changes)
    except Memory.DoesNotExist:
        raise not_found(existing.pk) from None


@tool(
    "memory_get",
    description="One memory by id. strip_private removes <private>…</private> spans.",
    properties={
        "id": memory_id(),
        "strip_private": boolean("Remove <private>…</private> spans from the content."),
    },
    required=("id",),
    hint=Hint.READ_ONLY,
    idempotent=True,
)
def memory_get(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    try:
        memory = services.get_memory(arguments["id"])
    except Memory.DoesNotExist:
        raise not_found(arguments["id"]) from None
    body = memory_representation(memory)
    if arguments.get("strip_private"):
        body["content"] = _PRIVATE.sub("", body["content"])
    return body


@tool(
    "memory_update",
    description=(
        "Change a memory. Only the fields given change; the previous state is kept as a "
        "version (see memory_versions). A null event_time, trigger_pattern or media_url "
        "removes it."
    ),
    properties={
        "id": memory_id(),
        **{
            name: CREATE_PROPERTIES[name]
            for name in ("content", "memory_type", "type", "tags", "metadata", "importance")
        },
        "ttl_seconds": CREATE_PROPERTIES["ttl_seconds"],
        "event_time": {**CREATE_PROPERTIES["event_time"], "type": ["string", "null"]},
        "trigger_pattern": {**CREATE_PROPERTIES["trigger_pattern"], "type": ["string", "null"]},
        "media_url": {**CREATE_PROPERTIES["media_url"], "type": ["string", "null"]},
    },
    required=("id",),
    hint=Hint.MUTATING,
    idempotent=False,
)
def memory_update(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    memory_id = arguments["id"]
    changes = {name: value for name, value in arguments.items() if name != "id"}
    base = None
    if "metadata" not in changes and any(name in changes for name in ENGRAM_EXTRA_FIELDS):
        base = Memory.objects.live().filter(pk=memory_id).values_list("metadata", flat=True).first()
        if base is None:
            raise not_found(memory_id)
    fields = memory_fields(changes, partial=True, metadata_base=base)
    require_storage(call.tenant)
    try:
        return memory_representation(services.update_memory(memory_id, fields))
    except Memory.DoesNotExist:
        raise not_found(memory_id) from None


@tool(
    "memory_delete",
    description="Delete a memory, with its versions and links.",
    properties={"id": memory_id()},
    required=("id",),
    hint=Hint.DESTRUCTIVE,
    idempotent=True,
)
def memory_delete(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    try:
        services.delete_memory(arguments["id"])
    except Memory.DoesNotExist:
        raise not_found(arguments["id"]) from None
    return {"deleted": arguments["id"]}


@tool(
    "memory_list",
    description="Memories matching the filters, newest first unless sorted otherwise.",
    properties={
        "limit": integer("At most this many (default 20).", minimum=1, maximum=MAX_RESULTS),
        # SQLite's OFFSET is a 64-bit integer.
        "offset": integer("Skip this many first.", minimum=0, maximum=MAX_ID),
        "tags": array(TAG, "Only memories with all these tags.", maxItems=MAX_FILTER_TAGS),
        "memory_type": memory_type("Only this type."),
        "type": memory_type("Same as memory_type."),
        "workspace": WORKSPACE,
        "workspaces": array(WORKSPACE, "Only these workspaces.", maxItems=MAX_RESULTS),
        "tier": TIER,
        "sort_by": string("Sort key.", enum=list(services.ENGRAM_SORT_FIELDS)),
        "sort_order": string("desc (default) or asc.", enum=["asc", "desc"]),
        "filter": FILTER,
        "metadata_filter": free_object("Only memories whose metadata has these key: value."),
    },
    hint=Hint.READ_ONLY,
    idempotent=True,
    list_key="memories",
)
def memory_list(arguments: dict[str, Any], call: Call) -> list[dict[str, Any]]:
    memories = services.list_memories_by_offset(
        engram_filters(arguments),
        sort_by=arguments.get("sort_by", "created_at"),
        descending=arguments.get("sort_order", "desc") == "desc",
        limit=arguments.get("limit", 20),
        offset=arguments.get("offset", 0),
    )
    return [memory_representation(memory) for memory in memories]


SEARCH_PROPERTIES: dict[str, Schema] = {
    "query": string("What to look for.", minLength=1, maxLength=MAX_QUERY_CHARS),
    "limit": integer("At most this many (default 10).", minimum=1, maximum=MAX_RESULTS),
    "workspace": WORKSPACE,
}


@tool(
    "memory_search",
    description=(
        "Find memories by keyword (BM25), meaning (embeddings) or both (hybrid). auto picks "
        "keyword for short queries, semantic for long ones, hybrid between. Engram Cloud also "
        "offers fuzzy (typo-tolerant) search; rerank options are accepted and have no effect."
    ),
    properties={
        **SEARCH_PROPERTIES,
        "min_score": number("Leave out weaker results (default 0.1).", minimum=0, maximum=1),
        "tags": array(TAG, "Only memories with all these tags.", maxItems=MAX_FILTER_TAGS),
        "memory_type": memory_type("Only this type."),
        "type": memory_type("Same as memory_type."),
        "workspaces": array(WORKSPACE, "Only these workspaces.", maxItems=MAX_RESULTS),
        "tier": TIER,
        "include_transcripts": boolean("Include transcript chunks (default false)."),
        "strategy": string(
            "How to search (default auto).",
            enum=[
                "auto",
                "keyword",
                "keyword_only",
                "semantic",
                "semantic_only",
                "hybrid",
                "fuzzy",
            ],
        ),
        "explain": boolean("Add the matched terms and highlights to each result."),
        "rerank": boolean("Accepted for Engram compatibility."),
        "rerank_strategy": string(
            "Accepted for Engram compatibility.", enum=["none", "heuristic", "multi_signal"]
        ),
        "filter": FILTER,
    },
    required=("query",),
    hint=Hint.READ_ONLY,
    idempotent=True,
    list_key="results",
    scope=Scope.SEARCH,
)
def memory_search(arguments: dict[str, Any], call: Call) -> list[dict[str, Any]]:
    wants_transcripts = arguments.get(
        "include_transcripts", False
    ) or MemoryType.TRANSCRIPT_CHUNK in (
        arguments.get("type"),
        arguments.get("memory_type"),
    )
    return run_search(
        arguments, call, exclude_types=() if wants_transcripts else (MemoryType.TRANSCRIPT_CHUNK,)
    )


@tool(
    "memory_search_compact",
    description="Search, answering only ids, titles (first line), dates and tags.",
    properties=SEARCH_PROPERTIES,
    required=("query",),
    hint=Hint.READ_ONLY,
    idempotent=True,
    scope=Scope.SEARCH,
)
def memory_search_compact(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    results = run_search(arguments, call, exclude_types=(MemoryType.TRANSCRIPT_CHUNK,))
    compact = []
    for result in results:
        memory = result["memory"]
        title = memory["content"].strip().split("\n", 1)[0]
        if len(title) > COMPACT_TITLE_CHARS:
            title = title[: COMPACT_TITLE_CHARS - 1] + "…"
        compact.append(
            {
                "id": memory["id"],
                "title": title,
                "created_at": memory["created_at"],
                "tags": memory["tags"],
            }
        )
    return {"results": compact, "count": len(compact)}


@tool(
    "memory_expand",
    description="The full memories of these ids (e.g. from memory_search_compact).",
    properties={
        "ids": array(memory_id(), "Memory ids.", minItems=1, maxItems=MAX_BATCH),
    },
    required=("ids",),
    hint=Hint.READ_ONLY,
    idempotent=True,
    list_key="memories",
)
def memory_expand(arguments: dict[str, Any], call: Call) -> list[dict[str, Any]]:
    return [memory_representation(memory) for memory in services.read_memories(arguments["ids"])]


@tool(
    "memory_stats",
    description="Counts by type, workspace and tier, storage used, and the plan's limits.",
    properties={},
    hint=Hint.READ_ONLY,
    idempotent=True,
)
def memory_stats(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    return stats_with_plan(call.tenant)


@tool(
    "memory_tags",
    description="Every tag in use, with how many memories carry it, most used first.",
    properties={},
    hint=Hint.READ_ONLY,
    idempotent=True,
    list_key="tags",
)
def memory_tags(arguments: dict[str, Any], call: Call) -> list[dict[str, Any]]:
    return [{"tag": tag, "count": count} for tag, count in services.tag_counts()]


@tool(
    "memory_create_batch",
    description=(
        f"Store up to {MAX_BATCH} memories at once (memory_create's arguments, without "
        "dedup): all are stored, or none if any is invalid."
    ),
    properties={
        "memories": array(
            closed_object(CREATE_PROPERTIES, ("content",)),
            "The memories.",
            minItems=1,
            maxItems=MAX_BATCH,
        ),
    },
    required=("memories",),
    hint=Hint.MUTATING,
    idempotent=False,
)
def memory_create_batch(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    records, problems = [], []
    for index, item in enumerate(arguments["memories"]):
        try:
            records.append(memory_fields(item, path=f"memories[{index}]"))
        except ToolFailed as error:
            problems.append(str(error).removeprefix("Invalid arguments: "))
    if problems:
        raise ToolFailed("Nothing was stored. Invalid arguments: " + "; ".join(problems))
    created = create_counted(call, records)
    return {"created": [memory_representation(memory) for memory in created], "count": len(created)}


@tool(
    "memory_delete_batch",
    description=f"Delete up to {MAX_BATCH} memories by id, with their versions and links.",
    properties={
        "ids": array(memory_id(), "Memory ids.", minItems=1, maxItems=MAX_BATCH),
    },
    required=("ids",),
    hint=Hint.DESTRUCTIVE,
    idempotent=True,
)
def memory_delete_batch(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    deleted = services.delete_memories(arguments["ids"])
    missing = [
        memory_id for memory_id in dict.fromkeys(arguments["ids"]) if memory_id not in deleted
    ]
    return {"deleted": deleted, "not_found": missing, "count": len(deleted)}


@tool(
    "memory_link",
    description="Link one memory to another; linking them again with the same type updates it.",
    properties={
        "from_id": memory_id("The memory the link starts from."),
        "to_id": memory_id("The memory the link points to."),
        "edge_type": {**EDGE_TYPE, "description": "The kind of link (default related_to)."},
        "strength": number("0 to 1 (default 1).", minimum=0, maximum=1),
        "source_context": string("Why they are linked.", maxLength=10_000),
        "pinned": boolean("Mark the link as pinned."),
    },
    required=("from_id", "to_id"),
    hint=Hint.MUTATING,
    idempotent=True,
)
def memory_link(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    try:
        link = services.link_memories(
            arguments["from_id"],
            arguments["to_id"],
            edge_type=arguments.get("edge_type", EdgeType.RELATED_TO),
            strength=arguments.get("strength"),
            source_context=arguments.get("source_context"),
            pinned=arguments.get("pinned"),
        )
    except ValueError as error:
        raise ToolFailed(str(error)) from None
    except Memory.DoesNotExist as error:
        raise ToolFailed(f"{str(error).capitalize()} not found.") from None
    return link_representation(link)


@tool(
    "memory_unlink",
    description="Remove the link of this type from one memory to the other.",
    properties={
        "from_id": memory_id("The memory the link starts from."),
        "to_id": memory_id("The memory the link points to."),
        "edge_type": {**EDGE_TYPE, "description": "The kind of link (default related_to)."},
    },
    required=("from_id", "to_id"),
    hint=Hint.MUTATING,
    idempotent=True,
)
def memory_unlink(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    edge_type = arguments.get("edge_type", EdgeType.RELATED_TO)
    if not services.unlink_memories(arguments["from_id"], arguments["to_id"], edge_type):
        raise ToolFailed(
            f"There is no {edge_type} link from memory {arguments['from_id']} "
            f"to memory {arguments['to_id']}."
        )
    return {
        "unlinked": True,
        "from_id": arguments["from_id"],
        "to_id": arguments["to_id"],
        "edge_type": edge_type,
    }


@tool(
    "memory_related",
    description=(
        "Memories linked to this one, in either direction, up to `depth` links away. "
        "Links do not decay and there is no entity graph in Engram Cloud: include_decayed and "
        "include_entities are accepted and have no effect."
    ),
    properties={
        "id": memory_id(),
        "depth": integer("How many links away (default 1).", minimum=1, maximum=MAX_RELATED_DEPTH),
        "include_entities": boolean("Accepted for Engram compatibility."),
        "edge_type": {**EDGE_TYPE, "description": "Follow only links of this kind."},
        "include_decayed": boolean("Accepted for Engram compatibility."),
    },
    required=("id",),
    hint=Hint.READ_ONLY,
    idempotent=True,
)
def memory_related(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    try:
        related = services.related_memories(
            arguments["id"],
            depth=arguments.get("depth", 1),
            edge_type=arguments.get("edge_type"),
        )
    except Memory.DoesNotExist:
        raise not_found(arguments["id"]) from None
    return {
        "id": arguments["id"],
        "related": [
            {
                "memory": memory_representation(item.memory),
                "link": link_representation(item.link),
                "direction": item.direction,
                "depth": item.depth,
            }
            for item in related
        ],
        "count": len(related),
    }


@tool(
    "memory_versions",
    description="The previous versions of a memory, oldest first (each update keeps one).",
    properties={"id": memory_id()},
    required=("id",),
    hint=Hint.READ_ONLY,
    idempotent=True,
)
def memory_versions(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    try:
        memory, versions = services.memory_versions(arguments["id"])
    except Memory.DoesNotExist:
        raise not_found(arguments["id"]) from None
    return {
        "id": memory.pk,
        "current_version": memory.version,
        "versions": [portability.version_record(version) for version in versions],
    }


@tool(
    "workspace_list",
    description="The workspaces holding memories, with how many each and when one last changed.",
    properties={},
    hint=Hint.READ_ONLY,
    idempotent=True,
    list_key="workspaces",
)
def workspace_list(arguments: dict[str, Any], call: Call) -> list[dict[str, Any]]:
    return [
        {
            "workspace": row["workspace"],
            "memory_count": row["memory_count"],
            "last_updated_at": iso(row["last_updated_at"]),
        }
        for row in services.workspace_summaries()
    ]


@tool(
    "recent_activity",
    description="Memories created or changed within the timeframe, most recent first.",
    properties={
        "workspace": WORKSPACE,
        "timeframe": string("How far back (default 24h).", enum=list(TIMEFRAMES)),
        "limit": integer("At most this many (default 20).", minimum=1, maximum=MAX_RESULTS),
        "include_types": array(
            memory_type("A type."), "Only these types.", maxItems=len(MEMORY_TYPES)
        ),
    },
    hint=Hint.READ_ONLY,
    idempotent=True,
)
def recent_activity(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    timeframe = arguments.get("timeframe", "24h")
    since = timezone.now() - TIMEFRAMES[timeframe]
    memories = services.recent_memories(
        since, engram_filters(arguments), limit=arguments.get("limit", 20)
    )
    return {
        "timeframe": timeframe,
        "since": iso(since),
        "count": len(memories),
        "memories": [memory_representation(memory) for memory in memories],
    }


@tool(
    "memory_export",
    description=(
        f"The tenant's memories (or one workspace's) as an Engram export file, up to "
        f"{MAX_EXPORT_MEMORIES:,} memories; GET /v1/export streams any size. Embeddings are "
        "never exported (an import computes them again), so include_embeddings has no effect."
    ),
    properties={
        "workspace": WORKSPACE,
        "include_embeddings": boolean("Accepted for Engram compatibility."),
    },
    hint=Hint.READ_ONLY,
    idempotent=True,
)
def memory_export(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    workspace = arguments.get("workspace")
    live = Memory.objects.live()
    count = (live.filter(workspace=workspace) if workspace else live).count()
    if count > MAX_EXPORT_MEMORIES:
        raise ToolFailed(
            f"{count:,} memories are more than a tool result holds ({MAX_EXPORT_MEMORIES:,}); "
            "export with GET /v1/export, or one workspace at a time."
        )
    return json.loads("".join(portability.export_memories(workspace)))


@tool(
    "memory_import",
    description=(
        "Import an Engram export file (Engram OSS or Cloud, version 1.0) given as `data`. "
        "Bad records are reported in errors and the rest imported; with skip_duplicates "
        "(default), content the tenant already holds is skipped."
    ),
    properties={
        "data": free_object("The export file: {version, memories: [...]}."),
        "skip_duplicates": boolean("Skip memories whose content is already stored."),
    },
    required=("data",),
    hint=Hint.MUTATING,
    idempotent=False,
)
def memory_import(arguments: dict[str, Any], call: Call) -> dict[str, Any]:
    # Through the file reader, so that a file given inline is checked exactly as an upload.
    source = io.BytesIO(json.dumps(arguments["data"]).encode())
    plan = Plan.objects.get(code=call.tenant.plan_code)
    require_storage(call.tenant)
    try:
        result = portability.import_memories(
            portability.read_export_file(source),
            skip_duplicates=arguments.get("skip_duplicates", True),
            max_memories=plan.max_memories,
        )
    except portability.ExportFileError as error:
        raise ToolFailed(f"Invalid export file: data.{error.field}: {error.message}") from None
    except portability.ImportQuotaExceeded as error:
        raise quota_exceeded(
            call.tenant, "memories", error.current, error.limit, importing=error.importing
        ) from None
    call.count("memories_created", result.imported)
    return result.as_dict()
