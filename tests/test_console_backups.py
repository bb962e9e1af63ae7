"""The owner's backups page in the console: list the workspace's backups, restore to one or to
a time, see the restore's progress. Owner only; everyone else is refused."""

from __future__ import annotations

import time

import pytest
from django.db import connections
from django.utils import timezone

from backups.models import BackupRecord, BackupStatus
from backups.services import back_up_tenant, maintenance
from memories import services as memory_services
from memories.models import Memory
from memories.tenant_db import bind_tenant_database, tenant_database_path
from tenants.models import AuditEvent, Tenant
from tests.console_cast import Cast, make_cast

pytestmark = pytest.mark.usefixtures("tasks_inline")

PAGE = "/console/w/acme/backups"
RESTORE = "/console/w/acme/backups/restore"


@pytest.fixture
def cast(db: None, s3_storage) -> Cast:
    return make_cast()


def contents(cast: Cast) -> list[str]:
    with bind_tenant_database(cast.tenant.id):
        return sorted(Memory.objects.values_list("content", flat=True))


def remember(cast: Cast, content: str) -> None:
    with bind_tenant_database(cast.tenant.id):
        memory_services.create_memory(content=content)


def test_the_owner_sees_the_workspaces_backups(cast: Cast) -> None:
    backup = back_up_tenant(cast.tenant)
    page = cast.client("alice").get(PAGE).content.decode()
    assert backup.taken_at.strftime("%Y-%m-%d %H:%M:%S") in page
    assert f'name="backup" value="{backup.pk}"' in page
    assert 'href="/console/w/acme/backups"' in page  # in the owner's navigation


def test_the_owner_restores_a_backup_and_sees_it_done(cast: Cast) -> None:
    backup = back_up_tenant(cast.tenant)
    remember(cast, "undone by the restore")
    response = cast.client("alice").post(RESTORE, {"backup": backup.pk}, follow=True)
    assert response.status_code == 200
    assert contents(cast) == ["Deploys use the blue-green script"]
    page = response.content.decode()
    assert "Restore requested" in page and "restored" in page
    event = AuditEvent.objects.get(action="tenant.restored")
    assert event.actor == cast.people["alice"] and event.metadata["backup"] == backup.pk


def test_the_owner_restores_to_a_point_in_time(cast: Cast) -> None:
    back_up_tenant(cast.tenant)
    remember(cast, "kept")
    time.sleep(0.01)
    moment = timezone.now()
    time.sleep(0.01)
    remember(cast, "after the moment")
    at = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")  # what the page's field sends, in UTC
    response = cast.client("alice").post(RESTORE, {"at": at})
    assert response.status_code == 302
    assert contents(cast) == ["Deploys use the blue-green script", "kept"]


def test_a_restore_in_progress_is_shown_and_the_page_refreshes(cast: Cast) -> None:
    with maintenance(cast.tenant):
        page = cast.client("alice").get(PAGE).content.decode()
    assert "A restore is in progress" in page and 'http-equiv="refresh"' in page
    assert "A restore is in progress" not in cast.client("alice").get(PAGE).content.decode()


def test_a_failed_restore_is_shown_and_changes_nothing(cast: Cast, s3_storage) -> None:
    backup = back_up_tenant(cast.tenant)
    s3_storage.write(backup.storage_key, b"not a backup at all")
    remember(cast, "still here")
    page = cast.client("alice").post(RESTORE, {"backup": backup.pk}, follow=True)
    assert "failed" in page.content.decode() and "checksum" in page.content.decode()
    assert "still here" in contents(cast)


@pytest.mark.parametrize(
    "data",
    [{}, {"backup": "1", "at": "2026-01-01T00:00"}, {"at": "last tuesday"}, {"backup": "x"}],
    ids=["nothing", "both", "bad time", "bad id"],
)
def test_bad_requests_change_nothing(cast: Cast, data: dict) -> None:
    back_up_tenant(cast.tenant)
    response = cast.client("alice").post(RESTORE, data, follow=True)
    assert response.status_code == 200
    assert "Restore requested" not in response.content.decode()
    assert not AuditEvent.objects.filter(action__startswith="restore").exists()


def test_another_workspaces_backup_cannot_be_restored(cast: Cast) -> None:
    theirs = back_up_tenant(Tenant.objects.get(slug="charlies"))
    response = cast.client("alice").post(RESTORE, {"backup": theirs.pk}, follow=True)
    assert "No such backup" in response.content.decode()
    assert not AuditEvent.objects.filter(action__startswith="restore").exists()


@pytest.mark.parametrize("who", ["adam", "mia", "vic"])
def test_other_roles_are_refused(cast: Cast, who: str) -> None:
    backup = back_up_tenant(cast.tenant)
    client = cast.client(who)
    assert client.get(PAGE).status_code == 403
    assert client.post(RESTORE, {"backup": backup.pk}).status_code == 403
    assert 'href="/console/w/acme/backups"' not in client.get("/console/w/acme/").content.decode()
    assert not AuditEvent.objects.filter(action__startswith="restore").exists()


@pytest.mark.parametrize("who", ["charlie", None])
def test_outsiders_see_nothing(cast: Cast, who: str | None) -> None:
    backup = back_up_tenant(cast.tenant)
    client = cast.client(who)
    for response in (client.get(PAGE), client.post(RESTORE, {"backup": backup.pk})):
        assert response.status_code in (404, 302)
        assert backup.storage_key not in response.content.decode()
        if who is not None:
            assert response.status_code == 404
    assert not AuditEvent.objects.filter(action__startswith="restore").exists()
    assert BackupRecord.objects.filter(tenant=cast.tenant).count() == 1


def test_restoring_a_damaged_workspace_says_where_its_file_is_kept(cast: Cast) -> None:
    backup = back_up_tenant(cast.tenant)
    connections["memories"].close()
    tenant_database_path(cast.tenant.id).write_bytes(b"not a database" * 1000)

    response = cast.client("alice").post(RESTORE, {"backup": backup.pk}, follow=True)

    assert contents(cast) == ["Deploys use the blue-green script"]
    damaged = BackupRecord.objects.get(tenant=cast.tenant, status=BackupStatus.DAMAGED)
    page = response.content.decode()
    assert "the replaced file was damaged (file is not a database)" in page
    assert f"kept as it was, encrypted, in backup {damaged.pk}" in page
    # Not offered as a backup to restore.
    assert f'name="backup" value="{damaged.pk}"' not in page
