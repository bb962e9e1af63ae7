"""The Celery app. Its broker is Redis (REDIS_URL); the schedule lives in settings.

Without a broker (the embedded default) nothing needs Celery: tasks run eagerly when called,
and the usage buffer is flushed by each web process (billing/usage.py).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "engram_cloud.settings")

app = Celery("engram_cloud")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
