"""Shared fixtures: tenants with keys, an API client, a fresh data directory per test.

People and tenants follow one cast: alice owns tenant "acme", bob owns tenant "globex";
charlie is the outsider who belongs to neither.
"""

from __future__ import annotations

import importlib
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.db import connections
from django.test import Client

from billing.models import Plan
from billing.plans import plans
from memories.db_backend.base import DatabaseWrapper as DataPlaneWrapper
from memories.provisioning import ensure_template, template_path
from memories.tenant_db import DATA_PLANE_ALIAS
from tenants import services
from tenants.models import ApiKey, Tenant
from tenants.permissions import DEFAULT_KEY_SCOPES
from tests.stripe_fixtures import fake_stripe, stripe_prices, webhook_path  # noqa: F401

# s3_server / s3_storage: a real S3-protocol server on loopback (backup storage tests).
pytest_plugins = ["tests.s3"]

_DB_FIXTURES = {"db", "transactional_db", "live_server", "django_db_serialized_rollback"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every transactional test restores the migrated database by serialized rollback.

    A transactional test ends by flushing the database. Without serialized rollback that
    flush re-creates content types (post_migrate), and a later test that does restore the
    serialized database then collides with them. Restoring for all of them keeps one rule.
    """
    for item in items:
        marker = item.get_closest_marker("django_db")
        transactional = marker is not None and marker.kwargs.get("transaction")
        fixtures = set(getattr(item, "fixturenames", ()))
        if transactional or fixtures & {"transactional_db", "live_server"}:
            kwargs = dict(marker.kwargs) if marker is not None else {}
            kwargs.update(transaction=True, serialized_rollback=True)
            item.add_marker(pytest.mark.django_db(**kwargs), append=False)


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory: pytest.TempPathFactory, django_db_blocker: Any) -> Path:
    """The migrated tenant template, built once per session and copied into each test."""
    from django.test import override_settings

    root = tmp_path_factory.mktemp("template-data")
    with override_settings(ENGRAM_DATA_DIR=root), django_db_blocker.unblock():
        ensure_template()
        return template_path().parent


@pytest.fixture(autouse=True)
def usage_buffer_of_its_own(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test meters into its own buffer: the Redis one is shared by every process."""
    from billing import usage

    key = f"engram:test:{uuid.uuid4()}"
    monkeypatch.setattr(usage, "REDIS_KEY", f"{key}:usage")
    monkeypatch.setattr(usage, "FLUSH_LOCK", f"{key}:flush-lock")
    monkeypatch.setattr(usage, "local_buffer", usage.LocalBuffer())
    monkeypatch.setattr(usage.redis_buffer, "_events", [])
    monkeypatch.setattr(usage.redis_buffer, "_counters", {})
    monkeypatch.setattr(usage.redis_buffer, "_in_flight", {})
    yield


@pytest.fixture(autouse=True)
def throttle_counters_of_its_own(settings: Any) -> None:
    """Each test counts sign-in and sign-up attempts under its own cache prefix. The counters
    live in the default cache, which Redis shares with every test process: clearing it instead
    would wipe what other tests are counting."""
    settings.RATELIMIT_CACHE_PREFIX = f"rl:{uuid.uuid4().hex}:"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, settings: Any, template_dir: Path) -> Path:
    """Each test gets its own ENGRAM_DATA_DIR: tenant files never leak between tests."""
    root = tmp_path / "data"
    (root / "tenants").mkdir(parents=True)
    shutil.copytree(template_dir, root / "templates")
    settings.ENGRAM_DATA_DIR = root
    plans.clear()  # a plan cached by an earlier test may have been changed by it
    yield root
    connections[DATA_PLANE_ALIAS].close()


@pytest.fixture(autouse=True)
def _data_plane_outside_django_guard(
    request: pytest.FixtureRequest, django_db_blocker: Any
) -> Iterator[None]:
    """Let tests reach tenant files while Django's test case guards its test databases.

    Django's test cases refuse queries to every alias a test did not declare, and would
    wrap a declared alias in a transaction or flush it. Neither fits the data plane, whose
    files are chosen per tenant and live in the per-test data directory, so the guard is
    lifted for that one alias and restored before Django's own teardown.
    """
    uses_db = request.node.get_closest_marker("django_db") or _DB_FIXTURES & set(
        request.fixturenames
    )
    if not uses_db:
        yield
        return
    request.getfixturevalue("_django_db_helper")
    ensure_plans()
    connection = connections[DATA_PLANE_ALIAS]
    guards = {
        name: connection.__dict__.pop(name)
        for name in ("connect", "temporary_connection", "cursor", "chunked_cursor")
        if name in connection.__dict__
    }
    # pytest-django keeps Django's own ensure_connection aside while it blocks access.
    real_ensure_connection = django_db_blocker._real_ensure_connection
    with mock.patch.object(DataPlaneWrapper, "ensure_connection", real_ensure_connection):
        yield
    connection.close()
    connection.__dict__.update(guards)


class ApiClient:
    """A Django test client that sends JSON and one tenant's credentials."""

    def __init__(self, key: str | None = None, **headers: str) -> None:
        self.client = Client()
        self.headers = dict(headers)
        if key is not None:
            self.headers.setdefault("Authorization", f"Bearer {key}")

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        if body is not None and not isinstance(body, str | bytes):
            body = json.dumps(body)
        send = getattr(self.client, method.lower())
        if body is None:
            return send(path, headers=headers, **kwargs)
        return send(path, body, content_type="application/json", headers=headers, **kwargs)

    def get(self, path: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.client.get(path, params or {}, headers={**self.headers, **kwargs})

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, body, **kwargs)

    def patch(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("PATCH", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)


@dataclass
class TenantFixture:
    tenant: Tenant
    key: str
    api_key: ApiKey
    owner_email: str

    def client(self, **headers: str) -> ApiClient:
        return ApiClient(self.key, **headers)

    def issue_key(self, scopes: Any = DEFAULT_KEY_SCOPES, **kwargs: Any) -> str:
        _, secret = services.create_api_key(
            tenant=self.tenant, name="test key", scopes=scopes, **kwargs
        )
        return secret


def ensure_plans() -> None:
    """The plans are data from a migration; a transactional test's flush removes them."""
    if not Plan.objects.exists():
        seed = importlib.import_module("billing.migrations.0002_seed_plans")
        for plan in seed.PLANS:
            Plan.objects.update_or_create(code=plan["code"], defaults=plan)
    plans.clear()


def make_tenant(slug: str, owner_email: str, plan: str = "free") -> TenantFixture:
    owner = services.get_or_create_user(owner_email)
    tenant = services.provision_tenant(slug=slug, owner=owner, plan=plan)
    api_key, secret = services.create_api_key(tenant=tenant, name="primary", created_by=owner)
    return TenantFixture(tenant=tenant, key=secret, api_key=api_key, owner_email=owner_email)


@pytest.fixture
def acme(db: None) -> TenantFixture:
    return make_tenant("acme", "alice@example.com")


@pytest.fixture
def globex(db: None) -> TenantFixture:
    return make_tenant("globex", "bob@example.com")


@pytest.fixture
def alice_api(acme: TenantFixture) -> ApiClient:
    return acme.client()


@pytest.fixture
def bob_api(globex: TenantFixture) -> ApiClient:
    return globex.client()
