"""Faults: what users see when a part breaks, and that nothing acknowledged is lost.

- A gunicorn worker killed with SIGKILL in the middle of concurrent writes: every memory whose
  201 reached the client is there afterwards, and the tenant file passes its integrity checks.
- PostgreSQL stopped (a private cluster of this test, so nothing else is disturbed): `/ready`
  fails, the API answers 503 `unavailable` with Retry-After (never a 500), and serves again
  once PostgreSQL is back.
- A corrupt tenant file: that tenant gets 503 `unavailable` (REST and MCP) and
  `tenant_database_errors_total` counts it; every other tenant is served.
- The data directory's disk full: a clean 503, no corruption, every acknowledged memory kept,
  and writes work again once there is space.
(Redis stopped: tests/test_gateway_live.py — requests keep being served, no usage lost.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connections

from bench._harness import (
    PYTHON,
    BenchEnvironment,
    bearer,
    bench_env,
    bench_environment,
    free_port,
    gunicorn,
    http_request,
    run_checked,
)
from engram_cloud.metrics import TENANT_DATABASE_ERRORS
from memories.tenant_db import tenant_database_path
from tests.test_mcp_protocol import Mcp

pytestmark = pytest.mark.slow

POSTGRES_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


def manage(environment: BenchEnvironment, *arguments: str) -> str:
    return run_checked([PYTHON, "manage.py", *arguments], environment.env, arguments[0])


@contextlib.contextmanager
def deployment(**env: str) -> Iterator[BenchEnvironment]:
    with bench_environment() as environment:
        environment.env.update(DJANGO_SETTINGS_MODULE="engram_cloud.settings", **env)
        environment.env.pop("REDIS_URL", None)
        yield environment


def new_tenant(environment: BenchEnvironment, slug: str) -> dict[str, str]:
    stdout = manage(
        environment,
        "create_tenant",
        slug,
        "--owner",
        f"ops@{slug}.test",
        "--plan",
        "enterprise",
        "--json",
    )
    return json.loads(stdout.strip().splitlines()[-1])


def assert_intact(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as database:
        assert database.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        database.execute("INSERT INTO memories_fts(memories_fts) VALUES ('integrity-check')")


# --- A worker killed mid-write ---------------------------------------------------------------


def test_acknowledged_writes_survive_a_worker_killed_mid_write():
    with deployment() as environment:
        tenant = new_tenant(environment, "killed-worker")
        acknowledged: dict[int, str] = {}
        lock = threading.Lock()
        stop_writing = threading.Event()

        def writer(number: int, port: int) -> None:
            sequence = 0
            while not stop_writing.is_set():
                sequence += 1
                content = f"writer {number} memory {sequence}"
                try:
                    status, body = http_request(
                        port,
                        "POST",
                        "/v1/memories",
                        bearer(tenant["api_key"]),
                        {"content": content},
                    )
                except OSError:
                    continue  # the killed worker's connection: never acknowledged
                if status == 201:
                    with lock:
                        acknowledged[body["id"]] = content

        with gunicorn(environment, workers=2) as server:
            writers = [
                threading.Thread(target=writer, args=(number, server.port)) for number in range(4)
            ]
            for thread in writers:
                thread.start()
            time.sleep(1.0)
            victim = server.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            time.sleep(1.5)
            stop_writing.set()
            for thread in writers:
                thread.join(timeout=30)
            assert len(acknowledged) > 20, "too few writes to mean anything"

            for memory_id, content in acknowledged.items():
                status, body = http_request(
                    server.port, "GET", f"/v1/memories/{memory_id}", bearer(tenant["api_key"])
                )
                assert status == 200 and body["content"] == content, (memory_id, status, body)
            assert victim not in server.worker_pids()
        database = environment.data_dir / "tenants" / tenant["tenant_id"] / "engram.db"
        assert_intact(database)


# --- PostgreSQL stopped ----------------------------------------------------------------------


@contextlib.contextmanager
def private_postgres() -> Iterator[tuple[int, Callable[[], None], Callable[[], None]]]:
    """A PostgreSQL cluster of this test alone (initdb in a temporary directory), run as the
    `postgres` user when the test runs as root (the server refuses to run as root)."""
    if POSTGRES_BIN is None:
        pytest.skip("needs PostgreSQL's server binaries")
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        as_postgres = ["runuser", "-u", "postgres", "--"]
    directory = Path(tempfile.mkdtemp(prefix="engram-pg-"))
    if as_postgres:
        shutil.chown(directory, "postgres")
    data = directory / "data"
    port = free_port()

    def run(*command: str) -> None:
        # Output to files: a pipe would be held open by the server that pg_ctl starts.
        with open(directory / "commands.log", "ab") as log:
            subprocess.run(
                [*as_postgres, *command], check=True, stdout=log, stderr=log, timeout=120
            )

    run(str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust")
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
    server_log = str(directory / "server.log")

    def start() -> None:
        run(
            str(POSTGRES_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            server_log,
            "-w",
            "start",
        )

    def stop() -> None:
        run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")

    start()
    try:
        run(
            str(POSTGRES_BIN / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "engram",
        )
        yield port, start, stop
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_postgres_stopped_gives_503_and_the_service_recovers(tmp_path):
    with private_postgres() as (port, start, stop):
        environment = BenchEnvironment(
            data_dir=tmp_path, env=bench_env(tmp_path), run_id="pg-stopped"
        )
        environment.env.update(
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/engram",
            DJANGO_SETTINGS_MODULE="engram_cloud.settings",
        )
        environment.env.pop("REDIS_URL", None)
        manage(environment, "migrate", "--noinput", "-v", "0")
        tenant = new_tenant(environment, "pg-stopped")
        key = bearer(tenant["api_key"])
        with gunicorn(environment, workers=1) as server:
            status, created = http_request(
                server.port, "POST", "/v1/memories", key, {"content": "before the outage"}
            )
            assert status == 201, created
            assert http_request(server.port, "GET", "/ready")[0] == 200

            stop()
            status, body = http_request(server.port, "GET", "/ready")
            assert status == 503 and body["error"] == "unavailable"
            for method, path, payload in (
                ("GET", f"/v1/memories/{created['id']}", None),
                ("POST", "/v1/memories", {"content": "during the outage"}),
                ("POST", "/v1/search", {"query": "outage"}),
            ):
                status, body = http_request(server.port, method, path, key, payload)
                assert status == 503, (path, status, body)
                assert body["error"] == "unavailable" and body["request_id"]

            start()
            deadline = time.monotonic() + 20
            while True:
                status, body = http_request(
                    server.port, "GET", f"/v1/memories/{created['id']}", key
                )
                if status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert status == 200 and body["content"] == "before the outage"
            assert http_request(server.port, "GET", "/ready")[0] == 200


# --- A corrupt tenant file -------------------------------------------------------------------


def test_a_corrupt_tenant_file_gives_that_tenant_503_and_spares_the_others(
    acme, globex, alice_api, bob_api
):
    assert alice_api.post("/v1/memories", {"content": "acme's memory"}).status_code == 201
    assert bob_api.post("/v1/memories", {"content": "globex's memory"}).status_code == 201
    connections["memories"].close()
    path = tenant_database_path(acme.tenant.id)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"this is not an SQLite database " * 1000)

    before = TENANT_DATABASE_ERRORS._value.get()
    for method, path_, payload in (
        ("GET", "/v1/memories", None),
        ("POST", "/v1/memories", {"content": "more"}),
        ("POST", "/v1/search", {"query": "memory"}),
    ):
        response = alice_api.request(method, path_, payload)
        assert response.status_code == 503, (path_, response.content)
        assert response.json()["error"] == "unavailable"
        assert response["Retry-After"]
    mcp = Mcp(acme.key).send("tools/call", {"name": "memory_list", "arguments": {}})
    assert mcp.status_code == 503
    assert mcp.json()["error"]["data"]["error"] == "unavailable"
    assert TENANT_DATABASE_ERRORS._value.get() >= before + 4

    listed = bob_api.get("/v1/memories")
    assert listed.status_code == 200
    assert [memory["content"] for memory in listed.json()["data"]] == ["globex's memory"]


# --- The disk full -----------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(size_mb: int) -> Iterator[Path]:
    mount_point = Path(tempfile.mkdtemp(prefix="engram-full-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
        with contextlib.suppress(OSError):
            mount_point.rmdir()


def test_a_full_disk_gives_a_clean_503_and_loses_nothing(db, settings, template_dir):
    with small_disk(12) as disk:
        settings.ENGRAM_DATA_DIR = disk
        (disk / "tenants").mkdir()
        shutil.copytree(template_dir, disk / "templates", dirs_exist_ok=True)
        from tests.conftest import make_tenant

        tenant = make_tenant("full-disk", "ops@example.com", plan="enterprise")
        api = tenant.client()
        filler = disk / "filler"
        with open(filler, "wb") as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        filler_size = filler.stat().st_size
        filler.unlink()
        # Leave ~1.5 MB free: a few dozen memories fit, then the disk is full.
        with open(filler, "wb") as handle:
            handle.write(b"\0" * max(filler_size - 1_500_000, 0))

        acknowledged: dict[int, str] = {}
        refused = None
        for number in range(400):
            content = f"memory {number} " + "x" * 20_000
            response = api.post("/v1/memories", {"content": content})
            if response.status_code != 201:
                refused = response
                break
            acknowledged[response.json()["id"]] = content
        assert refused is not None, "the disk never filled"
        assert refused.status_code == 503, refused.content
        assert refused.json()["error"] == "unavailable"
        assert acknowledged

        filler.unlink()
        connections["memories"].close()
        assert_intact(tenant_database_path(tenant.tenant.id))
        for memory_id, content in acknowledged.items():
            response = api.get(f"/v1/memories/{memory_id}")
            assert response.status_code == 200 and response.json()["content"] == content
        assert api.post("/v1/memories", {"content": "space again"}).status_code == 201
        connections["memories"].close()
