"""Backups and restores killed with SIGKILL at their worst moments, in real processes.

A node of its own (control plane in an SQLite file, tenant files, S3 through a loopback
proxy in front of moto): `backup_tenant` and `restore_tenant` run as separate processes and
are killed -9 while encrypting, while uploading and while restoring.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.s3 import CREDENTIALS, S3Bucket

ROOT = Path(__file__).resolve().parent.parent
MEMORIES = 2500
# Each test starts real processes on a tenant of thousands of memories: minutes on a busy box.
pytestmark = pytest.mark.slow


class StallingProxy:
    """A TCP proxy to the S3 server that, when armed, stops forwarding at the first request
    that writes (not a HEAD or GET) and reports it, so the uploader can be killed mid-upload."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.armed = False
        self.upload_started = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, outgoing: bool) -> None:
        try:
            while data := source.recv(65536):
                if outgoing and self.armed and data.split(b" ", 1)[0] in (b"PUT", b"POST"):
                    self.upload_started.set()
                    while source.recv(65536):  # swallow the upload; the server never sees it
                        pass
                    return
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


@dataclass
class Node:
    root: Path
    bucket: S3Bucket
    proxy: StallingProxy
    env: dict[str, str] = field(default_factory=dict)
    tenant_id: str = ""

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert result.returncode == 0, result.stderr[-3000:]
        return result

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def control(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.root / "control.db") as connection:
            return connection.execute(sql).fetchall()

    @property
    def tenant_file(self) -> Path:
        return self.root / "data" / "tenants" / self.tenant_id / "engram.db"

    @property
    def work(self) -> Path:
        return self.root / "data" / "backup-work" / self.tenant_id

    def memory_count(self) -> int:
        with sqlite3.connect(self.tenant_file) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            return connection.execute("SELECT count(*) FROM memories_memory").fetchone()[0]

    def import_memories(self, count: int, tag: str) -> None:
        words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
        rng = random.Random(tag)
        memories = [
            {"content": " ".join(rng.choice(words) + str(rng.randrange(10**6)) for _ in range(300))}
            | {"tags": [tag]}
            for _ in range(count)
        ]
        path = self.root / f"{tag}.json"
        path.write_text(json.dumps({"version": "1.0", "memories": memories}))
        self.manage("import_tenant", "acme", "--input", str(path))


def kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("crash-node")
    bucket = S3Bucket(endpoint_url=s3_server, name=f"engram-crash-{uuid.uuid4().hex[:8]}")
    bucket.client().create_bucket(Bucket=bucket.name)
    proxy = StallingProxy(int(s3_server.rsplit(":", 1)[1]))
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DATABASE_URL", "REDIS_URL"} and not name.startswith("ENGRAM_")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="engram_cloud.settings",
        DEBUG="1",
        DATABASE_URL=f"sqlite:///{root / 'control.db'}",
        ENGRAM_DATA_DIR=str(root / "data"),
        ENGRAM_USAGE_FLUSH_SECONDS="0",
        ENGRAM_STORAGE_BUCKET=bucket.name,
        ENGRAM_STORAGE_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}",
        ENGRAM_STORAGE_REGION="us-east-1",
        ENGRAM_STORAGE_ACCESS_KEY_ID=CREDENTIALS["aws_access_key_id"],
        ENGRAM_STORAGE_SECRET_ACCESS_KEY=CREDENTIALS["aws_secret_access_key"],
        ENGRAM_BACKUP_KEY="Y3Jhc2gtdGVzdHMtYmFja3VwLWtleS0zMi1ieXRlcyE=",
    )
    node = Node(root=root, bucket=bucket, proxy=proxy, env=env)
    node.manage("migrate", "--verbosity", "0")
    created = node.manage(
        "create_tenant", "acme", "--owner", "alice@example.com", "--plan", "team", "--json"
    )
    node.tenant_id = json.loads(created.stdout)["tenant_id"]
    node.import_memories(MEMORIES, "first")
    yield node
    proxy.close()


def complete_backups(node: Node) -> list[tuple]:
    return node.control("SELECT id, storage_key FROM backups_backuprecord WHERE status='complete'")


def test_a_backup_killed_while_encrypting_leaves_no_record(node):
    process = node.start("backup_tenant", "acme")
    kill_when(process, lambda: (node.work / "snapshot.sqlite.enc").exists())
    assert complete_backups(node) == []
    assert node.bucket.keys() == []


def test_a_backup_killed_while_uploading_leaves_no_record_and_the_next_succeeds(node):
    node.proxy.armed = True
    try:
        process = node.start("backup_tenant", "acme")
        kill_when(process, node.proxy.upload_started.is_set)
    finally:
        node.proxy.armed = False
    assert complete_backups(node) == []
    assert node.bucket.keys() == []

    backup_id = int(node.manage("backup_tenant", "acme").stdout.strip())
    [(record_id, key)] = complete_backups(node)
    assert record_id == backup_id and node.bucket.keys() == [key]
    assert not any(path.name != "lock" for path in node.work.iterdir())  # scratch cleaned


def test_a_restore_killed_half_way_leaves_the_old_file_intact(node):
    [(backup_id, _)] = complete_backups(node)
    node.import_memories(100, "after-the-backup")
    assert node.memory_count() == MEMORIES + 100

    # Killed after downloading, while decrypting and checking the backup.
    process = node.start("restore_tenant", "acme", "--backup", str(backup_id))
    kill_when(process, lambda: (node.work / "restored.sqlite").exists())
    assert node.memory_count() == MEMORIES + 100

    # Killed while copying the backup into the live file (its WAL filling up).
    wal = node.tenant_file.with_name("engram.db-wal")
    start_size = wal.stat().st_size if wal.exists() else 0
    process = node.start("restore_tenant", "acme", "--backup", str(backup_id))
    kill_when(process, lambda: wal.exists() and wal.stat().st_size > start_size + 2**20)
    assert node.memory_count() == MEMORIES + 100

    # The tenant is served again (the dead restore's maintenance is over) and restorable.
    node.manage("export_tenant", "acme", "--output", str(node.root / "out.json"))
    assert json.loads((node.root / "out.json").read_text())["memory_count"] == MEMORIES + 100
    node.manage("restore_tenant", "acme", "--backup", str(backup_id))
    assert node.memory_count() == MEMORIES
