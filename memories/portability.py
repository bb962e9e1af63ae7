"""Moving a tenant's memories out and in: the export file of ARCHITECTURE.md §4.

The file is `{"version": "1.0", "exported_at", "memory_count", "memories": [...]}`. Each memory
carries Engram's export fields (id, content, memory_type, tags, metadata, importance, workspace,
tier, created_at, updated_at) and Engram Cloud's (type, expires_at, version, access_count,
last_accessed_at, versions, links), so a Cloud export imported into an empty tenant reproduces
itself, and Engram OSS's own v1.0 files import as they are.

Both directions stream: a tenant of 100k memories is never held in memory at once.

- Export reads keyset pages of live memories inside one read transaction (a WAL snapshot, so
  `memory_count` and the pages agree while writers carry on) and yields the file in chunks.
- Import reads the file incrementally (ijson) in two passes. The first validates every record,
  decides what to skip and stages the rest on a temporary file, writing nothing: a file that
  turns out truncated or of the wrong version at its last byte, or an import over the quota, is
  refused whole. The second writes the staged records in batches, one short write transaction
  each, so other writers of the tenant are never locked out for the whole import.

Choices made for records (also described for users in the import endpoint's OpenAPI text):
- Validated with the API's rules (MemoryWriteSerializer). A type outside Engram's list is an
  error for that record, not silently turned into another type.
- Fields Engram Cloud has no place for (Engram's `scope_type`/`scope_id`, `content_hash`,
  `links` until memory links exist, embeddings) are ignored.
- A record keeps its id when the tenant has no memory with that id; otherwise it gets a new one
  (`ImportResult.renumbered` maps file ids to stored ids).
- A daily memory without `expires_at` (Engram OSS files) expires one daily TTL after the import;
  a record that has already expired is skipped, as reads would never return it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import pickle
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, NamedTuple

import ijson
from django.db import connections, models, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from memories.api.fields import StrictCharField, StrictFloatField, StrictIntegerField
from memories.api.serializers import (
    MAX_CONTENT_CHARS,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MemoryWriteSerializer,
    iso,
    json_depth,
    workspace_validator,
)
from memories.bulk_index import bulk_insert_indexing
from memories.models import (
    EdgeType,
    Memory,
    MemoryLink,
    MemoryTag,
    MemoryType,
    MemoryVersion,
    Tier,
    content_hash,
)
from memories.services import MEMORY_COLUMNS, expiry_for
from memories.tenant_db import DATA_PLANE_ALIAS
from memories.vector_index import store_embeddings

EXPORT_VERSION = "1.0"
SUPPORTED_VERSIONS = frozenset({"1.0"})
PAGE_SIZE = 1000
BATCH_SIZE = 1000
# `failed` counts every bad record; only the first ones are described in `errors`.
MAX_REPORTED_ERRORS = 1000
MAX_MEMORY_ID = 2**63 - 1


# --- Export --------------------------------------------------------------------------------------


@contextmanager
def read_snapshot() -> Iterator[None]:
    """A deferred (read) transaction on the data plane: every query inside sees one snapshot.

    The data-plane alias begins its transactions with BEGIN IMMEDIATE, which takes the write
    lock; an export that lasts seconds must not block writers, and in WAL mode a deferred
    transaction reads a stable snapshot without blocking anyone.
    """
    connection = connections[DATA_PLANE_ALIAS]
    connection.ensure_connection()  # the backend reads its transaction_mode on connecting
    mode = connection.transaction_mode
    connection.transaction_mode = "DEFERRED"
    try:
        with transaction.atomic(using=DATA_PLANE_ALIAS):
            connection.transaction_mode = mode
            yield
    finally:
        connection.transaction_mode = mode


def _iso_read(value: dt.datetime | None) -> str | None:
    """A datetime column read without the ORM (naive UTC from the SQLite driver), as iso()."""
    if value is None or value.tzinfo is not None:
        return iso(value)
    return value.isoformat() + "Z"


# Read without the ORM's per-row model and converters (JSON is parsed, datetimes formatted
# here): the export of 100k memories spends its time on rows, not on Django.
VERSION_FIELDS = (
    "memory_id",
    "version",
    "content",
    "type",
    "tags",
    "metadata",
    "importance",
    "workspace",
    "tier",
    "expires_at",
    "created_at",
)
LINK_FIELDS = (
    "from_memory_id",
    "to_memory_id",
    "edge_type",
    "strength",
    "source_context",
    "pinned",
    "created_at",
)
MEMORY_FIELDS = (
    "id",
    "content",
    "type",
    "tags",
    "metadata",
    "importance",
    "workspace",
    "tier",
    "created_at",
    "updated_at",
    "expires_at",
    "version",
    "access_count",
    "last_accessed_at",
)


def version_record(version: MemoryVersion) -> dict[str, Any]:
    """A previous version as the export file (and Engram's memory_versions tool) holds it."""
    return {
        "version": version.version,
        "content": version.content,
        "type": version.type,
        "tags": version.tags,
        "metadata": version.metadata,
        "importance": version.importance,
        "workspace": version.workspace,
        "tier": version.tier,
        "expires_at": iso(version.expires_at),
        "created_at": iso(version.created_at),
    }


def _version_row_record(row: tuple[Any, ...]) -> dict[str, Any]:
    """version_record of a row of VERSION_FIELDS read without the ORM."""
    _, number, content, type_, tags, metadata, importance, workspace, tier, expires, created = row
    return {
        "version": number,
        "content": content,
        "type": type_,
        "tags": json.loads(tags),
        "metadata": json.loads(metadata),
        "importance": importance,
        "workspace": workspace,
        "tier": tier,
        "expires_at": _iso_read(expires),
        "created_at": _iso_read(created),
    }


def link_record(row: tuple[Any, ...]) -> dict[str, Any]:
    """An outgoing link (a row of LINK_FIELDS) as the export file holds it."""
    _, to_id, edge_type, strength, source_context, pinned, created = row
    return {
        "to_id": to_id,
        "edge_type": edge_type,
        "strength": strength,
        "source_context": source_context,
        "pinned": bool(pinned),
        "created_at": _iso_read(created),
    }


def export_record(
    row: tuple[Any, ...], versions: Iterable[dict[str, Any]], links: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    """One memory (a row of MEMORY_FIELDS) as the export file holds it: Engram's fields first,
    then Engram Cloud's."""
    (id_, content, type_, tags, metadata, importance, workspace, tier, created, updated) = row[:10]
    expires, version, access_count, last_accessed = row[10:]
    return {
        "id": id_,
        "content": content,
        "memory_type": type_,
        "tags": json.loads(tags),
        "metadata": json.loads(metadata),
        "importance": importance,
        "workspace": workspace,
        "tier": tier,
        "created_at": _iso_read(created),
        "updated_at": _iso_read(updated),
        "type": type_,
        "expires_at": _iso_read(expires),
        "version": version,
        "access_count": access_count,
        "last_accessed_at": _iso_read(last_accessed),
        "versions": list(versions),
        "links": list(links),
    }


def _rows(queryset: models.QuerySet, fields: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    """The queryset's rows of these fields, straight from the driver (no ORM converters)."""
    sql, params = queryset.values_list(*fields).query.get_compiler(DATA_PLANE_ALIAS).as_sql()
    with connections[DATA_PLANE_ALIAS].cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(PAGE_SIZE):
            yield from rows


def _grouped(
    rows: Iterable[tuple[Any, ...]], record: Callable[[tuple[Any, ...]], dict[str, Any]]
) -> dict[int, list[dict[str, Any]]]:
    """Records by their row's first column (the memory they belong to), in row order."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(record(row))
    return grouped


# A page's versions and links are read by the range of its ids (two bounds rather than a
# thousand parameters); the rows of memories not on the page are simply not asked for.


def _versions_of(first: int, last: int) -> dict[int, list[dict[str, Any]]]:
    versions = MemoryVersion.objects.filter(memory_id__gte=first, memory_id__lte=last)
    return _grouped(
        _rows(versions.order_by("memory_id", "version"), VERSION_FIELDS), _version_row_record
    )


def _links_of(first: int, last: int, now: dt.datetime) -> dict[int, list[dict[str, Any]]]:
    """Each memory's outgoing links to memories that are exported too (live ones)."""
    links = MemoryLink.objects.filter(
        from_memory_id__gte=first,
        from_memory_id__lte=last,
        to_memory__in=Memory.objects.live(now),
    ).order_by("from_memory_id", "to_memory_id", "edge_type")
    return _grouped(_rows(links, LINK_FIELDS), link_record)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def export_memories(workspace: str | None = None) -> Iterator[str]:
    """The bound tenant's live memories (optionally one workspace) as an export file, in chunks.

    What reads return is what is exported: expired memories are left out. Memories come in id
    order, a page of PAGE_SIZE per chunk, read by one statement inside the snapshot, so memory
    use does not grow with the tenant.
    """
    now = timezone.now()
    with read_snapshot():
        live = Memory.objects.live(now)
        if workspace is not None:
            live = live.filter(workspace=workspace)
        header = {"version": EXPORT_VERSION, "exported_at": iso(now), "memory_count": live.count()}
        yield _dumps(header)[:-1] + ',"memories":['
        separator = ""
        memories = _rows(live.order_by("pk"), MEMORY_FIELDS)
        while page := list(itertools.islice(memories, PAGE_SIZE)):
            first, last = page[0][0], page[-1][0]
            versions, links = _versions_of(first, last), _links_of(first, last, now)
            records = [
                export_record(row, versions.get(row[0], ()), links.get(row[0], ())) for row in page
            ]
            # One encoder call per page: the list's brackets dropped, its items joined by ",".
            yield separator + _dumps(records)[1:-1]
            separator = ","
        yield "]}"


# --- Reading an export file ----------------------------------------------------------------------


class ExportFileError(ValueError):
    """The file as a whole is unusable: not JSON, not an export file, or a version we don't read.

    `code` is the API error code (invalid_json or validation_error), `field` the part of the
    file at fault.
    """

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message


def _not_json(message: str) -> ExportFileError:
    return ExportFileError("invalid_json", "file", message)


def _invalid(field: str, message: str) -> ExportFileError:
    return ExportFileError("validation_error", field, message)


# The fastest installed ijson backend (the C one); its builder makes the records.
_IJSON = ijson.get_backend(ijson.backend_name)


def _items(events: Iterator[tuple[str, str, Any]]) -> Iterator[Any]:
    """The items of the memories list, whose start_array event was just read, one at a time.

    Only the list's own end_array has the prefix "memories" (its items' events have
    "memories.item..."). A stream that stops inside the list makes ijson raise.
    """
    built = ijson.sendable_list()
    builder = _IJSON.items_basecoro(built, "memories.item")
    for event in events:
        if event[0] == "memories":
            return
        builder.send(event)
        if built:
            yield from built
            del built[:]


def _records(events: Iterator[tuple[str, str, Any]]) -> Iterator[Any]:
    first = next(events, None)
    if first is None:
        raise _not_json("The file is empty.")
    if first[1] != "start_map":
        raise _invalid("file", "An export file is a JSON object with a 'memories' list.")
    version: Any = None
    seen_memories = False
    for prefix, event, value in events:
        if prefix == "version" and event != "map_key":
            version = value
        elif prefix == "memories":
            if event != "start_array":
                raise _invalid("memories", "'memories' must be a list.")
            if seen_memories:
                raise _invalid("memories", "'memories' appears more than once.")
            seen_memories = True
            yield from _items(events)
    if version not in SUPPORTED_VERSIONS:
        raise _invalid(
            "version",
            f"Unsupported export version {version!r}; this service reads version "
            f"{', '.join(sorted(SUPPORTED_VERSIONS))}.",
        )
    if not seen_memories:
        raise _invalid("memories", "The file has no 'memories' list.")


def read_export_file(stream: BinaryIO | IO[bytes]) -> Iterator[Any]:
    """The records of an export file, parsed as the stream is read.

    Raises ExportFileError when the file is malformed, possibly only after yielding every
    record (a truncated file, or a version key after the list): consume all of it before
    trusting any of it, as import_memories does.
    """
    try:
        yield from _records(ijson.parse(stream, use_float=True))
    except (ijson.JSONError, UnicodeDecodeError):
        raise _not_json("The file is not valid JSON (or it was cut short).") from None


# --- Validating records --------------------------------------------------------------------------


class _IgnoresUnknownFields:
    """Export files come from other programs and versions: fields we don't know are ignored."""

    fields: dict[str, Any]

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = {name: value for name, value in data.items() if name in self.fields}
        return super().to_internal_value(data)  # type: ignore[misc]


class VersionRecordSerializer(_IgnoresUnknownFields, MemoryWriteSerializer):
    """A previous version of a memory, as exported in `versions`."""

    # Files come from other programs: a workspace padded with spaces is taken trimmed.
    workspace = StrictCharField(
        required=False, validators=[workspace_validator], trim_whitespace=True
    )
    ttl_seconds = None
    version = StrictIntegerField(min_value=1)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    created_at = serializers.DateTimeField()


class LinkRecordSerializer(serializers.Serializer):
    """A link from the memory that carries it, as exported in `links` (ids are file ids)."""

    to_id = StrictIntegerField(min_value=1, max_value=MAX_MEMORY_ID)
    edge_type = serializers.ChoiceField(choices=EdgeType.choices, default=EdgeType.RELATED_TO)
    strength = StrictFloatField(min_value=0.0, max_value=1.0, default=1.0)
    source_context = serializers.CharField(
        max_length=10_000, allow_blank=True, default="", trim_whitespace=False
    )
    pinned = serializers.BooleanField(default=False)
    created_at = serializers.DateTimeField(required=False)


class MemoryRecordSerializer(_IgnoresUnknownFields, MemoryWriteSerializer):
    """One memory of an export file: the API's write rules plus what only a file may carry."""

    # Files come from other programs: a workspace padded with spaces is taken trimmed.
    workspace = StrictCharField(
        required=False, validators=[workspace_validator], trim_whitespace=True
    )
    ttl_seconds = None
    id = StrictIntegerField(min_value=1, max_value=MAX_MEMORY_ID, required=False, allow_null=True)
    created_at = serializers.DateTimeField(required=False)
    updated_at = serializers.DateTimeField(required=False)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    version = StrictIntegerField(min_value=1, required=False)
    access_count = StrictIntegerField(min_value=0, required=False)
    last_accessed_at = serializers.DateTimeField(required=False, allow_null=True)
    versions = VersionRecordSerializer(many=True, required=False)
    links = LinkRecordSerializer(many=True, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if attrs.get("tier", Tier.PERMANENT) != Tier.DAILY and attrs.get("expires_at"):
            raise serializers.ValidationError(
                {"expires_at": ["Only daily memories expire; a permanent one has no expiry."]}
            )
        numbers = [version["version"] for version in attrs.get("versions", ())]
        if len(set(numbers)) != len(numbers):
            raise serializers.ValidationError({"versions": ["Version numbers must be unique."]})
        attrs.setdefault("version", max(numbers, default=0) + 1)
        if numbers and max(numbers) >= attrs["version"]:
            raise serializers.ValidationError(
                {"versions": ["Previous versions must be numbered below the memory's version."]}
            )
        return attrs


# DRF refuses text with NUL or lone surrogate characters.
_UNSAFE_TEXT = re.compile("[\x00\ud800-\udfff]")
_TYPES = frozenset(MemoryType.values)
_TIERS = frozenset(Tier.values)
# The fields only a file carries: integers with their (minimum, maximum), and datetimes.
_COUNTS = {"id": (1, MAX_MEMORY_ID), "version": (1, None), "access_count": (0, None)}
_DATETIMES = ("created_at", "updated_at", "expires_at", "last_accessed_at")
_NULLABLE = frozenset({"id", "expires_at", "last_accessed_at"})


def _safe_text(value: Any) -> bool:
    return isinstance(value, str) and not _UNSAFE_TEXT.search(value)


def _plain_count(value: Any, low: int, high: int | None) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and low <= value
        and (high is None or value <= high)
    )


def _plain_tags(tags: Any) -> list[str] | None:
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        return None
    cleaned: list[str] = []
    for tag in tags:
        if not _safe_text(tag) or not 0 < len(tag.strip()) <= MAX_TAG_CHARS:
            return None
        if tag.strip() not in cleaned:
            cleaned.append(tag.strip())
    return cleaned


def _plain_metadata(metadata: Any) -> dict[str, Any] | None:
    if not isinstance(metadata, dict) or json_depth(metadata) > MAX_METADATA_DEPTH:
        return None
    if len(json.dumps(metadata).encode("utf-8")) > MAX_METADATA_BYTES:
        return None
    return dict(metadata)


def _plain_choice(value: Any, choices: frozenset[str]) -> str | None:
    return value if isinstance(value, str) and value in choices else None


def _plain_type(record: dict[str, Any]) -> str | None:
    given = {
        _plain_choice(record[name], _TYPES) for name in ("type", "memory_type") if name in record
    }
    return given.pop() if len(given) == 1 else None


def _plain_datetime(value: Any) -> dt.datetime | None:
    """An ISO 8601 datetime with an offset, parsed as DRF's DateTimeField parses it (Django's
    parse_datetime); naive or odd values are left to the serializer."""
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
        return parsed.astimezone(dt.UTC) if parsed is not None and parsed.tzinfo else None
    except (ValueError, OverflowError):
        return None


def _plain_write_fields(record: dict[str, Any]) -> dict[str, Any] | None:
    """The fields a client may write through the API, checked as MemoryWriteSerializer does."""
    content = record.get("content")
    if not _safe_text(content) or len(content) > MAX_CONTENT_CHARS or not content.strip():
        return None
    data: dict[str, Any] = {"content": content}
    if "type" in record or "memory_type" in record:
        data["type"] = _plain_type(record)
    if "tags" in record:
        data["tags"] = _plain_tags(record["tags"])
    if "metadata" in record:
        data["metadata"] = _plain_metadata(record["metadata"])
    if "importance" in record:
        importance = record["importance"]
        plain = isinstance(importance, int | float) and not isinstance(importance, bool)
        data["importance"] = float(importance) if plain and 0 <= importance <= 1 else None
    if "workspace" in record:
        workspace = record["workspace"]
        plain = isinstance(workspace, str) and workspace_validator.regex.match(workspace)
        data["workspace"] = workspace if plain else None
    if "tier" in record:
        data["tier"] = _plain_choice(record["tier"], _TIERS)
    return None if any(value is None for value in data.values()) else data


def _plain_file_fields(record: dict[str, Any]) -> dict[str, Any] | None:
    """The fields only an export file carries: id, counters and datetimes."""
    data: dict[str, Any] = {}
    for name in (*_COUNTS, *_DATETIMES):
        if name not in record:
            continue
        value = record[name]
        if value is None and name in _NULLABLE:
            data[name] = None
        elif name in _COUNTS and _plain_count(value, *_COUNTS[name]):
            data[name] = value
        elif name in _DATETIMES and (moment := _plain_datetime(value)) is not None:
            data[name] = moment
        else:
            return None
    return data


def _plain_versions(versions: Any) -> list[dict[str, Any]] | None:
    """Previous versions, checked as VersionRecordSerializer does (None: leave it to it)."""
    if not isinstance(versions, list):
        return None
    plain = []
    for version in versions:
        if not isinstance(version, dict):
            return None
        fields = _plain_write_fields(version)
        number, created_at = version.get("version"), _plain_datetime(version.get("created_at"))
        if fields is None or not _plain_count(number, 1, None) or created_at is None:
            return None
        entry = {**fields, "version": number, "created_at": created_at}
        if "expires_at" in version:
            expires_at = version["expires_at"]
            entry["expires_at"] = None if expires_at is None else _plain_datetime(expires_at)
            if expires_at is not None and entry["expires_at"] is None:
                return None
        plain.append(entry)
    return plain


def _plainly_valid(record: Any) -> dict[str, Any] | None:
    """What MemoryRecordSerializer returns for a plainly well-formed record, or None.

    DRF's per-field machinery costs about 0.25 ms of CPU per record: 25 s of a 60 s budget
    for 100k memories. This checks the common case directly, with the API's own limits,
    and accepts only what the serializer accepts, returning exactly what it returns; any
    record it is unsure of (errors, links, unusual spellings) goes to the serializer,
    which reports the errors. tests/test_portability.py holds the two to agreement.
    """
    if not isinstance(record, dict) or record.get("links", []) != []:
        return None
    fields, extra = _plain_write_fields(record), _plain_file_fields(record)
    versions = _plain_versions(record.get("versions", []))
    if fields is None or extra is None or versions is None:
        return None
    data = {**fields, **extra}
    if data.get("expires_at") and data.get("tier", Tier.PERMANENT) != Tier.DAILY:
        return None
    numbers = [version["version"] for version in versions]
    data.setdefault("version", max(numbers, default=0) + 1)
    if len(set(numbers)) != len(numbers) or max(numbers, default=0) >= data["version"]:
        return None
    if "versions" in record:
        data["versions"] = versions
    if "links" in record:
        data["links"] = []
    return data


# --- Importing -----------------------------------------------------------------------------------


@dataclass
class ImportResult:
    imported: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    # File id -> stored id, for records whose id was taken; what links are remapped with.
    renumbered: dict[int, int] = field(default_factory=dict)
    # File id -> stored id of every record written, and the links they carry (by stored id).
    stored: dict[int, int] = field(default_factory=dict)
    links: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The answer of POST /v1/import and of Engram's memory_import tool."""
        return {
            "imported": self.imported,
            "skipped": self.skipped,
            "failed": self.failed,
            "errors": self.errors,
        }

    def fail(self, index: int, errors: Any) -> None:
        self.failed += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"index": index, "errors": errors})


class ImportQuotaExceeded(Exception):
    """The import would take the tenant past its plan's memory limit; nothing was written."""

    def __init__(self, current: int, limit: int, importing: int) -> None:
        super().__init__(
            f"Importing {importing} memories would exceed the plan's limit of {limit} "
            f"memories ({current} stored)."
        )
        self.current = current
        self.limit = limit
        self.importing = importing


def _staged_memory(record: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A validated record with Engram's defaults filled in, ready to become a Memory row."""
    tier = record.get("tier", Tier.PERMANENT)
    created_at = record.get("created_at", now)
    expires_at = record.get("expires_at")
    if tier == Tier.DAILY and expires_at is None:
        expires_at = expiry_for(tier, None, now)
    return {
        "file_id": record.get("id"),
        "content": record["content"],
        "content_hash": content_hash(record["content"]),
        "type": record.get("type", MemoryType.NOTE),
        "tags": record.get("tags", []),
        "metadata": record.get("metadata", {}),
        "importance": record.get("importance", 0.5),
        "workspace": record.get("workspace", "default"),
        "tier": tier,
        "expires_at": expires_at,
        "version": record["version"],
        "access_count": record.get("access_count", 0),
        "created_at": created_at,
        "updated_at": record.get("updated_at", created_at),
        "last_accessed_at": record.get("last_accessed_at"),
        "versions": record.get("versions", []),
        "links": record.get("links", []),
    }


@dataclass
class _Staging:
    """Pass one's output: the records to write, pickled a batch at a time on a temporary file."""

    file: IO[bytes]
    batches: int = 0
    count: int = 0
    max_file_id: int = 0
    seen_hashes: set[str] = field(default_factory=set)

    def add_batch(self, batch: list[dict[str, Any]]) -> None:
        pickle.dump(batch, self.file, protocol=pickle.HIGHEST_PROTOCOL)
        self.batches += 1
        self.count += len(batch)
        self.max_file_id = max([self.max_file_id, *(staged["file_id"] or 0 for staged in batch)])

    def read_batches(self) -> Iterator[list[dict[str, Any]]]:
        self.file.seek(0)
        for _ in range(self.batches):
            yield pickle.load(self.file)


def _drop_duplicates(
    candidates: list[dict[str, Any]], staging: _Staging, result: ImportResult, now: dt.datetime
) -> list[dict[str, Any]]:
    """Skip records whose content the tenant already holds, or an earlier record of the file."""
    hashes = {staged["content_hash"] for staged in candidates}
    stored = set(
        Memory.objects.live(now)
        .filter(content_hash__in=hashes)
        .values_list("content_hash", flat=True)
    )
    kept = []
    for staged in candidates:
        if staged["content_hash"] in stored or staged["content_hash"] in staging.seen_hashes:
            result.skipped += 1
            continue
        staging.seen_hashes.add(staged["content_hash"])
        kept.append(staged)
    return kept


def _stage(
    records: Iterable[Any],
    staging: _Staging,
    result: ImportResult,
    *,
    skip_duplicates: bool,
    now: dt.datetime,
) -> None:
    """Pass one: validate every record, count the skipped and failed, stage the rest."""
    validator = MemoryRecordSerializer()
    candidates: list[dict[str, Any]] = []

    def flush() -> None:
        batch = (
            _drop_duplicates(candidates, staging, result, now) if skip_duplicates else candidates
        )
        if batch:
            staging.add_batch(batch)
        candidates.clear()

    for index, record in enumerate(records):
        try:
            fields = _plainly_valid(record) or validator.run_validation(record)
            staged = _staged_memory(fields, now)
        except serializers.ValidationError as error:
            result.fail(index, serializers.as_serializer_error(error))
            continue
        if staged["expires_at"] is not None and staged["expires_at"] <= now:
            result.skipped += 1
            continue
        candidates.append(staged)
        if len(candidates) >= BATCH_SIZE:
            flush()
    flush()
    staging.seen_hashes.clear()


def _assign_ids(batch: list[dict[str, Any]], floor: int, result: ImportResult) -> None:
    """Keep each file id the tenant doesn't use; give the others ids above every id in play.

    Runs inside the batch's write transaction, so no other writer takes an id in between.
    New ids start above the file's largest id too, so they never take one a later record keeps.
    """
    wanted = {staged["file_id"] for staged in batch if staged["file_id"] is not None}
    taken = set(Memory.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    next_id = max(floor, Memory.objects.aggregate(top=Max("pk"))["top"] or 0) + 1
    for staged in batch:
        file_id = staged["file_id"]
        if file_id is not None and file_id not in taken:
            staged["id"] = file_id
            taken.add(file_id)
            continue
        staged["id"] = next_id
        next_id += 1
        if file_id is not None:
            result.renumbered[file_id] = staged["id"]


def _utc_text(value: dt.datetime | None) -> str | None:
    """A datetime as Django's SQLite backend stores it (naive UTC text), without its checks."""
    if value is None:
        return None
    if value.tzinfo is None:  # not what validated records hold; the backend decides
        return connections[DATA_PLANE_ALIAS].ops.adapt_datetimefield_value(value)
    return str(value.astimezone(dt.UTC).replace(tzinfo=None))


def _column_value(field: models.Field) -> Callable[[Any], Any] | None:
    """How a field's Python value is stored (None: as it is): what the ORM would write."""
    if isinstance(field, models.JSONField):
        return json.dumps
    if isinstance(field, models.DateTimeField):
        return _utc_text
    return None


def _insert_rows(model: type[models.Model], rows: list[dict[str, Any]]) -> None:
    """INSERT rows (field name -> value, the same names in every row) in one statement.

    bulk_create spends longer preparing values than SQLite spends inserting them, indexes
    included (bench/portability.py); this converts only what SQLite cannot take as it is,
    a column at a time.
    """
    if not rows:
        return
    connection = connections[DATA_PLANE_ALIAS]
    fields = [model._meta.get_field(name) for name in rows[0]]
    table = model._meta.db_table
    columns = ", ".join(field.column for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    by_column = zip(*(row.values() for row in rows), strict=True)
    values = list(
        zip(
            *(
                column if (convert := _column_value(field)) is None else map(convert, column)
                for field, column in zip(fields, by_column, strict=True)
            ),
            strict=True,
        )
    )
    staged = f"engram_import_{table}"
    with connection.cursor() as cursor:
        # Through an untyped temporary table (values stay as bound; the table's own column
        # affinities apply on the way in, as for a direct INSERT): SQLite maintains the
        # indexes of an INSERT … SELECT about twice as fast as those of a row-by-row insert.
        # Created and dropped inside the caller's transaction, like the rows themselves.
        cursor.execute(f"CREATE TEMP TABLE {staged} ({columns})")
        cursor.executemany(f"INSERT INTO temp.{staged} VALUES ({placeholders})", values)
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT * FROM temp.{staged} ORDER BY rowid"
        )
        cursor.execute(f"DROP TABLE temp.{staged}")


def _version_row(memory_id: int, version: dict[str, Any]) -> dict[str, Any]:
    return {
        "memory_id": memory_id,
        "version": version["version"],
        "content": version["content"],
        "type": version.get("type", MemoryType.NOTE),
        "tags": version.get("tags", []),
        "metadata": version.get("metadata", {}),
        "importance": version.get("importance", 0.5),
        "workspace": version.get("workspace", "default"),
        "tier": version.get("tier", Tier.PERMANENT),
        "expires_at": version.get("expires_at"),
        "created_at": version["created_at"],
    }


class _Embeddable(NamedTuple):
    """What store_embeddings reads of a memory, without building a Memory per row."""

    pk: int
    content: str
    tags: list[str]


def _write_batch(batch: list[dict[str, Any]], floor: int, result: ImportResult) -> None:
    """Pass two, one batch: memories, tag rows, versions and vectors in one transaction.

    The search index is written for the whole batch at once (bulk_insert_indexing), in the
    same transaction.
    """
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        _assign_ids(batch, floor, result)
        with bulk_insert_indexing([staged["id"] for staged in batch]):
            _insert_rows(
                Memory, [{name: staged[name] for name in MEMORY_COLUMNS} for staged in batch]
            )
        _insert_rows(
            MemoryTag,
            [{"memory_id": staged["id"], "tag": tag} for staged in batch for tag in staged["tags"]],
        )
        _insert_rows(
            MemoryVersion,
            [
                _version_row(staged["id"], version)
                for staged in batch
                for version in staged["versions"]
            ],
        )
        for staged in batch:
            if staged["file_id"] is not None:
                result.stored[staged["file_id"]] = staged["id"]
            result.links += [(staged["id"], link) for link in staged.get("links", ())]
        store_embeddings([_Embeddable(row["id"], row["content"], row["tags"]) for row in batch])
    result.imported += len(batch)


# How the importing connection writes (pass two), then back to its settings:
# - a larger page cache (SQLite's default is 2 MiB): each batch inserts at random places of
#   seven indexes and two FTS5 indexes, and past a few ten thousand memories the default
#   cache reads the same pages back from the file over and over;
# - WAL checkpoints every IMPORT_CHECKPOINT_PAGES pages instead of 1,000: each checkpoint
#   copies the index pages the last batches touched back into the file, most of them again
#   and again; one checkpoint at the end copies them once.
IMPORT_PAGE_CACHE_KIB = 65536
IMPORT_CHECKPOINT_PAGES = 16384


@contextmanager
def _bulk_writing() -> Iterator[None]:
    pragmas = {"cache_size": -IMPORT_PAGE_CACHE_KIB, "wal_autocheckpoint": IMPORT_CHECKPOINT_PAGES}
    with connections[DATA_PLANE_ALIAS].cursor() as cursor:
        previous = {}
        for name, value in pragmas.items():
            cursor.execute(f"PRAGMA {name}")
            previous[name] = int(cursor.fetchone()[0])
            cursor.execute(f"PRAGMA {name} = {int(value)}")
        try:
            yield
        finally:
            for name, value in previous.items():
                cursor.execute(f"PRAGMA {name} = {value}")
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")


def import_memories(
    records: Iterable[Any], *, skip_duplicates: bool = True, max_memories: int | None = None
) -> ImportResult:
    """Import export-file records into the bound tenant.

    A bad record is reported in `errors` (with its index in the file) and counted in `failed`;
    the others are imported. With `skip_duplicates`, a record whose content the tenant already
    holds (or an earlier record of the file holds) is skipped, so importing a file twice adds
    nothing the second time. Raises ExportFileError (from `records`) or ImportQuotaExceeded
    before anything is written.
    """
    now = timezone.now()
    result = ImportResult()
    with tempfile.TemporaryFile(prefix="engram-import-") as spool:
        staging = _Staging(file=spool)
        _stage(records, staging, result, skip_duplicates=skip_duplicates, now=now)
        if max_memories is not None and staging.count:
            current = Memory.objects.live(now).count()
            if current + staging.count > max_memories:
                raise ImportQuotaExceeded(current, max_memories, staging.count)
        with _bulk_writing():
            for batch in staging.read_batches():
                _write_batch(batch, staging.max_file_id, result)
    _write_links(result, now)
    return result


def _write_links(result: ImportResult, now: dt.datetime) -> None:
    """Links between memories of the file, once both ends are written (ids remapped)."""
    rows = []
    for from_id, link in result.links:
        to_id = result.stored.get(link["to_id"])
        if to_id is None or to_id == from_id:
            continue  # its target was skipped, failed or not in the file
        rows.append(
            MemoryLink(
                from_memory_id=from_id,
                to_memory_id=to_id,
                edge_type=link["edge_type"],
                strength=link["strength"],
                source_context=link["source_context"],
                pinned=link["pinned"],
                created_at=link.get("created_at") or now,
            )
        )
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        MemoryLink.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
