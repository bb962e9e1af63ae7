"""Settings come from the environment; production refuses to start without its secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tenants.models import User

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SETTINGS_ENV = (
    "SECRET_KEY",
    "API_KEY_PEPPER",
    "DEBUG",
    "DATABASE_URL",
    "REDIS_URL",
    "ENGRAM_DATA_DIR",
    "ALLOWED_HOSTS",
    "ENGRAM_BASE_DOMAIN",
    "SECURE_SSL_REDIRECT",
)
PRODUCTION_SECRETS = {"SECRET_KEY": "a-production-secret", "API_KEY_PEPPER": "a-pepper"}

PRINT_SETTINGS = """
import json
import django
django.setup()
from django.conf import settings
print(json.dumps({
    "debug": settings.DEBUG,
    "engine": settings.DATABASES["default"]["ENGINE"],
    "database": str(settings.DATABASES["default"]["NAME"]),
    "cache": settings.CACHES["default"]["BACKEND"],
    "data_dir": str(settings.ENGRAM_DATA_DIR),
}))
"""


def start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Start Django in a fresh process with exactly these settings variables."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if name not in SETTINGS_ENV and not name.endswith("_FILE")
    }
    clean.update(
        DJANGO_SETTINGS_MODULE="engram_cloud.settings",
        ENGRAM_DATA_DIR=str(tmp_path / "data"),
        **env,
    )
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        cwd=PROJECT_ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def started(tmp_path: Path, **env: str) -> dict:
    process = start(tmp_path, **env)
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout)


@pytest.mark.parametrize("missing", ["SECRET_KEY", "API_KEY_PEPPER"])
def test_production_refuses_to_start_without_a_secret(tmp_path, missing):
    env = {name: value for name, value in PRODUCTION_SECRETS.items() if name != missing}
    process = start(tmp_path, DEBUG="0", **env)
    assert process.returncode != 0
    assert "ImproperlyConfigured" in process.stderr
    assert missing in process.stderr.splitlines()[-1]


def test_production_starts_with_its_secrets(tmp_path):
    assert started(tmp_path, DEBUG="0", **PRODUCTION_SECRETS)["debug"] is False


def test_debug_starts_without_secrets(tmp_path):
    assert started(tmp_path, DEBUG="1")["debug"] is True


def test_secrets_can_come_from_files(tmp_path):
    for name, value in PRODUCTION_SECRETS.items():
        (tmp_path / name).write_text(value + "\n")
    files = {f"{name}_FILE": str(tmp_path / name) for name in PRODUCTION_SECRETS}
    assert started(tmp_path, DEBUG="0", **files)["debug"] is False


def test_the_embedded_default_is_sqlite_under_the_data_dir_and_an_in_process_cache(tmp_path):
    result = started(tmp_path, DEBUG="1")
    assert result["engine"] == "django.db.backends.sqlite3"
    assert result["database"] == str(tmp_path / "data" / "control.db")
    assert result["cache"] == "django.core.cache.backends.locmem.LocMemCache"


def test_database_and_redis_urls_select_postgresql_and_redis(tmp_path):
    result = started(
        tmp_path,
        DEBUG="1",
        DATABASE_URL="postgres://engram:secret@db.internal:5432/engram",
        REDIS_URL="redis://cache.internal:6379/0",
    )
    assert result["engine"] == "django.db.backends.postgresql"
    assert result["database"] == "engram"
    assert result["cache"] == "django_redis.cache.RedisCache"


def test_passwords_are_hashed_with_argon2(db):
    assert settings.PASSWORD_HASHERS[0].endswith(".Argon2PasswordHasher")
    user = User.objects.create_user("alice@example.com", "correct horse battery staple")
    assert user.password.startswith("argon2")
    assert user.check_password("correct horse battery staple")
    assert not user.check_password("wrong horse battery staple")
