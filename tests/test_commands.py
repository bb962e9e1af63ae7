"""The operator commands: create_tenant and the `make run` demo tenant."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from memories.tenant_db import tenant_database_path
from tenants.models import ApiKey, AuditEvent, Membership, Role, Tenant, User
from tests.conftest import ApiClient

KEY = re.compile(r"ek_live_[0-9A-Za-z]+")


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def create_tenant(*args: str) -> dict:
    return json.loads(run("create_tenant", *args, "--json"))


def key_works(key: str) -> bool:
    response = ApiClient(key).get("/v1/memories")
    return response.status_code == 200


def test_create_tenant_prints_json_with_a_working_key(db):
    result = create_tenant("acme", "--owner", "alice@example.com")
    assert set(result) == {"tenant_id", "slug", "api_key"}
    tenant = Tenant.objects.get(slug="acme")
    assert result["tenant_id"] == str(tenant.id)
    assert result["slug"] == "acme"
    assert KEY.fullmatch(result["api_key"])
    assert tenant_database_path(tenant.id).exists()
    assert key_works(result["api_key"])
    created = ApiClient(result["api_key"]).post("/v1/memories", {"content": "hello"})
    assert created.status_code == 201


def test_create_tenant_makes_the_owner_with_an_owner_membership(db):
    create_tenant("acme", "--owner", "Alice@Example.com", "--name", "Acme Corp")
    tenant = Tenant.objects.get(slug="acme")
    assert tenant.name == "Acme Corp"
    assert tenant.plan_id == "free"
    membership = Membership.objects.get(tenant=tenant)
    assert membership.user.email == "alice@example.com"
    assert membership.role == Role.OWNER
    key = ApiKey.objects.get(tenant=tenant)
    assert key.created_by == membership.user
    assert key.revoked_at is None


def test_create_tenant_reuses_an_existing_user(db):
    alice = User.objects.create_user("alice@example.com")
    create_tenant("acme", "--owner", "alice@example.com")
    create_tenant("acme-labs", "--owner", "alice@example.com")
    assert User.objects.count() == 1
    assert set(Membership.objects.filter(user=alice).values_list("tenant__slug", "role")) == {
        ("acme", Role.OWNER),
        ("acme-labs", Role.OWNER),
    }


def test_create_tenant_sets_the_plan(db):
    create_tenant("acme", "--owner", "alice@example.com", "--plan", "pro")
    assert Tenant.objects.get(slug="acme").plan_id == "pro"


def test_create_tenant_without_json_prints_the_key_once(db):
    out = run("create_tenant", "acme", "--owner", "alice@example.com")
    keys = KEY.findall(out)
    assert len(keys) == 1
    assert "acme" in out
    assert key_works(keys[0])


def tenant_files(data_dir: Path) -> list[Path]:
    return list((data_dir / "tenants").iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["A!"], "3-40 lowercase"),
        (["ab"], "3-40 lowercase"),
        (["--", "-abc"], "3-40 lowercase"),
        (["abc-"], "3-40 lowercase"),
        (["a" * 41], "3-40 lowercase"),
        (["api"], "reserved"),
        (["www"], "reserved"),
        (["fresh", "--plan", "gold"], "Unknown plan"),
    ],
    ids=[
        "symbols",
        "too-short",
        "leading-hyphen",
        "trailing-hyphen",
        "too-long",
        "api",
        "www",
        "unknown-plan",
    ],
)
def test_create_tenant_refuses_bad_input_and_creates_nothing(db, data_dir, args, message):
    with pytest.raises(CommandError, match=message):
        run("create_tenant", "--owner", "newcomer@example.com", *args)
    assert not Tenant.objects.exists()
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.exists()
    assert tenant_files(data_dir) == []


def test_a_refused_create_tenant_does_not_leave_the_new_owner_behind(db):
    with pytest.raises(CommandError):
        run("create_tenant", "api", "--owner", "newcomer@example.com")
    assert not User.objects.filter(email="newcomer@example.com").exists()


def test_create_tenant_refuses_an_owner_that_is_not_an_email_address(db, data_dir):
    with pytest.raises(CommandError, match="email"):
        run("create_tenant", "acme", "--owner", "not an email")
    assert not Tenant.objects.exists()
    assert not User.objects.exists()
    assert tenant_files(data_dir) == []


def test_create_tenant_refuses_a_taken_slug_and_creates_nothing(db, data_dir):
    first = create_tenant("acme", "--owner", "alice@example.com")
    with pytest.raises(CommandError, match="taken"):
        run("create_tenant", "acme", "--owner", "alice@example.com")
    assert Tenant.objects.count() == 1
    assert ApiKey.objects.count() == 1
    assert [p.name for p in tenant_files(data_dir)] == [first["tenant_id"]]
    assert key_works(first["api_key"])


def test_demo_tenant_creates_the_demo_tenant_and_prints_a_working_key(db):
    out = run("demo_tenant")
    keys = KEY.findall(out)
    assert keys
    assert len(set(keys)) == 1
    assert list(Tenant.objects.values_list("slug", flat=True)) == ["demo"]
    assert key_works(keys[0])


def test_demo_tenant_run_twice_issues_a_new_key_for_the_same_tenant(db):
    (first,) = set(KEY.findall(run("demo_tenant")))
    (second,) = set(KEY.findall(run("demo_tenant")))
    assert second != first
    assert key_works(second)
    assert list(Tenant.objects.values_list("slug", flat=True)) == ["demo"]
    assert Membership.objects.filter(tenant__slug="demo", role=Role.OWNER).count() == 1
