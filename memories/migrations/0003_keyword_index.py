"""The search indexes, kept in sync by triggers in the writer's own transaction.

- memories_fts: FTS5 with the porter stemmer over content, tags and metadata values (BM25).
- memories_words: FTS5 without stemming over the same rows (external content: no second copy
  of the text); its vocabulary is what fuzzy search corrects typos against.
- memories_change: a log of changed memory ids, so per-process caches (vectors, vocabulary)
  catch up with writes from any process without rereading everything.

A migration that rebuilds memories_memory or memories_memoryembedding (SQLite's way to alter
a table) drops their triggers: such a migration must run TRIGGERS again
(tests/test_search_index.py checks that they exist on a new tenant).
"""

from django.db import migrations

INDEXED_VALUES = """
    new.id,
    new.content,
    (SELECT coalesce(group_concat(value, ' '), '') FROM json_each(new.tags)),
    (SELECT coalesce(group_concat(value, ' '), '') FROM json_tree(new.metadata)
        WHERE type IN ('text', 'integer', 'real'))
"""

CREATE = [
    "CREATE VIRTUAL TABLE memories_fts USING fts5("
    "content, tags, metadata, tokenize = 'porter unicode61 remove_diacritics 2')",
    "CREATE VIRTUAL TABLE memories_words USING fts5("
    "content, tags, metadata, content = 'memories_memory', content_rowid = 'id', "
    "tokenize = 'unicode61 remove_diacritics 2')",
    "CREATE VIRTUAL TABLE memories_words_vocab USING fts5vocab(memories_words, 'row')",
    "CREATE TABLE memories_change ("
    "seq INTEGER PRIMARY KEY AUTOINCREMENT, memory_id INTEGER NOT NULL)",
]

TRIGGERS = [
    f"""CREATE TRIGGER memories_index_insert AFTER INSERT ON memories_memory BEGIN
        INSERT INTO memories_fts(rowid, content, tags, metadata) VALUES ({INDEXED_VALUES});
        INSERT INTO memories_words(rowid, content, tags, metadata)
            VALUES (new.id, new.content, new.tags, new.metadata);
        INSERT INTO memories_change(memory_id) VALUES (new.id);
    END""",
    """CREATE TRIGGER memories_index_delete AFTER DELETE ON memories_memory BEGIN
        DELETE FROM memories_fts WHERE rowid = old.id;
        INSERT INTO memories_words(memories_words, rowid, content, tags, metadata)
            VALUES ('delete', old.id, old.content, old.tags, old.metadata);
        INSERT INTO memories_change(memory_id) VALUES (old.id);
    END""",
    f"""CREATE TRIGGER memories_index_update AFTER UPDATE OF content, tags, metadata
        ON memories_memory BEGIN
        DELETE FROM memories_fts WHERE rowid = old.id;
        INSERT INTO memories_fts(rowid, content, tags, metadata) VALUES ({INDEXED_VALUES});
        INSERT INTO memories_words(memories_words, rowid, content, tags, metadata)
            VALUES ('delete', old.id, old.content, old.tags, old.metadata);
        INSERT INTO memories_words(rowid, content, tags, metadata)
            VALUES (new.id, new.content, new.tags, new.metadata);
        INSERT INTO memories_change(memory_id) VALUES (new.id);
    END""",
    """CREATE TRIGGER memories_embedding_change AFTER INSERT ON memories_memoryembedding BEGIN
        INSERT INTO memories_change(memory_id) VALUES (new.memory_id);
    END""",
    """CREATE TRIGGER memories_embedding_update AFTER UPDATE ON memories_memoryembedding BEGIN
        INSERT INTO memories_change(memory_id) VALUES (new.memory_id);
    END""",
    """CREATE TRIGGER memories_embedding_delete AFTER DELETE ON memories_memoryembedding BEGIN
        INSERT INTO memories_change(memory_id) VALUES (old.memory_id);
    END""",
]

# Memories written before the indexes existed.
BACKFILL = [
    "INSERT INTO memories_fts(rowid, content, tags, metadata) SELECT "
    + INDEXED_VALUES.replace("new.", "m.")
    + " FROM memories_memory m",
    "INSERT INTO memories_words(memories_words) VALUES ('rebuild')",
]

DROP = [
    *(
        f"DROP TRIGGER IF EXISTS {name}"
        for name in (
            "memories_index_insert",
            "memories_index_delete",
            "memories_index_update",
            "memories_embedding_change",
            "memories_embedding_update",
            "memories_embedding_delete",
        )
    ),
    "DROP TABLE IF EXISTS memories_change",
    "DROP TABLE IF EXISTS memories_words_vocab",
    "DROP TABLE IF EXISTS memories_words",
    "DROP TABLE IF EXISTS memories_fts",
]


class Migration(migrations.Migration):
    dependencies = [("memories", "0002_embeddings")]
    operations = [migrations.RunSQL(CREATE + TRIGGERS + BACKFILL, DROP)]
