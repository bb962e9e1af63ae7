"""The operator dashboard in the Django admin: tenants with their use and backups, and the
staff actions (change plan, back up now, restore, revoke all keys), each audited."""

from __future__ import annotations

import time

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backups.models import BackupRecord
from backups.services import back_up_tenant
from tenants.models import AuditEvent, Tenant, User

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tasks_inline")]


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_user("ops@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def ops(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


TENANTS = reverse("admin:tenants_tenant_changelist")


def act(client: Client, action: str, *tenants: Tenant, **extra) -> object:
    return client.post(
        TENANTS, {"action": action, "_selected_action": [str(t.pk) for t in tenants], **extra}
    )


def write(fixture, content: str) -> int:
    response = fixture.client().post("/v1/memories", {"content": content})
    assert response.status_code == 201, response.content
    return response.json()["id"]


def contents(fixture) -> list[str]:
    data = fixture.client().get("/v1/memories", {"limit": 100}).json()["data"]
    return sorted(memory["content"] for memory in data)


def test_the_tenant_list_shows_plan_members_memories_storage_and_backups(
    ops, acme, globex, s3_storage
):
    write(acme, "one")
    write(acme, "two")
    back_up_tenant(acme.tenant)
    page = ops.get(TENANTS).content.decode()
    assert "acme" in page and "globex" in page
    assert "Free" in page or "free" in page
    row = page[page.index(">acme<") :][:3000]
    assert ">1<" in row  # one member
    assert ">2<" in row  # two memories
    assert "KB" in row  # storage
    assert "UTC" in row and "minute" in row  # last backup and its age
    globex_row = page[page.index(">globex<") :][:3000]
    assert "never" in globex_row


def test_search_finds_tenants_by_member_email(ops, acme, globex):
    page = ops.get(TENANTS, {"q": "bob@example.com"}).content.decode()
    assert ">globex<" in page and ">acme<" not in page


def test_the_backup_filter_lists_tenants_never_backed_up(ops, acme, globex, s3_storage):
    back_up_tenant(acme.tenant)
    page = ops.get(TENANTS, {"backup": "never"}).content.decode()
    assert ">globex<" in page and ">acme<" not in page


def test_the_overdue_page_lists_tenants_behind_schedule(ops, acme, globex, s3_storage, settings):
    settings.ENGRAM_BACKUP_INTERVAL_SECONDS = 1
    back_up_tenant(acme.tenant)
    fresh = back_up_tenant(globex.tenant)
    old = back_up_tenant(acme.tenant)
    old.taken_at = timezone.now() - timezone.timedelta(days=3)
    old.save()
    BackupRecord.objects.filter(tenant=acme.tenant).exclude(pk=old.pk).delete()
    page = ops.get(reverse("admin:backups_backuprecord_overdue")).content.decode()
    assert ">acme<" in page and ">globex<" not in page
    assert fresh.tenant_id == globex.tenant.id


def test_changing_the_plan_is_audited_with_the_staff_user(ops, staff, acme):
    form = act(ops, "change_plan", acme.tenant)
    assert form.status_code == 200 and "Change plan" in form.content.decode()
    done = act(ops, "change_plan", acme.tenant, plan="pro", apply="Change plan")
    assert done.status_code == 302
    acme.tenant.refresh_from_db()
    assert acme.tenant.plan_id == "pro"
    event = AuditEvent.objects.get(action="billing.plan_changed")
    assert (event.actor, event.metadata) == (
        staff,
        {"from": "free", "to": "pro", "reason": "staff"},
    )


def test_back_up_now_backs_up_and_is_audited(ops, staff, acme, globex, s3_storage):
    assert act(ops, "back_up_now", acme.tenant, globex.tenant).status_code == 302
    assert BackupRecord.objects.filter(tenant=acme.tenant, status="complete").count() == 1
    assert BackupRecord.objects.filter(tenant=globex.tenant, status="complete").count() == 1
    events = AuditEvent.objects.filter(action="backup.requested", actor=staff)
    assert {event.tenant for event in events} == {acme.tenant, globex.tenant}


def test_revoking_all_keys_refuses_them_and_is_audited(ops, staff, acme, globex):
    second = acme.issue_key()
    assert act(ops, "revoke_all_keys", acme.tenant).status_code == 302
    assert acme.client().get("/v1/memories").status_code == 401
    assert acme.client().get("/v1/memories", Authorization=f"Bearer {second}").status_code == 401
    assert globex.client().get("/v1/memories").status_code == 200
    event = AuditEvent.objects.get(action="tenant.keys_revoked")
    assert (event.actor, event.metadata) == (staff, {"revoked": 2})


def test_the_restore_action_opens_the_tenants_restore_page(ops, acme):
    response = act(ops, "restore", acme.tenant)
    assert response["Location"] == reverse("admin:tenants_tenant_restore", args=[acme.tenant.pk])


def test_staff_restore_a_tenant_to_a_backup(ops, staff, acme, s3_storage):
    write(acme, "kept")
    backup = back_up_tenant(acme.tenant)
    write(acme, "undone by the restore")
    url = reverse("admin:tenants_tenant_restore", args=[acme.tenant.pk])
    assert str(backup.pk) in ops.get(url).content.decode()

    response = ops.post(url, {"backup": backup.pk})
    assert response.status_code == 302
    assert contents(acme) == ["kept"]
    event = AuditEvent.objects.get(action="tenant.restored")
    assert (event.actor, event.metadata["backup"]) == (staff, backup.pk)


def test_staff_restore_a_tenant_to_a_time(ops, acme, s3_storage):
    back_up_tenant(acme.tenant)
    write(acme, "before")
    time.sleep(0.01)
    moment = timezone.now()
    time.sleep(0.01)
    write(acme, "after")
    url = reverse("admin:tenants_tenant_restore", args=[acme.tenant.pk])
    response = ops.post(url, {"at": moment.strftime("%Y-%m-%d %H:%M:%S.%f")})
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert contents(acme) == ["before"]


def test_a_restore_asked_wrongly_changes_nothing(ops, acme, s3_storage):
    backup = back_up_tenant(acme.tenant)
    write(acme, "current")
    url = reverse("admin:tenants_tenant_restore", args=[acme.tenant.pk])
    both = ops.post(url, {"backup": backup.pk, "at": "2026-01-01 00:00:00"})
    assert both.status_code == 200 and "one of the two" in both.content.decode()
    too_early = ops.post(url, {"at": "2001-01-01 00:00:00"}, follow=True)
    assert "Nothing was restored" in too_early.content.decode()
    assert contents(acme) == ["current"]
    assert not AuditEvent.objects.filter(action="tenant.restored").exists()


def test_another_tenants_backup_cannot_be_chosen(ops, acme, globex, s3_storage):
    theirs = back_up_tenant(globex.tenant)
    url = reverse("admin:tenants_tenant_restore", args=[acme.tenant.pk])
    response = ops.post(url, {"backup": theirs.pk})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()


@pytest.mark.parametrize("who", ["anonymous", "non-staff owner"])
def test_none_of_it_is_reachable_without_staff(acme, s3_storage, who):
    backup = back_up_tenant(acme.tenant)
    client = Client()
    if who != "anonymous":
        client.force_login(User.objects.get(email="alice@example.com"))
    restore_url = reverse("admin:tenants_tenant_restore", args=[acme.tenant.pk])
    for url in (
        TENANTS,
        restore_url,
        reverse("admin:backups_backuprecord_overdue"),
        reverse("admin:backups_backuprecord_changelist"),
    ):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"], url
    for action in ("change_plan", "back_up_now", "revoke_all_keys"):
        act(client, action, acme.tenant, plan="pro", apply="Change plan")
    client.post(restore_url, {"backup": backup.pk})
    acme.tenant.refresh_from_db()
    assert acme.tenant.plan_id == "free"
    assert acme.client().get("/v1/memories").status_code == 200
    assert BackupRecord.objects.count() == 1
    assert not AuditEvent.objects.filter(
        action__in=["billing.plan_changed", "backup.requested", "tenant.keys_revoked"]
    ).exists()
    assert not AuditEvent.objects.filter(action__startswith="restore").exists()
