"""The memory browser (list, search, view, delete; members only) and the audit log page."""

from __future__ import annotations

import os
import time

import pytest

from memories import services as memory_services
from memories.tenant_db import bind_tenant_database, maintenance_marker
from tenants.models import AuditEvent
from tests.console_cast import Cast, make_cast


@pytest.fixture
def cast(db: None) -> Cast:
    cast = make_cast()
    with bind_tenant_database(cast.tenant.id):
        for number in range(55):
            memory_services.create_memory(content=f"filler note {number}", tags=["filler"])
        memory_services.create_memory(content="Kubernetes upgrades happen on Tuesdays")
    return cast


def test_it_lists_newest_first_in_pages(cast: Cast) -> None:
    client = cast.client("vic")
    first = client.get("/console/w/acme/memories").content.decode()
    assert "(57)" in first and "Kubernetes upgrades" in first and "Older" in first
    second = client.get("/console/w/acme/memories?page=2").content.decode()
    assert "blue-green" in second and "Kubernetes" not in second
    assert client.get("/console/w/acme/memories?page=zzz").status_code == 200


def test_it_searches(cast: Cast) -> None:
    page = cast.client("vic").get("/console/w/acme/memories", {"q": "kubernets upgrade"})
    text = page.content.decode()
    assert "Kubernetes upgrades" in text and "filler note" not in text


def test_it_shows_one_memory_and_404s_a_missing_one(cast: Cast) -> None:
    client = cast.client("vic")
    page = client.get(f"/console/w/acme/memories/{cast.memory_id}").content.decode()
    assert "blue-green" in page
    assert client.get("/console/w/acme/memories/99999").status_code == 404


def test_a_member_deletes_a_memory(cast: Cast) -> None:
    client = cast.client("mia")
    response = client.post(f"/console/w/acme/memories/{cast.memory_id}/delete")
    assert response.status_code == 302
    assert client.get(f"/console/w/acme/memories/{cast.memory_id}").status_code == 404
    assert client.post(f"/console/w/acme/memories/{cast.memory_id}/delete").status_code == 404


def test_memories_of_another_workspace_stay_there(cast: Cast) -> None:
    page = cast.client("charlie").get("/console/w/charlies/memories").content.decode()
    assert "blue-green" not in page and "No memories yet" in page
    response = cast.client("charlie").get(f"/console/w/charlies/memories/{cast.memory_id}")
    assert response.status_code == 404


def test_the_audit_log_shows_the_workspace_events_only(cast: Cast) -> None:
    cast.client("adam").post(f"/console/w/acme/members/{cast.membership('mia').pk}/remove")
    page = cast.client("adam").get("/console/w/acme/audit").content.decode()
    for action in ("tenant.created", "api_key.created", "member.invited", "member.removed"):
        assert action in page
    assert "charlies" not in page
    assert AuditEvent.objects.filter(target="charlies").exists()


def test_a_workspace_being_restored_gets_a_503_page_not_a_500(cast: Cast) -> None:
    marker = maintenance_marker(cast.tenant.id)
    marker.write_text(f"{time.time() + 60} {os.getpid()}")
    try:
        page = cast.client("vic").get("/console/w/acme/memories")
        assert page.status_code == 503
        assert int(page["Retry-After"]) >= 1
        assert "being restored" in page.content.decode()
    finally:
        marker.unlink()
    assert cast.client("vic").get("/console/w/acme/memories").status_code == 200
