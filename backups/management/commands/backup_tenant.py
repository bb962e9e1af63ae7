"""Back a tenant up now: `backup_tenant <slug>` prints the backup's id, `--json` its record."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups.models import BackupReason
from backups.presenters import backup_json
from backups.services import back_up_tenant
from memories.management.commands.export_tenant import tenant_by_slug
from memories.tenant_db import TenantDatabaseMissing


class Command(BaseCommand):
    help = "Back a tenant's database up to backup storage (encrypted, verified)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--json", action="store_true", help="Print the backup record.")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_by_slug(options["slug"])
        try:
            record = back_up_tenant(tenant, reason=BackupReason.MANUAL, actor_label="command")
        except TenantDatabaseMissing:
            raise CommandError(f"Tenant {tenant.slug!r} has no database file.") from None
        if options["json"]:
            self.stdout.write(json.dumps(backup_json(record)))
        else:
            self.stdout.write(str(record.pk))
