"""The change journal: every write and delete of a memory, a memory version or a link, with its
time, kept by triggers in the writer's own transaction (so no write path can skip it).

Backups carry it inside the database file; a restore to a point in time replays it from the
newest backup before that time (backups/pitr.py). Access counts are not journaled: the trigger
on memories_memory fires only when a column other than access_count/last_accessed_at is set.

`at` is SQLite's clock in UTC with millisecond precision ('YYYY-MM-DD HH:MM:SS.SSS').
Like 0003's, these triggers are dropped when a migration rebuilds one of the tables: such a
migration must create them again (TRIGGERS).
"""

from django.db import migrations

JOURNALED = {
    "memories_memory": (
        "id content type tags metadata importance workspace tier expires_at version "
        "content_hash access_count created_at updated_at last_accessed_at"
    ).split(),
    "memories_memoryversion": (
        "id memory_id version content type tags metadata importance workspace tier "
        "expires_at created_at"
    ).split(),
    "memories_memorylink": (
        "id from_memory_id to_memory_id edge_type strength source_context pinned created_at"
    ).split(),
}
NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
UNJOURNALED_COLUMNS = {"id", "access_count", "last_accessed_at"}


def _row(table: str) -> str:
    return "json_object(" + ", ".join(f"'{c}', new.{c}" for c in JOURNALED[table]) + ")"


def _triggers(table: str) -> list[str]:
    updated = ", ".join(c for c in JOURNALED[table] if c not in UNJOURNALED_COLUMNS)
    insert = f"INSERT INTO memories_journal(at, tbl, op, row_id, data) VALUES ({NOW}, '{table}'"
    return [
        f"""CREATE TRIGGER {table}_journal_insert AFTER INSERT ON {table} BEGIN
            {insert}, 'write', new.id, {_row(table)});
        END""",
        f"""CREATE TRIGGER {table}_journal_update AFTER UPDATE OF {updated} ON {table} BEGIN
            {insert}, 'write', new.id, {_row(table)});
        END""",
        f"""CREATE TRIGGER {table}_journal_delete AFTER DELETE ON {table} BEGIN
            {insert}, 'delete', old.id, NULL);
        END""",
    ]


CREATE = [
    "CREATE TABLE memories_journal ("
    "seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, tbl TEXT NOT NULL, "
    "op TEXT NOT NULL, row_id INTEGER NOT NULL, data TEXT)",
    "CREATE INDEX memories_journal_at ON memories_journal(at)",
]
TRIGGERS = [sql for table in JOURNALED for sql in _triggers(table)]
DROP = [
    *(
        f"DROP TRIGGER IF EXISTS {table}_journal_{event}"
        for table in JOURNALED
        for event in ("insert", "update", "delete")
    ),
    "DROP TABLE IF EXISTS memories_journal",
]


class Migration(migrations.Migration):
    dependencies = [("memories", "0006_idempotency_record")]
    operations = [migrations.RunSQL(CREATE + TRIGGERS, DROP)]
