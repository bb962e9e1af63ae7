"""Indexing many new memories at once, for imports.

Every memory inserted fires the `memories_index_insert` trigger (migration 0003): two FTS5
inserts and a change-log row, one statement each per memory. For an import of 100k memories
that costs about twice the inserts themselves. Instead, `bulk_insert_indexing()` suspends that
trigger inside the caller's transaction and, when the block ends, indexes the new rows with
three INSERT … SELECT statements (the same values the trigger writes) and restores the trigger
from its stored SQL, all before the transaction commits. Other connections never see memories
without their index or a schema without the trigger; if anything fails, the rollback restores
both.

INDEXED_VALUES must stay the trigger's; tests/test_portability.py compares the index an import
builds with the one the trigger builds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction

from memories.tenant_db import DATA_PLANE_ALIAS

INSERT_TRIGGER = "memories_index_insert"
INDEXED_VALUES = """
    m.id,
    m.content,
    (SELECT coalesce(group_concat(value, ' '), '') FROM json_each(m.tags)),
    (SELECT coalesce(group_concat(value, ' '), '') FROM json_tree(m.metadata)
        WHERE type IN ('text', 'integer', 'real'))
"""
_NEW = "FROM memories_memory m WHERE m.id IN (SELECT value FROM json_each(%s)) ORDER BY m.id"
INDEX_STATEMENTS = (
    f"INSERT INTO memories_fts(rowid, content, tags, metadata) SELECT {INDEXED_VALUES} {_NEW}",
    "INSERT INTO memories_words(rowid, content, tags, metadata) "
    f"SELECT m.id, m.content, m.tags, m.metadata {_NEW}",
    f"INSERT INTO memories_change(memory_id) SELECT m.id {_NEW}",
)


@contextmanager
def bulk_insert_indexing(memory_ids: list[int]) -> Iterator[None]:
    """Insert the memories `memory_ids` inside the block; they are indexed when it ends.

    The block is a transaction (a savepoint inside the caller's), so an error in it rolls
    back the inserts and brings the trigger back.
    """
    with (
        transaction.atomic(using=DATA_PLANE_ALIAS),
        connections[DATA_PLANE_ALIAS].cursor() as cursor,
    ):
        cursor.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = %s", [INSERT_TRIGGER]
        )
        row = cursor.fetchone()
        if row is None:  # no trigger, nothing to stand in for
            yield
            return
        cursor.execute(f"DROP TRIGGER {INSERT_TRIGGER}")
        yield
        ids = json.dumps(memory_ids)
        for statement in INDEX_STATEMENTS:
            cursor.execute(statement, [ids])
        cursor.execute(row[0])
