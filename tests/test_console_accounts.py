"""Landing page, sign up, sign in, sign out, password reset; Argon2; throttling per IP and per
account."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from billing.models import Plan
from tenants.models import AuditEvent, User

PASSWORD = "correct horse battery staple"


# Throttling tests use hourly rates: a minute window could roll over in the middle of a test.
# Each test has counters of its own (conftest.throttle_counters_of_its_own).


def sign_up(client: Client, email: str = "ada@example.com", **extra: Any) -> Any:
    return client.post(
        "/accounts/signup/", {"email": email, "password": PASSWORD, "name": "Ada", **extra}
    )


def test_the_landing_page_shows_the_plans_from_the_database(db: None, client: Client) -> None:
    Plan.objects.filter(code="team").update(max_memories=123_456)
    page = client.get("/").content.decode()
    assert "123,456" in page
    for name in ("Free", "Pro", "Team", "Enterprise"):
        assert f"<th>{name}</th>" in page
    assert "/v1/memories" in page and "mcpServers" in page
    assert 'href="/accounts/signup/"' in page


def test_it_signs_up_with_an_argon2_hash_and_signs_in(db: None, client: Client) -> None:
    response = sign_up(client, "Ada@Example.com")
    assert response.status_code == 302 and response["Location"] == "/console/"
    user = User.objects.get(email="ada@example.com")
    assert user.password.startswith("argon2")
    assert client.get("/console/").status_code == 200
    assert AuditEvent.objects.filter(action="user.signed_up", target="ada@example.com").exists()


def test_it_refuses_a_taken_email_and_a_weak_password(db: None, client: Client) -> None:
    sign_up(client)
    again = sign_up(Client())
    assert again.status_code == 400
    assert "already exists" in again.content.decode()
    weak = Client().post("/accounts/signup/", {"email": "bo@example.com", "password": "123"})
    assert weak.status_code == 400
    assert not User.objects.filter(email="bo@example.com").exists()


def test_it_follows_a_safe_next_only(db: None) -> None:
    inside = sign_up(Client(), "a@example.com", next="/console/invites/accept")
    assert inside["Location"] == "/console/invites/accept"
    outside = sign_up(Client(), "b@example.com", next="https://evil.example/")
    assert outside["Location"] == "/console/"


def test_it_signs_in_and_out(db: None, client: Client) -> None:
    User.objects.create_user("ada@example.com", PASSWORD)
    wrong = client.post("/accounts/login/", {"username": "ada@example.com", "password": "nope"})
    assert wrong.status_code == 400
    right = client.post("/accounts/login/", {"username": "ada@example.com", "password": PASSWORD})
    assert right.status_code == 302
    assert client.get("/console/").status_code == 200
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/console/").status_code == 302


def test_login_is_throttled_per_account_across_addresses(db: None, settings: Any) -> None:
    settings.ENGRAM_ACCOUNT_RATE_PER_ACCOUNT = "3/h"
    User.objects.create_user("ada@example.com", PASSWORD)
    for number in range(3):
        client = Client(REMOTE_ADDR=f"10.0.0.{number}")
        client.post("/accounts/login/", {"username": "ada@example.com", "password": "guess"})
    # Even the right password is refused now, from yet another address.
    late = Client(REMOTE_ADDR="10.0.0.99").post(
        "/accounts/login/", {"username": "ADA@example.com", "password": PASSWORD}
    )
    assert late.status_code == 429
    assert "Too many attempts" in late.content.decode()
    other = Client(REMOTE_ADDR="10.0.0.99")
    User.objects.create_user("bo@example.com", PASSWORD)
    assert (
        other.post(
            "/accounts/login/", {"username": "bo@example.com", "password": PASSWORD}
        ).status_code
        == 302
    )


def test_login_is_throttled_per_address_across_accounts(db: None, settings: Any) -> None:
    settings.ENGRAM_ACCOUNT_RATE_PER_IP = "4/h"
    client = Client(REMOTE_ADDR="10.0.0.7")
    statuses = [
        client.post(
            "/accounts/login/", {"username": f"u{n}@example.com", "password": "x"}
        ).status_code
        for n in range(6)
    ]
    assert statuses == [400, 400, 400, 400, 429, 429]
    elsewhere = Client(REMOTE_ADDR="10.0.0.8")
    response = elsewhere.post("/accounts/login/", {"username": "z@example.com", "password": "x"})
    assert response.status_code == 400


def test_signup_is_throttled(db: None, settings: Any) -> None:
    settings.ENGRAM_ACCOUNT_RATE_PER_IP = "2/h"
    client = Client(REMOTE_ADDR="10.0.0.9")
    assert sign_up(client, "one@example.com").status_code == 302
    assert sign_up(Client(REMOTE_ADDR="10.0.0.9"), "two@example.com").status_code == 302
    third = sign_up(Client(REMOTE_ADDR="10.0.0.9"), "three@example.com")
    assert third.status_code == 429
    assert not User.objects.filter(email="three@example.com").exists()


def test_password_reset_mails_a_link_that_sets_a_new_password(db: None, client: Client) -> None:
    User.objects.create_user("ada@example.com", PASSWORD)
    response = client.post("/accounts/password-reset/", {"email": "ada@example.com"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["ada@example.com"]
    link = re.search(r"https?://[^/]+(/accounts/reset/\S+)", mail.outbox[0].body).group(1)
    form = client.get(link, follow=True)
    assert form.status_code == 200 and "Choose a new password" in form.content.decode()
    new = "an entirely new passphrase"
    done = client.post(form.redirect_chain[-1][0], {"new_password1": new, "new_password2": new})
    assert done.status_code == 302
    assert User.objects.get(email="ada@example.com").check_password(new)
    # The link works once.
    assert "no longer valid" in client.get(link, follow=True).content.decode()


def test_password_reset_says_nothing_about_unknown_addresses(db: None, client: Client) -> None:
    response = client.post("/accounts/password-reset/", {"email": "nobody@example.com"})
    assert response.status_code == 302 and not mail.outbox


def test_password_reset_is_throttled_per_account(db: None, settings: Any) -> None:
    settings.ENGRAM_ACCOUNT_RATE_PER_ACCOUNT = "2/h"
    User.objects.create_user("ada@example.com", PASSWORD)
    statuses = [
        Client(REMOTE_ADDR=f"10.1.0.{n}")
        .post("/accounts/password-reset/", {"email": "ada@example.com"})
        .status_code
        for n in range(3)
    ]
    assert statuses == [302, 302, 429]
    assert len(mail.outbox) == 2


def test_forms_need_the_csrf_token(db: None) -> None:
    client = Client(enforce_csrf_checks=True)
    assert sign_up(client).status_code == 403
    assert not User.objects.exists()


def test_cookies_are_secure_when_debug_is_off(settings: Any) -> None:
    """The suite runs with DEBUG off, as production does."""
    assert settings.DEBUG is False
    assert settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE
    assert settings.SESSION_COOKIE_HTTPONLY


def test_the_landing_page_is_logged_under_its_own_route(
    db: None, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="engram.requests"):
        client.get("/")
        client.get("/no/such/page")
    routes = [record.route for record in caplog.records if hasattr(record, "route")]
    assert routes == ["/", "unmatched"]
