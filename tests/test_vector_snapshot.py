"""A tenant's vector snapshot: where a process that has not searched the tenant yet starts.

Each test empties this process's vector cache where another process would start cold, so the
search after it is served from the snapshot on disk (and the change log since), never from
what this process held.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from unittest import mock

import pytest
from django.db import connections

from memories import services, vector_index
from memories.embeddings import get_provider
from memories.tenant_db import DATA_PLANE_ALIAS, bind_tenant_database, tenant_database_path

from .test_search import in_another_thread, search

TOPICS = ["invoice", "kubernetes", "espresso", "glacier", "violin", "compiler", "orchard"]


def many_memories(tenant_id, count=100):
    """More memories than a snapshot lets the log catch up on, so the first search writes one."""
    with bind_tenant_database(tenant_id):
        return [
            services.create_memory(content=f"note {n} about the {TOPICS[n % len(TOPICS)]}").pk
            for n in range(count)
        ]


def snapshot_of(tenant):
    return vector_index.snapshot_path(tenant_database_path(tenant.tenant.id), get_provider().name)


def snapshot_seq(tenant) -> int:
    return struct.unpack_from("<8sq", snapshot_of(tenant).read_bytes())[1]


def semantic(api, query, limit=10):
    body = search(api, query, strategy="semantic", limit=limit)
    return [(result["memory"]["id"], result["score"]) for result in body["results"]]


def cold_start():
    """What a new worker process has: no vectors of any tenant in memory."""
    vector_index.vector_cache.clear()


def no_full_read():
    """Fail the test if the search reads every stored vector out of the database."""
    return mock.patch.object(
        vector_index, "_load_all", side_effect=AssertionError("read every vector")
    )


def test_the_first_search_writes_a_snapshot_a_new_process_starts_from_it(alice_api, acme):
    many_memories(acme.tenant.id)
    assert not snapshot_of(acme).exists()
    expected = semantic(alice_api, "espresso")
    assert snapshot_of(acme).exists()
    cold_start()
    with no_full_read():
        assert semantic(alice_api, "espresso") == expected


def test_writes_after_the_snapshot_show_in_a_new_process(alice_api, acme):
    ids = many_memories(acme.tenant.id)
    semantic(alice_api, "glacier")
    before = snapshot_seq(acme)
    added = in_another_thread(
        acme.tenant.id, lambda: services.create_memory(content="zebra crossing by the glacier")
    )
    in_another_thread(acme.tenant.id, lambda: services.delete_memory(ids[3]))  # a glacier note
    in_another_thread(
        acme.tenant.id, lambda: services.update_memory(ids[10], {"content": "zebra stripes"})
    )
    cold_start()
    with no_full_read():
        found = [memory_id for memory_id, _ in semantic(alice_api, "zebra glacier", limit=50)]
    assert found[0] == added.pk
    assert ids[10] in found
    assert ids[3] not in found
    assert snapshot_seq(acme) == before  # three changes: caught up from the log, not rewritten


def test_a_snapshot_far_behind_the_log_is_rewritten(alice_api, acme):
    many_memories(acme.tenant.id)
    semantic(alice_api, "violin")
    before = snapshot_seq(acme)
    many_memories(acme.tenant.id, count=vector_index.SNAPSHOT_STALE_AFTER + 1)
    cold_start()
    expected_count = len(semantic(alice_api, "violin", limit=100))
    assert snapshot_seq(acme) > before
    cold_start()
    with no_full_read():
        assert len(semantic(alice_api, "violin", limit=100)) == expected_count


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # cut short
        lambda data: b"",  # empty
        lambda data: b"garbage!" + data[8:],  # not a snapshot
        lambda data: data + b"\0" * 8,  # longer than its header says
        # another model's, of the same size
        lambda data: data[:34] + b"X" + data[35:],
    ],
    ids=["truncated", "empty", "bad-magic", "too-long", "other-model"],
)
def test_a_damaged_snapshot_is_ignored_and_replaced(alice_api, acme, damage):
    many_memories(acme.tenant.id)
    expected = semantic(alice_api, "orchard")
    path = snapshot_of(acme)
    path.write_bytes(damage(path.read_bytes()))
    cold_start()
    assert semantic(alice_api, "orchard") == expected
    cold_start()
    with no_full_read():  # the search above wrote a whole one again
        assert semantic(alice_api, "orchard") == expected


def test_a_snapshot_of_the_file_before_a_restore_is_not_used(alice_api, acme):
    ids = many_memories(acme.tenant.id)
    semantic(alice_api, "compiler")

    def restore_other_content() -> int:
        # What a restore leaves: other content, and a change log that starts past every
        # sequence the old file reached (backups/services.py), with nothing before it.
        for memory_id in ids[:50]:
            services.delete_memory(memory_id)
        quokka = services.create_memory(content="quokka compiler notes").pk
        with connections[DATA_PLANE_ALIAS].cursor() as cursor:
            cursor.execute("SELECT max(seq) FROM memories_change")
            (newest,) = cursor.fetchone()
            cursor.execute("DELETE FROM memories_change")
            cursor.execute(
                "INSERT INTO memories_change(seq, memory_id) VALUES (%s, 0)", [newest + 2]
            )
        return quokka

    quokka = in_another_thread(acme.tenant.id, restore_other_content)
    cold_start()
    found = [memory_id for memory_id, _ in semantic(alice_api, "quokka compiler", limit=100)]
    assert found[0] == quokka
    assert not set(found) & set(ids[:50])


def test_a_snapshot_that_cannot_be_written_does_not_fail_the_search(alice_api, acme):
    many_memories(acme.tenant.id)
    full = OSError(28, "No space left on device")
    with mock.patch.object(vector_index.tempfile, "NamedTemporaryFile", side_effect=full):
        assert semantic(alice_api, "invoice")
    assert not snapshot_of(acme).exists()
    assert not list(snapshot_of(acme).parent.glob(".vectors-*"))


def test_tenants_with_the_same_ids_never_share_a_snapshot(alice_api, bob_api, acme, globex):
    many_memories(acme.tenant.id)
    with bind_tenant_database(globex.tenant.id):
        bob_ids = [
            services.create_memory(content=f"note {n} about the weather").pk for n in range(100)
        ]
    alice = semantic(alice_api, "kubernetes")
    assert snapshot_of(acme) != snapshot_of(globex)
    cold_start()
    body = search(bob_api, "kubernetes", strategy="semantic", limit=100)
    assert all("kubernetes" not in result["memory"]["content"] for result in body["results"])
    assert {memory_id for memory_id, _ in semantic(bob_api, "weather", limit=100)} == set(bob_ids)
    cold_start()
    assert semantic(alice_api, "kubernetes") == alice


def test_cached_vectors_hold_no_file_open(alice_api, acme):
    # A worker caches ~100 tenants' vectors: none of them may keep a descriptor (a mapping
    # would), or open files would grow with the cache.
    many_memories(acme.tenant.id)
    semantic(alice_api, "espresso")
    cold_start()
    with no_full_read():
        semantic(alice_api, "espresso")  # served from the snapshot
    fds = Path("/proc/self/fd")
    targets = [os.readlink(link) for link in fds.iterdir() if link.is_symlink()]
    assert str(snapshot_of(acme)) not in targets
