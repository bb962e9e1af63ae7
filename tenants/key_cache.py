"""Each process's cache of API keys' principals, so that an authenticated request does not
cost a control-plane round trip (with PostgreSQL, a trip to another process:
bench/api_overhead.py).

Only with REDIS_URL. Every change that a cached principal must not outlive (a key revoked,
rotated or otherwise saved; a tenant suspended, deleted, moved to another plan or given other
limits) bumps one epoch counter in Redis and publishes the new value: `keys_changed`, on the
post_save and post_delete of ApiKey and Tenant. A request answered from the cache checks its
entry's epoch against the current one (tenants/middleware.py), read in the rate limiter's round
trip to Redis (billing/ratelimit.py) when the request makes one, else from the epochs this
process has been sent: each process keeps a connection subscribed to them and reads it without
blocking, so that check costs no round trip (one would cost about what the control-plane query
did). If the epochs differ, the process forgets every entry and reads the key again.

"The next request": the bump waits for one more round trip after its publish, and by then
Redis has written the message to every subscriber's socket (it writes all pending output
before it reads the next command). So once a revocation has returned, every process on the
same host sees it at its next request; a process on another host, as soon as the message has
crossed the network. A subscriber connection that drops is noticed at its next read: the
process empties its cache and subscribes again. One that hangs silently (a network partition
without a reset) cannot be noticed, which is why an entry also lasts at most
ENGRAM_KEY_CACHE_SECONDS; that also bounds what a write that bypasses save() (a queryset
update, hand-written SQL) can leave stale, and keeps last_used_at current (it is written when
the key is read).

Without Redis (the embedded default) nothing is cached: processes would have no shared place
to hear of a revocation, and the lookup reads a local SQLite file anyway. While Redis cannot
be reached, nothing is cached either and every request reads the control plane.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save

if TYPE_CHECKING:
    from tenants.authentication import Principal

logger = logging.getLogger(__name__)

EPOCH_KEY = "engram:auth:epoch"
EPOCH_CHANNEL = "engram:auth:epoch"
MAX_ENTRIES = 10_000
# After Redis failed to answer, the epoch is not asked for again (nothing is cached) for this
# long: a request must not wait for a connect timeout twice.
RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class Entry:
    principal: Principal  # with `cached_epoch` set: the epoch it was read at
    expires_at: dt.datetime | None  # the key's own expiry
    stored_at: float  # time.monotonic()


class KeyCache:
    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._redis_down_until = float("-inf")
        self._listener = EpochListener()
        self._subscription = 0  # the listener's subscription that the entries were read under

    def enabled(self) -> bool:
        return bool(settings.REDIS_URL) and settings.ENGRAM_KEY_CACHE_SECONDS > 0

    def get(self, digest: str, now: dt.datetime) -> Principal | None:
        """The key's principal if cached, young enough and the key not expired meanwhile."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if (
            (entry.expires_at is not None and entry.expires_at <= now)
            or time.monotonic() - entry.stored_at >= settings.ENGRAM_KEY_CACHE_SECONDS
            or not settings.REDIS_URL
        ):
            self._entries.pop(digest, None)
            return None
        return entry.principal

    def put(
        self, digest: str, principal: Principal, expires_at: dt.datetime | None, epoch: int
    ) -> None:
        entry = Entry(replace(principal, cached_epoch=epoch), expires_at, time.monotonic())
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.pop(next(iter(self._entries)))  # the oldest
            self._entries[digest] = entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def epoch(self) -> int | None:
        """The current epoch as this process has been told it, or None when nothing may be
        cached (no Redis, or it is unreachable)."""
        if not self.enabled() or time.monotonic() < self._redis_down_until:
            return None
        try:
            epoch = self._listener.epoch()
        except Exception:
            self._listener.close()
            self._redis_down_until = time.monotonic() + RETRY_SECONDS
            self.clear()
            logger.warning("key cache epoch unavailable; reading keys from the control plane")
            return None
        if self._listener.subscriptions != self._subscription:
            # Subscribed anew (a new process, a dropped connection): what was sent meanwhile
            # is lost, and a restarted Redis counts epochs from 0 again.
            self.clear()
            self._subscription = self._listener.subscriptions
        return epoch

    def is_current(self, principal: Principal, seen: int | None = None) -> bool:
        """Whether a principal is still good: read from the control plane for this request,
        or cached at the current epoch (`seen`: just read in a round trip to Redis; else as
        this process has been told). If not, every entry is forgotten."""
        if principal.cached_epoch is None:
            return True
        current = seen if seen is not None else self.epoch()
        if current == principal.cached_epoch:
            return True
        self.clear()
        return False


class EpochListener:
    """The epochs published to this process, read from its subscribed connection without
    blocking (one per process: gunicorn forks its workers)."""

    def __init__(self) -> None:
        self._pubsub: Any = None
        self._pid = 0
        self._epoch = 0
        self._lock = threading.Lock()
        self.subscriptions = 0

    def epoch(self) -> int:
        with self._lock:
            if self._pubsub is None or self._pid != os.getpid():
                self._subscribe()
            while (message := self._pubsub.get_message(timeout=0)) is not None:
                if message["type"] != "message":
                    # redis-py subscribed again after a dropped connection: what was published
                    # meanwhile is lost, so start over.
                    self._subscribe()
                    continue
                # max: two bumps may publish out of order; epochs only grow.
                self._epoch = max(self._epoch, int(message["data"]))
            return self._epoch

    def _subscribe(self) -> None:
        self.close()
        pubsub = _redis().pubsub()
        pubsub.subscribe(EPOCH_CHANNEL)
        confirmation = pubsub.get_message(timeout=RETRY_SECONDS)
        if confirmation is None or confirmation["type"] != "subscribe":
            pubsub.close()
            raise ConnectionError("no subscription to the key cache's epochs")
        # Read after subscribing: a later bump is sent as a message.
        self._epoch = int(_redis().get(EPOCH_KEY) or 0)
        self._pubsub, self._pid = pubsub, os.getpid()
        self.subscriptions += 1

    def close(self) -> None:
        if self._pubsub is not None and self._pid == os.getpid():
            try:
                self._pubsub.close()
            except Exception:
                logger.debug("closing the epoch subscription failed", exc_info=True)
        self._pubsub = None


def _redis() -> Any:
    from django_redis import get_redis_connection

    return get_redis_connection("default")


key_cache = KeyCache()


def _bump() -> None:
    try:
        redis = _redis()
        redis.publish(EPOCH_CHANNEL, redis.incr(EPOCH_KEY))
        # When this answers, Redis has written the message to every subscriber's socket.
        redis.ping()
    except Exception:
        # This process forgets now; others within ENGRAM_KEY_CACHE_SECONDS.
        logger.warning("could not bump the key cache epoch", exc_info=True)
        key_cache.clear()


def keys_changed(*, created: bool = False, using: str = "default", **_: Any) -> None:
    """A key or tenant row changed: no process may go on using what it cached of it.

    Bumped at once, which the changing connection's own requests see even before a commit
    (a test's transaction), and again once the transaction commits: a process that read the
    key in between read the old row and cached it under the first bump.
    """
    if created or not settings.REDIS_URL:
        return  # a new row is in nobody's cache
    _bump()
    if transaction.get_connection(using).in_atomic_block:
        transaction.on_commit(_bump, using=using)


def connect_signals() -> None:
    for model in ("tenants.ApiKey", "tenants.Tenant"):
        post_save.connect(keys_changed, sender=model, dispatch_uid=f"key_cache.save.{model}")
        post_delete.connect(keys_changed, sender=model, dispatch_uid=f"key_cache.delete.{model}")
