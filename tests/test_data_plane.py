"""The per-tenant SQLite data plane: where files live, how they are bound, provisioned, migrated."""

from __future__ import annotations

import filecmp
import io
import os
import shutil
import sqlite3
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError, connections, transaction

from memories.models import Memory
from memories.provisioning import create_tenant_database, schema_version, template_path
from memories.tenant_db import (
    DATA_PLANE_ALIAS,
    TenantBindingError,
    TenantDatabaseMissing,
    TenantNotBound,
    _bound_path,
    bind_tenant_database,
    current_database_path,
    tenant_database_path,
)
from tenants import services
from tenants.models import Tenant
from tests.conftest import make_tenant


def data_plane():
    return connections[DATA_PLANE_ALIAS]


def pragma(name: str):
    with data_plane().cursor() as cursor:
        cursor.execute(f"PRAGMA {name}")
        return cursor.fetchone()[0]


def read_file(path: Path, sql: str) -> list[tuple]:
    """Query a tenant file directly, bypassing Django."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def contents(path: Path) -> list[str]:
    return [row[0] for row in read_file(path, "SELECT content FROM memories_memory ORDER BY id")]


def open_tenant_files() -> list[str]:
    """The tenant database files this process holds open (WAL and SHM files not counted)."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [target for target in targets if target.endswith("/engram.db")]


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- Where the file is and how it is opened ----------------------------------------------------


def test_a_tenants_memories_live_in_its_own_file_under_the_data_dir(alice_api, acme, data_dir):
    response = alice_api.post("/v1/memories", {"content": "stored on disk"})
    assert response.status_code == 201
    path = data_dir / "tenants" / str(acme.tenant.id) / "engram.db"
    assert tenant_database_path(acme.tenant.id) == path
    assert contents(path) == ["stored on disk"]


def test_tenant_files_are_in_wal_mode(alice_api, acme):
    alice_api.post("/v1/memories", {"content": "x"})
    path = tenant_database_path(acme.tenant.id)
    assert read_file(path, "PRAGMA journal_mode") == [("wal",)]


def test_data_plane_connections_are_durable_and_wait_for_locks(acme):
    with bind_tenant_database(acme.tenant.id):
        assert pragma("synchronous") == 2  # FULL
        assert pragma("journal_mode") == "wal"
        assert pragma("busy_timeout") >= 1000
        assert data_plane().transaction_mode == "IMMEDIATE"


def test_data_plane_transactions_take_the_write_lock_at_begin(acme):
    path = tenant_database_path(acme.tenant.id)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with bind_tenant_database(acme.tenant.id), transaction.atomic(using=DATA_PLANE_ALIAS):
            # Only a read so far: a deferred transaction would not hold the write lock yet.
            Memory.objects.count()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_savepoints_roll_back_their_own_work_and_reuse_their_names(acme):
    """Savepoint names are numbered per transaction: a long-lived connection does not compile
    (and cache) two new statements for every nested block it ever ran."""
    executed: list[str] = []

    def record(execute, sql, params, many, context):
        executed.append(sql)
        return execute(sql, params, many, context)

    with bind_tenant_database(acme.tenant.id), data_plane().execute_wrapper(record):
        for n in range(10):
            with transaction.atomic(using=DATA_PLANE_ALIAS):
                Memory.objects.create(content=f"kept {n}", content_hash="x")
                with transaction.atomic(using=DATA_PLANE_ALIAS):
                    Memory.objects.create(content=f"inner {n}", content_hash="x")
                    with pytest.raises(RuntimeError), transaction.atomic(using=DATA_PLANE_ALIAS):
                        Memory.objects.create(content=f"undone {n}", content_hash="x")
                        raise RuntimeError
        kept = list(Memory.objects.order_by("id").values_list("content", flat=True))
    assert kept == [content for n in range(10) for content in (f"kept {n}", f"inner {n}")]
    savepoint_statements = {sql for sql in executed if "SAVEPOINT" in sql}
    # Two names (two levels), each created, released and (the inner) rolled back to.
    assert len(savepoint_statements) == 5, savepoint_statements


# --- Binding -------------------------------------------------------------------------------------


def test_a_query_with_no_tenant_bound_is_refused(db):
    data_plane().close()
    with pytest.raises(TenantNotBound):
        Memory.objects.count()


def test_a_query_after_the_binding_ended_does_not_reach_the_last_tenant(acme):
    with bind_tenant_database(acme.tenant.id):
        Memory.objects.create(content="acme's", content_hash="x")
    assert current_database_path() is None
    with pytest.raises((TenantNotBound, TenantBindingError)):
        Memory.objects.count()


def test_binding_a_tenant_without_a_file_is_refused(acme):
    with pytest.raises(TenantDatabaseMissing), bind_tenant_database(uuid.uuid4()):
        pass
    tenant_database_path(acme.tenant.id).unlink()
    with pytest.raises(TenantDatabaseMissing), bind_tenant_database(acme.tenant.id):
        pass


def test_a_tenant_whose_file_vanished_gets_503_not_an_empty_database(alice_api, acme):
    shutil.rmtree(tenant_database_path(acme.tenant.id).parent)
    response = alice_api.get("/v1/memories")
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert not tenant_database_path(acme.tenant.id).exists()


def test_rebinding_inside_a_data_plane_transaction_is_refused(acme, globex):
    with bind_tenant_database(acme.tenant.id), transaction.atomic(using=DATA_PLANE_ALIAS):
        Memory.objects.create(content="acme's", content_hash="x")
        with pytest.raises(TenantBindingError), bind_tenant_database(globex.tenant.id):
            pass
        assert Memory.objects.count() == 1
    assert contents(tenant_database_path(globex.tenant.id)) == []


def test_an_open_connection_to_another_tenants_file_is_never_queried(acme, globex):
    with bind_tenant_database(acme.tenant.id):
        Memory.objects.create(content="acme's", content_hash="x")
        token = _bound_path.set(tenant_database_path(globex.tenant.id))
        try:
            with pytest.raises(TenantBindingError):
                Memory.objects.count()
        finally:
            _bound_path.reset(token)


def test_binding_another_tenant_closes_the_previous_connection(acme, globex):
    acme_path = tenant_database_path(acme.tenant.id)
    globex_path = tenant_database_path(globex.tenant.id)
    with bind_tenant_database(acme.tenant.id):
        Memory.objects.count()
        acme_connection = data_plane().connection
        assert data_plane().open_path == acme_path
        assert open_tenant_files() == [str(acme_path)]
    with bind_tenant_database(globex.tenant.id):
        Memory.objects.count()
        assert data_plane().open_path == globex_path
        assert open_tenant_files() == [str(globex_path)]
    with pytest.raises(sqlite3.ProgrammingError):
        acme_connection.execute("SELECT 1")


def test_nested_binding_restores_the_outer_tenant(acme, globex):
    with bind_tenant_database(acme.tenant.id):
        Memory.objects.create(content="acme-1", content_hash="x")
        with bind_tenant_database(globex.tenant.id):
            Memory.objects.create(content="globex-1", content_hash="x")
            assert list(Memory.objects.values_list("content", flat=True)) == ["globex-1"]
        assert current_database_path() == tenant_database_path(acme.tenant.id)
        Memory.objects.create(content="acme-2", content_hash="x")
        assert list(Memory.objects.order_by("id").values_list("content", flat=True)) == [
            "acme-1",
            "acme-2",
        ]
    assert contents(tenant_database_path(acme.tenant.id)) == ["acme-1", "acme-2"]
    assert contents(tenant_database_path(globex.tenant.id)) == ["globex-1"]


def test_threads_bound_to_different_tenants_at_once_see_only_their_own_rows(acme, globex):
    tenants = [acme.tenant, globex.tenant]
    barrier = threading.Barrier(len(tenants), timeout=10)

    def work(tenant: Tenant) -> list[str]:
        try:
            with bind_tenant_database(tenant.id):
                for n in range(20):
                    Memory.objects.create(content=f"{tenant.slug}-{n}", content_hash="x")
                    if n == 10:
                        barrier.wait()  # both threads are bound and writing now
                barrier.wait()
                return list(Memory.objects.order_by("id").values_list("content", flat=True))
        finally:
            connections.close_all()

    with ThreadPoolExecutor(len(tenants)) as pool:
        seen = list(pool.map(work, tenants))

    for tenant, rows in zip(tenants, seen, strict=True):
        expected = [f"{tenant.slug}-{n}" for n in range(20)]
        assert rows == expected
        assert contents(tenant_database_path(tenant.id)) == expected
    assert current_database_path() is None


# --- Parked connections (the API keeps tenant files open between requests) ----------------------


def api_connection(client, content: str) -> object:
    """Store a memory through the API; the driver's connection that wrote it."""
    response = client.post("/v1/memories", {"content": content})
    assert response.status_code == 201, response.content
    return data_plane().connection


def test_a_tenants_next_request_takes_back_its_parked_connection(alice_api, bob_api, acme, globex):
    acme_connection = api_connection(alice_api, "acme one")
    globex_connection = api_connection(bob_api, "globex one")
    assert globex_connection is not acme_connection
    assert data_plane().parked_paths == [tenant_database_path(acme.tenant.id)]
    assert api_connection(alice_api, "acme two") is acme_connection
    assert data_plane().parked_paths == [tenant_database_path(globex.tenant.id)]
    assert sorted(open_tenant_files()) == sorted(
        str(tenant_database_path(t.tenant.id)) for t in (acme, globex)
    )


def test_requests_alternating_between_tenants_see_only_their_own_memories(
    alice_api, bob_api, acme, globex
):
    for n in range(5):
        api_connection(alice_api, f"acme {n}")
        api_connection(bob_api, f"globex {n}")
        seen = {
            name: [m["content"] for m in client.get("/v1/memories").json()["data"]]
            for name, client in (("acme", alice_api), ("globex", bob_api))
        }
        for name, contents_seen in seen.items():
            assert sorted(contents_seen) == [f"{name} {i}" for i in range(n + 1)]
    assert contents(tenant_database_path(acme.tenant.id)) == [f"acme {n}" for n in range(5)]
    assert contents(tenant_database_path(globex.tenant.id)) == [f"globex {n}" for n in range(5)]


def test_at_most_the_configured_number_stay_open_least_recently_used_closed_first(
    settings, acme, globex
):
    settings.ENGRAM_OPEN_TENANT_FILES = 2
    fixtures = [acme, globex, make_tenant("initech", "carol@example.com")]
    fixtures.append(make_tenant("umbrella", "dave@example.com"))
    paths = [tenant_database_path(f.tenant.id) for f in fixtures]
    for fixture in fixtures:
        api_connection(fixture.client(), fixture.tenant.slug)
    # The last is open; of the three before it the two used last are parked.
    assert data_plane().open_path == paths[3]
    assert data_plane().parked_paths == paths[1:3]
    assert sorted(open_tenant_files()) == sorted(map(str, paths[1:]))
    api_connection(fixtures[0].client(), "again")  # reopened; the oldest parked one closes
    assert data_plane().parked_paths == [paths[2], paths[3]]


def test_with_none_configured_the_previous_tenants_file_is_closed(settings, alice_api, bob_api):
    settings.ENGRAM_OPEN_TENANT_FILES = 0
    acme_connection = api_connection(alice_api, "acme")
    api_connection(bob_api, "globex")
    assert data_plane().parked_paths == []
    with pytest.raises(sqlite3.ProgrammingError):
        acme_connection.execute("SELECT 1")


def test_a_parked_connection_to_a_file_since_replaced_is_not_taken_back(alice_api, bob_api, acme):
    acme_connection = api_connection(alice_api, "before the restore")
    api_connection(bob_api, "globex")
    path = tenant_database_path(acme.tenant.id)
    replacement = path.with_name("restored.db")
    live, copy = sqlite3.connect(path), sqlite3.connect(replacement)
    live.backup(copy)
    copy.execute("PRAGMA journal_mode=DELETE")
    copy.execute("UPDATE memories_memory SET content = 'from the backup'")
    copy.commit()
    live.close()
    copy.close()
    # As a restore over a damaged file does (backups.services._replace_file): another file,
    # another inode, at the tenant's path.
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    os.replace(replacement, path)
    assert [m["content"] for m in alice_api.get("/v1/memories").json()["data"]] == [
        "from the backup"
    ]
    assert data_plane().connection is not acme_connection
    with pytest.raises(sqlite3.ProgrammingError):
        acme_connection.execute("SELECT 1")


def test_a_connection_that_failed_is_closed_not_parked(alice_api, acme, globex):
    api_connection(alice_api, "acme")
    with bind_tenant_database(acme.tenant.id, keep_open=True):
        with pytest.raises(OperationalError), data_plane().cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")
        failed = data_plane().connection
    with bind_tenant_database(globex.tenant.id, keep_open=True):
        Memory.objects.count()
    assert data_plane().parked_paths == []
    with pytest.raises(sqlite3.ProgrammingError):
        failed.execute("SELECT 1")


def test_parked_connections_unused_for_long_are_closed(monkeypatch, alice_api, bob_api, globex):
    from memories.db_backend import base

    acme_connection = api_connection(alice_api, "acme")
    monkeypatch.setattr(base, "PARKED_IDLE_SECONDS", 0.0)
    api_connection(bob_api, "globex")  # parks acme's, then finds it idle too long
    assert data_plane().parked_paths == []
    with pytest.raises(sqlite3.ProgrammingError):
        acme_connection.execute("SELECT 1")
    assert open_tenant_files() == [str(tenant_database_path(globex.tenant.id))]


def test_deleting_a_tenant_closes_its_parked_connection(
    alice_api, bob_api, acme, django_capture_on_commit_callbacks
):
    acme_connection = api_connection(alice_api, "acme")
    api_connection(bob_api, "globex")
    owner = services.get_or_create_user(acme.owner_email)
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_workspace(acme.tenant, actor=owner)
    assert data_plane().parked_paths == []
    with pytest.raises(sqlite3.ProgrammingError):
        acme_connection.execute("SELECT 1")
    assert not tenant_database_path(acme.tenant.id).exists()


# --- Provisioning -------------------------------------------------------------------------------


def migration_names_on_disk() -> list[str]:
    directory = Path(__file__).resolve().parent.parent / "memories" / "migrations"
    return sorted(p.stem for p in directory.glob("[0-9]*.py"))


def test_a_new_tenant_file_is_the_migrated_template(acme):
    path = tenant_database_path(acme.tenant.id)
    assert filecmp.cmp(template_path(), path, shallow=False)
    tables = {row[0] for row in read_file(path, "SELECT name FROM sqlite_master")}
    assert {"memories_memory", "memories_memorytag", "memories_memoryversion"} <= tables
    applied = read_file(
        path, "SELECT name FROM django_migrations WHERE app = 'memories' ORDER BY name"
    )
    assert [name for (name,) in applied] == migration_names_on_disk()
    assert schema_version() == migration_names_on_disk()[-1]


def test_provisioning_copies_the_template_without_touching_it(db):
    template = template_path()
    before = template.stat().st_mtime_ns, template.read_bytes()
    first = make_tenant("first", "first@example.com")
    second = make_tenant("second", "second@example.com")
    assert (template.stat().st_mtime_ns, template.read_bytes()) == before
    for made in (first, second):
        assert tenant_database_path(made.tenant.id).read_bytes() == before[1]


def test_a_missing_template_is_built_once_and_then_copied(db, data_dir):
    shutil.rmtree(data_dir / "templates")
    first = make_tenant("first", "first@example.com")
    template = template_path()
    assert template.exists()
    built = template.stat().st_mtime_ns
    assert sorted(p.name for p in template.parent.iterdir()) == [template.name]
    second = make_tenant("second", "second@example.com")
    assert template.stat().st_mtime_ns == built
    for made in (first, second):
        with bind_tenant_database(made.tenant.id):
            Memory.objects.create(content="works", content_hash="x")
            assert Memory.objects.count() == 1


def tenant_dirs(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "tenants").iterdir())


def test_a_failed_provisioning_leaves_no_tenant_and_no_file(acme, data_dir):
    owner = services.get_or_create_user("mallory@example.com")
    with pytest.raises(ValidationError, match="taken"):
        services.provision_tenant(slug="acme", owner=owner)
    assert list(Tenant.objects.values_list("slug", flat=True)) == ["acme"]
    assert tenant_dirs(data_dir) == [str(acme.tenant.id)]
    assert not owner.memberships.exists()


def test_a_tenant_row_is_not_kept_when_its_file_cannot_be_made(db, data_dir):
    shutil.rmtree(data_dir / "tenants")
    (data_dir / "tenants").write_text("not a directory")
    owner = services.get_or_create_user("alice@example.com")
    with pytest.raises(OSError):
        services.provision_tenant(slug="acme", owner=owner)
    assert not Tenant.objects.exists()
    assert not owner.memberships.exists()


# --- migrate_tenants ---------------------------------------------------------------------------


def migrate_tenants(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("migrate_tenants", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_migrate_tenants_migrates_every_tenant_file_and_keeps_data(db):
    made = [make_tenant(slug, f"{slug}@example.com") for slug in ("one", "two", "three")]
    with bind_tenant_database(made[0].tenant.id):
        Memory.objects.create(content="kept", content_hash="x")
    # "three" is a file at schema zero, as if it predated every migration.
    stale = tenant_database_path(made[2].tenant.id)
    stale.unlink()
    sqlite3.connect(stale).close()

    out, _ = migrate_tenants()

    assert "three: " + ", ".join(migration_names_on_disk()) in out
    assert "Migrated 3 of 3" in out
    for tenant in made:
        with bind_tenant_database(tenant.tenant.id):
            assert Memory.objects.count() == (1 if tenant is made[0] else 0)
    assert contents(tenant_database_path(made[0].tenant.id)) == ["kept"]


def test_migrate_tenants_is_idempotent(db):
    made = [make_tenant(slug, f"{slug}@example.com") for slug in ("one", "two")]
    first, _ = migrate_tenants()
    files = [tenant_database_path(t.tenant.id).read_bytes() for t in made]
    second, _ = migrate_tenants()
    assert "Migrated 2 of 2" in first
    assert second.strip() == "Migrated 2 of 2 tenant databases."
    assert [tenant_database_path(t.tenant.id).read_bytes() for t in made] == files


def test_migrate_tenants_reports_a_missing_file_and_fails(db):
    made = [make_tenant(slug, f"{slug}@example.com") for slug in ("one", "two", "three")]
    tenant_database_path(made[1].tenant.id).unlink()
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="two"):
        call_command("migrate_tenants", stdout=out, stderr=err)
    assert "two" in err.getvalue()
    assert "missing" in err.getvalue()
    assert "Migrated 2 of 3" in out.getvalue()
    assert not tenant_database_path(made[1].tenant.id).exists()


@pytest.mark.parametrize("command", ["migrate_tenants", "reembed_memories"])
def test_a_slug_of_no_tenant_is_refused_before_any_tenant_is_touched(db, command):
    made = make_tenant("one", "one@example.com")
    with bind_tenant_database(made.tenant.id):
        Memory.objects.create(content="no vector yet", content_hash="x")
    out = io.StringIO()
    with pytest.raises(CommandError, match="'onee'"):
        call_command(command, "one", "onee", stdout=out, stderr=io.StringIO())
    assert out.getvalue() == ""


# --- Bounded open files --------------------------------------------------------------------------

MANY_TENANTS = 2_000


@pytest.mark.slow
def test_touching_thousands_of_tenants_keeps_open_files_bounded(db):
    tenants = Tenant.objects.bulk_create(
        Tenant(slug=f"t-{n:05d}", name=f"t{n}", plan_id="free") for n in range(MANY_TENANTS)
    )
    for tenant in tenants:
        create_tenant_database(tenant.id)
    with bind_tenant_database(tenants[0].id):
        Memory.objects.count()
    baseline = open_fd_count()

    for tenant in tenants:
        with bind_tenant_database(tenant.id):
            assert not Memory.objects.exists()

    assert open_fd_count() - baseline <= 10
    assert len(open_tenant_files()) <= 1
