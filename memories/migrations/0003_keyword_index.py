"""The keyword index: FTS5 over content, tags and metadata values, kept in sync by triggers.

Triggers keep the index right for every write path, in the writer's own transaction. A
migration that rebuilds memories_memory (SQLite's way to alter a table) drops them: such a
migration must run this file's TRIGGERS again (tests/test_search_index.py checks they exist).
"""

from django.db import migrations

INDEXED_VALUES = """
    new.id,
    new.content,
    (SELECT coalesce(group_concat(value, ' '), '') FROM json_each(new.tags)),
    (SELECT coalesce(group_concat(value, ' '), '') FROM json_tree(new.metadata)
        WHERE type IN ('text', 'integer', 'real'))
"""

CREATE_INDEX = [
    "CREATE VIRTUAL TABLE memories_fts USING fts5("
    "content, tags, metadata, tokenize = 'porter unicode61 remove_diacritics 2')",
    # The index's vocabulary: what fuzzy search corrects typos against.
    "CREATE VIRTUAL TABLE memories_fts_vocab USING fts5vocab(memories_fts, 'row')",
]

TRIGGERS = [
    f"""CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories_memory BEGIN
        INSERT INTO memories_fts(rowid, content, tags, metadata) VALUES ({INDEXED_VALUES});
    END""",
    """CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories_memory BEGIN
        DELETE FROM memories_fts WHERE rowid = old.id;
    END""",
    f"""CREATE TRIGGER memories_fts_update AFTER UPDATE OF content, tags, metadata
        ON memories_memory BEGIN
        DELETE FROM memories_fts WHERE rowid = old.id;
        INSERT INTO memories_fts(rowid, content, tags, metadata) VALUES ({INDEXED_VALUES});
    END""",
]

# Memories written before the index existed.
BACKFILL = [
    "INSERT INTO memories_fts(rowid, content, tags, metadata) SELECT "
    + INDEXED_VALUES.replace("new.", "m.")
    + " FROM memories_memory m"
]

DROP = [
    "DROP TRIGGER IF EXISTS memories_fts_update",
    "DROP TRIGGER IF EXISTS memories_fts_delete",
    "DROP TRIGGER IF EXISTS memories_fts_insert",
    "DROP TABLE IF EXISTS memories_fts_vocab",
    "DROP TABLE IF EXISTS memories_fts",
]


class Migration(migrations.Migration):
    dependencies = [("memories", "0002_embeddings")]
    operations = [migrations.RunSQL(CREATE_INDEX + TRIGGERS + BACKFILL, DROP)]
