"""Bring every tenant's database file up to the current data-plane schema."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memories.management.commands.export_tenant import tenants_by_slugs
from memories.provisioning import ensure_template, migrate_tenant_database
from memories.tenant_db import TenantDatabaseMissing


class Command(BaseCommand):
    help = "Apply pending data-plane migrations to every tenant's SQLite file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slugs", nargs="*", help="Only these tenants (default: all).")

    def handle(self, *args: Any, **options: Any) -> None:
        tenants = tenants_by_slugs(options["slugs"])
        ensure_template()
        total = tenants.count()
        failed = []
        for number, tenant in enumerate(tenants.iterator(), start=1):
            try:
                applied = migrate_tenant_database(tenant.id)
            except TenantDatabaseMissing:
                failed.append(tenant.slug)
                self.stderr.write(f"[{number}/{total}] {tenant.slug}: database file missing")
                continue
            if applied or options["verbosity"] > 1:
                self.stdout.write(
                    f"[{number}/{total}] {tenant.slug}: {', '.join(applied) or 'up to date'}"
                )
        self.stdout.write(f"Migrated {total - len(failed)} of {total} tenant databases.")
        if failed:
            raise CommandError(f"{len(failed)} tenant(s) have no database file: {failed}")
