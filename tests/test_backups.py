"""Backups of tenant databases: snapshot, verify, encrypt, upload to S3 (moto on loopback)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import sqlite3

import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from backups import crypto, tasks
from backups.models import BackupRecord, BackupStatus
from backups.services import back_up_tenant
from engram_cloud.celery import app as celery_app
from memories.provisioning import schema_version
from memories.tenant_db import tenant_database_path
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def tasks_run_at_once():
    """With REDIS_URL the passes would queue their tasks for a worker; here they run inline."""
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager


def write_memory(api, content: str, **fields) -> dict:
    response = api.post("/v1/memories", {"content": content, **fields})
    assert response.status_code == 201, response.content
    return response.json()


def decrypt(data: bytes, tenant_id: str) -> bytes:
    target = io.BytesIO()
    crypto.decrypt_file(io.BytesIO(data), target, tenant_id=tenant_id)
    return target.getvalue()


def contents_of(database: bytes, tmp_path) -> list[str]:
    path = tmp_path / "restored-copy.sqlite"
    path.write_bytes(database)
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT content FROM memories_memory ORDER BY id").fetchall()
    return [row[0] for row in rows]


def test_it_uploads_an_encrypted_backup_to_the_tenants_path(acme, alice_api, s3_storage, tmp_path):
    write_memory(alice_api, "the launch code is in the blue binder")
    record = back_up_tenant(acme.tenant)

    assert record.status == BackupStatus.COMPLETE
    assert record.storage_key.startswith(f"tenants/{acme.tenant.id}/db/")
    assert record.storage_key.endswith(f"_v{schema_version()}.sqlite.enc")
    assert s3_storage.keys() == [record.storage_key]
    stored = s3_storage.read(record.storage_key)
    assert len(stored) == record.size
    assert b"blue binder" not in stored and b"SQLite format 3" not in stored
    assert contents_of(decrypt(stored, str(acme.tenant.id)), tmp_path) == [
        "the launch code is in the blue binder"
    ]


def test_the_backup_header_names_tenant_and_wrapped_key(acme, s3_storage):
    record = back_up_tenant(acme.tenant)
    header, _ = crypto.read_header(io.BytesIO(s3_storage.read(record.storage_key)))
    assert header["tenant_id"] == str(acme.tenant.id)
    assert header["cipher"] == "AES-256-GCM"
    assert header["wrapped_key"] and header["nonce_prefix"]


def test_each_backup_has_its_own_data_key(acme, s3_storage):
    first, second = back_up_tenant(acme.tenant), back_up_tenant(acme.tenant)
    headers = [
        crypto.read_header(io.BytesIO(s3_storage.read(r.storage_key)))[0] for r in (first, second)
    ]
    assert headers[0]["wrapped_key"] != headers[1]["wrapped_key"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) - 40], id="truncated"),
        pytest.param(lambda data: data[:-1] + bytes([data[-1] ^ 1]), id="last-byte-flipped"),
        pytest.param(lambda data: data[:200] + bytes([data[200] ^ 1]) + data[201:], id="flipped"),
        pytest.param(lambda data: data + b"\x00\x00\x00\x10" + b"x" * 16, id="appended"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_a_damaged_backup_is_refused_at_decrypt(acme, alice_api, s3_storage, damage):
    write_memory(alice_api, "something worth keeping")
    record = back_up_tenant(acme.tenant)
    data = damage(s3_storage.read(record.storage_key))
    with pytest.raises(crypto.BackupUnreadable):
        decrypt(data, str(acme.tenant.id))


def test_a_header_edited_to_name_another_tenant_is_refused(acme, globex, s3_storage):
    record = back_up_tenant(acme.tenant)
    data = s3_storage.read(record.storage_key)
    forged = data.replace(str(acme.tenant.id).encode(), str(globex.tenant.id).encode())
    with pytest.raises(crypto.BackupUnreadable):
        decrypt(forged, str(globex.tenant.id))


def test_another_tenants_backup_is_refused(acme, globex, s3_storage):
    record = back_up_tenant(acme.tenant)
    with pytest.raises(crypto.BackupUnreadable, match="another tenant"):
        decrypt(s3_storage.read(record.storage_key), str(globex.tenant.id))


def test_a_backup_under_another_key_is_refused(acme, s3_storage, settings):
    record = back_up_tenant(acme.tenant)
    settings.ENGRAM_BACKUP_KEY = "YW5vdGhlci1rZXktb2YtZXhhY3RseS0zMi1ieXRlcyE="
    with pytest.raises(crypto.BackupUnreadable, match="another ENGRAM_BACKUP_KEY"):
        decrypt(s3_storage.read(record.storage_key), str(acme.tenant.id))


def test_large_databases_are_encrypted_in_many_chunks(tmp_path, settings):
    settings.ENGRAM_BACKUP_KEY = "YW5vdGhlci1rZXktb2YtZXhhY3RseS0zMi1ieXRlcyE="
    plain = bytes(range(256)) * 1024 * 3 + os.urandom(3 * crypto.CHUNK_SIZE)
    sealed = io.BytesIO()
    header = crypto.BackupHeader(tenant_id="t-1", schema_version="s", taken_at="now")
    crypto.encrypt_file(io.BytesIO(plain), sealed, header)
    assert decrypt(sealed.getvalue(), "t-1") == plain
    # Cut exactly at a chunk boundary: still refused, the last chunk is marked as last.
    data = sealed.getvalue()
    _, preamble = crypto.read_header(io.BytesIO(data))
    first_length = int.from_bytes(data[len(preamble) : len(preamble) + 4], "big")
    with pytest.raises(crypto.BackupUnreadable, match="truncated"):
        decrypt(data[: len(preamble) + 4 + first_length], "t-1")


def test_backup_tenant_prints_the_id_and_json(acme, s3_storage, capsys):
    call_command("backup_tenant", "acme")
    printed_id = int(capsys.readouterr().out.strip())
    call_command("backup_tenant", "acme", "--json")
    record = json.loads(capsys.readouterr().out)
    assert BackupRecord.objects.filter(pk=printed_id, tenant=acme.tenant).exists()
    stored = BackupRecord.objects.get(pk=record["id"])
    assert record["storage_key"] == stored.storage_key
    assert record["sha256"] == stored.sha256 and record["status"] == "complete"
    assert AuditEvent.objects.filter(tenant=acme.tenant, action="backup.created").count() == 2


def test_backup_tenant_refuses_an_unknown_slug(db):
    with pytest.raises(Exception, match="No tenant with slug"):
        call_command("backup_tenant", "nobody")


def test_the_local_filesystem_is_the_embedded_default(acme, alice_api, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "objects"},
        },
    }
    write_memory(alice_api, "kept on the local disk")
    record = back_up_tenant(acme.tenant)
    stored = (tmp_path / "objects" / record.storage_key).read_bytes()
    assert contents_of(decrypt(stored, str(acme.tenant.id)), tmp_path) == ["kept on the local disk"]


def test_a_corrupted_database_is_not_backed_up(acme, s3_storage):
    path = tenant_database_path(acme.tenant.id)
    connections["memories"].close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    for offset in range(page_size * 2, len(data), page_size):
        data[offset + 10 : offset + 60] = b"\xff" * 50
    path.write_bytes(bytes(data))
    with pytest.raises(Exception, match=r"integrity|malformed|corrupt"):
        back_up_tenant(acme.tenant)
    assert not BackupRecord.objects.exists()
    assert s3_storage.keys() == []


def test_the_frequent_pass_backs_up_only_changed_tenants(acme, globex, alice_api, s3_storage):
    assert sorted(tasks.back_up_changed_tenants()) == sorted(
        [str(acme.tenant.id), str(globex.tenant.id)]
    )
    assert tasks.back_up_changed_tenants() == []
    write_memory(alice_api, "a change")
    assert tasks.back_up_changed_tenants() == [str(acme.tenant.id)]
    assert BackupRecord.objects.filter(tenant=acme.tenant).count() == 2
    assert BackupRecord.objects.filter(tenant=globex.tenant).count() == 1


def test_the_daily_pass_backs_up_every_tenant(acme, globex, s3_storage):
    back_up_tenant(acme.tenant)
    tasks.back_up_all_tenants()
    assert BackupRecord.objects.filter(tenant=acme.tenant).count() == 2
    assert BackupRecord.objects.filter(tenant=globex.tenant).count() == 1


def test_a_backup_task_delivered_twice_backs_up_once(acme, s3_storage):
    requested_at = timezone.now().isoformat()
    first = tasks.back_up_tenant(str(acme.tenant.id), requested_at)
    again = tasks.back_up_tenant(str(acme.tenant.id), requested_at)
    assert first == again
    assert BackupRecord.objects.count() == 1
    later = (timezone.now() + dt.timedelta(seconds=1)).isoformat()
    assert tasks.back_up_tenant(str(acme.tenant.id), later) != first
