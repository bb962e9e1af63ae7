"""The test suite builds dj-stripe's tables from one generated migration
(tests/djstripe_migrations; dj-stripe's own take over a minute on SQLite). It must describe
exactly dj-stripe's models, or the tests would run against a schema production never has.
Production runs dj-stripe's real migrations (tests/test_deployment.py runs them too)."""

from __future__ import annotations

import io

import pytest
from django.conf import settings
from django.core.management import call_command


def test_the_tests_use_the_generated_dj_stripe_migration() -> None:
    assert settings.MIGRATION_MODULES == {"djstripe": "tests.djstripe_migrations"}


@pytest.mark.django_db
# makemigrations also looks at the data-plane alias, which no tenant is bound to here.
@pytest.mark.filterwarnings("ignore:Got an error checking a consistent migration history")
def test_the_generated_dj_stripe_migration_matches_dj_stripes_models() -> None:
    out = io.StringIO()
    # Exits non-zero (SystemExit) when the models need a migration the module lacks.
    call_command("makemigrations", "djstripe", check=True, dry_run=True, stdout=out)
    assert "No changes detected" in out.getvalue()
