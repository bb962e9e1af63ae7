"""The `make run` demo: make sure a demo tenant exists and print a fresh key for it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tenants import services
from tenants.models import Tenant

DEMO_SLUG = "demo"
DEMO_OWNER = "demo@example.com"


class Command(BaseCommand):
    help = "Create the demo tenant if it is missing and print a new API key for it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = services.get_or_create_user(DEMO_OWNER)
        tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
        if tenant is None:
            tenant = services.provision_tenant(
                slug=DEMO_SLUG, owner=owner, name="Demo", actor_label="command:demo_tenant"
            )
        # A key's secret is shown only once, so every run issues a new one.
        _, secret = services.create_api_key(
            tenant=tenant, name="make run", created_by=owner, actor_label="command:demo_tenant"
        )
        base = options["base_url"]
        self.stdout.write(
            f"\nDemo tenant '{tenant.slug}' is ready. Its API key (shown once):\n\n"
            f"    {secret}\n\n"
            f"Try it:\n"
            f"    curl -H 'Authorization: Bearer {secret}' {base}/v1/memories\n"
        )
