"""Data-plane models: they live in each tenant's own SQLite file (see routers.py)."""

from __future__ import annotations

import datetime as dt
import hashlib

from django.db import models
from django.db.models import Q
from django.utils import timezone


class MemoryType(models.TextChoices):
    NOTE = "note"
    TODO = "todo"
    ISSUE = "issue"
    DECISION = "decision"
    PREFERENCE = "preference"
    LEARNING = "learning"
    CONTEXT = "context"
    CREDENTIAL = "credential"
    CUSTOM = "custom"
    TRANSCRIPT_CHUNK = "transcript_chunk"
    EPISODIC = "episodic"
    PROCEDURAL = "procedural"
    SUMMARY = "summary"
    CHECKPOINT = "checkpoint"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"


class Tier(models.TextChoices):
    PERMANENT = "permanent"
    DAILY = "daily"


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


class MemoryQuerySet(models.QuerySet["Memory"]):
    def live(self, now: dt.datetime | None = None) -> MemoryQuerySet:
        """Memories that have not expired: what every read and search sees."""
        now = now or timezone.now()
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


class Memory(models.Model):
    content = models.TextField()
    type = models.CharField(max_length=32, choices=MemoryType.choices, default=MemoryType.NOTE)
    # The list as given (order kept) for output; MemoryTag rows make tags filterable.
    tags = models.JSONField(default=list)
    metadata = models.JSONField(default=dict)
    importance = models.FloatField(default=0.5)
    workspace = models.CharField(max_length=64, default="default")
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.PERMANENT)
    expires_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    content_hash = models.CharField(max_length=64)
    access_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    last_accessed_at = models.DateTimeField(null=True, blank=True)

    objects = MemoryQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["created_at", "id"], name="memory_created_idx"),
            models.Index(fields=["updated_at", "id"], name="memory_updated_idx"),
            models.Index(fields=["importance", "id"], name="memory_importance_idx"),
            models.Index(fields=["workspace", "created_at"], name="memory_workspace_idx"),
            models.Index(fields=["type"], name="memory_type_idx"),
            models.Index(fields=["expires_at"], name="memory_expires_idx"),
            models.Index(fields=["content_hash"], name="memory_hash_idx"),
        ]

    def __str__(self) -> str:
        return f"memory {self.pk}"


class MemoryTag(models.Model):
    memory = models.ForeignKey(Memory, on_delete=models.CASCADE, related_name="tag_rows")
    tag = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tag", "memory"], name="memorytag_unique"),
        ]
        indexes = [models.Index(fields=["memory"], name="memorytag_memory_idx")]

    def __str__(self) -> str:
        return self.tag


class MemoryVersion(models.Model):
    """A previous state of a memory, kept on every update."""

    memory = models.ForeignKey(Memory, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    content = models.TextField()
    type = models.CharField(max_length=32, choices=MemoryType.choices)
    tags = models.JSONField(default=list)
    metadata = models.JSONField(default=dict)
    importance = models.FloatField()
    workspace = models.CharField(max_length=64)
    tier = models.CharField(max_length=16, choices=Tier.choices)
    expires_at = models.DateTimeField(null=True, blank=True)
    # When this version was written (the memory's updated_at at the time).
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["memory", "version"], name="memoryversion_unique"),
        ]

    def __str__(self) -> str:
        return f"memory {self.memory_id} v{self.version}"


class MemoryEmbedding(models.Model):
    """A memory's vector for semantic search, tagged with the model that made it."""

    memory = models.OneToOneField(
        Memory, on_delete=models.CASCADE, primary_key=True, related_name="embedding"
    )
    model = models.CharField(max_length=100)
    # float32, little-endian, L2-normalised.
    vector = models.BinaryField()

    def __str__(self) -> str:
        return f"embedding of memory {self.memory_id} ({self.model})"


class EdgeType(models.TextChoices):
    """Engram's link types between memories."""

    RELATED_TO = "related_to"
    SUPERSEDES = "supersedes"
    CONTRADICTS = "contradicts"
    IMPLEMENTS = "implements"
    EXTENDS = "extends"
    REFERENCES = "references"
    DEPENDS_ON = "depends_on"
    BLOCKS = "blocks"
    FOLLOWS_UP = "follows_up"


class MemoryLink(models.Model):
    """A typed, directed edge between two memories of the same tenant (Engram's memory_link).

    Deleting either memory deletes the link (the ORM cascades, as for tags and versions).
    """

    from_memory = models.ForeignKey(Memory, on_delete=models.CASCADE, related_name="links_out")
    to_memory = models.ForeignKey(Memory, on_delete=models.CASCADE, related_name="links_in")
    edge_type = models.CharField(
        max_length=32, choices=EdgeType.choices, default=EdgeType.RELATED_TO
    )
    strength = models.FloatField(default=1.0)
    source_context = models.TextField(blank=True, default="")
    pinned = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["from_memory", "to_memory", "edge_type"], name="memorylink_unique"
            ),
            models.CheckConstraint(
                condition=~Q(from_memory=models.F("to_memory")), name="memorylink_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.from_memory_id} -{self.edge_type}-> {self.to_memory_id}"


class IdempotencyRecord(models.Model):
    """An `Idempotency-Key` of POST /v1/memories or POST /v1/import (memories/idempotency.py).

    Pending (status_code null) while the first request with the key runs; then its response,
    stored in the transaction that wrote what the response describes, replayed for 24 hours.
    """

    key = models.CharField(max_length=255, unique=True)
    # sha256 of the method, path, query and canonical body of the first request.
    request_fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_idx")]

    def __str__(self) -> str:
        return f"idempotency key {self.key!r}"
