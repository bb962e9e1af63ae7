"""Input validation for /v1/memories and the memory's JSON shape."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.core.validators import RegexValidator
from rest_framework import serializers

from memories.api.fields import (
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
)
from memories.models import Memory, MemoryType, Tier
from memories.services import SORT_FIELDS

workspace_validator = RegexValidator(
    r"^[a-z0-9_-]{1,64}\Z", "A workspace is 1-64 characters of a-z, 0-9, '_' or '-'."
)
MAX_CONTENT_CHARS = 100_000
MAX_TAGS = 50
MAX_TAG_CHARS = 64
MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32
# What the export file's reader (yajl) takes back: a larger integer would be exported into a
# file that no import reads.
MAX_METADATA_INTEGER = 2**63 - 1
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600
MAX_PAGE_SIZE = 100
READ_ONLY_MEMORY_FIELDS = frozenset(
    {
        "id",
        "version",
        "content_hash",
        "access_count",
        "created_at",
        "updated_at",
        "last_accessed_at",
        "expires_at",
    }
)


def json_depth(value: Any) -> int:
    """How deep a parsed JSON value nests (a scalar is 0), without recursion."""
    depth, level = 0, [(value, 0)]
    while level:
        item, item_depth = level.pop()
        if isinstance(item, dict | list):
            depth = max(depth, item_depth + 1)
            children = item.values() if isinstance(item, dict) else item
            level.extend((child, item_depth + 1) for child in children)
    return depth


def largest_integer(value: Any) -> int:
    """The largest magnitude of an integer in a parsed JSON value (0 without one)."""
    largest, pending = 0, [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict | list):
            pending.extend(item.values() if isinstance(item, dict) else item)
        elif isinstance(item, int) and not isinstance(item, bool):
            largest = max(largest, abs(item))
    return largest


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def memory_representation(memory: Memory) -> dict[str, Any]:
    return {
        "id": memory.pk,
        "content": memory.content,
        "type": memory.type,
        "tags": memory.tags,
        "metadata": memory.metadata,
        "importance": memory.importance,
        "workspace": memory.workspace,
        "tier": memory.tier,
        "expires_at": iso(memory.expires_at),
        "version": memory.version,
        "content_hash": memory.content_hash,
        "access_count": memory.access_count,
        "created_at": iso(memory.created_at),
        "updated_at": iso(memory.updated_at),
        "last_accessed_at": iso(memory.last_accessed_at),
    }


def _stored_iso(value: dt.datetime | None) -> str | None:
    """A datetime column as SQLite returns it (naive UTC) in the API's form."""
    if value is None:
        return None
    return value.isoformat() + "Z" if value.tzinfo is None else iso(value)


def row_representation(row: tuple[Any, ...]) -> dict[str, Any]:
    """memory_representation of a stored row (services.memory_rows_by_id: the columns of
    services.MEMORY_COLUMNS, the model's field order), without a model instance: search
    results are the API's most repeated representation."""
    (
        pk,
        content,
        type_,
        tags,
        metadata,
        importance,
        workspace,
        tier,
        expires_at,
        version,
        hash_,
        access_count,
        created_at,
        updated_at,
        last_accessed_at,
    ) = row
    return {
        "id": pk,
        "content": content,
        "type": type_,
        "tags": json.loads(tags),
        "metadata": json.loads(metadata),
        "importance": importance,
        "workspace": workspace,
        "tier": tier,
        "expires_at": _stored_iso(expires_at),
        "version": version,
        "content_hash": hash_,
        "access_count": access_count,
        "created_at": _stored_iso(created_at),
        "updated_at": _stored_iso(updated_at),
        "last_accessed_at": _stored_iso(last_accessed_at),
    }


class MemorySerializer(serializers.Serializer):
    """A memory as the API returns it."""

    id = serializers.IntegerField()
    content = serializers.CharField()
    type = serializers.ChoiceField(choices=MemoryType.choices)
    tags = serializers.ListField(child=serializers.CharField())
    metadata = serializers.DictField()
    importance = serializers.FloatField()
    workspace = serializers.CharField()
    tier = serializers.ChoiceField(choices=Tier.choices)
    expires_at = serializers.DateTimeField(allow_null=True)
    version = serializers.IntegerField()
    content_hash = serializers.CharField()
    access_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    last_accessed_at = serializers.DateTimeField(allow_null=True)

    def to_representation(self, instance: Memory) -> dict[str, Any]:
        return memory_representation(instance)


class MemoryPageSerializer(serializers.Serializer):
    data = MemorySerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class MemoryWriteSerializer(StrictSerializer):
    """Fields a client may set. `memory_type` is Engram's name for `type`."""

    read_only_names = READ_ONLY_MEMORY_FIELDS

    content = StrictCharField(max_length=MAX_CONTENT_CHARS, trim_whitespace=False)
    type = serializers.ChoiceField(choices=MemoryType.choices, required=False)
    memory_type = serializers.ChoiceField(
        choices=MemoryType.choices, required=False, write_only=True
    )
    tags = serializers.ListField(
        child=StrictCharField(max_length=MAX_TAG_CHARS), max_length=MAX_TAGS, required=False
    )
    metadata = serializers.DictField(required=False)
    importance = StrictFloatField(min_value=0.0, max_value=1.0, required=False)
    workspace = StrictCharField(required=False, validators=[workspace_validator])
    tier = serializers.ChoiceField(choices=Tier.choices, required=False)
    ttl_seconds = StrictIntegerField(min_value=1, max_value=MAX_TTL_SECONDS, required=False)

    def validate_content(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("Content cannot be empty.")
        return value

    def validate_tags(self, value: list[str]) -> list[str]:
        tags: list[str] = []
        for tag in value:
            tag = tag.strip()
            if not tag:
                raise serializers.ValidationError("Tags cannot be empty.")
            if tag not in tags:
                tags.append(tag)
        return tags

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        if json_depth(value) > MAX_METADATA_DEPTH:
            raise serializers.ValidationError(
                f"Metadata may nest at most {MAX_METADATA_DEPTH} levels deep."
            )
        if largest_integer(value) > MAX_METADATA_INTEGER:
            raise serializers.ValidationError(
                f"Metadata integers are limited to ±{MAX_METADATA_INTEGER} (64 bits)."
            )
        if len(json.dumps(value).encode("utf-8")) > MAX_METADATA_BYTES:
            raise serializers.ValidationError(
                f"Metadata is limited to {MAX_METADATA_BYTES} bytes of JSON."
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        memory_type = attrs.pop("memory_type", None)
        if memory_type is not None:
            if attrs.get("type", memory_type) != memory_type:
                raise serializers.ValidationError(
                    {"memory_type": ["Conflicts with 'type'; send one of them."]}
                )
            attrs["type"] = memory_type
        if "ttl_seconds" in attrs and attrs.setdefault("tier", Tier.DAILY) != Tier.DAILY:
            raise serializers.ValidationError(
                {"ttl_seconds": ["Only daily memories expire; permanent ones take no TTL."]}
            )
        if self.partial and not attrs:
            raise serializers.ValidationError(
                {"non_field_errors": ["Send at least one field to update."]}
            )
        return attrs


class MemoryListQuerySerializer(StrictSerializer):
    workspace = StrictCharField(required=False, validators=[workspace_validator])
    type = serializers.ChoiceField(choices=MemoryType.choices, required=False)
    tag = serializers.ListField(
        child=StrictCharField(max_length=MAX_TAG_CHARS), max_length=10, required=False
    )
    tier = serializers.ChoiceField(choices=Tier.choices, required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    sort = serializers.ChoiceField(
        choices=[f"{sign}{name}" for name in SORT_FIELDS for sign in ("", "-")],
        default="-created_at",
    )
    limit = serializers.IntegerField(min_value=1, max_value=MAX_PAGE_SIZE, default=20)
    cursor = StrictCharField(required=False, max_length=512)
