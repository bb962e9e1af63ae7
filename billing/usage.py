"""Usage metering: one event per API request, buffered, flushed in batches, counted once.

A request adds its event to a buffer and writes nothing to the control plane. With REDIS_URL
the buffer is a Redis list shared by every process and the Celery beat task `flush_usage`
drains it; if Redis is unreachable, events wait in the process and go to Redis once it
answers again. Without Redis (the embedded default) the buffer is the process's own and a
background thread flushes it.

A flush inserts the events with INSERT … ON CONFLICT (request_id) DO NOTHING and adds to the
daily rollups exactly what was inserted, in one transaction, before removing the batch from
the buffer: a flush killed half-way is simply run again, and nothing is counted twice.

Monthly counters for quotas (api calls, searches) live in the cache, seeded from the rollups
when missing, so checking a quota costs one cache read, never a COUNT over usage events.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections, transaction
from django.db.models import F, Sum
from django.utils import timezone

from billing.models import DailyUsage, UsageEvent
from engram_cloud.metrics import USAGE_FLUSH_FAILURES
from tenants.models import Tenant

logger = logging.getLogger(__name__)

REDIS_KEY = "engram:usage:events"
FLUSH_LOCK = "engram:usage:flush-lock"
METRICS = ("api_calls", "searches", "memories_created")
QUOTA_METRICS = ("api_calls", "searches")  # counted per month in the cache, for quotas
COUNTER_SECONDS = 40 * 24 * 3600  # a month's counter outlives its month


def make_event(
    *,
    request_id: str,
    tenant_id: str,
    route: str,
    method: str,
    status_code: int,
    searches: int = 0,
    memories_created: int = 0,
    at: dt.datetime | None = None,
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "tenant_id": str(tenant_id),
        "route": route,
        "method": method,
        "status_code": status_code,
        "api_calls": 1,
        "searches": searches,
        "memories_created": memories_created,
        "created_at": (at or timezone.now()).isoformat(),
    }


# --- Buffers -------------------------------------------------------------------------------------


class LocalBuffer:
    def __init__(self) -> None:
        self._events: deque[str] = deque()
        self._lock = threading.Lock()

    def push(self, event: str) -> None:
        with self._lock:
            self._events.append(event)

    def peek(self, count: int) -> list[str]:
        with self._lock:
            return [self._events[i] for i in range(min(count, len(self._events)))]

    def remove(self, count: int) -> None:
        with self._lock:
            for _ in range(min(count, len(self._events))):
                self._events.popleft()

    def __len__(self) -> int:
        return len(self._events)


# Appends the events (ARGV[1] of them, then their bodies) and adds the amounts that follow to
# the month's counters that exist (KEYS[2..]), in one round trip; returns the positions
# (1-based) of the counters that were missing, for the caller to seed from the rollups.
SEND_LUA = """
local events = tonumber(ARGV[1])
redis.call('RPUSH', KEYS[1], unpack(ARGV, 2, events + 1))
local missing = {}
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBY', KEYS[i], ARGV[events + i])
  else
    missing[#missing + 1] = i - 1
  end
end
return missing
"""

CounterKey = tuple[str, str, str]  # tenant id, metric, month (YYYY-MM)


class RedisBuffer:
    """A Redis list, fed by each process's outbox.

    A request adds its event and its counter increments to the process's outbox and does not
    wait for Redis: a daemon thread sends the outbox every ENGRAM_USAGE_SEND_MS in one round
    trip (a Lua script), as does every flush and the process's exit. If Redis is unreachable
    the outbox keeps everything and the next send retries it. `unsent` lets quota checks add
    what this process has counted but not sent yet.
    """

    def __init__(self) -> None:
        self._events: list[str] = []
        self._counters: dict[CounterKey, int] = {}
        # Being sent: still counted by `unsent` until Redis holds them, so a quota check made
        # while a send is on its way never misses them.
        self._in_flight: dict[CounterKey, int] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._script: Any = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def _redis(self) -> Any:
        from django_redis import get_redis_connection

        return get_redis_connection("default")

    def add(self, event: str, counters: dict[CounterKey, int]) -> None:
        with self._lock:
            self._events.append(event)
            for key, amount in counters.items():
                self._counters[key] = self._counters.get(key, 0) + amount
        self._ensure_sender()

    def unsent(self, tenant_id: str, metric: str, month: str) -> int:
        key = (tenant_id, metric, month)
        return self._counters.get(key, 0) + self._in_flight.get(key, 0)

    @contextlib.contextmanager
    def sends_held(self) -> Iterator[None]:
        """Hold this process's sends back for the block. A counter read from Redis inside it,
        plus `unsent_by_cache_key` read inside it too, counts each of this process's increments
        exactly once; a send landing between the two reads would be counted by neither."""
        with self._send_lock:
            yield

    def unsent_by_cache_key(self) -> dict[str, int]:
        """What this process has counted and not sent, by the counter's key in Redis."""
        with self._lock:
            unsent = dict(self._in_flight)
            for key, amount in self._counters.items():
                unsent[key] = unsent.get(key, 0) + amount
        return {_cache_key(*key): amount for key, amount in unsent.items()}

    def pending(self) -> int:
        """Events kept in this process (not in Redis yet)."""
        return len(self._events)

    def send(self) -> bool:
        """Send the outbox in one round trip; False (everything kept) if Redis is unreachable."""
        with self._send_lock:
            with self._lock:
                events, counters = self._events, self._counters
                self._events, self._counters = [], {}
                self._in_flight = counters
            if not events and not counters:
                return True
            keys = list(counters)
            try:
                redis = self._redis()
                if self._script is None:
                    self._script = redis.register_script(SEND_LUA)
                missing = self._script(
                    keys=[REDIS_KEY, *(_cache_key(*key) for key in keys)],
                    args=[len(events), *events, *(counters[key] for key in keys)],
                    client=redis,
                )
            except Exception:
                logger.warning("usage buffer unreachable; keeping the events in the process")
                with self._lock:
                    self._events[:0] = events
                    for key, amount in counters.items():
                        self._counters[key] = self._counters.get(key, 0) + amount
                    self._in_flight = {}
                return False
            for position in missing:
                _seed_and_add(*keys[int(position) - 1], counters[keys[int(position) - 1]])
            with self._lock:
                self._in_flight = {}
        return True

    def _ensure_sender(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, daemon=True, name="usage-send")
                self._thread.start()

    def _run(self) -> None:
        # Read once: at the interpreter's exit this daemon thread may outlive the settings.
        every = settings.ENGRAM_USAGE_SEND_MS / 1000
        interval = every
        while True:
            time.sleep(interval)
            try:
                sent = self.send()
            except Exception:
                logger.exception("sending usage events failed")
                sent = False
            finally:
                # Seeding a counter reads the control plane: don't keep this thread's connection.
                connections.close_all()
            # Redis down: retry once a second, not twenty times.
            interval = every if sent else 1.0

    def push(self, event: str) -> None:
        self.add(event, {})

    def peek(self, count: int) -> list[str]:
        """The oldest events in Redis, after sending this process's outbox."""
        self.send()
        return [item.decode() for item in self._redis().lrange(REDIS_KEY, 0, count - 1)]

    def remove(self, count: int) -> None:
        self._redis().ltrim(REDIS_KEY, count, -1)

    def __len__(self) -> int:
        return int(self._redis().llen(REDIS_KEY)) + self.pending()


local_buffer = LocalBuffer()
redis_buffer = RedisBuffer()
atexit.register(redis_buffer.send)


def buffer() -> LocalBuffer | RedisBuffer:
    return redis_buffer if settings.REDIS_URL else local_buffer


def record(event: dict[str, Any]) -> None:
    """Buffer one request's event and count it towards this month's quotas.

    With Redis both go into the process's outbox, sent within ENGRAM_USAGE_SEND_MS; without
    it, into the process's buffer and cache.
    """
    if not settings.REDIS_URL:
        local_buffer.push(json.dumps(event))
        count_towards_quotas(event["tenant_id"], event)
        if settings.ENGRAM_USAGE_FLUSH_SECONDS > 0:
            background_flusher.ensure_running()
        return
    month = _month(dt.datetime.fromisoformat(event["created_at"]))
    counters = {
        (event["tenant_id"], metric, month): event[metric]
        for metric in QUOTA_METRICS
        if event[metric]
    }
    redis_buffer.add(json.dumps(event), counters)


# --- Flushing ------------------------------------------------------------------------------------


def _insert_new(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert the events not stored yet; returns those that were new.

    Events of a tenant deleted since (its rows cascade away) are dropped, not retried forever.
    """
    tenant_ids = {event["tenant_id"] for event in events}
    existing = {
        str(pk) for pk in Tenant.objects.filter(pk__in=tenant_ids).values_list("pk", flat=True)
    }
    events = [event for event in events if event["tenant_id"] in existing]
    table = UsageEvent._meta.db_table
    columns = ["request_id", "tenant_id", "route", "method", "status_code", *METRICS, "created_at"]
    placeholders = ", ".join(["%s"] * len(columns))
    inserted = []
    with connection.cursor() as cursor:
        for event in events:
            tenant_id = event["tenant_id"]
            if connection.vendor == "sqlite":
                tenant_id = tenant_id.replace("-", "")
            values = [event[name] for name in columns]
            values[1] = tenant_id
            values[-1] = dt.datetime.fromisoformat(event["created_at"])
            values[-1] = connection.ops.adapt_datetimefield_value(values[-1])
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "
                "ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
                values,
            )
            if cursor.fetchone() is not None:
                inserted.append(event)
    return inserted


def _add_to_rollups(events: Sequence[dict[str, Any]]) -> None:
    totals: dict[tuple[str, dt.date], dict[str, int]] = {}
    for event in events:
        day = dt.datetime.fromisoformat(event["created_at"]).astimezone(dt.UTC).date()
        entry = totals.setdefault((event["tenant_id"], day), dict.fromkeys(METRICS, 0))
        for name in METRICS:
            entry[name] += event[name]
    for (tenant_id, day), amounts in totals.items():
        rollup, _ = DailyUsage.objects.get_or_create(tenant_id=tenant_id, day=day)
        DailyUsage.objects.filter(pk=rollup.pk).update(
            **{name: F(name) + amount for name, amount in amounts.items()}
        )


def flush_usage(batch_size: int = 1000, max_batches: int = 100) -> int:
    """Move buffered events into UsageEvent and DailyUsage; returns how many were new."""
    try:
        if not cache.add(FLUSH_LOCK, "1", timeout=120):
            return 0  # another flush is running
    except Exception:
        USAGE_FLUSH_FAILURES.inc()
        logger.exception("usage flush lock unavailable; not flushing")
        return 0
    stored = 0
    try:
        source = buffer()
        for _ in range(max_batches):
            try:
                raw = source.peek(batch_size)
                if not raw:
                    break
                events = [json.loads(item) for item in raw]
                with transaction.atomic():
                    new = _insert_new(events)
                    _add_to_rollups(new)
            except Exception:
                USAGE_FLUSH_FAILURES.inc()
                logger.exception("usage flush failed; the batch stays buffered")
                break
            source.remove(len(raw))
            stored += len(new)
    finally:
        with contextlib.suppress(Exception):
            cache.delete(FLUSH_LOCK)
    return stored


class BackgroundFlusher:
    """The embedded default's flusher: a daemon thread per process, no broker needed."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="usage")
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(settings.ENGRAM_USAGE_FLUSH_SECONDS)
            try:
                flush_usage()
            except Exception:
                logger.exception("background usage flush failed")
            finally:
                connections.close_all()


background_flusher = BackgroundFlusher()


# --- Monthly counters for quotas -----------------------------------------------------------------


def _month(now: dt.datetime) -> str:
    return f"{now.astimezone(dt.UTC):%Y-%m}"


def _counter_key(tenant_id: str, metric: str, month: str) -> str:
    return f"engram:usage:{tenant_id}:{month}:{metric}"


def _cache_key(tenant_id: str, metric: str, month: str) -> str:
    """The counter's key in Redis, as the cache stores it."""
    return cache.make_key(_counter_key(tenant_id, metric, month))


def quota_counters(tenant_id: Any, quotas: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """(Redis key as the cache stores it, limit) of this month's counters that `quotas`
    (metric, limit) check, for the rate limiter's script to read in its round trip; none
    without Redis, whose local bucket reads nothing."""
    if not quotas or not settings.REDIS_URL:
        return []
    month = _month(timezone.now())
    return [(_cache_key(str(tenant_id), metric, month), limit) for metric, limit in quotas]


def _month_total_from_rollups(tenant_id: str, metric: str, month: str) -> int:
    start = dt.date.fromisoformat(f"{month}-01")
    end = (start + dt.timedelta(days=31)).replace(day=1)
    total = DailyUsage.objects.filter(tenant_id=tenant_id, day__gte=start, day__lt=end).aggregate(
        total=Sum(metric)
    )["total"]
    return int(total or 0)


def _counter(tenant_id: str, metric: str, month: str) -> int:
    """The month's counter in the cache; seeded from the rollups if the cache has none (a new
    month, evicted, Redis restarted). Raises if the cache is unreachable."""
    key = _counter_key(tenant_id, metric, month)
    value = cache.get(key)
    if value is None:
        value = _month_total_from_rollups(tenant_id, metric, month)
        # add, not set: a seed racing with another leaves one value, the same total.
        cache.add(key, value, timeout=COUNTER_SECONDS)
    return int(value)


def month_usage(
    tenant_id: str, metric: str, now: dt.datetime | None = None, known: int | None = None
) -> int:
    """This month's count: the cache's counter plus what this process has not sent yet (from
    the rollups if the cache is down), or `known`, that count as the rate limiter's round trip
    just read it (billing.ratelimit adds the unsent part, read without a send in between)."""
    if known is not None:
        return known
    month = _month(now or timezone.now())
    tenant_id = str(tenant_id)
    try:
        counted = _counter(tenant_id, metric, month)
    except Exception:
        logger.warning("quota counters unavailable; reading the rollups", exc_info=True)
        counted = _month_total_from_rollups(tenant_id, metric, month)
    return counted + redis_buffer.unsent(tenant_id, metric, month)


def _seed_and_add(tenant_id: str, metric: str, month: str, amount: int) -> None:
    """Add `amount` to a counter, seeding it first if the cache has none."""
    try:
        _counter(tenant_id, metric, month)
        cache.incr(_counter_key(tenant_id, metric, month), amount)
    except Exception:
        logger.warning("quota counter unavailable", exc_info=True)


def count_towards_quotas(tenant_id: str, event: dict[str, Any]) -> None:
    """The embedded default's counters (in the process's cache)."""
    month = _month(dt.datetime.fromisoformat(event["created_at"]))
    for metric in QUOTA_METRICS:
        if event[metric]:
            _seed_and_add(str(tenant_id), metric, month, event[metric])
