"""Test runs use engram_cloud.settings unchanged; this only supplies what the environment
would: secrets, a throwaway data directory, and plain HTTP (no SSL redirect)."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key")
os.environ.setdefault("API_KEY_PEPPER", "tests-only-pepper")
os.environ.setdefault("ENGRAM_BACKUP_KEY", "dGVzdHMtb25seS1iYWNrdXAta2V5LTMyLWJ5dGVzISE=")
os.environ.setdefault("ENGRAM_DATA_DIR", tempfile.mkdtemp(prefix="engram-tests-"))
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("ENGRAM_BASE_DOMAIN", "engram.test")
# Tests flush usage themselves (billing.usage.flush_usage), never from a background thread.
os.environ.setdefault("ENGRAM_USAGE_FLUSH_SECONDS", "0")

from engram_cloud.settings import *  # noqa: F403

# dj-stripe's own migrations take over a minute on SQLite; tests build its tables from one
# generated migration instead (tests/test_billing_migrations.py guards it against drift, and
# tests/test_deployment.py runs the real ones).
MIGRATION_MODULES = {"djstripe": "tests.djstripe_migrations"}
