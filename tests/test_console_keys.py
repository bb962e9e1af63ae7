"""API keys in the console: the secret shown once with curl and MCP config, the list, revoke
(next request refused), rotate with a grace period."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone

from tenants.api_keys import key_digest
from tenants.models import ApiKey, AuditEvent
from tests.conftest import ApiClient
from tests.console_cast import Cast, make_cast


@pytest.fixture
def cast(db: None) -> Cast:
    return make_cast()


def create_key(cast: Cast, **data: object) -> tuple[str, str]:
    response = cast.client("adam").post(
        "/console/w/acme/keys/create",
        {"name": "ci", "scopes": ["memories:read", "memories:write", "search"], **data},
    )
    assert response.status_code == 200
    assert (
        response["Cache-Control"].startswith("max-age=0") or "no-store" in response["Cache-Control"]
    )
    page = response.content.decode()
    secret = re.search(r'<code id="secret">(ek_live_\w+)</code>', page).group(1)
    return secret, page


def test_the_secret_is_shown_once_with_curl_and_mcp_config(cast: Cast) -> None:
    secret, page = create_key(cast)
    assert f"Authorization: Bearer {secret}" in page  # curl
    assert "mcpServers" in page and "/v1/mcp" in page
    assert 'data-copy="#secret"' in page
    key = ApiKey.objects.get(name="ci")
    assert key.digest == key_digest(secret) and key.created_by == cast.people["adam"]
    listing = cast.client("adam").get("/console/w/acme/keys").content.decode()
    assert secret not in listing and key.prefix in listing
    assert "adam@example.com" in listing and "memories:read, memories:write, search" in listing
    assert ApiClient(secret).get("/v1/memories").status_code == 200


def test_scopes_and_expiry_are_kept(cast: Cast) -> None:
    secret, _ = create_key(cast, scopes=["memories:read"], expires_in_days="30")
    key = ApiKey.objects.get(name="ci")
    assert key.scopes == ["memories:read"]
    assert abs(key.expires_at - (timezone.now() + dt.timedelta(days=30))) < dt.timedelta(minutes=1)
    write = ApiClient(secret).post("/v1/memories", {"content": "x"})
    assert write.status_code == 403


def test_a_key_needs_a_name_and_known_scopes(cast: Cast) -> None:
    client = cast.client("adam")
    for data in (
        {"name": "", "scopes": ["search"]},
        {"name": "x", "scopes": ["root"]},
        {"name": "x"},
    ):
        response = client.post("/console/w/acme/keys/create", data)
        assert response.status_code == 400
        assert 'id="secret"' not in response.content.decode()
    assert not ApiKey.objects.filter(name="x").exists()


def test_revoke_takes_effect_on_the_next_request(cast: Cast) -> None:
    secret, _ = create_key(cast)
    key = ApiKey.objects.get(name="ci")
    api = ApiClient(secret)
    assert api.get("/v1/memories").status_code == 200
    cast.client("adam").post(f"/console/w/acme/keys/{key.pk}/revoke")
    assert api.get("/v1/memories").status_code == 401
    assert "revoked" in cast.client("adam").get("/console/w/acme/keys").content.decode()
    assert AuditEvent.objects.filter(action="api_key.revoked", target=key.prefix).exists()


def test_rotate_keeps_the_old_key_for_the_grace_period(cast: Cast, settings: object) -> None:
    secret, _ = create_key(cast)
    old = ApiKey.objects.get(name="ci", rotated_from__isnull=True)
    response = cast.client("adam").post(f"/console/w/acme/keys/{old.pk}/rotate")
    new_secret = re.search(r'<code id="secret">(ek_live_\w+)</code>', response.content.decode())
    assert new_secret and new_secret.group(1) != secret
    assert ApiClient(secret).get("/v1/memories").status_code == 200
    assert ApiClient(new_secret.group(1)).get("/v1/memories").status_code == 200
    old.refresh_from_db()
    assert old.state() == "expiring"
    assert "expiring until" in cast.client("adam").get("/console/w/acme/keys").content.decode()
    old.expires_at = timezone.now()  # the grace period is over
    old.save(update_fields=["expires_at"])
    assert ApiClient(secret).get("/v1/memories").status_code == 401
    again = cast.client("adam").post(f"/console/w/acme/keys/{old.pk}/rotate", follow=True)
    assert "Only an active key" in again.content.decode()
