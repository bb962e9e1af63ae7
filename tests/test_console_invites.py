"""Invites: sent by email with a hashed token, accepted by the invited address (new or
existing account), expired / revoked / used links get a clear page, the plan's member limit."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from tenants import services
from tenants.models import AuditEvent, Invite, Membership, Role, Tenant, User
from tests.console_cast import Cast, make_cast

PASSWORD = "correct horse battery staple"


@pytest.fixture
def cast(db: None) -> Cast:
    return make_cast()


def invite_by_console(cast: Cast, email: str, role: str = "member") -> str:
    """Alice invites `email`; returns the link's path from the mail."""
    mail.outbox.clear()
    response = cast.client("alice").post(
        "/console/w/acme/members/invite", {"email": email, "role": role}
    )
    assert response.status_code == 302, response.content[:400]
    assert mail.outbox[-1].to == [email]
    return re.search(r"https?://[^/\s]+(/console/invites/\S+)", mail.outbox[-1].body).group(1)


def test_the_token_is_stored_only_as_a_digest(cast: Cast) -> None:
    link = invite_by_console(cast, "dora@example.com")
    token = link.rsplit("/", 1)[1]
    invite = Invite.objects.get(email="dora@example.com")
    assert token not in invite.token_digest
    assert invite.token_digest == services.invite_digest(token)
    assert invite.expires_at - timezone.now() > dt.timedelta(days=6, hours=23)
    assert invite.invited_by == cast.people["alice"] and invite.role == Role.MEMBER
    assert AuditEvent.objects.filter(action="member.invited", target="dora@example.com").exists()


def test_a_new_user_signs_up_from_the_link_and_joins(cast: Cast) -> None:
    link = invite_by_console(cast, "dora@example.com", role="viewer")
    client = Client()
    opened = client.get(link)
    assert opened.status_code == 302 and opened["Location"] == "/console/invites/accept"
    page = client.get("/console/invites/accept").content.decode()
    assert "Acme" in page and "viewer" in page and "dora@example.com" in page
    signed_up = client.post(
        "/accounts/signup/",
        {"email": "dora@example.com", "password": PASSWORD, "next": "/console/invites/accept"},
    )
    assert signed_up["Location"] == "/console/invites/accept"
    accepted = client.post("/console/invites/accept")
    assert accepted.status_code == 302 and accepted["Location"] == "/console/w/acme/memories"
    membership = Membership.objects.get(tenant=cast.tenant, user__email="dora@example.com")
    assert membership.role == Role.VIEWER
    assert "blue-green" in client.get("/console/w/acme/memories").content.decode()


def test_an_existing_user_signs_in_and_joins(cast: Cast) -> None:
    User.objects.create_user("dora@example.com", PASSWORD)
    link = invite_by_console(cast, "dora@example.com")
    client = Client()
    client.get(link)
    client.post(
        "/accounts/login/",
        {"username": "dora@example.com", "password": PASSWORD, "next": "/console/invites/accept"},
    )
    assert client.post("/console/invites/accept").status_code == 302
    assert Membership.objects.filter(tenant=cast.tenant, user__email="dora@example.com").exists()


def test_the_wrong_account_gets_a_clear_message(cast: Cast) -> None:
    link = invite_by_console(cast, "dora@example.com")
    client = cast.client("charlie")
    client.get(link)
    page = client.get("/console/invites/accept")
    assert page.status_code == 409
    assert "This invite is for dora@example.com" in page.content.decode()
    refused = client.post("/console/invites/accept")
    assert refused.status_code == 409
    assert "signed in as charlie@example.com" in refused.content.decode()
    assert not Membership.objects.filter(tenant=cast.tenant, user__email="charlie@example.com")


@pytest.mark.parametrize(
    ("spoil", "status", "says"),
    [
        ("expire", 410, "expired"),
        ("revoke", 410, "withdrawn"),
        ("use", 410, "already been used"),
        ("garble", 404, "not valid"),
    ],
)
def test_a_dead_link_gets_a_clear_page(cast: Cast, spoil: str, status: int, says: str) -> None:
    link = invite_by_console(cast, "dora@example.com")
    invite = Invite.objects.get(email="dora@example.com")
    if spoil == "expire":
        Invite.objects.filter(pk=invite.pk).update(expires_at=timezone.now())
    elif spoil == "revoke":
        cast.client("alice").post(f"/console/w/acme/invites/{invite.pk}/revoke")
    elif spoil == "use":
        dora = User.objects.create_user("dora@example.com", PASSWORD)
        services.accept_invite(link.rsplit("/", 1)[1], user=dora)
    else:
        link += "x"
    for client in (Client(), cast.client("charlie")):
        response = client.get(link)
        assert response.status_code == status
        assert says in response.content.decode()


def test_a_link_that_dies_after_opening_gets_a_clear_page_on_accept(cast: Cast) -> None:
    link = invite_by_console(cast, "dora@example.com")
    dora = User.objects.create_user("dora@example.com", PASSWORD)
    client = Client()
    client.force_login(dora)
    client.get(link)
    Invite.objects.update(revoked_at=timezone.now())
    response = client.post("/console/invites/accept")
    assert response.status_code == 410 and "withdrawn" in response.content.decode()
    assert client.get("/console/invites/accept").status_code == 410
    assert not Membership.objects.filter(user=dora).exists()


def test_accept_without_a_link_in_the_session_is_a_clear_page(cast: Cast) -> None:
    response = cast.client("charlie").get("/console/invites/accept")
    assert response.status_code == 404 and "not valid" in response.content.decode()


def test_resending_replaces_the_link(cast: Cast) -> None:
    old = invite_by_console(cast, "dora@example.com")
    invite = Invite.objects.get(email="dora@example.com")
    mail.outbox.clear()
    cast.client("alice").post(f"/console/w/acme/invites/{invite.pk}/resend")
    new = re.search(r"(/console/invites/\S+)", mail.outbox[0].body).group(1)
    assert new != old
    assert Client().get(old).status_code == 404
    assert Client().get(new).status_code == 302


def test_free_and_pro_plans_allow_no_second_member(db: None) -> None:
    cast = make_cast(plan="team")
    for plan in ("free", "pro"):
        solo = services.provision_tenant(slug=f"solo-{plan}", owner=cast.people["alice"], plan=plan)
        response = cast.client("alice").post(
            f"/console/w/{solo.slug}/members/invite",
            {"email": "dora@example.com", "role": "member"},
        )
        assert response.status_code == 400
        assert "allows 1 member" in response.content.decode()
        assert not solo.invites.exists()


def test_the_member_limit_holds_at_accept_too(cast: Cast) -> None:
    link = invite_by_console(cast, "dora@example.com")
    Tenant.objects.filter(pk=cast.tenant.pk).update(plan_id="free")  # downgraded meanwhile
    dora = User.objects.create_user("dora@example.com", PASSWORD)
    client = Client()
    client.force_login(dora)
    client.get(link)
    response = client.post("/console/invites/accept")
    assert response.status_code == 409 and "allows 1 member" in response.content.decode()
    assert not Membership.objects.filter(user=dora).exists()


def test_the_team_limit_counts_pending_invites(cast: Cast) -> None:
    # Team allows 10: four members and one pending invite in the cast.
    for number in range(5):
        invite_by_console(cast, f"p{number}@example.com")
    response = cast.client("alice").post(
        "/console/w/acme/members/invite", {"email": "late@example.com", "role": "member"}
    )
    assert response.status_code == 400 and "allows 10 members" in response.content.decode()


def test_invites_refuse_members_duplicates_owners_and_bad_addresses(cast: Cast) -> None:
    alice = cast.client("alice")
    for data, says in [
        ({"email": "mia@example.com", "role": "member"}, "already a member"),
        ({"email": "newcomer@example.com", "role": "member"}, "pending invite"),
        ({"email": "dora@example.com", "role": "owner"}, "Select a valid choice"),
        ({"email": "not-an-address", "role": "member"}, "valid email"),
    ]:
        response = alice.post("/console/w/acme/members/invite", data)
        assert response.status_code == 400 and says in response.content.decode(), says


def test_a_mail_failure_keeps_the_invite_and_says_so(cast: Cast, settings: object) -> None:
    settings.EMAIL_BACKEND = "tests.test_console_invites.RefusingBackend"
    response = cast.client("alice").post(
        "/console/w/acme/members/invite",
        {"email": "dora@example.com", "role": "member"},
        follow=True,
    )
    assert response.status_code == 200
    assert "the mail was not sent: resend it" in response.content.decode()
    assert Invite.objects.filter(email="dora@example.com").exists()


class RefusingBackend:
    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def send_messages(self, messages: object) -> int:
        raise ConnectionRefusedError("mail server down")


def test_the_link_token_stays_out_of_the_request_log(
    cast: Cast, caplog: pytest.LogCaptureFixture
) -> None:
    link = invite_by_console(cast, "dora@example.com")
    token = link.rsplit("/", 1)[1]
    with caplog.at_level("INFO", logger="engram.requests"):
        Client().get(link)
    lines = [record.getMessage() for record in caplog.records]
    assert any("console/invites" in line for line in lines)
    assert not any(token in line for line in lines)
    assert not any(token in str(record.__dict__) for record in caplog.records)
