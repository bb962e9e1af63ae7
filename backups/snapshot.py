"""Consistent, verified copies of a tenant's SQLite file.

The copy is made with SQLite's online backup API in one step: one read transaction on the
live file (in WAL mode writers carry on meanwhile), so the copy is exactly the database as of
one commit. It is then checked (`PRAGMA integrity_check` and FTS5's own integrity check of
both search indexes), switched out of WAL mode so it is one self-contained file, and fsynced.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

FTS_TABLES = ("memories_fts", "memories_words")
JOURNAL_TABLE = "memories_journal"


class SnapshotInvalid(Exception):
    """The database copy fails SQLite's or FTS5's integrity check."""


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _has_table(connection: sqlite3.Connection, name: str) -> bool:
    row = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE name = ? AND type IN ('table', 'view')", [name]
    ).fetchone()
    return row is not None


def journal_position(connection: sqlite3.Connection) -> int:
    """The newest change-journal entry in the database (0 if none, or no journal yet)."""
    if not _has_table(connection, JOURNAL_TABLE):
        return 0
    return connection.execute(f"SELECT coalesce(max(seq), 0) FROM {JOURNAL_TABLE}").fetchone()[0]


def take_snapshot(source: Path, target: Path) -> int:
    """Copy the live database at `source` to `target`; returns the copy's journal position."""
    live = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True, timeout=30)
    try:
        copy = sqlite3.connect(target)
        try:
            live.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
            position = journal_position(copy)
        finally:
            copy.close()
    finally:
        live.close()
    fsync_path(target)
    return position


def verify_database(path: Path, *, quick: bool = False) -> None:
    """Raise SnapshotInvalid unless the file passes SQLite's and FTS5's integrity checks.

    `quick`: SQLite's `quick_check` alone (its structure, without checking every index
    against its table, nor the FTS5 indexes against their text): a third of the time.
    """
    connection = sqlite3.connect(path)
    try:
        check = "quick_check" if quick else "integrity_check"
        result = [row[0] for row in connection.execute(f"PRAGMA {check}")]
        if result != ["ok"]:
            raise SnapshotInvalid(f"{check}: {'; '.join(map(str, result[:5]))}")
        for table in () if quick else FTS_TABLES:
            if _has_table(connection, table):
                try:
                    connection.execute(f"INSERT INTO {table}({table}) VALUES ('integrity-check')")
                except sqlite3.DatabaseError as error:
                    raise SnapshotInvalid(f"{table} integrity-check: {error}") from None
        connection.rollback()
    except sqlite3.DatabaseError as error:
        raise SnapshotInvalid(str(error)) from None
    finally:
        connection.close()
