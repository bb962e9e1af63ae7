"""OWASP API Security Top 10 (2023) hardening, through HTTP: mass assignment (API3), identical
refusals of bad credentials and keys kept out of logs and answers (API2), throttled sign-up and
sign-in and bounded bodies (API4), production settings and the API host guard (API8).

Covered elsewhere and not repeated here:

- POST/PATCH /v1/memories refuse unknown and read-only fields (`id`, `version`, `created_at`,
  `access_count`, …) with `validation_error` and store nothing: tests/test_bad_input.py.
- Each kind of bad API key gets 401 with the no-credential body: tests/test_authentication.py;
  each kind of bad JWT gets 401: tests/test_jwt.py. Here: all of them compared together, body
  and headers, on REST and MCP, rotated keys and JWTs included.
- The request log never holds a key, a body or a query string: tests/test_observability.py.
  Here: every log record at DEBUG, keys sent in every place a client might put one.
- The console shows a new key's secret once and lists only its prefix: tests/test_console_keys.py;
  the admin never shows it: tests/test_admin.py.
- Sign-in throttled per address and per account, sign-up per address, password reset per
  account: tests/test_console_accounts.py. Here: sign-up per account, forged and proxied
  addresses, and the admin's sign-in.
- Bodies over the limit by Content-Length, at the limit, the 5 MB default, a Content-Length
  that is not a number: tests/test_bad_input.py; chunked bodies: tests/test_security_baseline.py.
- Every route by role and by tenant: tests/security/test_permissions.py, tests/test_isolation.py.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from engram_cloud.observability import JsonFormatter
from memories.models import Memory
from memories.tenant_db import bind_tenant_database
from tenants import api_keys, services
from tenants.api_keys import key_digest
from tenants.models import ApiKey, Invite, Membership, Role, Tenant, TenantStatus, User
from tests.conftest import ApiClient, TenantFixture
from tests.console_cast import Cast, make_cast
from tests.test_deployment import production_env
from tests.test_jwt import SigningKey, identity_provider  # noqa: F401 (a fixture)
from tests.test_mcp_protocol import Mcp, post, rpc

ROOT = Path(__file__).resolve().parents[2]
TENANT_HOST = "acme.engram.test"
PASSWORD = "correct horse battery staple"


def stored(fixture: TenantFixture) -> list[dict[str, Any]]:
    with bind_tenant_database(fixture.tenant.id):
        return list(Memory.objects.order_by("pk").values())


def without_request_id(value: Any) -> Any:
    """A JSON body with every `request_id` taken out, wherever it is nested."""
    if isinstance(value, dict):
        return {k: without_request_id(v) for k, v in value.items() if k != "request_id"}
    if isinstance(value, list):
        return [without_request_id(item) for item in value]
    return value


def headers_of(response: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower() != "x-request-id"}


@pytest.fixture
def cast(db: None) -> Cast:
    return make_cast()


# --- API3: mass assignment --------------------------------------------------------------------


READ_ONLY_ARGUMENTS = {
    "id": 999,
    "version": 42,
    "access_count": 1000,
    "created_at": "2000-01-01T00:00:00Z",
    "updated_at": "2000-01-01T00:00:00Z",
    "content_hash": "0" * 64,
    "tenant": "globex",
    "tenant_id": str(uuid.uuid4()),
}


@pytest.mark.parametrize("field, value", READ_ONLY_ARGUMENTS.items(), ids=READ_ONLY_ARGUMENTS)
def test_mcp_tools_refuse_fields_a_client_may_not_set(acme, field, value):
    alice = Mcp(acme.key)
    original = alice.call("memory_create", content="the original")
    before = stored(acme)
    if field != "id":  # memory_update's `id` names the memory to change
        message = alice.fails("memory_update", {"id": original["id"], field: value})
        assert field in message
    message = alice.fails("memory_create", {"content": "planted", field: value})
    assert field in message
    assert stored(acme) == before


def test_signup_ignores_staff_superuser_and_other_account_fields(db: None):
    client = Client()
    response = client.post(
        "/accounts/signup/",
        {
            "email": "mallory@example.com",
            "password": PASSWORD,
            "is_staff": "on",
            "is_superuser": "true",
            "is_active": "false",
            "date_joined": "2000-01-01T00:00:00Z",
            "groups": "1",
            "user_permissions": "1",
            "id": "4242",
        },
    )
    assert response.status_code == 302
    user = User.objects.get(email="mallory@example.com")
    assert (user.is_staff, user.is_superuser, user.is_active) == (False, False, True)
    assert timezone.now() - user.date_joined < dt.timedelta(minutes=1)
    assert not user.groups.exists() and not user.user_permissions.exists()
    assert user.pk != 4242
    assert client.get("/admin/").status_code == 302  # to the admin's sign-in: not staff


def test_a_new_workspace_is_the_creators_on_free_whatever_the_form_adds(cast: Cast):
    charlie = cast.people["charlie"]
    response = cast.client("mia").post(
        "/console/workspaces/new",
        {
            "name": "Mine",
            "slug": "mias",
            "plan": "enterprise",
            "plan_id": "enterprise",
            "status": TenantStatus.SUSPENDED,
            "owner": str(charlie.pk),
            "id": str(uuid.uuid4()),
            "rate_limit_per_minute": "999999",
        },
    )
    assert response.status_code == 302
    tenant = Tenant.objects.get(slug="mias")
    assert (tenant.plan_id, tenant.status, tenant.rate_limit_per_minute) == ("free", "active", None)
    members = {(m.user, m.role) for m in Membership.objects.filter(tenant=tenant)}
    assert members == {(cast.people["mia"], Role.OWNER)}


def test_a_key_is_made_for_this_workspace_by_this_person_whatever_the_form_adds(cast: Cast):
    other = Tenant.objects.get(slug="charlies")
    response = cast.client("adam").post(
        "/console/w/acme/keys/create",
        {
            "name": "planted",
            "scopes": ["memories:read"],
            "tenant": str(other.pk),
            "tenant_id": str(other.pk),
            "created_by": str(cast.people["charlie"].pk),
            "prefix": "ek_live_chosen00",
            "digest": "0" * 64,
            "revoked_at": "2000-01-01T00:00:00Z",
            "expires_at": "2000-01-01T00:00:00Z",
            "rotated_from": str(cast.key.pk),
        },
    )
    assert response.status_code == 200
    secret = re.search(r'<code id="secret">(ek_live_\w+)</code>', response.content.decode())[1]
    key = ApiKey.objects.get(name="planted")
    assert key.tenant == cast.tenant and key.created_by == cast.people["adam"]
    assert key.digest == key_digest(secret) and secret.startswith(key.prefix)
    assert (key.revoked_at, key.expires_at, key.rotated_from) == (None, None, None)
    assert key.scopes == ["memories:read"]
    assert not other.api_keys.filter(name="planted").exists()


def test_an_invite_cannot_make_an_owner_or_land_in_another_workspace(cast: Cast):
    adam = cast.client("adam")
    refused = adam.post(
        "/console/w/acme/members/invite", {"email": "eve@example.com", "role": "owner"}
    )
    assert refused.status_code == 400
    assert not Invite.objects.filter(email="eve@example.com").exists()

    other = Tenant.objects.get(slug="charlies")
    adam.post(
        "/console/w/acme/members/invite",
        {
            "email": "eve@example.com",
            "role": "viewer",
            "tenant": str(other.pk),
            "invited_by": str(cast.people["charlie"].pk),
        },
    )
    invite = Invite.objects.get(email="eve@example.com")
    assert (invite.tenant, invite.role, invite.invited_by) == (
        cast.tenant,
        Role.VIEWER,
        cast.people["adam"],
    )


def test_accepting_an_invite_gives_the_invited_role_whatever_the_form_adds(cast: Cast):
    newcomer = User.objects.create_user("newcomer@example.com", PASSWORD)
    client = Client()
    client.force_login(newcomer)
    assert client.get(f"/console/invites/{cast.invite_token}").status_code == 302
    response = client.post(
        "/console/invites/accept", {"role": "owner", "tenant": str(uuid.uuid4())}
    )
    assert response.status_code == 302
    membership = Membership.objects.get(user=newcomer)
    assert (membership.tenant, membership.role) == (cast.tenant, Role.MEMBER)


def test_no_role_can_raise_itself(cast: Cast):
    for who in ("adam", "mia", "vic"):
        own = cast.membership(who)
        response = cast.client(who).post(
            f"/console/w/acme/members/{own.pk}/role", {"role": "owner"}
        )
        assert response.status_code == 403, who
        assert cast.membership(who).role == own.role


def test_renaming_a_workspace_changes_only_its_name(cast: Cast):
    response = cast.client("adam").post(
        "/console/w/acme/settings/rename",
        {"name": "Acme Two", "slug": "stolen", "plan": "enterprise", "status": "suspended"},
    )
    assert response.status_code == 302
    tenant = Tenant.objects.get(pk=cast.tenant.pk)
    assert (tenant.name, tenant.slug, tenant.plan_id, tenant.status) == (
        "Acme Two",
        "acme",
        "team",
        "active",
    )


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_the_console_json_api_takes_no_writes(cast: Cast, method: str):
    client = cast.client("alice")
    response = getattr(client, method)(
        "/console/api/w/acme/usage/daily",
        json.dumps({"workspace": "charlies", "days": []}),
        content_type="application/json",
    )
    assert response.status_code == 405


# --- API2: every refused credential looks the same ---------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rotated_past_its_grace(acme: TenantFixture, idp: Any) -> dict[str, str]:
    services.rotate_api_key(acme.api_key)
    ApiKey.objects.filter(pk=acme.api_key.pk).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    return bearer(acme.key)


def revoked(acme: TenantFixture, idp: Any) -> dict[str, str]:
    services.revoke_api_key(acme.api_key)
    return bearer(acme.key)


def bad_checksum(acme: TenantFixture, idp: Any) -> dict[str, str]:
    return bearer(acme.key[:-1] + ("A" if acme.key[-1] != "A" else "B"))


REFUSED_CREDENTIALS = {
    "missing": lambda acme, idp: {},
    "malformed": lambda acme, idp: bearer("ek_live_short"),
    "bad checksum": bad_checksum,
    "unknown": lambda acme, idp: bearer(api_keys.generate_key()),
    "unknown in X-API-Key": lambda acme, idp: {"X-API-Key": api_keys.generate_key()},
    "revoked": revoked,
    "expired": lambda acme, idp: bearer(
        acme.issue_key(expires_at=timezone.now() - dt.timedelta(seconds=1))
    ),
    "rotated past its grace": rotated_past_its_grace,
    "jwt expired": lambda acme, idp: bearer(
        idp["rsa"].sign(email="alice@example.com", exp=int(timezone.now().timestamp()) - 300)
    ),
    "jwt of an unknown signer": lambda acme, idp: bearer(
        SigningKey("rogue", "RS256").sign(email="alice@example.com")
    ),
    "jwt for another audience": lambda acme, idp: bearer(
        idp["ec"].sign(email="alice@example.com", aud="another-service")
    ),
    "jwt of nobody with an account": lambda acme, idp: bearer(
        idp["rsa"].sign(email="nobody@example.com")
    ),
    "jwt garbage": lambda acme, idp: bearer("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"),
}


def refused_answers(headers: dict[str, str]) -> list[Any]:
    """The same refusal asked of a REST read, a REST write and the MCP endpoint."""
    tenant = {"X-Engram-Tenant": "acme"}
    api = ApiClient(**headers, **tenant)
    return [
        api.get("/v1/memories"),
        api.post("/v1/memories", {"content": "should not land"}),
        post(rpc("tools/list"), **headers, **tenant),
    ]


@pytest.mark.parametrize("make", REFUSED_CREDENTIALS.values(), ids=REFUSED_CREDENTIALS)
def test_every_refused_credential_gets_the_same_401_body_and_headers(
    acme,
    identity_provider,  # noqa: F811 (the fixture imported above)
    make,
):
    references = refused_answers({})
    answers = refused_answers(make(acme, identity_provider))
    for reference, answer in zip(references, answers, strict=True):
        assert answer.status_code == 401, answer.content
        assert answer["WWW-Authenticate"] == "Bearer"
        assert without_request_id(answer.json()) == without_request_id(reference.json())
        assert headers_of(answer) == headers_of(reference)
    assert stored(acme) == []


# --- API2: keys never in logs, answers or errors ------------------------------------------------


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], str]]:
    """Everything logged so far in the test, at DEBUG: the plain text and the JSON lines the
    production handler writes (with the request log's extra fields)."""
    formatter = JsonFormatter()
    with caplog.at_level(logging.DEBUG):
        yield lambda: "\n".join(
            [caplog.text, *(formatter.format(record) for record in caplog.records)]
        )


def places_for(key: str, good: str) -> list[tuple[str, str, dict[str, str], Any]]:
    """Every place a client might put `key`: the credential headers (alone and with another
    credential), odd schemes, the path, query parameters, and body fields of REST and MCP."""
    with_good = bearer(good)
    return [
        ("GET", "/v1/memories", bearer(key), None),
        ("POST", "/v1/memories", bearer(key), {"content": "x"}),
        ("GET", "/v1/memories", {"X-API-Key": key}, None),
        ("GET", "/v1/memories", {"X-API-Key": f"  {key}  "}, None),
        ("GET", "/v1/memories", {**with_good, "X-API-Key": key}, None),
        ("GET", "/v1/memories", {"Authorization": f"Basic {key}"}, None),
        ("GET", "/v1/memories", {"Authorization": f"Token {key}"}, None),
        ("GET", "/v1/memories", {"Authorization": key}, None),
        ("GET", "/v1/memories", {**with_good, "X-Request-Id": key}, None),
        ("GET", "/v1/memories/404", {**with_good, "X-Request-Id": key}, None),
        ("GET", f"/v1/memories/{key}", with_good, None),
        ("GET", f"/v1/memories?api_key={key}", {}, None),
        ("GET", f"/v1/memories?api_key={key}", with_good, None),
        ("GET", f"/v1/memories?key={key}&type={key}", with_good, None),
        ("GET", f"/v1/memories?workspace={key}&cursor={key}", with_good, None),
        ("GET", f"/v1/memories?sort={key}&tier={key}", with_good, None),
        ("GET", f"/v1/export?api_key={key}", with_good, None),
        ("POST", "/v1/memories", with_good, {"content": "x", "api_key": key}),
        ("POST", "/v1/memories", with_good, {"content": "x", "type": key, "tier": key}),
        ("POST", "/v1/memories", with_good, {"content": "x", "workspace": key}),
        ("POST", "/v1/memories", {}, {"content": "x", "api_key": key}),
        ("PATCH", "/v1/memories/1", with_good, {"type": key, "authorization": key}),
        ("POST", "/v1/search", with_good, {"query": "x", "api_key": key, "strategy": key}),
        ("POST", "/v1/import", with_good, {"version": "1.0", "api_key": key, "memories": []}),
        ("POST", "/v1/mcp", bearer(key), rpc("tools/list")),
        ("POST", "/v1/mcp", {"X-API-Key": key}, rpc("tools/list")),
        ("POST", "/mcp", bearer(key), rpc("tools/list")),
        (
            "POST",
            "/v1/mcp",
            with_good,
            rpc("tools/call", {"name": "memory_create", "arguments": {"content": "x", "k": key}}),
        ),
        (
            "POST",
            "/v1/mcp",
            with_good,
            rpc("tools/call", {"name": "memory_list", "arguments": {"memory_type": key}}),
        ),
        ("POST", "/v1/mcp", with_good, rpc("tools/call", {"name": key, "arguments": {}})),
        ("POST", "/v1/mcp", with_good, rpc(key, {"api_key": key})),
    ]


def send_raw(method: str, path: str, headers: dict[str, str], body: Any) -> Any:
    client = Client()
    if body is None:
        return client.generic(method, path, headers=headers)
    return client.generic(
        method, path, json.dumps(body), content_type="application/json", headers=headers
    )


def test_keys_never_appear_in_logs_answers_or_errors(acme, globex, logged):
    # Enterprise has no rate limit: every request below reaches the stage that answers it.
    Tenant.objects.filter(pk=acme.tenant.pk).update(plan_id="enterprise")
    alice = acme.client()
    alice.post("/v1/memories", {"content": "the first memory"})
    valid = acme.key
    revoked_key = acme.issue_key()
    services.revoke_api_key(ApiKey.objects.get(digest=key_digest(revoked_key)))
    keys = {
        "valid": valid,
        "another tenant's": globex.key,
        "revoked": revoked_key,
        "unknown": api_keys.generate_key(),
        "unknown test-mode": api_keys.generate_key("test"),
        "bad checksum": valid[:-1] + ("A" if valid[-1] != "A" else "B"),
    }
    answers = []
    for key in keys.values():
        for method, path, headers, body in places_for(key, good=valid):
            response = send_raw(method, path, headers, body)
            assert response.status_code < 500, (path, response.content)
            answers.append(response)

    # The part after `ek_live_`: no answer or log line holds it, whole key or not.
    secrets = {name: key.split("_", 2)[2] for name, key in keys.items()}
    for response in answers:
        text = response.content.decode() + json.dumps(dict(response.headers))
        for name, secret in secrets.items():
            assert secret not in text, (name, response.wsgi_request.get_full_path(), text)
    log = logged()
    assert acme.api_key.prefix in log  # the display prefix is what identifies a key
    for name, secret in secrets.items():
        assert secret not in log, name


def test_a_key_made_in_the_console_is_shown_once_and_never_logged(cast: Cast, logged):
    adam = cast.client("adam")
    created = adam.post(
        "/console/w/acme/keys/create", {"name": "ci", "scopes": ["memories:read"]}
    ).content.decode()
    secret = re.search(r'<code id="secret">(ek_live_\w+)</code>', created)[1]
    key = ApiKey.objects.get(name="ci")
    rotated = adam.post(f"/console/w/acme/keys/{key.pk}/rotate").content.decode()
    new_secret = re.search(r'<code id="secret">(ek_live_\w+)</code>', rotated)[1]
    assert secret not in rotated

    pages = ["keys", "audit", "settings", "members", "memories", ""]
    for owner_or_admin in ("alice", "adam"):
        for page in pages:
            response = cast.client(owner_or_admin).get(f"/console/w/acme/{page}")
            assert response.status_code == 200, page
            text = response.content.decode()
            for shown_once in (secret, new_secret):
                assert shown_once.split("_", 2)[2] not in text, page
            if page == "keys":
                assert key.prefix in text
    log = logged()
    for shown_once in (secret, new_secret):
        assert shown_once.split("_", 2)[2] not in log


# --- API4: sign-up and sign-in throttled ----------------------------------------------------------


def address() -> str:
    """An address no other test uses: throttle counters live in the shared cache (Redis)."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


def test_signup_is_throttled_per_account_across_addresses(db: None, settings):
    settings.ENGRAM_ACCOUNT_RATE_PER_ACCOUNT = "3/h"
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    statuses = [
        Client(REMOTE_ADDR=address())
        .post("/accounts/signup/", {"email": email, "password": PASSWORD})
        .status_code
        for _ in range(4)
    ]
    # The first signs up; the next are refused (taken) until the account's budget is spent.
    assert statuses == [302, 400, 400, 429]


def login_statuses(client_for: Any, attempts: int) -> list[int]:
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    return [
        client_for(n)
        .post("/accounts/login/", {"username": f"{n}{email}", "password": "guess"})
        .status_code
        for n in range(attempts)
    ]


def test_a_forged_forwarding_header_does_not_escape_the_address_throttle(db: None, settings):
    settings.ENGRAM_ACCOUNT_RATE_PER_IP = "3/h"
    remote = address()
    statuses = login_statuses(
        lambda n: Client(REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=address()), 5
    )
    assert statuses == [400, 400, 400, 429, 429]


def test_behind_a_proxy_the_address_the_proxy_saw_is_throttled(db: None, settings):
    """With RATELIMIT_IP_META_KEY set, the proxy's header names the client; entries a client
    prepends to X-Forwarded-For do not change who it is, and a request without the header (or
    with junk in it) is counted by its own address instead of failing."""
    settings.ENGRAM_ACCOUNT_RATE_PER_IP = "3/h"
    settings.ENGRAM_CLIENT_IP_META_KEY = "HTTP_X_FORWARDED_FOR"
    proxy, client_address = address(), address()

    def through_proxy(n: int) -> Client:
        forged = f"{address()}, {address()}"
        return Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=f"{forged}, {client_address}")

    assert login_statuses(through_proxy, 5) == [400, 400, 400, 429, 429]
    # Others behind the same proxy are not affected.
    other = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=address())
    assert login_statuses(lambda n: other, 1) == [400]
    for forwarded in (None, "", "not an address", "unknown, also-junk"):
        extra = {} if forwarded is None else {"HTTP_X_FORWARDED_FOR": forwarded}
        alone = Client(REMOTE_ADDR=address(), **extra)
        assert login_statuses(lambda n, alone=alone: alone, 1) == [400], forwarded


def test_the_admin_sign_in_shares_the_consoles_budget_per_account(db: None, settings):
    settings.ENGRAM_ACCOUNT_RATE_PER_ACCOUNT = "3/h"
    email = f"staff-{uuid.uuid4().hex[:8]}@example.com"
    User.objects.create_superuser(email, PASSWORD)
    guess = {"username": email, "password": "guess"}
    # Two guesses on the console's form, one on the admin's: the account's budget is spent.
    assert Client(REMOTE_ADDR=address()).post("/accounts/login/", guess).status_code == 400
    assert Client(REMOTE_ADDR=address()).post("/accounts/login/", guess).status_code == 400
    assert Client(REMOTE_ADDR=address()).post("/admin/login/", guess).status_code == 200
    late = Client(REMOTE_ADDR=address())
    right = late.post("/admin/login/", {"username": email, "password": PASSWORD})
    assert right.status_code == 429
    assert late.get("/admin/").status_code == 302  # not signed in


def test_the_admin_sign_in_is_throttled_per_address(db: None, settings):
    settings.ENGRAM_ACCOUNT_RATE_PER_IP = "3/h"
    client = Client(REMOTE_ADDR=address())
    statuses = [
        client.post("/admin/login/", {"username": f"u{n}@example.com", "password": "x"}).status_code
        for n in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]


# --- API8: production settings ------------------------------------------------------------------


def deploy_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = production_env(tmp_path)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deploy_checks(tmp_path):
    result = deploy_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "weakened, warning",
    [
        ({"SECURE_SSL_REDIRECT": "0"}, "security.W008"),
        ({"SECURE_HSTS_SECONDS": "0"}, "security.W004"),
        ({"SECRET_KEY": "short"}, "security.W009"),
    ],
    ids=["no https redirect", "no hsts", "weak secret key"],
)
def test_the_deploy_checks_catch_a_weakened_setting(tmp_path, weakened, warning):
    result = deploy_check(tmp_path, **weakened)
    assert result.returncode != 0
    assert warning in result.stdout + result.stderr


def test_answers_carry_the_hardening_headers(db: None):
    response = Client().get("/health", secure=True)
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    page = Client().get("/accounts/login/", secure=True)
    assert page["X-Frame-Options"] == "DENY"
    assert page.cookies["csrftoken"]["secure"] and page.cookies["csrftoken"]["samesite"] == "Lax"


# --- API4: bodies are bounded before they are read ------------------------------------------------


def raw_post(
    api: ApiClient, path: str, body: bytes, content_length: str | None, chunked: bool = False
) -> Any:
    """A POST whose Content-Length says what the test wants, whatever the body holds."""
    extra: dict[str, Any] = {"wsgi.input": io.BytesIO(body)}
    extra["CONTENT_LENGTH"] = "" if content_length is None else content_length
    if chunked:
        extra["HTTP_TRANSFER_ENCODING"] = "chunked"
    return api.client.generic(
        "POST", path, headers=api.headers, CONTENT_TYPE="application/json", **extra
    )


def memory_body(size: int) -> bytes:
    return b'{"content": "' + b"x" * size + b'"}'


def assert_refused(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response.json()["error"] == code
    assert response.json()["request_id"] == response["X-Request-Id"]


def test_a_content_length_above_the_limit_is_refused_unread(acme, alice_api, settings):
    settings.ENGRAM_MAX_BODY_BYTES = 1000
    # It claims a lot and sends little: refused on the claim, the body never read.
    assert_refused(
        raw_post(alice_api, "/v1/memories", memory_body(10), "5000"), 413, "payload_too_large"
    )
    assert stored(acme) == []


def test_a_content_length_below_the_body_reads_no_further(acme, alice_api, settings):
    settings.ENGRAM_MAX_BODY_BYTES = 1000
    body = memory_body(5000)
    assert_refused(raw_post(alice_api, "/v1/memories", body, "20"), 400, "invalid_json")
    assert stored(acme) == []


@pytest.mark.parametrize("length", ["-1", "-99999999", "+5", "1e3", "0x10", " "])
def test_a_content_length_that_is_not_a_plain_count_is_refused(acme, alice_api, length):
    response = raw_post(alice_api, "/v1/memories", memory_body(10), length)
    assert_refused(response, 400, "validation_error")
    assert "Content-Length" in response.json()["fields"]
    assert stored(acme) == []


def test_a_body_without_content_length_or_chunking_is_no_body(acme, alice_api):
    response = raw_post(alice_api, "/v1/memories", memory_body(10), None)
    assert_refused(response, 400, "validation_error")
    assert stored(acme) == []


def test_chunking_wins_over_a_content_length_sent_with_it(acme, alice_api, settings):
    """A request with both is read as chunked (RFC 9112 §6.3), so a small Content-Length
    cannot slip a large chunked body past the limit, nor cut a small one short."""
    settings.ENGRAM_MAX_BODY_BYTES = 1000
    big = raw_post(alice_api, "/v1/memories", memory_body(5000), "20", chunked=True)
    assert_refused(big, 413, "payload_too_large")
    small = raw_post(alice_api, "/v1/memories", memory_body(50), "20", chunked=True)
    assert small.status_code == 201, small.content
    assert [m["content"] for m in stored(acme)] == ["x" * 50]


def export_file(count: int, size: int) -> bytes:
    memories = [{"content": f"{n} " + "y" * size} for n in range(count)]
    return json.dumps({"version": "1.0", "memories": memories}).encode()


def test_imports_have_their_own_larger_limit(acme, alice_api, settings):
    settings.ENGRAM_MAX_BODY_BYTES = 1_000
    settings.ENGRAM_IMPORT_MAX_BODY_BYTES = 20_000
    within = export_file(5, 2_000)
    assert 1_000 < len(within) < 20_000
    assert_refused(
        raw_post(alice_api, "/v1/memories", within, str(len(within))), 413, "payload_too_large"
    )
    for chunked in (False, True):
        length = None if chunked else str(len(within))
        response = raw_post(alice_api, "/v1/import", within, length, chunked=chunked)
        assert response.status_code == 200, response.content
        assert response.json()["imported"] == (5 if not chunked else 0)
    assert len(stored(acme)) == 5

    over = export_file(20, 2_000)
    assert len(over) > 20_000
    assert_refused(
        raw_post(alice_api, "/v1/import", over, str(len(over))), 413, "payload_too_large"
    )
    assert_refused(
        raw_post(alice_api, "/v1/import", over, None, chunked=True), 413, "payload_too_large"
    )
    upload = SimpleUploadedFile("export.json", over, content_type="application/json")
    multipart = alice_api.client.post("/v1/import", {"file": upload}, headers=alice_api.headers)
    assert_refused(multipart, 413, "payload_too_large")
    assert len(stored(acme)) == 5


def test_the_limit_holds_before_authentication_and_on_every_path(db: None, settings):
    settings.ENGRAM_MAX_BODY_BYTES = 1000
    body = memory_body(2000)
    for path in ("/v1/memories", "/accounts/signup/", "/stripe/webhook/x/"):
        response = Client().post(path, body, content_type="application/json")
        assert_refused(response, 413, "payload_too_large")


@pytest.mark.parametrize("path", ["/v1/mcp", "/mcp"])
def test_mcp_clients_read_body_refusals_as_json_rpc_errors(db: None, settings, path):
    settings.ENGRAM_MAX_BODY_BYTES = 1000
    for body, length, status, code in [
        (json.dumps(rpc("ping", {"pad": "x" * 2000})).encode(), None, 413, "payload_too_large"),
        (json.dumps(rpc("ping")).encode(), "-1", 400, "validation_error"),
    ]:
        response = raw_post(ApiClient(), path, body, length or str(len(body)))
        assert response.status_code == status
        answer = response.json()
        assert (answer["jsonrpc"], answer["id"], answer["error"]["code"]) == ("2.0", None, -32600)
        assert answer["error"]["data"]["error"] == code
        assert answer["error"]["data"]["request_id"] == response["X-Request-Id"]


# --- API8: the console, the admin and /metrics are not on the API hosts -----------------------

NOT_THE_API = [
    "/",
    "/admin/",
    "/admin/login/",
    "/admin/tenants/tenant/",
    "/metrics",
    "/console/",
    "/console/w/acme/",
    "/console/w/acme/keys",
    "/console/api/w/acme/usage/daily",
    "/accounts/login/",
    "/accounts/signup/",
    "/stripe/webhook/00000000-0000-0000-0000-000000000000/",
    "/no-such-page",
]
API_HOSTS = [
    TENANT_HOST,
    "ACME.engram.test:8443",
    "no-such-tenant.engram.test",
    "api.engram.test",
    "mcp.engram.test",
    "x.acme.engram.test",
]


@pytest.fixture
def staff(cast: Cast, settings) -> Client:
    """A signed-in staff member who is also acme's owner, from loopback, with the metrics
    token: everything is reachable for them on the base domain."""
    settings.ENGRAM_METRICS_TOKEN = "metrics-token-for-tests"
    alice = cast.people["alice"]
    User.objects.filter(pk=alice.pk).update(is_staff=True, is_superuser=True)
    client = Client(REMOTE_ADDR="127.0.0.1")
    client.force_login(User.objects.get(pk=alice.pk))
    return client


@pytest.mark.parametrize("host", API_HOSTS)
@pytest.mark.parametrize("path", NOT_THE_API)
def test_an_api_host_serves_nothing_but_the_api(staff: Client, host: str, path: str):
    headers = {"Host": host, "Authorization": "Bearer metrics-token-for-tests"}
    for method in ("get", "post"):
        response = getattr(staff, method)(path, headers=headers)
        assert response.status_code == 404, (method, response.content[:200])
        assert response["Content-Type"] == "application/json"
        body = response.json()
        assert body == {
            "error": "not_found",
            "message": "Not found.",
            "request_id": body["request_id"],
        }
        assert body["request_id"] == response["X-Request-Id"]


@pytest.mark.parametrize("path", NOT_THE_API[:-2])
def test_the_base_domain_and_local_hosts_serve_everything(staff: Client, path: str):
    for host in ("engram.test", "localhost", "www.engram.test", "app.engram.test"):
        headers = {"Host": host, "Authorization": "Bearer metrics-token-for-tests"}
        response = staff.get(path, headers=headers)
        assert response.status_code in (200, 302), (host, path, response.status_code)


def test_a_form_posted_to_an_api_host_changes_nothing(db: None):
    response = Client().post(
        "/accounts/signup/",
        {"email": "posted@example.com", "password": PASSWORD},
        headers={"Host": TENANT_HOST},
    )
    assert response.status_code == 404
    assert not User.objects.filter(email="posted@example.com").exists()


def test_the_api_still_answers_on_its_host(acme):
    api = ApiClient(acme.key, Host=TENANT_HOST)
    created = api.post("/v1/memories", {"content": "over the tenant's host"})
    assert created.status_code == 201
    assert api.get(f"/v1/memories/{created.json()['id']}").json()["content"] == (
        "over the tenant's host"
    )
    missing = api.get("/v1/memories/424242")
    assert_refused(missing, 404, "not_found")
    for path in ("/health", "/ready", "/v1/openapi.json"):
        assert Client().get(path, headers={"Host": TENANT_HOST}).status_code == 200, path
    for path in ("/v1/mcp", "/mcp"):
        ping = post(
            rpc("ping"), acme.key, path, Host=TENANT_HOST, **{"MCP-Protocol-Version": "2025-11-25"}
        )
        assert ping.status_code == 200 and ping.json()["result"] == {}, path
