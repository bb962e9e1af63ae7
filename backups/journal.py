"""Point-in-time recovery: replaying the change journal onto a restored backup.

Each tenant database journals every write and delete of a memory, a memory version and a link
(memories/migrations/0007_change_journal.py), and every backup carries the journal as it was.
A database as of time T is the newest backup B taken at or before T, plus the journal entries
after B's last one (`BackupRecord.journal_seq`) up to T, read from the oldest backup taken at
or after T (every restore first backs up the file it replaces, so one always exists).

Rows are replayed as upserts and deletes of the journaled tables; tags and vectors, derived
from a memory's row, are rebuilt from it. The replayed entries replace the ones the replay's
own writes journaled, so the restored journal reads as the original history.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.db import connections, transaction

from memories.models import Memory, MemoryEmbedding, MemoryLink, MemoryTag, MemoryVersion
from memories.tenant_db import DATA_PLANE_ALIAS
from memories.vector_index import store_embeddings

JOURNAL_COLUMNS = "seq, at, tbl, op, row_id, data"
MEMORY_TABLE = Memory._meta.db_table
REPLAYED_TABLES = frozenset({MEMORY_TABLE, MemoryVersion._meta.db_table, MemoryLink._meta.db_table})


class JournalGap(Exception):
    """The journal cannot bridge the backup and the time asked for."""


def journal_time(moment: dt.datetime) -> str:
    """A time as the journal writes it: UTC, milliseconds."""
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}"


def read_entries(source: Path, after_seq: int, until: dt.datetime) -> list[tuple[Any, ...]]:
    """The journal entries of `source` after `after_seq` up to `until`, oldest first."""
    connection = sqlite3.connect(source)
    try:
        if after_seq:
            # Pruning keeps every entry after the oldest kept backup's position.
            oldest = connection.execute("SELECT min(seq) FROM memories_journal").fetchone()[0]
            if oldest is not None and oldest > after_seq + 1:
                raise JournalGap(
                    "The journal no longer reaches back to that backup (pruned); "
                    "restore to a backup or a later time."
                )
        return connection.execute(
            f"SELECT {JOURNAL_COLUMNS} FROM memories_journal "
            "WHERE seq > ? AND at <= ? ORDER BY seq",
            [after_seq, journal_time(until)],
        ).fetchall()
    finally:
        connection.close()


def _upsert(cursor: Any, table: str, row: dict[str, Any]) -> None:
    columns = list(row)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id")
    cursor.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT(id) DO UPDATE SET {updates}",
        [row[c] for c in columns],
    )


def _delete_memory(cursor: Any, memory_id: int) -> None:
    for model, column in (
        (MemoryTag, "memory_id"),
        (MemoryEmbedding, "memory_id"),
        (MemoryVersion, "memory_id"),
        (MemoryLink, "from_memory_id"),
        (MemoryLink, "to_memory_id"),
    ):
        cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE {column} = %s", [memory_id])
    cursor.execute(f"DELETE FROM {MEMORY_TABLE} WHERE id = %s", [memory_id])


def _write_tags(cursor: Any, memory_id: int, tags_json: str) -> None:
    cursor.execute(f"DELETE FROM {MemoryTag._meta.db_table} WHERE memory_id = %s", [memory_id])
    for tag in dict.fromkeys(json.loads(tags_json or "[]")):
        cursor.execute(
            f"INSERT INTO {MemoryTag._meta.db_table} (memory_id, tag) VALUES (%s, %s)",
            [memory_id, tag],
        )


def _applied(entries: list[tuple[Any, ...]]) -> Iterator[tuple[str, str, int, dict | None]]:
    for _, _, table, op, row_id, data in entries:
        if table in REPLAYED_TABLES:
            yield table, op, row_id, json.loads(data) if data else None


def replay(entries: list[tuple[Any, ...]], base_seq: int) -> int:
    """Apply the entries to the bound database; returns how many were applied."""
    rewritten: set[int] = set()
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        with connections[DATA_PLANE_ALIAS].cursor() as cursor:
            for table, op, row_id, row in _applied(entries):
                if op == "delete":
                    if table == MEMORY_TABLE:
                        _delete_memory(cursor, row_id)
                        rewritten.discard(row_id)
                    else:
                        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [row_id])
                    continue
                assert row is not None
                _upsert(cursor, table, row)
                if table == MEMORY_TABLE:
                    _write_tags(cursor, row_id, row.get("tags", "[]"))
                    rewritten.add(row_id)
            # The replay's own writes were journaled with today's time: put history back.
            cursor.execute("DELETE FROM memories_journal WHERE seq > %s", [base_seq])
            for entry in entries:
                cursor.execute(
                    f"INSERT INTO memories_journal ({JOURNAL_COLUMNS}) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    list(entry),
                )
            cursor.execute(
                "UPDATE sqlite_sequence SET seq = (SELECT coalesce(max(seq), 0) "
                "FROM memories_journal) WHERE name = 'memories_journal'"
            )
        memories = list(Memory.objects.filter(pk__in=rewritten))
        MemoryEmbedding.objects.filter(memory__in=memories).delete()
        for start in range(0, len(memories), 500):
            store_embeddings(memories[start : start + 500])
    return len(entries)
