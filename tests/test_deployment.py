"""The deployment files (gunicorn.conf.py, Procfile, fly.toml, Dockerfile) describe a service
that runs: gunicorn started exactly as the Procfile's `web` line, with production settings,
serves health, readiness, metrics and an authenticated API call; every command the Procfile and
fly.toml name exists."""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def production_env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "deployment-test-" + "s" * 50,
        "API_KEY_PEPPER": "deployment-test-pepper",
        "ALLOWED_HOSTS": "api.engram.cloud",
        "ENGRAM_BASE_DOMAIN": "engram.cloud",
        "ENGRAM_DATA_DIR": str(tmp_path / "data"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "DJANGO_SETTINGS_MODULE": "engram_cloud.settings",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for inherited in ("DATABASE_URL", "REDIS_URL", "SECURE_SSL_REDIRECT", "GUNICORN_BIND"):
        env.pop(inherited, None)
    return env


def request(
    port: int, method: str, path: str, body: dict | None = None, headers: dict | None = None
) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent = {"Host": "api.engram.cloud", "X-Forwarded-Proto": "https", **(headers or {})}
    payload = None
    if body is not None:
        payload = json.dumps(body)
        sent["Content-Type"] = "application/json"
    connection.request(method, path, body=payload, headers=sent)
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    content_type = response.getheader("Content-Type", "")
    return response.status, json.loads(raw) if "json" in content_type else {"text": raw.decode()}


def test_procfile_has_web_worker_and_beat_and_names_real_commands():
    entries = procfile()
    assert {"web", "worker", "beat", "release"} <= set(entries)
    commands = get_commands()
    for line in entries.values():
        for part in line.split("&&"):
            argv = shlex.split(part.replace("exec ", ""))
            if argv[:2] == ["python", "manage.py"]:
                assert argv[2] in commands, line
            elif argv[0] == "gunicorn":
                assert (ROOT / argv[argv.index("-c") + 1]).is_file()
                assert argv[-1] == "engram_cloud.wsgi"
            elif argv[0] == "celery":
                assert argv[argv.index("-A") + 1] == "engram_cloud"


def test_fly_config_matches_the_procfile_and_the_dockerfile():
    fly = tomllib.loads((ROOT / "fly.toml").read_text())
    names = set(procfile())
    node = shlex.split(fly["processes"]["node"])
    assert node[:2] == ["honcho", "start"] and set(node[2:]) <= names
    assert fly["mounts"][0]["destination"] == fly["env"]["ENGRAM_DATA_DIR"]
    assert fly["http_service"]["checks"][0]["path"] == "/ready"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for copied in re.findall(r"^COPY (.+) \./$", dockerfile, re.M):
        for name in copied.split():
            assert (ROOT / name).exists(), name
    assert "honcho" in (ROOT / "requirements-deploy.txt").read_text()
    assert f"EXPOSE {fly['http_service']['internal_port']}" in dockerfile


def test_gunicorn_as_the_procfile_starts_it_serves_the_product(tmp_path):
    env = production_env(tmp_path)
    port = free_port()
    env["PORT"] = str(port)
    env["GUNICORN_BIND"] = f"127.0.0.1:{port}"
    env["WEB_CONCURRENCY"] = "2"
    manage = [sys.executable, "manage.py"]
    # The real migrations, dj-stripe's included (the suite itself uses a generated one for
    # dj-stripe: its own take over a minute on SQLite).
    migrated = subprocess.run(
        [*manage, "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert migrated.returncode == 0, migrated.stderr
    created = subprocess.run(
        [*manage, "create_tenant", "deploy-check", "--owner", "ops@example.com", "--json"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    api_key = json.loads(created.stdout)["api_key"]
    tenant_id = json.loads(created.stdout)["tenant_id"]

    web = procfile()["web"].split("&&")[-1].replace("exec ", "")
    server = subprocess.Popen(
        shlex.split(web),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = request(port, "GET", "/health")
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        assert status == 200
        assert request(port, "GET", "/ready")[0] == 200

        auth = {"Authorization": f"Bearer {api_key}"}
        status, created_memory = request(
            port, "POST", "/v1/memories", {"content": "deployed and answering"}, auth
        )
        assert status == 201, created_memory
        for _ in range(3):
            status, fetched = request(
                port, "GET", f"/v1/memories/{created_memory['id']}", None, auth
            )
            assert status == 200 and fetched["content"] == "deployed and answering"

        # Without the proxy's https header, production redirects the API to https.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/v1/memories", headers={"Host": "api.engram.cloud"})
        assert connection.getresponse().status == 301
        connection.close()

        # on_starting made the Prometheus directory; the workers write their values there.
        # /metrics answers on the base domain, never on the API host.
        assert request(port, "GET", "/metrics")[0] == 404
        status, metrics = request(port, "GET", "/metrics", None, {"Host": "engram.cloud"})
        assert status == 200 and "requests_total" in metrics["text"]
        assert any((tmp_path / "prometheus").iterdir())
    finally:
        server.terminate()
        server.wait(timeout=30)
    # The reads' access counts are gathered in the workers, which wrote them as they exited.
    database = tmp_path / "data" / "tenants" / tenant_id / "engram.db"
    with sqlite3.connect(database) as connection:
        (count,) = connection.execute(
            "SELECT access_count FROM memories_memory WHERE id = ?", [created_memory["id"]]
        ).fetchone()
    assert count == 3


def test_a_worker_imports_every_view_then_freezes_what_it_loaded(monkeypatch):
    """gunicorn.conf.py's post_worker_init: the objects of the imports are moved out of the
    garbage collector's scans (they live as long as the worker)."""
    import gc
    import runpy

    imported: list[str] = []
    monkeypatch.setattr(
        "django.urls.resolvers.URLResolver.url_patterns",
        property(lambda self: imported.append(self.urlconf_name) or []),
    )
    hooks = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert gc.get_freeze_count() == 0
    try:
        hooks["post_worker_init"](None)
        assert imported == ["engram_cloud.urls"]
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
