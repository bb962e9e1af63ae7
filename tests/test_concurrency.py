"""Many tenants written at once: nothing acknowledged is lost, nothing lands in another tenant."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from django.db import connections

from memories.tenant_db import tenant_database_path
from tests.conftest import ApiClient, TenantFixture, make_tenant

THREADS = 8
WRITE_SECONDS = 10.0


@dataclass
class Writes:
    acknowledged: dict[int, str] = field(default_factory=dict)
    refused: list[tuple[int, object]] = field(default_factory=list)


def write_for(tenant: TenantFixture, barrier: threading.Barrier, seconds: float) -> Writes:
    """POST memories for `seconds`, recording every acknowledged id and its content."""
    api = ApiClient(tenant.key)
    writes = Writes()
    try:
        barrier.wait()
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            content = f"{tenant.tenant.slug}-{n}"
            response = api.post("/v1/memories", {"content": content})
            if response.status_code == 201:
                memory = response.json()
                assert memory["content"] == content
                writes.acknowledged[memory["id"]] = content
            else:
                writes.refused.append((response.status_code, response.content[:200]))
            n += 1
    finally:
        connections.close_all()
    return writes


def list_all(tenant: TenantFixture) -> dict[int, str]:
    api = ApiClient(tenant.key)
    seen: dict[int, str] = {}
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        response = api.get("/v1/memories", params)
        assert response.status_code == 200, response.json()
        page = response.json()
        for memory in page["data"]:
            assert memory["id"] not in seen, "a memory was listed twice"
            seen[memory["id"]] = memory["content"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def rows_in_file(tenant: TenantFixture) -> tuple[int, str]:
    connection = sqlite3.connect(tenant_database_path(tenant.tenant.id))
    try:
        (count,) = connection.execute("SELECT count(*) FROM memories_memory").fetchone()
        (integrity,) = connection.execute("PRAGMA integrity_check").fetchone()
    finally:
        connection.close()
    return count, integrity


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_eight_threads_writing_to_eight_tenants_lose_nothing_and_cross_nothing():
    # Enterprise: no rate limit or memory quota gets in the way of sustained writes.
    tenants = [
        make_tenant(f"tenant-{n}", f"owner{n}@example.com", plan="enterprise")
        for n in range(THREADS)
    ]
    # A key's first request records its last_used_at (then at most once a minute). Make that
    # write now: the SQLite test database is in-memory with a shared cache, where concurrent
    # writers fail at once ("table is locked") instead of waiting as they do on a real file.
    for tenant in tenants:
        assert tenant.client().get("/v1/memories").status_code == 200
    barrier = threading.Barrier(THREADS, timeout=30)

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(write_for, t, barrier, WRITE_SECONDS) for t in tenants]
        results = [future.result() for future in futures]

    for tenant, writes in zip(tenants, results, strict=True):
        slug = tenant.tenant.slug
        assert writes.refused == [], slug
        assert len(writes.acknowledged) > 10, slug
        listed = list_all(tenant)
        assert listed == writes.acknowledged, slug
        assert all(content.startswith(f"{slug}-") for content in listed.values()), slug
        assert rows_in_file(tenant) == (len(writes.acknowledged), "ok"), slug
