"""Run one usage flush by hand (the Celery beat task does it every 10 s)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from billing import usage


class Command(BaseCommand):
    help = "Move buffered usage events into UsageEvent and the daily rollups."

    def handle(self, *args: Any, **options: Any) -> None:
        stored = usage.flush_usage()
        self.stdout.write(
            f"Stored {stored} new usage events; {len(usage.buffer())} still buffered."
        )
