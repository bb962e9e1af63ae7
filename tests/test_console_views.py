"""Every console URL, from a list of its URL names: an outsider gets 404, anonymous visitors
are sent to sign in, and each role gets exactly what the permission table allows — a viewer
gets 403 on every write. A console URL missing from the list fails
`test_it_covers_every_console_url`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.urls import reverse

from engram_cloud.urls import console_api
from tenants.console import urls as console_urls
from tenants.models import ApiKey, AuditEvent, Tenant
from tenants.permissions import Scope, role_allows
from tests.console_cast import ROLES, Cast, make_cast


@dataclass
class Page:
    method: str
    action: Scope
    # URL kwargs beyond the slug, from the cast.
    kwargs: Callable[[Cast], dict[str, Any]] = lambda cast: {}
    data: Callable[[Cast], dict[str, Any]] = lambda cast: {}
    # The status a role that may do it gets.
    allowed_status: int = 200
    writes: bool = field(init=False)

    def __post_init__(self) -> None:
        self.writes = self.method == "POST"


WORKSPACE_URLS: dict[str, Page] = {
    "usage": Page("GET", Scope.MEMORIES_READ),
    "settings": Page("GET", Scope.MEMORIES_READ),
    "members": Page("GET", Scope.MEMORIES_READ),
    "keys": Page("GET", Scope.MEMORIES_READ),
    "memories": Page("GET", Scope.MEMORIES_READ),
    "memory": Page("GET", Scope.MEMORIES_READ, kwargs=lambda c: {"memory_id": c.memory_id}),
    "audit": Page("GET", Scope.AUDIT_VIEW),
    "billing": Page("GET", Scope.BILLING),
    "billing_success": Page("GET", Scope.BILLING),
    "billing_cancel": Page("GET", Scope.BILLING),
    # Billing is off in these tests (no Stripe keys): both send the owner back to the page.
    "billing_checkout": Page(
        "POST", Scope.BILLING, data=lambda c: {"plan": "enterprise"}, allowed_status=302
    ),
    "billing_portal": Page("POST", Scope.BILLING, allowed_status=302),
    "console_api:usage_daily": Page("GET", Scope.MEMORIES_READ),
    "workspace_rename": Page(
        "POST", Scope.WORKSPACE_MANAGE, data=lambda c: {"name": "Acme Inc"}, allowed_status=302
    ),
    "workspace_delete": Page(
        "POST", Scope.WORKSPACE_DELETE, data=lambda c: {"confirm_slug": "acme"}, allowed_status=302
    ),
    "member_invite": Page(
        "POST",
        Scope.MEMBERS_MANAGE,
        data=lambda c: {"email": "dora@example.com", "role": "viewer"},
        allowed_status=302,
    ),
    # Leaving is the one write every member may do.
    "member_leave": Page("POST", Scope.MEMORIES_READ, allowed_status=302),
    "member_role": Page(
        "POST",
        Scope.MEMBERS_MANAGE,
        kwargs=lambda c: {"membership_id": c.membership("mia").pk},
        data=lambda c: {"role": "viewer"},
        allowed_status=302,
    ),
    "member_remove": Page(
        "POST",
        Scope.MEMBERS_MANAGE,
        kwargs=lambda c: {"membership_id": c.membership("mia").pk},
        allowed_status=302,
    ),
    "invite_resend": Page(
        "POST",
        Scope.MEMBERS_MANAGE,
        kwargs=lambda c: {"invite_id": c.invite.pk},
        allowed_status=302,
    ),
    "invite_revoke": Page(
        "POST",
        Scope.MEMBERS_MANAGE,
        kwargs=lambda c: {"invite_id": c.invite.pk},
        allowed_status=302,
    ),
    "key_create": Page(
        "POST",
        Scope.KEYS_MANAGE,
        data=lambda c: {"name": "ci", "scopes": ["memories:read", "search"]},
    ),
    "key_revoke": Page(
        "POST", Scope.KEYS_MANAGE, kwargs=lambda c: {"key_id": c.key.pk}, allowed_status=302
    ),
    "key_rotate": Page("POST", Scope.KEYS_MANAGE, kwargs=lambda c: {"key_id": c.key.pk}),
    "memory_delete": Page(
        "POST",
        Scope.MEMORIES_WRITE,
        kwargs=lambda c: {"memory_id": c.memory_id},
        allowed_status=302,
    ),
}
# Console URLs outside any workspace, tested in test_console_accounts/_workspaces/_invites.
OTHER_URLS = {"home", "workspace_create", "invite_open", "invite_accept"}

WRITES = sorted(name for name, page in WORKSPACE_URLS.items() if page.writes)


def url_of(name: str, cast: Cast) -> str:
    page = WORKSPACE_URLS[name]
    full = name if ":" in name else f"console:{name}"
    return reverse(full, kwargs={"slug": cast.tenant.slug, **page.kwargs(cast)})


def call(client: Any, name: str, cast: Cast) -> Any:
    page = WORKSPACE_URLS[name]
    send = client.post if page.method == "POST" else client.get
    return send(url_of(name, cast), page.data(cast))


@pytest.fixture
def cast(db: None) -> Cast:
    return make_cast()


def test_it_covers_every_console_url() -> None:
    names = {pattern.name for pattern in console_urls.urlpatterns}
    # ninja's own root (no docs, no schema: a 404) is not a console page.
    api_names = {
        f"console_api:{pattern.name}"
        for pattern in console_api.urls[0]
        if pattern.name != "api-root"
    }
    assert names | api_names == set(WORKSPACE_URLS) | OTHER_URLS


def test_the_json_api_publishes_no_schema_or_docs(client: Any) -> None:
    assert client.get("/console/api/").status_code == 404
    assert client.get("/console/api/openapi.json").status_code == 404
    assert client.get("/console/api/docs").status_code == 404


@pytest.mark.parametrize("name", sorted(WORKSPACE_URLS))
def test_it_answers_404_to_an_outsider(cast: Cast, name: str) -> None:
    before = AuditEvent.objects.count()
    assert call(cast.client("charlie"), name, cast).status_code == 404
    assert AuditEvent.objects.count() == before


@pytest.mark.parametrize("name", sorted(WORKSPACE_URLS))
def test_it_answers_404_for_a_workspace_that_does_not_exist(cast: Cast, name: str) -> None:
    page = WORKSPACE_URLS[name]
    full = name if ":" in name else f"console:{name}"
    url = reverse(full, kwargs={"slug": "nowhere", **page.kwargs(cast)})
    client = cast.client("alice")
    response = client.post(url, page.data(cast)) if page.writes else client.get(url)
    assert response.status_code == 404


@pytest.mark.parametrize("name", sorted(n for n in WORKSPACE_URLS if ":" not in n))
def test_it_sends_anonymous_visitors_to_sign_in(cast: Cast, name: str) -> None:
    response = call(cast.client(None), name, cast)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))


def test_the_json_endpoint_refuses_anonymous_visitors(cast: Cast) -> None:
    assert call(cast.client(None), "console_api:usage_daily", cast).status_code == 401


@pytest.mark.parametrize("name", [n for n in WRITES if n != "member_leave"])
def test_it_answers_403_to_a_viewer_on_every_write(cast: Cast, name: str) -> None:
    before = AuditEvent.objects.count()
    response = call(cast.client("vic"), name, cast)
    assert response.status_code == 403
    assert AuditEvent.objects.count() == before


@pytest.mark.parametrize("name", sorted(WORKSPACE_URLS))
@pytest.mark.parametrize("who", sorted(ROLES))
def test_each_role_gets_what_the_permission_table_allows(cast: Cast, name: str, who: str) -> None:
    page = WORKSPACE_URLS[name]
    response = call(cast.client(who), name, cast)
    if role_allows(ROLES[who], page.action):
        # Removing or demoting yourself is refused by the service, not by the table.
        assert response.status_code == page.allowed_status, response.content[:500]
    else:
        assert response.status_code == 403


def test_a_viewer_sees_no_write_controls(cast: Cast) -> None:
    client = cast.client("vic")
    keys = client.get(url_of("keys", cast)).content.decode()
    assert 'id="key-form"' not in keys and "Revoke" not in keys
    members = client.get(url_of("members", cast)).content.decode()
    assert 'id="invite-form"' not in members and "newcomer@example.com" not in members
    memory = client.get(url_of("memory", cast)).content.decode()
    assert "Delete memory" not in memory
    assert "Audit log" not in client.get(url_of("usage", cast)).content.decode()


def test_an_admin_sees_the_write_controls(cast: Cast) -> None:
    client = cast.client("adam")
    assert 'id="key-form"' in client.get(url_of("keys", cast)).content.decode()
    members = client.get(url_of("members", cast)).content.decode()
    assert 'id="invite-form"' in members and "newcomer@example.com" in members
    assert "Audit log" in client.get(url_of("usage", cast)).content.decode()


def test_ids_of_another_workspace_are_404_inside_your_own(cast: Cast) -> None:
    """Alice owns acme; charlie's workspace's key id under acme's URL is not found."""
    theirs = Tenant.objects.get(slug="charlies")
    key = ApiKey.objects.create(tenant=theirs, name="x", prefix="ek_live_x", digest="0" * 64)
    response = cast.client("alice").post(
        reverse("console:key_revoke", kwargs={"slug": "acme", "key_id": key.pk})
    )
    assert response.status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None
