"""The staff admin: tenants, members, keys, audit log and plans; suspend, reactivate, revoke."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tenants import services
from tenants.models import ApiKey, AuditEvent, Invite, TenantStatus, User
from tests.conftest import make_tenant


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_superuser("staff@example.com")


@pytest.fixture
def team_acme(db: None):
    return make_tenant("acme", "alice@example.com", plan="team")


@pytest.fixture
def admin_client(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def changelist(model: str) -> str:
    return reverse(f"admin:{model}_changelist")


CHANGELISTS = [
    ("tenants_tenant", "acme"),
    ("tenants_membership", "alice@example.com"),
    ("tenants_apikey", "primary"),
    ("tenants_auditevent", "tenant.created"),
    ("billing_plan", "Enterprise"),
]


@pytest.mark.parametrize(("model", "shown"), CHANGELISTS, ids=[m for m, _ in CHANGELISTS])
def test_changelists_load_and_show_the_objects(admin_client, acme, model, shown):
    response = admin_client.get(changelist(model))
    assert response.status_code == 200
    assert shown in response.content.decode()


def test_api_key_changelist_shows_the_prefix_and_tenant(admin_client, acme):
    page = admin_client.get(changelist("tenants_apikey")).content.decode()
    assert acme.api_key.prefix in page
    assert "acme" in page


def secret_pages(acme):
    return [
        changelist("tenants_apikey"),
        reverse("admin:tenants_apikey_change", args=[acme.api_key.pk]),
        reverse("admin:tenants_tenant_change", args=[acme.tenant.pk]),
        changelist("tenants_auditevent"),
    ]


def test_key_pages_show_prefix_and_state_never_the_secret_or_digest(admin_client, acme):
    response = admin_client.get(reverse("admin:tenants_apikey_change", args=[acme.api_key.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert acme.api_key.prefix in page
    assert "active" in page
    for url in secret_pages(acme):
        page = admin_client.get(url).content.decode()
        assert acme.key not in page, url
        assert acme.key[len(acme.api_key.prefix) :] not in page, url
        assert acme.api_key.digest not in page, url


def run_action(client: Client, model: str, action: str, *pks) -> None:
    response = client.post(
        changelist(model), {"action": action, "_selected_action": [str(pk) for pk in pks]}
    )
    assert response.status_code == 302
    assert response["Location"] == changelist(model)


def test_suspending_a_tenant_blocks_its_keys_and_is_audited(admin_client, staff, acme, globex):
    run_action(admin_client, "tenants_tenant", "suspend", acme.tenant.pk)

    acme.tenant.refresh_from_db()
    globex.tenant.refresh_from_db()
    assert acme.tenant.status == TenantStatus.SUSPENDED
    assert globex.tenant.status == TenantStatus.ACTIVE
    event = AuditEvent.objects.get(action="tenant.suspended")
    assert (event.tenant, event.actor, event.target) == (acme.tenant, staff, "acme")
    response = acme.client().get("/v1/memories")
    assert response.status_code == 403
    assert response.json()["error"] == "tenant_suspended"
    assert globex.client().get("/v1/memories").status_code == 200


def test_reactivating_a_tenant_restores_access_and_is_audited(admin_client, staff, acme):
    run_action(admin_client, "tenants_tenant", "suspend", acme.tenant.pk)
    run_action(admin_client, "tenants_tenant", "reactivate", acme.tenant.pk)

    acme.tenant.refresh_from_db()
    assert acme.tenant.status == TenantStatus.ACTIVE
    event = AuditEvent.objects.get(action="tenant.reactivated")
    assert (event.tenant, event.actor) == (acme.tenant, staff)
    assert acme.client().get("/v1/memories").status_code == 200


def test_revoking_a_key_refuses_it_on_the_next_request(admin_client, staff, acme):
    other_key = acme.issue_key()
    assert acme.client().get("/v1/memories").status_code == 200

    run_action(admin_client, "tenants_apikey", "revoke", acme.api_key.pk)

    acme.api_key.refresh_from_db()
    assert acme.api_key.revoked_at is not None
    event = AuditEvent.objects.get(action="api_key.revoked")
    assert (event.tenant, event.actor, event.target) == (acme.tenant, staff, acme.api_key.prefix)
    response = acme.client().get("/v1/memories")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert ApiKey.objects.get(pk=acme.api_key.pk).state() == "revoked"
    assert acme.client().get("/v1/memories", Authorization=f"Bearer {other_key}").status_code == (
        200
    )


def admin_urls(acme) -> list[str]:
    return [
        reverse("admin:index"),
        *(changelist(model) for model, _ in CHANGELISTS),
        reverse("admin:tenants_tenant_change", args=[acme.tenant.pk]),
        reverse("admin:tenants_apikey_change", args=[acme.api_key.pk]),
    ]


def assert_sent_to_login(response, url: str) -> None:
    assert response.status_code == 302, url
    assert response["Location"].startswith(reverse("admin:login")), url


@pytest.mark.parametrize("who", ["anonymous", "non-staff member"])
def test_only_staff_get_into_the_admin(acme, who):
    client = Client()
    if who != "anonymous":
        client.force_login(User.objects.get(email="alice@example.com"))
    for url in admin_urls(acme):
        assert_sent_to_login(client.get(url), url)

    response = client.post(
        changelist("tenants_tenant"),
        {"action": "suspend", "_selected_action": [str(acme.tenant.pk)]},
    )
    assert_sent_to_login(response, "suspend action")
    acme.tenant.refresh_from_db()
    assert acme.tenant.status == TenantStatus.ACTIVE
    assert not AuditEvent.objects.filter(action="tenant.suspended").exists()


def test_staff_pin_a_plan_in_the_billing_admin_and_it_is_audited(admin_client, acme, staff):
    from billing.models import TenantBilling

    add = reverse("admin:billing_tenantbilling_add")
    response = admin_client.post(add, {"tenant": acme.tenant.pk, "plan_override": "team"})
    assert response.status_code == 302, response.content.decode()[:2000]
    acme.tenant.refresh_from_db()
    assert acme.tenant.plan_id == "team"
    change = AuditEvent.objects.get(action="billing.plan_changed")
    assert change.actor == staff
    assert change.metadata == {"from": "free", "to": "team", "reason": "staff_override"}
    assert AuditEvent.objects.filter(action="billing.plan_override", actor=staff).exists()

    # Clearing the override lets the subscription decide again: none, so Free.
    page = reverse("admin:billing_tenantbilling_change", args=[acme.tenant.pk])
    assert admin_client.post(page, {"plan_override": ""}).status_code == 302
    acme.tenant.refresh_from_db()
    assert acme.tenant.plan_id == "free"
    assert TenantBilling.objects.get(tenant=acme.tenant).plan_override is None


def test_the_tenant_page_shows_the_plan_without_a_field_to_change_it(admin_client, acme):
    page = admin_client.get(reverse("admin:tenants_tenant_change", args=[acme.tenant.pk]))
    html = page.content.decode()
    assert 'name="slug"' in html and 'name="plan"' not in html
    assert "Free" in html


def test_staff_see_each_tenants_subscription(admin_client, acme):
    from billing.models import BillingStatus, TenantBilling

    TenantBilling.objects.create(
        tenant=acme.tenant,
        stripe_customer_id="cus_123",
        stripe_subscription_id="sub_456",
        subscription_status="past_due",
        status=BillingStatus.PAST_DUE,
    )
    page = admin_client.get(changelist("billing_tenantbilling")).content.decode()
    assert "acme" in page and "cus_123" in page and "past_due" in page
    detail = reverse("admin:billing_tenantbilling_change", args=[acme.tenant.pk])
    assert "sub_456" in admin_client.get(detail).content.decode()
    assert admin_client.get(changelist("billing_meterreport")).status_code == 200


def test_records_made_by_services_cannot_be_added_changed_or_deleted_in_the_admin(
    admin_client, team_acme
):
    """The audit log, invites, backups and Stripe meter reports are written by audited
    services and schedules; the admin shows them and offers no way around those."""
    acme = team_acme
    owner = User.objects.get(email=acme.owner_email)
    invite, _ = services.invite_member(
        acme.tenant, email="new@example.com", role="member", invited_by=owner
    )
    event = AuditEvent.objects.filter(tenant=acme.tenant).first()
    for model, pk in (("tenants_invite", invite.pk), ("tenants_auditevent", event.pk)):
        assert admin_client.get(reverse(f"admin:{model}_add")).status_code == 403
        assert admin_client.get(reverse(f"admin:{model}_delete", args=[pk])).status_code == 403
        page = admin_client.post(reverse(f"admin:{model}_change", args=[pk]), {})
        assert page.status_code in (200, 403)  # a read-only view: nothing to save
    for model in ("backups_backuprecord", "billing_meterreport"):
        assert admin_client.get(reverse(f"admin:{model}_add")).status_code == 403
    assert Invite.objects.filter(pk=invite.pk).exists()
    assert AuditEvent.objects.filter(pk=event.pk).exists()
