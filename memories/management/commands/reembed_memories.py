"""Recompute the vectors of memories whose vector is missing or from another provider."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from memories.embeddings import EmbeddingError, get_provider
from memories.management.commands.export_tenant import tenants_by_slugs
from memories.models import Memory
from memories.tenant_db import bind_tenant_database
from memories.vector_index import store_embeddings

BATCH = 256


class Command(BaseCommand):
    help = (
        "Embed memories that have no vector from the configured provider "
        "(after changing ENGRAM_EMBEDDING_PROVIDER, or after a provider outage)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slugs", nargs="*", help="Only these tenants (default: all).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            provider = get_provider()
        except EmbeddingError as error:
            raise CommandError(str(error)) from None
        tenants = tenants_by_slugs(options["slugs"])
        for tenant in tenants.iterator():
            with bind_tenant_database(tenant.id):
                stale = Memory.objects.filter(
                    Q(embedding__isnull=True) | ~Q(embedding__model=provider.name)
                ).order_by("pk")
                total, done, last_id = stale.count(), 0, 0
                while True:
                    batch = list(stale.filter(pk__gt=last_id)[:BATCH])
                    if not batch:
                        break
                    if not store_embeddings(batch, provider):
                        raise CommandError(f"{tenant.slug}: the provider failed; try again.")
                    done += len(batch)
                    last_id = batch[-1].pk
                    self.stdout.write(f"{tenant.slug}: {done}/{total}", ending="\r")
                self.stdout.write(f"{tenant.slug}: {done} memories embedded with {provider.name}")
