"""Restore a tenant: `restore_tenant <slug> --backup <id>` or `--at <ISO-8601 time>`."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from backups.models import BackupRecord
from backups.presenters import replaced_file
from backups.services import RESTORE_REFUSALS, restore_tenant
from memories.management.commands.export_tenant import tenant_by_slug


class Command(BaseCommand):
    help = "Restore a tenant's database to a backup, or to a point in time."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--backup", type=int, help="The id of the backup to restore.")
        target.add_argument("--at", help="An ISO-8601 time, e.g. 2026-12-04T05:30:00Z.")
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_by_slug(options["slug"])
        backup, at = None, None
        if options["backup"] is not None:
            backup = BackupRecord.objects.filter(pk=options["backup"], tenant=tenant).first()
            if backup is None:
                raise CommandError(f"Tenant {tenant.slug!r} has no backup {options['backup']}.")
        else:
            at = parse_datetime(options["at"])
            if at is None:
                raise CommandError(f"{options['at']!r} is not an ISO-8601 time.")
            if timezone.is_naive(at):
                raise CommandError("Give the time with its offset (e.g. Z or +00:00).")
        try:
            result = restore_tenant(tenant, backup=backup, at=at, actor_label="command")
        except RESTORE_REFUSALS as error:
            raise CommandError(f"Nothing was restored: {error}") from None
        summary = {
            "tenant": tenant.slug,
            "backup": result.backup.pk,
            "at": result.at.isoformat() if result.at else None,
            "journal_entries": result.journal_entries,
            "previous_backup": result.previous.pk if result.previous else None,
            "previous_damaged": result.damage or None,
        }
        if options["json"]:
            self.stdout.write(json.dumps(summary))
        else:
            self.stdout.write(
                f"Restored {tenant.slug} from backup {result.backup.pk}"
                + (f" to {result.at.isoformat()}" if result.at else "")
                + f"; {replaced_file(result)}."
            )
