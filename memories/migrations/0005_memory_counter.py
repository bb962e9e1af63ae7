"""How many memories a tenant stores, kept by triggers: quotas read one row, never COUNT(*)."""

from django.db import migrations

CREATE = [
    "CREATE TABLE memories_counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO memories_counter (name, value) "
    "SELECT 'memories', count(*) FROM memories_memory",
    """CREATE TRIGGER memories_counter_insert AFTER INSERT ON memories_memory BEGIN
        UPDATE memories_counter SET value = value + 1 WHERE name = 'memories';
    END""",
    """CREATE TRIGGER memories_counter_delete AFTER DELETE ON memories_memory BEGIN
        UPDATE memories_counter SET value = value - 1 WHERE name = 'memories';
    END""",
]

DROP = [
    "DROP TRIGGER IF EXISTS memories_counter_delete",
    "DROP TRIGGER IF EXISTS memories_counter_insert",
    "DROP TABLE IF EXISTS memories_counter",
]


class Migration(migrations.Migration):
    dependencies = [("memories", "0004_memory_links")]
    operations = [migrations.RunSQL(CREATE, DROP)]
