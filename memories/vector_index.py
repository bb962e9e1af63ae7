"""Semantic search over a tenant's stored vectors, vectorised with numpy.

Vectors live in each tenant's database (MemoryEmbedding). A process keeps the vectors of
recently searched tenants in memory (bounded by ENGRAM_VECTOR_CACHE_MB) and catches up with
writes from any process by reading the memories_change log since the last sequence it saw, so
a search never rereads a whole tenant after a write and never misses one.

A tenant that is not in the cache is read from its vector snapshot (`vectors-*.bin` beside
the database: the cache's arrays as they were at a change sequence) and caught up from the log
since then; reading every stored vector out of SQLite and transposing it costs ~10 times as
much. The snapshot is only ever a starting point: one the log cannot bring up to date (a
restored file starts a new sequence) is ignored and rewritten, as is one that is unreadable.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from django.conf import settings
from django.db import connections

from memories.embeddings import EmbeddingError, EmbeddingProvider, HashedProvider, get_provider
from memories.models import MemoryEmbedding
from memories.tenant_db import DATA_PLANE_ALIAS, current_database_path

logger = logging.getLogger(__name__)


class Embeddable(Protocol):
    """What a vector is computed from: a Memory, or an import's row before it is one."""

    pk: int
    content: str
    tags: list[str]


def embedding_text(memory: Embeddable) -> str:
    return " ".join([memory.content, *memory.tags])


def store_embeddings(
    memories: Sequence[Embeddable], provider: EmbeddingProvider | None = None
) -> bool:
    """Compute and save the vectors of these memories in the bound tenant's database.

    A provider failure does not fail the write: the memory is kept without a vector and
    `reembed_memories` fills it in later. Returns whether vectors were stored.
    """
    if not memories:
        return True
    provider = provider or get_provider()
    try:
        vectors = provider.embed([embedding_text(memory) for memory in memories])
    except EmbeddingError:
        logger.exception("embedding failed; memories kept without vectors")
        return False
    # An upsert with one executemany: what bulk_create(update_conflicts=True) sends, without
    # building a model instance per vector (imports store 100k of them).
    table = MemoryEmbedding._meta.db_table
    with connections[DATA_PLANE_ALIAS].cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (memory_id, model, vector) VALUES (%s, %s, %s) "
            "ON CONFLICT (memory_id) DO UPDATE "
            "SET model = excluded.model, vector = excluded.vector",
            [
                (memory.pk, provider.name, vector.tobytes())
                for memory, vector in zip(memories, vectors, strict=True)
            ],
        )
    return True


# A dict entry of int -> int with both ints as objects (ids above 256 are).
SLOT_ENTRY_BYTES = 100


@dataclass
class TenantVectors:
    """One tenant's vectors of one model, one per column of `columns` (dimension x capacity),
    the memory ids in `ids` (-1: a free slot, whose column is zero).

    Column-wise because a hashed query vector is sparse (a few words: ~40 of 256 dimensions):
    its similarity to every vector reads only the rows of its non-zero dimensions, a sixth of
    the matrix (1.2 vs 4.4 ms at 100k memories; 14 ms row-wise).
    """

    model: str
    dimension: int
    last_seq: int = 0
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    columns: np.ndarray = field(default_factory=lambda: np.zeros((1, 0), dtype=np.float32))
    slots: dict[int, int] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)
    count: int = 0
    # For the hashed provider: how many vectors use each dimension (the IDF of TF-IDF).
    document_frequency: np.ndarray | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.columns.shape[0] != self.dimension:
            # No vectors yet, but the right height: a query against an empty tenant scores nothing.
            self.columns = np.zeros((self.dimension, 0), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        """Memory held, the slot map's Python objects included (~100 bytes an entry)."""
        return int(self.columns.nbytes + self.ids.nbytes) + SLOT_ENTRY_BYTES * len(self.slots)

    def _grow(self, needed: int) -> None:
        capacity = len(self.ids)
        if self.count + needed <= capacity and not self.free:
            return
        if len(self.free) >= needed:
            return
        # A quarter more, not double: a cached tenant's first new memory would otherwise
        # double what it holds, and the cache would keep half as many tenants.
        new_capacity = max(16, capacity + capacity // 4, self.count + needed)
        columns = np.zeros((self.dimension, new_capacity), dtype=np.float32)
        columns[:, :capacity] = self.columns[:, :capacity]
        ids = np.full(new_capacity, -1, dtype=np.int64)
        ids[:capacity] = self.ids
        self.columns, self.ids = columns, ids

    def put(self, memory_id: int, vector: np.ndarray) -> None:
        slot = self.slots.get(memory_id)
        if slot is None:
            self._grow(1)
            slot = self.free.pop() if self.free else self.count
            self.count = max(self.count, slot + 1)
            self.slots[memory_id] = slot
            self.ids[slot] = memory_id
        elif self.document_frequency is not None:
            self.document_frequency -= self.columns[:, slot] != 0
        self.columns[:, slot] = vector
        if self.document_frequency is not None:
            self.document_frequency += vector != 0

    def drop(self, memory_id: int) -> None:
        slot = self.slots.pop(memory_id, None)
        if slot is None:
            return
        if self.document_frequency is not None:
            self.document_frequency -= self.columns[:, slot] != 0
        self.columns[:, slot] = 0
        self.ids[slot] = -1
        self.free.append(slot)

    def scores(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a copy of the ids, cosine scores) of every slot; a free slot scores 0."""
        used = self.count
        nonzero = np.flatnonzero(query)
        if 2 * len(nonzero) > self.dimension:  # a dense query (minilm, openai): one BLAS call
            return self.ids[:used].copy(), query @ self.columns[:, :used]
        scores = np.zeros(used, dtype=np.float32)
        term = np.empty(used, dtype=np.float32)
        for dimension in nonzero:
            np.multiply(self.columns[dimension, :used], query[dimension], out=term)
            scores += term
        return self.ids[:used].copy(), scores


class VectorCache:
    """Per-process LRU of TenantVectors, keyed by tenant database file and model."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[Path, str], TenantVectors] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def vectors(self, provider: EmbeddingProvider) -> TenantVectors:
        """The bound tenant's vectors of this provider's model, brought up to date."""
        path = current_database_path()
        assert path is not None, "bind a tenant database first"
        key = (path, provider.name)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = TenantVectors(model=provider.name, dimension=provider.dimension)
                if isinstance(provider, HashedProvider):
                    entry.document_frequency = np.zeros(provider.dimension, dtype=np.int64)
                self._entries[key] = entry
            self._entries.move_to_end(key)
        with entry.lock:
            if entry.last_seq == 0:
                snapshot = snapshot_path(path, provider.name)
                read_snapshot(entry, snapshot)
                if _catch_up(entry) > SNAPSHOT_STALE_AFTER:
                    write_snapshot(entry, snapshot)
            else:
                _catch_up(entry)
        self._evict()
        return entry

    def _evict(self) -> None:
        budget = settings.ENGRAM_VECTOR_CACHE_MB * 1024 * 1024
        with self._lock:
            total = sum(entry.nbytes for entry in self._entries.values())
            while len(self._entries) > 1 and total > budget:
                _, evicted = self._entries.popitem(last=False)
                total -= evicted.nbytes


def _load_all(entry: TenantVectors, cursor: object) -> None:
    """Replace the entry's vectors with every stored one: one array built from all the blobs.

    A tenant's first search in this process pays for this, so it is kept to a few array
    operations rather than a Python step per vector.
    """
    table = MemoryEmbedding._meta.db_table
    cursor.execute(f"SELECT memory_id, vector FROM {table} WHERE model = %s", [entry.model])
    width = entry.dimension * np.dtype(np.float32).itemsize
    rows = [(memory_id, blob) for memory_id, blob in cursor.fetchall() if len(blob) == width]
    count = len(rows)
    ids = np.full(max(16, count), -1, dtype=np.int64)
    columns = np.zeros((entry.dimension, len(ids)), dtype=np.float32)
    if count:
        ids[:count] = [memory_id for memory_id, _ in rows]
        packed = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32)
        columns[:, :count] = packed.reshape(count, entry.dimension).T
    entry.ids, entry.columns, entry.count, entry.free = ids, columns, count, []
    entry.slots = dict(zip(ids[:count].tolist(), range(count), strict=True))
    if entry.document_frequency is not None:
        entry.document_frequency = np.count_nonzero(columns[:, :count], axis=1).astype(np.int64)


def _load(entry: TenantVectors, cursor: object, memory_ids: Sequence[int]) -> None:
    """Bring these memories' vectors up to date (a vector gone → its row freed)."""
    table = MemoryEmbedding._meta.db_table
    placeholders = ", ".join(["%s"] * len(memory_ids))
    cursor.execute(
        f"SELECT memory_id, vector FROM {table} WHERE model = %s AND memory_id IN ({placeholders})",
        [entry.model, *memory_ids],
    )
    found = set()
    for memory_id, blob in cursor.fetchall():
        vector = np.frombuffer(blob, dtype=np.float32)
        if vector.shape == (entry.dimension,):
            entry.put(memory_id, vector)
            found.add(memory_id)
    for memory_id in set(memory_ids) - found:
        entry.drop(memory_id)


def _catch_up(entry: TenantVectors) -> int:
    """Bring the entry up to the log's newest change; how many vectors it read (every stored
    one when the log cannot take the entry from where it is: nothing yet, or a sequence the
    file never had or no longer has)."""
    with connections[DATA_PLANE_ALIAS].cursor() as cursor:
        # Two index lookups (min() and max() together would scan the whole log).
        cursor.execute(
            "SELECT (SELECT coalesce(min(seq), 0) FROM memories_change), "
            "(SELECT coalesce(max(seq), 0) FROM memories_change)"
        )
        oldest, newest = cursor.fetchone()
        if newest == entry.last_seq:
            return 0
        if entry.last_seq == 0 or not oldest - 1 <= entry.last_seq <= newest:
            _load_all(entry, cursor)
            read = entry.count
        else:
            cursor.execute(
                "SELECT DISTINCT memory_id FROM memories_change WHERE seq > %s",
                [entry.last_seq],
            )
            changed = [row[0] for row in cursor.fetchall()]
            for start in range(0, len(changed), 500):
                _load(entry, cursor, changed[start : start + 500])
            read = len(changed)
        entry.last_seq = newest
        return read


# A snapshot is rewritten when bringing it up to date read more vectors than this: a tenant's
# first search in a process then never reads more than this many vectors from SQLite.
SNAPSHOT_STALE_AFTER = 64
_SNAPSHOT_MAGIC = b"ENGRAMV1"
_SNAPSHOT_HEADER = struct.Struct("<8sqqqH")  # magic, last_seq, slots, dimension, model length


def snapshot_path(database: Path, model: str) -> Path:
    """The vector snapshot of this model beside the tenant's database file."""
    digest = hashlib.sha256(model.encode()).hexdigest()[:16]
    return database.with_name(f"vectors-{digest}.bin")


def _arrays_offset(name_length: int) -> int:
    """Where the arrays start: after the header and the model's name, 64-byte aligned."""
    return -(-(_SNAPSHOT_HEADER.size + name_length) // 64) * 64


def read_snapshot(entry: TenantVectors, path: Path) -> bool:
    """Fill an empty entry from its snapshot; False (entry untouched) when there is none or it
    is not one of this model and dimension, whole.

    Read into memory, not mapped: Python's mmap keeps a descriptor of the file open for as long
    as the mapping lives, one per cached tenant (bench/load.py saw a worker hold 60).
    """
    try:
        with path.open("rb") as file:
            data = bytearray(os.fstat(file.fileno()).st_size)
            if file.readinto(data) != len(data):
                return False
    except OSError:
        return False
    try:
        magic, last_seq, slots, dimension, name_length = _SNAPSHOT_HEADER.unpack_from(data)
    except struct.error:
        return False
    model = bytes(data[_SNAPSHOT_HEADER.size : _SNAPSHOT_HEADER.size + name_length])
    offset = _arrays_offset(name_length)
    expected = offset + slots * 8 + dimension * slots * 4 + dimension * 8
    if (
        magic != _SNAPSHOT_MAGIC
        or model != entry.model.encode()
        or dimension != entry.dimension
        or last_seq <= 0
        or slots < 0
        or len(data) != expected
    ):
        return False
    ids_end = offset + slots * 8
    columns_end = ids_end + dimension * slots * 4
    ids = np.frombuffer(data, dtype=np.int64, count=slots, offset=offset)
    columns = np.frombuffer(
        data, dtype=np.float32, count=dimension * slots, offset=ids_end
    ).reshape(dimension, slots)
    used = ids != -1
    entry.ids, entry.columns, entry.count = ids, columns, slots
    entry.slots = dict(zip(ids[used].tolist(), np.flatnonzero(used).tolist(), strict=True))
    entry.free = np.flatnonzero(~used).tolist()
    if entry.document_frequency is not None:
        entry.document_frequency = np.frombuffer(
            data, dtype=np.int64, count=dimension, offset=columns_end
        ).copy()
    entry.last_seq = last_seq
    return True


def write_snapshot(entry: TenantVectors, path: Path) -> None:
    """Save the entry as its tenant's snapshot: written aside, then renamed over the old one,
    so a reader sees one whole snapshot or the other. A failure (a full disk) only logs."""
    model = entry.model.encode()
    used = entry.count
    frequency = (
        entry.document_frequency
        if entry.document_frequency is not None
        else np.zeros(entry.dimension, dtype=np.int64)
    )
    header = _SNAPSHOT_HEADER.pack(
        _SNAPSHOT_MAGIC, entry.last_seq, used, entry.dimension, len(model)
    )
    temporary = None
    try:
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=".vectors-", suffix=".tmp", delete=False
        ) as file:
            temporary = Path(file.name)
            file.write(header + model)
            file.write(b"\0" * (_arrays_offset(len(model)) - len(header) - len(model)))
            file.write(entry.ids[:used].astype(np.int64).tobytes())
            file.write(np.ascontiguousarray(entry.columns[:, :used]).tobytes())
            file.write(frequency.astype(np.int64).tobytes())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError:
        logger.warning("could not write the vector snapshot %s", path, exc_info=True)
        if temporary is not None:
            temporary.unlink(missing_ok=True)


vector_cache = VectorCache()


class SemanticRanking:
    """A query's cosine similarity to every vector of the bound tenant, read best first."""

    def __init__(self, query: str, provider: EmbeddingProvider | None = None) -> None:
        provider = provider or get_provider()
        entry = vector_cache.vectors(provider)
        vector = provider.embed([query])[0]
        with entry.lock:
            if entry.document_frequency is not None and entry.slots:
                # IDF per hashed dimension: rare features count for more than common ones.
                idf = np.log((len(entry.slots) + 1) / (entry.document_frequency + 1)) + 1.0
                vector = vector * idf.astype(np.float32)
                norm = np.linalg.norm(vector)
                vector = vector / norm if norm else vector
            self.ids, self.scores = entry.scores(vector)
        # Only vectors that share something with the query rank (free slots score 0).
        self.matching = int(np.count_nonzero(self.scores > 0))

    def __len__(self) -> int:
        return self.matching

    def top(self, count: int) -> list[tuple[int, float]]:
        """The `count` best (id, score) pairs, best first; ties go to the newer memory."""
        count = min(count, self.matching)
        if count == 0:
            return []
        # Selecting among all of 100k scores takes ~1 ms. A threshold that about 4 x count
        # scores reach (judging by every 16th score) leaves a few hundred to select among;
        # when fewer than `count` reach it, the selection is among all.
        among = np.arange(len(self.scores))
        sample = self.scores[::16]
        wanted = count // 4 + 1
        if wanted < len(sample):
            threshold = np.partition(sample, len(sample) - wanted)[len(sample) - wanted]
            above = np.flatnonzero(self.scores >= threshold)
            if len(above) >= count:
                among = above
        kth = len(among) - count
        best = among[np.argpartition(self.scores[among], kth)[kth:]]
        order = best[np.lexsort((-self.ids[best], -self.scores[best]))]
        return [(int(self.ids[i]), float(self.scores[i])) for i in order]
