"""API-key authentication and tenant resolution on /v1, through HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import uuid

import pytest
from django.conf import settings
from django.utils import timezone

from billing import services as billing_services
from memories.models import Memory
from memories.tenant_db import bind_tenant_database
from tenants import api_keys, services
from tenants.models import ApiKey, AuditEvent, Tenant
from tests.conftest import ApiClient

KEY_FORMAT = re.compile(r"^ek_live_[0-9A-Za-z]{42}$")


def call(method="GET", path="/v1/memories", body=None, **headers):
    """One request with exactly the headers given: no credentials unless they are named."""
    api = ApiClient()
    if method == "GET":
        return api.get(path, **headers)
    return api.request(method, path, body, headers=headers)


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == code
    assert body["message"]
    assert body["request_id"] == response["X-Request-Id"]
    return body


def stored_memories(tenant_fixture):
    """Every row in the tenant's own database file, read without going through the API."""
    with bind_tenant_database(tenant_fixture.tenant.id):
        return list(Memory.objects.order_by("pk").values())


# --- Every authentication failure looks the same -------------------------------------------------


def no_credentials(acme):
    return {}


def wrong_prefix(acme):
    return bearer("ek_prod_" + acme.key.removeprefix("ek_live_"))


def foreign_prefix(acme):
    return bearer("sk_live_" + acme.key.removeprefix("ek_live_"))


def too_long(acme):
    return bearer(acme.key + "x")


def too_short(acme):
    return bearer(acme.key[:-1])


def bad_checksum(acme):
    last = "A" if acme.key[-1] != "A" else "B"
    return bearer(acme.key[:-1] + last)


def unknown_key(acme):
    return bearer(api_keys.generate_key())


def unknown_test_mode_key(acme):
    return bearer(api_keys.generate_key("test"))


def revoked_key(acme):
    services.revoke_api_key(acme.api_key)
    return bearer(acme.key)


def expired_key(acme):
    return bearer(acme.issue_key(expires_at=timezone.now() - dt.timedelta(seconds=1)))


def key_of_a_deleted_tenant(acme):
    Tenant.objects.filter(pk=acme.tenant.pk).update(status="deleted")
    return bearer(acme.key)


def non_key_bearer_token(acme):
    # A JWT-shaped token: no JWKS is configured, so it is just another bad credential.
    return bearer("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl")


def empty_bearer(acme):
    return {"Authorization": "Bearer "}


def basic_auth(acme):
    token = base64.b64encode(b"alice@example.com:hunter2").decode()
    return {"Authorization": f"Basic {token}"}


def key_under_basic_scheme(acme):
    return {"Authorization": f"Basic {acme.key}"}


def bad_x_api_key(acme):
    return {"X-API-Key": "not-a-key"}


def revoked_x_api_key(acme):
    services.revoke_api_key(acme.api_key)
    return {"X-API-Key": acme.key}


BAD_CREDENTIALS = [
    no_credentials,
    wrong_prefix,
    foreign_prefix,
    too_long,
    too_short,
    bad_checksum,
    unknown_key,
    unknown_test_mode_key,
    revoked_key,
    expired_key,
    key_of_a_deleted_tenant,
    non_key_bearer_token,
    empty_bearer,
    basic_auth,
    key_under_basic_scheme,
    bad_x_api_key,
    revoked_x_api_key,
]


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS, ids=lambda f: f.__name__)
def test_every_bad_credential_gets_the_same_401(acme, credentials):
    reference = call().json()
    response = call(**credentials(acme))
    body = assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"] == "Bearer"
    assert set(body) == {"error", "message", "request_id"}
    assert {**body, "request_id": None} == {**reference, "request_id": None}


@pytest.mark.parametrize(
    "credentials", [revoked_key, expired_key, unknown_key], ids=lambda f: f.__name__
)
def test_a_refused_key_writes_nothing(acme, credentials):
    acme.client().post("/v1/memories", {"content": "the original"})
    before = stored_memories(acme)
    headers = credentials(acme)
    assert call("POST", body={"content": "should not land"}, **headers).status_code == 401
    assert call("PATCH", "/v1/memories/1", {"content": "x"}, **headers).status_code == 401
    assert call("DELETE", "/v1/memories/1", **headers).status_code == 401
    assert stored_memories(acme) == before


def test_the_key_is_checked_before_the_tenant_or_the_path(acme):
    response = call("GET", "/v1/does-not-exist", **bearer(api_keys.generate_key()))
    assert_error(response, 401, "unauthorized")


# --- Two ways to send a key, never both ----------------------------------------------------------


def test_it_accepts_the_key_in_x_api_key(acme):
    response = call(**{"X-API-Key": acme.key})
    assert response.status_code == 200
    assert response.json() == {"data": [], "next_cursor": None}


def test_it_accepts_the_bearer_scheme_in_any_case(acme):
    assert call(Authorization=f"bearer {acme.key}").status_code == 200


@pytest.mark.parametrize(
    "api_key_header",
    ["own key", "other key", "garbage"],
)
def test_authorization_and_x_api_key_together_are_refused(acme, globex, api_key_header):
    value = {"own key": acme.key, "other key": globex.key, "garbage": "x"}[api_key_header]
    response = call(**bearer(acme.key), **{"X-API-Key": value})
    assert_error(response, 400, "conflicting_credentials")


def test_conflicting_credentials_write_nothing(acme):
    headers = {**bearer(acme.key), "X-API-Key": acme.key}
    response = call("POST", body={"content": "twice authenticated"}, **headers)
    assert_error(response, 400, "conflicting_credentials")
    assert stored_memories(acme) == []


# --- Tenant status -------------------------------------------------------------------------------


def test_a_suspended_tenant_gets_403_until_it_is_reactivated(acme, alice_api):
    alice_api.post("/v1/memories", {"content": "kept while suspended"})
    services.suspend_tenant(acme.tenant)

    assert_error(alice_api.get("/v1/memories"), 403, "tenant_suspended")
    assert_error(alice_api.post("/v1/memories", {"content": "x"}), 403, "tenant_suspended")
    assert_error(alice_api.delete("/v1/memories/1"), 403, "tenant_suspended")

    services.reactivate_tenant(acme.tenant)
    response = alice_api.get("/v1/memories")
    assert response.status_code == 200
    assert [m["content"] for m in response.json()["data"]] == ["kept while suspended"]


def test_suspending_one_tenant_leaves_the_other_alone(acme, globex, bob_api):
    services.suspend_tenant(acme.tenant)
    assert bob_api.get("/v1/memories").status_code == 200


# --- Which tenant a request is for ----------------------------------------------------------------


def request_for(tenant_fixture, host=None, tenant_header=None):
    headers = bearer(tenant_fixture.key)
    if host is not None:
        headers["Host"] = host
    if tenant_header is not None:
        headers["X-Engram-Tenant"] = tenant_header
    return call(**headers)


@pytest.mark.parametrize(
    "host, tenant_header, status",
    [
        (None, None, 200),
        (None, "acme", 200),
        (None, "ACME", 200),
        (None, " acme ", 200),
        (None, "globex", 403),
        (None, "no-such-tenant", 403),
        ("acme.engram.test", None, 200),
        ("ACME.engram.test", None, 200),
        ("acme.engram.test:8443", None, 200),
        ("engram.test", None, 200),
        ("acme.engram.test", "acme", 200),
        ("globex.engram.test", None, 403),
        ("no-such-tenant.engram.test", None, 403),
        ("acme.engram.test", "globex", 403),
        ("globex.engram.test", "acme", 403),
        ("globex.engram.test", "globex", 403),
    ],
)
def test_a_key_works_only_for_its_own_tenant(acme, globex, host, tenant_header, status):
    response = request_for(acme, host=host, tenant_header=tenant_header)
    if status == 200:
        assert response.status_code == 200, response.content
    else:
        assert_error(response, 403, "tenant_mismatch")


def test_mismatch_does_not_reveal_which_slugs_exist(acme, globex):
    existing = request_for(acme, tenant_header="globex").json()
    missing = request_for(acme, tenant_header="no-such-tenant").json()
    assert {**existing, "request_id": None} == {**missing, "request_id": None}


def test_each_tenants_host_serves_its_own_key(acme, globex):
    assert request_for(globex, host="globex.engram.test").status_code == 200
    assert_error(request_for(globex, host="acme.engram.test"), 403, "tenant_mismatch")


def test_a_tenant_mismatch_writes_nothing(acme, globex):
    headers = {**bearer(globex.key), "X-Engram-Tenant": "acme"}
    response = call("POST", body={"content": "into the wrong tenant"}, **headers)
    assert_error(response, 403, "tenant_mismatch")
    assert stored_memories(acme) == []
    assert stored_memories(globex) == []


# --- Scopes --------------------------------------------------------------------------------------

ENDPOINTS = {
    "list": ("GET", "/v1/memories", None),
    "read": ("GET", "/v1/memories/1", None),
    "stats": ("GET", "/v1/stats", None),
    "create": ("POST", "/v1/memories", {"content": "written by a scoped key"}),
    "update": ("PATCH", "/v1/memories/1", {"content": "changed by a scoped key"}),
    "delete": ("DELETE", "/v1/memories/1", None),
}
READS = ("list", "read", "stats")
WRITES = ("create", "update", "delete")


@pytest.mark.parametrize(
    "scopes, allowed",
    [
        pytest.param(["memories:read"], READS, id="read"),
        pytest.param(["memories:write"], WRITES, id="write"),
        pytest.param(["memories:read", "memories:write"], READS + WRITES, id="read+write"),
        pytest.param(["search"], (), id="search"),
        pytest.param(["admin"], READS + WRITES, id="admin"),
    ],
)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_key_can_do_only_what_its_scopes_allow(acme, scopes, allowed, endpoint):
    acme.client().post("/v1/memories", {"content": "the original"})
    before = stored_memories(acme)
    method, path, body = ENDPOINTS[endpoint]

    response = call(method, path, body, **bearer(acme.issue_key(scopes=scopes)))

    if endpoint in allowed:
        assert 200 <= response.status_code < 300, response.content
    else:
        assert_error(response, 403, "forbidden")
        assert stored_memories(acme) == before


def test_a_read_only_key_reads_what_others_wrote(acme):
    acme.client().post("/v1/memories", {"content": "for the reader"})
    reader = acme.issue_key(scopes=["memories:read"])
    response = call("GET", "/v1/memories/1", **bearer(reader))
    assert response.status_code == 200
    assert response.json()["content"] == "for the reader"


# --- Rotation and revocation ---------------------------------------------------------------------


def test_after_rotation_both_keys_work_during_the_grace_period(acme):
    _, new_key = services.rotate_api_key(acme.api_key)
    assert new_key != acme.key
    assert call(**bearer(new_key)).status_code == 200
    assert call(**bearer(acme.key)).status_code == 200
    old = ApiKey.objects.get(pk=acme.api_key.pk)
    remaining = old.expires_at - timezone.now()
    assert dt.timedelta(hours=23, minutes=59) < remaining <= dt.timedelta(hours=24)


def test_after_the_grace_period_only_the_new_key_works(acme):
    _, new_key = services.rotate_api_key(acme.api_key)
    ApiKey.objects.filter(pk=acme.api_key.pk).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    assert_error(call(**bearer(acme.key)), 401, "unauthorized")
    assert call(**bearer(new_key)).status_code == 200


def test_rotation_without_grace_retires_the_old_key_at_once(acme):
    _, new_key = services.rotate_api_key(acme.api_key, grace=dt.timedelta(0))
    assert_error(call(**bearer(acme.key)), 401, "unauthorized")
    assert call(**bearer(new_key)).status_code == 200


def test_a_rotated_key_keeps_its_scopes(acme):
    reader = acme.issue_key(scopes=["memories:read"])
    _, new_key = services.rotate_api_key(ApiKey.objects.get(digest=api_keys.key_digest(reader)))
    assert call(**bearer(new_key)).status_code == 200
    response = call("POST", body={"content": "x"}, **bearer(new_key))
    assert_error(response, 403, "forbidden")


# Free's requests take a token in Redis (the key cache's epoch comes in the same round trip);
# Enterprise has no rate limit (the epoch comes from the process's subscription to it).
@pytest.mark.parametrize("plan", ["free", "enterprise"])
def test_revocation_takes_effect_on_the_very_next_request(acme, alice_api, plan):
    billing_services.change_plan(acme.tenant, plan, reason="test")
    assert alice_api.get("/v1/memories").status_code == 200
    services.revoke_api_key(acme.api_key)
    assert_error(alice_api.get("/v1/memories"), 401, "unauthorized")
    assert_error(alice_api.post("/v1/memories", {"content": "x"}), 401, "unauthorized")


def test_rotation_without_grace_retires_a_key_in_use_at_once(acme, alice_api):
    assert alice_api.get("/v1/memories").status_code == 200
    _, new_key = services.rotate_api_key(acme.api_key, grace=dt.timedelta(0))
    assert_error(alice_api.get("/v1/memories"), 401, "unauthorized")
    assert call(**bearer(new_key)).status_code == 200


def test_revoking_one_key_leaves_the_tenants_other_keys_working(acme):
    other = acme.issue_key()
    services.revoke_api_key(acme.api_key)
    assert call(**bearer(other)).status_code == 200


# --- last_used_at --------------------------------------------------------------------------------


def last_used_at(tenant_fixture):
    return ApiKey.objects.get(pk=tenant_fixture.api_key.pk).last_used_at


def test_last_used_at_is_written_on_first_use_and_at_most_once_a_minute(acme, alice_api, settings):
    assert last_used_at(acme) is None

    before = timezone.now()
    alice_api.get("/v1/memories")
    first = last_used_at(acme)
    assert first is not None and first >= before

    alice_api.get("/v1/memories")
    alice_api.post("/v1/memories", {"content": "x"})
    assert last_used_at(acme) == first

    two_minutes_ago = timezone.now() - dt.timedelta(minutes=2)
    ApiKey.objects.filter(pk=acme.api_key.pk).update(last_used_at=two_minutes_ago)
    # Two minutes on, no process still holds the key it read (with Redis: the key cache).
    settings.ENGRAM_KEY_CACHE_SECONDS = 0
    before = timezone.now()
    alice_api.get("/v1/memories")
    assert last_used_at(acme) >= before


def test_a_refused_request_does_not_touch_last_used_at(acme):
    services.revoke_api_key(acme.api_key)
    call(**bearer(acme.key))
    assert last_used_at(acme) is None


# --- Keys are never stored -----------------------------------------------------------------------


def test_issued_keys_have_the_documented_format_and_differ(acme):
    keys = [acme.key] + [acme.issue_key() for _ in range(5)]
    for key in keys:
        assert KEY_FORMAT.match(key), key
    assert len(set(keys)) == len(keys)


def test_no_stored_field_holds_the_secret(acme):
    secret_part = acme.key.removeprefix("ek_live_")
    rows = list(ApiKey.objects.filter(pk=acme.api_key.pk).values()) + list(
        AuditEvent.objects.filter(tenant=acme.tenant).values()
    )
    assert rows
    for row in rows:
        for name, value in row.items():
            assert secret_part not in str(value), name


def test_the_stored_digest_is_an_hmac_with_the_pepper(acme):
    stored = ApiKey.objects.get(pk=acme.api_key.pk)
    expected = hmac.new(
        settings.API_KEY_PEPPER.encode(), acme.key.encode(), hashlib.sha256
    ).hexdigest()
    assert stored.digest == expected == api_keys.key_digest(acme.key)
    assert stored.digest != hashlib.sha256(acme.key.encode()).hexdigest()
    assert acme.key.startswith(stored.prefix)
    assert len(stored.prefix) <= 24


def test_changing_the_pepper_invalidates_every_key(acme, settings):
    settings.API_KEY_PEPPER = "another-pepper"
    assert_error(call(**bearer(acme.key)), 401, "unauthorized")


# --- Request ids ---------------------------------------------------------------------------------


def is_generated_id(value):
    return uuid.UUID(value).version == 7


def list_memories(acme):
    return call(**bearer(acme.key))


def create_memory(acme):
    return call("POST", body={"content": "x"}, **bearer(acme.key))


def delete_memory(acme):
    create_memory(acme)
    return call("DELETE", "/v1/memories/1", **bearer(acme.key))


def health(acme):
    return call("GET", "/health")


SUCCESSES = [list_memories, create_memory, delete_memory, health]


def missing_memory(acme):
    return call("GET", "/v1/memories/404", **bearer(acme.key))


def unknown_v1_path(acme):
    return call("GET", "/v1/no-such-resource", **bearer(acme.key))


def unknown_v1_path_without_credentials(acme):
    return call("GET", "/v1/no-such-resource")


def missing_credentials(acme):
    return call()


def conflicting_credentials(acme):
    return call(**bearer(acme.key), **{"X-API-Key": acme.key})


def tenant_mismatch(acme):
    return call(**bearer(acme.key), **{"X-Engram-Tenant": "globex"})


def forbidden_scope(acme):
    return call("POST", body={"content": "x"}, **bearer(acme.issue_key(scopes=["search"])))


def validation_error(acme):
    return call("POST", body={"content": ""}, **bearer(acme.key))


def invalid_json(acme):
    return call("POST", body="{nope", **bearer(acme.key))


FAILURES = [
    missing_memory,
    unknown_v1_path,
    unknown_v1_path_without_credentials,
    missing_credentials,
    conflicting_credentials,
    tenant_mismatch,
    forbidden_scope,
    validation_error,
    invalid_json,
]


@pytest.mark.parametrize("make_request", SUCCESSES, ids=lambda f: f.__name__)
def test_every_success_carries_a_generated_request_id(acme, make_request):
    response = make_request(acme)
    assert 200 <= response.status_code < 300
    assert is_generated_id(response["X-Request-Id"])


@pytest.mark.parametrize("make_request", FAILURES, ids=lambda f: f.__name__)
def test_every_error_carries_its_request_id_in_header_and_body(acme, make_request):
    response = make_request(acme)
    assert 400 <= response.status_code < 500
    body = response.json()
    assert set(body) >= {"error", "message", "request_id"}
    assert body["request_id"] == response["X-Request-Id"]
    assert is_generated_id(body["request_id"])


def test_each_request_gets_its_own_id(acme):
    ids = {list_memories(acme)["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize(
    "path, with_key",
    [("/v1/memories", True), ("/v1/memories/404", True), ("/v1/memories", False)],
)
def test_a_sane_incoming_request_id_is_echoed(acme, path, with_key):
    headers = {"X-Request-Id": "req-12345678", **(bearer(acme.key) if with_key else {})}
    response = call("GET", path, **headers)
    assert response["X-Request-Id"] == "req-12345678"
    if response.status_code >= 400:
        assert response.json()["request_id"] == "req-12345678"


@pytest.mark.parametrize(
    "incoming",
    ["has spaces in it", "x" * 500, "short", "semi;colon-12345", "new\u00e9line-12345", ""],
)
def test_an_insane_incoming_request_id_is_replaced(acme, incoming):
    response = call(**{"X-Request-Id": incoming})
    assert response["X-Request-Id"] != incoming
    assert is_generated_id(response["X-Request-Id"])
    assert response.json()["request_id"] == response["X-Request-Id"]
