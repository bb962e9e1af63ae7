"""After a downgrade nothing is lost: writes over the new plan's limits get 402
`quota_exceeded` with the workspace's upgrade_url, reads and exports keep working, and members
beyond the plan's member limit keep read-only access until an admin removes someone."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.urls import reverse

from billing import services
from billing.models import Plan, TenantBilling
from tenants.models import Membership, Tenant
from tests.conftest import TenantFixture
from tests.console_cast import Cast, make_cast
from tests.fake_stripe import FakeStripe
from tests.test_jwt import identity_provider, member_client  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db


def test_payment_failed_grace_then_free_keeps_reads_and_refuses_writes(
    acme: TenantFixture, fake_stripe: FakeStripe, webhook_path: str
) -> None:
    Plan.objects.filter(code="free").update(max_memories=2)
    owner = acme.tenant.memberships.get().user
    services.start_checkout(
        acme.tenant, "pro", actor=owner, success_url="http://t/ok", cancel_url="http://t/no"
    )
    session = next(o for o in fake_stripe.objects.values() if o.get("object") == "checkout.session")
    subscription = fake_stripe.complete_checkout(session["id"])
    api = acme.client()
    for number in range(3):
        assert api.post("/v1/memories", {"content": f"memory {number}"}).status_code == 201

    fake_stripe.fail_payment(subscription["id"])
    # In the grace period: still Pro.
    assert api.post("/v1/memories", {"content": "during grace"}).status_code == 201
    deadline = TenantBilling.objects.get(tenant=acme.tenant).grace_until
    assert services.end_expired_grace(now=deadline + dt.timedelta(minutes=1)) == 1
    assert Tenant.objects.get(pk=acme.tenant.pk).plan_id == "free"

    refused = api.post("/v1/memories", {"content": "over Free's limit"})
    assert refused.status_code == 402
    body = refused.json()
    assert (body["error"], body["metric"], body["current"], body["limit"]) == (
        "quota_exceeded",
        "memories",
        4,
        2,
    )
    assert body["upgrade_url"] == "/console/w/acme/billing"
    listed = api.get("/v1/memories").json()["data"]
    assert len(listed) == 4
    assert api.get(f"/v1/memories/{listed[0]['id']}").status_code == 200
    assert api.post("/v1/search", {"query": "memory"}).status_code == 200
    export = api.get("/v1/export")
    assert export.status_code == 200
    # Deleting makes room again, without an upgrade.
    for memory in listed[:3]:
        assert api.delete(f"/v1/memories/{memory['id']}").status_code == 204
    assert api.post("/v1/memories", {"content": "fits again"}).status_code == 201


@pytest.fixture
def team(db: None) -> Cast:
    """acme on Team with alice (owner), then adam (admin), mia (member), vic (viewer)."""
    return make_cast()


def drop_to_members(cast: Cast, limit: int) -> None:
    Plan.objects.filter(code="free").update(max_members=limit)
    services.change_plan(cast.tenant, "free", reason="test", actor_label="test")


def keys_create(cast: Cast, who: str) -> int:
    url = reverse("console:key_create", args=["acme"])
    return cast.client(who).post(url, {"name": "ci", "scopes": ["memories:read"]}).status_code


def test_members_beyond_the_member_limit_keep_read_only_access(team: Cast) -> None:
    drop_to_members(team, 2)
    # Seats: alice (owner) and adam (first to join); mia and vic read only.
    assert keys_create(team, "alice") == 200
    assert keys_create(team, "adam") == 200
    memories = reverse("console:memories", args=["acme"])
    delete = reverse("console:memory_delete", args=["acme", team.memory_id])
    mia = team.client("mia")
    assert mia.get(memories).status_code == 200
    assert mia.post(delete).status_code == 403

    # An admin removes someone: the next in line gets their seat back.
    remove = reverse("console:member_remove", args=["acme", team.membership("adam").pk])
    assert team.client("alice").post(remove).status_code == 302
    assert not Membership.objects.filter(user=team.people["adam"]).exists()
    assert mia.post(delete).status_code == 302


def test_an_admin_without_a_seat_cannot_manage_members(team: Cast) -> None:
    drop_to_members(team, 1)
    assert keys_create(team, "adam") == 403
    remove = reverse("console:member_remove", args=["acme", team.membership("mia").pk])
    assert team.client("adam").post(remove).status_code == 403
    assert Membership.objects.filter(user=team.people["mia"]).exists()
    # The owner always has a seat.
    assert team.client("alice").post(remove).status_code == 302


def test_upgrading_again_gives_every_member_their_role_back(team: Cast) -> None:
    drop_to_members(team, 1)
    assert keys_create(team, "adam") == 403
    services.change_plan(team.tenant, "team", reason="test", actor_label="test")
    assert keys_create(team, "adam") == 200


def test_a_member_token_without_a_seat_reads_but_cannot_write(team: Cast, request: Any) -> None:
    """The API (JWT members) follows the same seat rule as the console."""
    keys = request.getfixturevalue("identity_provider")
    drop_to_members(team, 1)
    mia = member_client(keys["rsa"].sign(email="mia@example.com"))
    assert mia.get("/v1/memories").status_code == 200
    assert mia.post("/v1/search", {"query": "deploys"}).status_code == 200
    refused = mia.post("/v1/memories", {"content": "no seat"})
    assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
    alice = member_client(keys["rsa"].sign(email="alice@example.com"))
    assert alice.post("/v1/memories", {"content": "the owner writes"}).status_code == 201
