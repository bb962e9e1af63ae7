"""gunicorn in production: `gunicorn -c gunicorn.conf.py engram_cloud.wsgi` (Procfile's `web`).

Why these numbers:
- Sync workers, one thread each. A request is short CPU work in Python plus local SQLite I/O and
  one or two round trips to PostgreSQL and Redis; no two requests of a process share the GIL,
  and a worker's open tenant databases are bounded by ENGRAM_OPEN_TENANT_FILES (it keeps them
  open between requests: memories/db_backend/base.py). Slow clients are buffered by the proxy
  in front (Fly's, or nginx), never by a worker.
- `WEB_CONCURRENCY` workers, default 2 per core: the round trips to PostgreSQL/Redis leave a core
  idle for part of each request, which a second worker fills; more workers only add memory (each
  worker keeps its own vector cache, `ENGRAM_VECTOR_CACHE_MB`, and its own open tenant files).
- Workers are recycled after `max_requests` (with jitter, so they do not restart together): a
  slow leak in any library cannot grow a worker without bound.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_class = "sync"
threads = 1
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "20000"))
max_requests_jitter = max_requests // 10
# The app writes one JSON line per request (engram.requests); gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
# Not preloaded: each worker imports the app itself, so nothing opened before the fork (a
# database connection, a BLAS thread pool, the embedding model) is shared between processes.
preload_app = False
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server: Any) -> None:
    """Start with an empty Prometheus directory: values of a previous run's workers would be
    added to this run's."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        path = Path(directory)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)


def post_worker_init(worker: Any) -> None:
    """Import every view now (Django imports them at the first request) and hide what the
    imports made from the garbage collector: gc.freeze(). Those ~180,000 objects live as long
    as the worker, and each full collection scanned them all: a request paused ~150 ms now
    and then on this machine, more often in a worker serving many tenants (bench/README.md,
    load.py). Collections then scan only what requests leave behind."""
    import gc

    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 (imports the URLconf and every view)
    gc.collect()
    gc.freeze()


def worker_exit(server: Any, worker: Any) -> None:
    """A worker leaving (recycled, or the server stopping) writes the access counts it has
    gathered (memories/access.py) instead of dropping them."""
    from memories.access import access_counter

    access_counter.flush_all()


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's gauges must not be reported as live (counters keep their values)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
