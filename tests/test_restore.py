"""Restoring tenants from backups in S3 (moto on loopback): to a backup, or to a point in time."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import sqlite3
import tarfile
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connections
from django.utils import timezone

from backups import crypto, tasks
from backups.models import BackupReason, BackupRecord, BackupStatus
from backups.services import back_up_tenant, maintenance, prune_tenant_backups
from backups.storage import backup_storage
from memories.access import access_counter
from memories.services import create_memory, memory_versions
from memories.tenant_db import bind_tenant_database, tenant_database_path
from tenants.models import AuditEvent

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tasks_inline")]


def write(api, content: str, **fields) -> int:
    response = api.post("/v1/memories", {"content": content, **fields})
    assert response.status_code == 201, response.content
    return response.json()["id"]


def contents(api) -> list[str]:
    response = api.get("/v1/memories", {"limit": 100, "sort": "created_at"})
    assert response.status_code == 200, response.content
    return sorted(memory["content"] for memory in response.json()["data"])


def searched(api, query: str) -> list[str]:
    response = api.post("/v1/search", {"query": query, "strategy": "keyword"})
    assert response.status_code == 200, response.content
    return sorted(result["memory"]["content"] for result in response.json()["results"])


def a_moment() -> timezone.datetime:
    """A time strictly between the writes before and after it."""
    time.sleep(0.01)
    moment = timezone.now()
    time.sleep(0.01)
    return moment


def restore(slug: str, *args: str) -> dict:
    out = io.StringIO()
    call_command("restore_tenant", slug, *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_it_restores_the_exact_earlier_content(acme, alice_api, s3_storage):
    first = write(alice_api, "the vault code is 1234", tags=["vault"])
    backup = back_up_tenant(acme.tenant)
    write(alice_api, "written after the backup")
    alice_api.patch(f"/v1/memories/{first}", {"content": "the vault code changed"})

    result = restore("acme", "--backup", str(backup.pk))

    assert result["backup"] == backup.pk
    assert contents(alice_api) == ["the vault code is 1234"]
    assert searched(alice_api, "vault") == ["the vault code is 1234"]
    assert searched(alice_api, "changed") == []
    memory = alice_api.get(f"/v1/memories/{first}").json()
    assert memory["version"] == 1 and memory["tags"] == ["vault"]


def test_the_replaced_database_is_kept_as_a_backup_of_its_own(acme, alice_api, s3_storage):
    backup = back_up_tenant(acme.tenant)
    write(alice_api, "only in the newer state")
    result = restore("acme", "--backup", str(backup.pk))
    previous = BackupRecord.objects.get(pk=result["previous_backup"])
    assert previous.reason == BackupReason.PRE_RESTORE
    assert contents(alice_api) == []

    restore("acme", "--backup", str(previous.pk))
    assert contents(alice_api) == ["only in the newer state"]


def test_point_in_time_gives_exactly_the_memories_of_that_time(acme, alice_api, s3_storage):
    back_up_tenant(acme.tenant)
    kept = write(alice_api, "alpha first draft")
    doomed = write(alice_api, "bravo will be deleted")
    t1 = a_moment()
    alice_api.patch(f"/v1/memories/{kept}", {"content": "alpha second draft", "tags": ["edited"]})
    back_up_tenant(acme.tenant)  # a backup between the points in time
    write(alice_api, "charlie arrives")
    t2 = a_moment()
    assert alice_api.delete(f"/v1/memories/{doomed}").status_code == 204
    write(alice_api, "delta arrives last")
    t3 = a_moment()
    write(alice_api, "echo after every point")

    restore("acme", "--at", t1.isoformat())
    assert contents(alice_api) == ["alpha first draft", "bravo will be deleted"]
    assert alice_api.get(f"/v1/memories/{kept}").json()["version"] == 1
    assert searched(alice_api, "draft") == ["alpha first draft"]

    restore("acme", "--at", t2.isoformat())
    assert contents(alice_api) == ["alpha second draft", "bravo will be deleted", "charlie arrives"]
    memory = alice_api.get(f"/v1/memories/{kept}").json()
    assert memory["version"] == 2 and memory["tags"] == ["edited"]
    with bind_tenant_database(acme.tenant.id):
        _, versions = memory_versions(kept)
    assert [(v.version, v.content) for v in versions] == [(1, "alpha first draft")]

    restore("acme", "--at", t3.isoformat())
    assert contents(alice_api) == ["alpha second draft", "charlie arrives", "delta arrives last"]
    assert searched(alice_api, "bravo") == []
    assert searched(alice_api, "delta") == ["delta arrives last"]


def test_a_time_after_a_restore_follows_the_restored_history(acme, alice_api, s3_storage):
    backup = back_up_tenant(acme.tenant)
    write(alice_api, "lost by the restore")
    restore("acme", "--backup", str(backup.pk))
    write(alice_api, "written after the restore")
    after = a_moment()
    write(alice_api, "too late")

    restore("acme", "--at", after.isoformat())
    assert contents(alice_api) == ["written after the restore"]


def semantic(api, query: str) -> list[str]:
    response = api.post("/v1/search", {"query": query, "strategy": "semantic", "limit": 5})
    assert response.status_code == 200, response.content
    return [result["memory"]["content"] for result in response.json()["results"]]


def test_semantic_search_sees_the_restored_memories(acme, alice_api, s3_storage):
    back_up_tenant(acme.tenant)
    write(alice_api, "penguins live in antarctica")
    before = a_moment()
    write(alice_api, "giraffes have long necks")
    assert "giraffes have long necks" in semantic(alice_api, "giraffes necks")

    restore("acme", "--at", before.isoformat())
    assert "giraffes have long necks" not in semantic(alice_api, "giraffes necks")
    assert "penguins live in antarctica" in semantic(alice_api, "penguins antarctica")


def test_a_time_before_every_backup_is_refused(acme, alice_api, s3_storage):
    early = timezone.now()
    time.sleep(0.01)
    back_up_tenant(acme.tenant)
    write(alice_api, "still here")
    with pytest.raises(CommandError, match="No backup"):
        restore("acme", "--at", early.isoformat())
    assert contents(alice_api) == ["still here"]


def test_a_time_in_the_future_is_refused(acme, s3_storage):
    back_up_tenant(acme.tenant)
    with pytest.raises(CommandError, match="future"):
        restore("acme", "--at", "2999-01-01T00:00:00Z")


def test_a_time_without_offset_or_unparseable_is_refused(acme, s3_storage):
    with pytest.raises(CommandError, match="offset"):
        restore("acme", "--at", "2026-01-01T00:00:00")
    with pytest.raises(CommandError, match="ISO-8601"):
        restore("acme", "--at", "yesterday")


def test_a_tampered_backup_is_refused_and_nothing_is_swapped(acme, alice_api, s3_storage):
    backup = back_up_tenant(acme.tenant)
    write(alice_api, "current content")
    data = bytearray(s3_storage.read(backup.storage_key))
    data[-100] ^= 0x01
    s3_storage.write(backup.storage_key, bytes(data))
    backup.sha256 = hashlib.sha256(bytes(data)).hexdigest()
    backup.save()

    with pytest.raises(CommandError, match=r"Nothing was restored.*authenticate"):
        restore("acme", "--backup", str(backup.pk))
    assert contents(alice_api) == ["current content"]
    assert alice_api.get("/v1/memories").status_code == 200  # maintenance lifted


def test_a_backup_changed_in_storage_fails_its_checksum(acme, alice_api, s3_storage):
    backup = back_up_tenant(acme.tenant)
    write(alice_api, "current content")
    s3_storage.write(backup.storage_key, s3_storage.read(backup.storage_key)[:-10])
    with pytest.raises(CommandError, match="checksum"):
        restore("acme", "--backup", str(backup.pk))
    assert contents(alice_api) == ["current content"]


def test_another_tenants_backup_is_refused(acme, globex, alice_api, bob_api, s3_storage):
    theirs = back_up_tenant(globex.tenant)
    write(alice_api, "acme's own")
    with pytest.raises(CommandError, match="has no backup"):
        restore("acme", "--backup", str(theirs.pk))
    # Even copied over acme's own backup, the file names globex in its authenticated header.
    mine = back_up_tenant(acme.tenant)
    s3_storage.write(mine.storage_key, s3_storage.read(theirs.storage_key))
    mine.sha256 = theirs.sha256
    mine.save()
    with pytest.raises(CommandError, match="another tenant"):
        restore("acme", "--backup", str(mine.pk))
    assert contents(alice_api) == ["acme's own"]


def test_maintenance_answers_503_for_that_tenant_only(acme, globex, alice_api, bob_api):
    with maintenance(acme.tenant):
        response = alice_api.get("/v1/memories")
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        assert 1 <= int(response["Retry-After"]) <= 30
        assert bob_api.get("/v1/memories").status_code == 200
    assert alice_api.get("/v1/memories").status_code == 200


def test_a_restore_is_audited(acme, s3_storage):
    backup = back_up_tenant(acme.tenant)
    restore("acme", "--backup", str(backup.pk))
    event = AuditEvent.objects.get(tenant=acme.tenant, action="tenant.restored")
    assert event.metadata["backup"] == backup.pk and event.actor_label == "command"


def test_pruning_keeps_hourly_daily_and_weekly_backups(acme, alice_api, s3_storage, settings):
    settings.ENGRAM_BACKUP_KEEP_HOURLY = 3
    settings.ENGRAM_BACKUP_KEEP_DAILY = 2
    settings.ENGRAM_BACKUP_KEEP_WEEKLY = 3
    now = dt.datetime(2026, 12, 2, 12, 30, tzinfo=dt.UTC)  # a Wednesday, ISO week 49
    ages = {
        "now": dt.timedelta(0),
        "same hour": dt.timedelta(minutes=10),
        "1 h": dt.timedelta(hours=1),
        "2 h": dt.timedelta(hours=2),
        "5 h": dt.timedelta(hours=5),
        "1 d": dt.timedelta(days=1),
        "1 d earlier": dt.timedelta(days=1, minutes=5),
        "4 d": dt.timedelta(days=4),  # week 48
        "10 d": dt.timedelta(days=10),  # week 47
        "60 d": dt.timedelta(days=60),
    }
    backups = {}
    for name, age in ages.items():
        write(alice_api, f"written before the {name} backup")
        record = back_up_tenant(acme.tenant)
        record.taken_at = now - age
        record.save()
        backups[name] = record

    pruned = prune_tenant_backups(acme.tenant, now=now)

    assert sorted(pruned) == sorted(
        backups[name].pk for name in ("same hour", "5 h", "1 d earlier", "60 d")
    )
    kept = [backups[name] for name in ("now", "1 h", "2 h", "1 d", "4 d", "10 d")]
    assert s3_storage.keys(f"tenants/{acme.tenant.id}/db/") == sorted(r.storage_key for r in kept)
    assert set(
        BackupRecord.objects.filter(tenant=acme.tenant, status="pruned").values_list(
            "pk", flat=True
        )
    ) == set(pruned)


def test_the_pruning_task_prunes_every_tenant(acme, globex, s3_storage, settings):
    settings.ENGRAM_BACKUP_KEEP_HOURLY = 1
    settings.ENGRAM_BACKUP_KEEP_DAILY = 1
    settings.ENGRAM_BACKUP_KEEP_WEEKLY = 1
    for fixture in (acme, globex):
        old = back_up_tenant(fixture.tenant)
        old.taken_at = timezone.now() - dt.timedelta(days=30)
        old.save()
        back_up_tenant(fixture.tenant)
    assert tasks.prune_backups() == 2
    assert BackupRecord.objects.filter(status="complete").count() == 2


def test_pruning_keeps_an_object_a_kept_restore_record_shares(acme, alice_api, s3_storage):
    write(alice_api, "in the old backup")
    old = back_up_tenant(acme.tenant)
    old.taken_at = timezone.now() - dt.timedelta(days=400)
    old.save()
    write(alice_api, "undone")
    restore("acme", "--backup", str(old.pk))
    shared = BackupRecord.objects.get(tenant=acme.tenant, reason=BackupReason.POST_RESTORE)
    assert shared.storage_key == old.storage_key

    pruned = prune_tenant_backups(acme.tenant)

    assert old.pk in pruned and shared.pk not in pruned
    assert s3_storage.read(old.storage_key)  # still there
    write(alice_api, "after the restore")
    restore("acme", "--backup", str(shared.pk))
    assert contents(alice_api) == ["in the old backup"]


def test_it_restores_from_the_local_filesystem_storage(acme, alice_api, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "objects"},
        },
    }
    write(alice_api, "kept on the local disk")
    backup = back_up_tenant(acme.tenant)
    write(alice_api, "written after the backup")

    restore("acme", "--backup", str(backup.pk))

    assert contents(alice_api) == ["kept on the local disk"]
    assert (tmp_path / "objects" / backup.storage_key).exists()


def test_a_tenant_unchanged_since_its_newest_backup_is_not_uploaded_again(
    acme, alice_api, s3_storage
):
    write(alice_api, "in every backup")
    backup = back_up_tenant(acme.tenant)

    result = restore("acme", "--backup", str(backup.pk))

    previous = BackupRecord.objects.get(pk=result["previous_backup"])
    assert previous.reason == BackupReason.PRE_RESTORE
    assert previous.storage_key == backup.storage_key
    assert s3_storage.keys() == [backup.storage_key]
    write(alice_api, "after the restore")
    restore("acme", "--backup", str(previous.pk))
    assert contents(alice_api) == ["in every backup"]


def test_a_change_the_journal_does_not_record_still_gets_its_own_backup(
    acme, alice_api, s3_storage
):
    memory = write(alice_api, "read after the backup")
    backup = back_up_tenant(acme.tenant)
    assert alice_api.get(f"/v1/memories/{memory}").status_code == 200
    with bind_tenant_database(acme.tenant.id):
        access_counter.flush()  # the read's access count, written as requests do every few s

    result = restore("acme", "--backup", str(backup.pk))

    previous = BackupRecord.objects.get(pk=result["previous_backup"])
    assert previous.storage_key != backup.storage_key
    restore("acme", "--backup", str(previous.pk))
    # The first read, kept by the pre-restore backup, and this one.
    assert alice_api.get(f"/v1/memories/{memory}").json()["access_count"] == 2


def test_a_time_after_the_newest_backup_of_an_unchanged_tenant_restores_it_as_it_is(
    acme, alice_api, s3_storage
):
    write(alice_api, "alpha")
    backup = back_up_tenant(acme.tenant)
    after = a_moment()

    result = restore("acme", "--at", after.isoformat())

    assert result["backup"] == backup.pk
    assert BackupRecord.objects.get(pk=result["previous_backup"]).storage_key == backup.storage_key
    assert contents(alice_api) == ["alpha"]
    assert searched(alice_api, "alpha") == ["alpha"]


# --- A damaged tenant file ---------------------------------------------------------------------


def kept_files(record: BackupRecord, s3_storage) -> dict[str, bytes]:
    """The files a `damaged` backup holds, decrypted as staff would (backups.crypto)."""
    decrypted = io.BytesIO()
    crypto.decrypt_file(
        io.BytesIO(s3_storage.read(record.storage_key)),
        decrypted,
        tenant_id=str(record.tenant_id),
    )
    decrypted.seek(0)
    with tarfile.open(fileobj=decrypted) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers()}


def test_a_corrupt_tenant_file_is_kept_and_the_tenant_restored(
    acme, globex, alice_api, bob_api, s3_storage
):
    write(alice_api, "the vault code is 1234")
    write(bob_api, "globex's memory")
    backup = back_up_tenant(acme.tenant)
    globex_backups = list(BackupRecord.objects.filter(tenant=globex.tenant))
    connections["memories"].close()
    path = tenant_database_path(acme.tenant.id)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    garbage = b"this is not an SQLite database " * 1000
    path.write_bytes(garbage)
    assert alice_api.get("/v1/memories").status_code == 503

    out = io.StringIO()
    call_command("restore_tenant", "acme", "--backup", str(backup.pk), stdout=out)

    assert contents(alice_api) == ["the vault code is 1234"]
    assert searched(alice_api, "vault") == ["the vault code is 1234"]
    assert write(alice_api, "written after the restore")
    damaged = BackupRecord.objects.get(tenant=acme.tenant, status=BackupStatus.DAMAGED)
    assert damaged.reason == BackupReason.PRE_RESTORE
    message = out.getvalue()
    assert "was damaged (file is not a database)" in message
    assert f"damaged backup {damaged.pk} ({damaged.storage_key})" in message
    assert kept_files(damaged, s3_storage) == {"engram.db": garbage}
    event = AuditEvent.objects.get(tenant=acme.tenant, action="tenant.restored")
    assert event.metadata["previous_backup"] == damaged.pk
    assert event.metadata["previous_damaged"] == "file is not a database"
    assert event.metadata["damaged_key"] == damaged.storage_key
    # Nothing of another tenant changed.
    assert contents(bob_api) == ["globex's memory"]
    assert list(BackupRecord.objects.filter(tenant=globex.tenant)) == globex_backups


def test_a_damaged_backup_is_never_restored_nor_pruned(acme, alice_api, s3_storage, settings):
    write(alice_api, "in the good backup")
    backup = back_up_tenant(acme.tenant)
    path = tenant_database_path(acme.tenant.id)
    connections["memories"].close()
    path.write_bytes(b"garbage" * 5000)
    damaged = BackupRecord.objects.get(
        pk=restore("acme", "--backup", str(backup.pk))["previous_backup"]
    )
    assert damaged.status == BackupStatus.DAMAGED

    with pytest.raises(CommandError, match="No such backup"):
        restore("acme", "--backup", str(damaged.pk))
    assert contents(alice_api) == ["in the good backup"]
    # Retention (keeping nothing but the newest) leaves it, and its object, alone.
    settings.ENGRAM_BACKUP_KEEP_HOURLY = 0
    settings.ENGRAM_BACKUP_KEEP_DAILY = 0
    settings.ENGRAM_BACKUP_KEEP_WEEKLY = 0
    back_up_tenant(acme.tenant)
    assert prune_tenant_backups(acme.tenant)
    damaged.refresh_from_db()
    assert damaged.status == BackupStatus.DAMAGED
    assert damaged.storage_key in s3_storage.keys(f"tenants/{acme.tenant.id}/db/")


def test_a_truncated_tenant_file_is_restored_to_a_time(acme, alice_api, s3_storage):
    write(alice_api, "before the first backup")
    back_up_tenant(acme.tenant)
    write(alice_api, "replayed from the journal")
    moment = a_moment()
    write(alice_api, "after the time asked")
    back_up_tenant(acme.tenant)
    path = tenant_database_path(acme.tenant.id)
    with contextlib.closing(sqlite3.connect(path)) as database:
        database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connections["memories"].close()
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.truncate(size // 3)
    truncated = path.read_bytes()
    assert alice_api.get("/v1/memories").status_code == 503

    result = restore("acme", "--at", moment.isoformat())

    assert result["journal_entries"] >= 1
    assert result["previous_damaged"] == "database disk image is malformed"
    assert contents(alice_api) == ["before the first backup", "replayed from the journal"]
    damaged = BackupRecord.objects.get(pk=result["previous_backup"])
    assert kept_files(damaged, s3_storage)["engram.db"] == truncated


def test_a_file_damaged_in_its_middle_is_restored_in_place(acme, alice_api, s3_storage):
    with bind_tenant_database(acme.tenant.id):
        for number in range(300):
            create_memory(content=f"memory {number} " + "x" * 500)
    backup = back_up_tenant(acme.tenant)
    path = tenant_database_path(acme.tenant.id)
    with contextlib.closing(sqlite3.connect(path)) as database:
        database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    inode = path.stat().st_ino
    with open(path, "r+b") as file:
        file.seek(path.stat().st_size // 2)
        file.write(b"\xff" * 16384)
    damaged_bytes = path.read_bytes()

    result = restore("acme", "--backup", str(backup.pk))

    assert result["previous_damaged"]  # malformed, or failing integrity_check
    assert searched(alice_api, "299") == ["memory 299 " + "x" * 500]
    assert alice_api.get("/v1/memories/300").status_code == 200
    assert path.stat().st_ino == inode  # written into, as for a sound file
    damaged = BackupRecord.objects.get(pk=result["previous_backup"])
    assert kept_files(damaged, s3_storage)["engram.db"] == damaged_bytes


def test_an_open_connection_follows_a_file_put_in_its_place(acme, alice_api):
    # What another process sees when a restore puts a new file in place of a damaged one: its
    # connection, open on the old file, opens the new one at its next request.
    write(alice_api, "in the new file")
    path = tenant_database_path(acme.tenant.id)
    replacing = path.with_name("replacing.db")
    with (
        contextlib.closing(sqlite3.connect(path)) as live,
        contextlib.closing(sqlite3.connect(replacing)) as copy,
    ):
        live.backup(copy)
    write(alice_api, "only in the old file")
    assert connections["memories"].connection is not None

    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    replacing.replace(path)

    assert contents(alice_api) == ["in the new file"]
    assert write(alice_api, "written to the new file")
    with contextlib.closing(sqlite3.connect(path)) as database:
        assert database.execute("SELECT count(*) FROM memories_memory").fetchone() == (2,)


@pytest.mark.parametrize("where", ["s3", "local"])
def test_pruning_deletes_objects_no_record_names_once_a_day_old(
    where, acme, globex, request, settings, tmp_path
):
    if where == "s3":
        request.getfixturevalue("s3_storage")
    else:
        settings.STORAGES = {
            **settings.STORAGES,
            "backups": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": tmp_path / "objects"},
            },
        }
    backup = back_up_tenant(acme.tenant)
    # What a backup killed between its upload and its record leaves.
    orphan = f"tenants/{acme.tenant.id}/db/20261203T000000000000Z_v1.sqlite.enc"
    theirs = f"tenants/{globex.tenant.id}/db/20261203T000000000000Z_v1.sqlite.enc"
    export = f"tenants/{acme.tenant.id}/exports/20261203T000000000000Z.json"
    storage = backup_storage()
    for name in (orphan, theirs, export):
        storage.save(name, ContentFile(b"left behind"))

    prune_tenant_backups(acme.tenant, now=timezone.now() + dt.timedelta(hours=23))
    assert storage.exists(orphan)  # it may be a backup in progress

    prune_tenant_backups(acme.tenant, now=timezone.now() + dt.timedelta(hours=25))
    assert not storage.exists(orphan)
    assert storage.exists(backup.storage_key) and storage.exists(export)
    assert storage.exists(theirs)  # another tenant's are pruned with that tenant
