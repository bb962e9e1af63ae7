"""Workspaces and members through the console: create (slug rules), switch, rename, delete
(data file removed), change role, remove, leave; the last owner stays."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from memories.tenant_db import tenant_database_path
from tenants import services
from tenants.models import ApiKey, AuditEvent, Membership, Role, Tenant, TenantStatus, User
from tests.conftest import ApiClient
from tests.console_cast import Cast, make_cast


@pytest.fixture
def cast(db: None) -> Cast:
    return make_cast()


def test_it_creates_a_workspace_owned_by_its_creator(db: None) -> None:
    ada = User.objects.create_user("ada@example.com")
    client = Client()
    client.force_login(ada)
    response = client.post("/console/workspaces/new", {"name": "Ada Labs", "slug": "ada-labs"})
    assert response.status_code == 302 and response["Location"] == "/console/w/ada-labs/keys"
    tenant = Tenant.objects.get(slug="ada-labs")
    assert tenant.name == "Ada Labs" and tenant.plan_id == "free"
    assert Membership.objects.get(tenant=tenant).role == Role.OWNER
    assert tenant_database_path(tenant.id).exists()
    assert "Ada Labs" in client.get("/console/").content.decode()


@pytest.mark.parametrize(
    ("slug", "says"),
    [
        ("api", "reserved"),
        ("www", "reserved"),
        ("admin", "reserved"),
        ("Bad_Slug!", "lowercase"),
        ("-edge", "lowercase"),
        ("ab", "lowercase"),
        ("acme", "taken"),
    ],
)
def test_it_refuses_bad_reserved_and_taken_slugs(cast: Cast, slug: str, says: str) -> None:
    count = Tenant.objects.count()
    response = cast.client("charlie").post("/console/workspaces/new", {"name": "X", "slug": slug})
    assert response.status_code == 400
    assert says in response.content.decode()
    assert Tenant.objects.count() == count


def test_the_switcher_lists_only_my_workspaces(cast: Cast) -> None:
    page = cast.client("charlie").get("/console/w/charlies/").content.decode()
    assert "/console/w/charlies/" in page and "/console/w/acme/" not in page
    page = cast.client("vic").get("/console/w/acme/").content.decode()
    assert "/console/w/acme/" in page and "charlies" not in page


def test_rename_is_audited(cast: Cast) -> None:
    cast.client("adam").post("/console/w/acme/settings/rename", {"name": "Acme Inc"})
    cast.tenant.refresh_from_db()
    assert cast.tenant.name == "Acme Inc"
    event = AuditEvent.objects.get(action="tenant.renamed")
    assert event.actor == cast.people["adam"] and event.metadata == {
        "from": "Acme",
        "to": "Acme Inc",
    }
    cast.client("adam").post("/console/w/acme/settings/rename", {"name": "  "})
    cast.tenant.refresh_from_db()
    assert cast.tenant.name == "Acme Inc"


def test_delete_needs_the_slug_typed(cast: Cast) -> None:
    cast.client("alice").post("/console/w/acme/settings/delete", {"confirm_slug": "acm"})
    cast.tenant.refresh_from_db()
    assert cast.tenant.status == TenantStatus.ACTIVE


def test_delete_removes_the_data_file_keys_and_members(
    cast: Cast, django_capture_on_commit_callbacks: Any
) -> None:
    path = tenant_database_path(cast.tenant.id)
    _, secret = services.create_api_key(tenant=cast.tenant, name="doomed")
    assert ApiClient(secret).get("/v1/memories").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = cast.client("alice").post(
            "/console/w/acme/settings/delete", {"confirm_slug": "acme"}
        )
    assert response.status_code == 302 and response["Location"] == "/console/"
    cast.tenant.refresh_from_db()
    assert cast.tenant.status == TenantStatus.DELETED
    assert not path.exists()
    assert not Membership.objects.filter(tenant=cast.tenant).exists()
    assert not ApiKey.objects.filter(tenant=cast.tenant, revoked_at__isnull=True).exists()
    assert ApiClient(secret).get("/v1/memories").status_code == 401
    assert cast.client("alice").get("/console/w/acme/").status_code == 404
    assert AuditEvent.objects.filter(action="tenant.deleted", target="acme").exists()


def test_an_admin_manages_members_but_not_owners(cast: Cast) -> None:
    adam = cast.client("adam")
    adam.post(f"/console/w/acme/members/{cast.membership('mia').pk}/role", {"role": "admin"})
    assert cast.membership("mia").role == Role.ADMIN
    for url, data in [
        (f"/console/w/acme/members/{cast.membership('vic').pk}/role", {"role": "owner"}),
        (f"/console/w/acme/members/{cast.membership('alice').pk}/role", {"role": "viewer"}),
        (f"/console/w/acme/members/{cast.membership('alice').pk}/remove", {}),
    ]:
        assert adam.post(url, data).status_code == 403
    assert cast.membership("alice").role == Role.OWNER
    assert cast.membership("vic").role == Role.VIEWER
    event = AuditEvent.objects.get(action="member.role_changed")
    assert event.metadata == {"from": "member", "to": "admin"}


def test_the_last_owner_cannot_go(cast: Cast) -> None:
    alice = cast.client("alice")
    own = cast.membership("alice").pk
    for url, data in [
        (f"/console/w/acme/members/{own}/role", {"role": "admin"}),
        (f"/console/w/acme/members/{own}/remove", {}),
        ("/console/w/acme/members/leave", {}),
    ]:
        response = alice.post(url, data, follow=True)
        assert response.status_code == 200
        assert "last owner" in response.content.decode()
    assert cast.membership("alice").role == Role.OWNER
    # With a second owner, the first may step down.
    alice.post(f"/console/w/acme/members/{cast.membership('adam').pk}/role", {"role": "owner"})
    alice.post(f"/console/w/acme/members/{own}/role", {"role": "admin"})
    assert cast.membership("alice").role == Role.ADMIN


def test_remove_and_leave(cast: Cast) -> None:
    cast.client("adam").post(f"/console/w/acme/members/{cast.membership('mia').pk}/remove")
    assert not Membership.objects.filter(user=cast.people["mia"], tenant=cast.tenant).exists()
    assert cast.client("mia").get("/console/w/acme/").status_code == 404
    response = cast.client("vic").post("/console/w/acme/members/leave")
    assert response.status_code == 302 and response["Location"] == "/console/"
    assert not Membership.objects.filter(user=cast.people["vic"], tenant=cast.tenant).exists()
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"member.removed", "member.left"} <= actions


def test_bad_role_is_refused(cast: Cast) -> None:
    url = f"/console/w/acme/members/{cast.membership('mia').pk}/role"
    response = cast.client("alice").post(url, {"role": "emperor"}, follow=True)
    assert "Choose one of" in response.content.decode()
    assert cast.membership("mia").role == Role.MEMBER
