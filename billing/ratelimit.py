"""Rate limits: a token bucket per tenant and route group.

Each group (reads, writes, search, mcp, portability) has its own bucket, so a burst of
searches cannot starve writes. A bucket holds up to `burst` tokens and refills at the plan's
requests per minute (staff may override both per tenant). With REDIS_URL the bucket lives in
Redis and is updated by one Lua script on Redis's clock, so every worker of every machine
shares it atomically; without Redis it lives in the process. If Redis fails, requests are
served (fail open) and `rate_limit_backend_errors_total` counts it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

from billing.usage import redis_buffer
from engram_cloud.metrics import RATE_LIMIT_BACKEND_ERRORS
from tenants.key_cache import EPOCH_KEY

logger = logging.getLogger(__name__)

GROUPS = ("reads", "writes", "search", "mcp", "portability")


@dataclass(frozen=True)
class Limit:
    per_minute: int
    burst: int

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


@dataclass(frozen=True)
class Decision:
    group: str
    limit: Limit
    allowed: bool
    remaining: int
    retry_after: int  # seconds until a token is available (0 when allowed)
    # Values of the keys read in the same round trip (see `take_token`); None where missing
    # or when the bucket is not in Redis.
    read: tuple[int | None, ...] = ()
    # The key cache's epoch (tenants/key_cache.py), read in the same trip; None when this
    # request made no trip to Redis.
    epoch: int | None = None

    def headers(self) -> dict[str, str]:
        """IETF RateLimit headers (draft-ietf-httpapi-ratelimit-headers).

        The policy is the bucket: `burst` requests per the time a drained bucket takes to
        refill, which is the plan's per-minute rate (120/min, burst 30: q=30;w=15).
        """
        window = math.ceil(self.limit.burst / self.limit.per_second)
        refill = 0
        if self.remaining < self.limit.burst:
            refill = math.ceil((self.limit.burst - self.remaining) / self.limit.per_second)
        headers = {
            "RateLimit-Policy": f'"{self.group}";q={self.limit.burst};w={window}',
            "RateLimit": f'"{self.group}";r={self.remaining};t={refill}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


def route_group(method: str, path: str) -> str:
    if path in ("/mcp", "/v1/mcp"):
        return "mcp"
    if path.startswith(("/v1/import", "/v1/export")):
        return "portability"
    if path.startswith("/v1/search"):
        return "search"
    return "reads" if method in ("GET", "HEAD", "OPTIONS") else "writes"


# A bucket larger than LEASE_SHARE tokens lends a worker up to burst / LEASE_SHARE tokens per
# round trip (a lease), which the worker spends without asking Redis again, for at most
# LEASE_SECONDS; what it did not spend goes back with its next trip. Tokens are only ever taken
# from the bucket, so the limit is never exceeded; every plan's bucket is far smaller than
# LEASE_SHARE and takes one token per request. A lease is also kept to a tenth of the room left
# under each quota read with it, so a quota is checked exactly as it nears its limit.
LEASE_SHARE = 1000
LEASE_SECONDS = 1.0

# KEYS: the bucket, the key cache's epoch, then the month's usage counters the quotas need
# (the epoch and the counters are only read). ARGV: rate per second, burst, tokens wanted,
# tokens given back, then each counter's limit. Returns {tokens granted (0: refused), tokens
# left (a string: Lua numbers round-trip badly), the epoch, then each counter's value}.
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate + tonumber(ARGV[4]))
local values = {}
for i = 3, #KEYS do
  local value = redis.call('GET', KEYS[i])
  values[i - 2] = value
  if not value then
    want = 1
  else
    want = math.min(want, math.floor((tonumber(ARGV[2 + i]) - tonumber(value)) / 10))
  end
end
local granted = 0
if tokens >= 1 then
  granted = math.max(1, math.min(want, math.floor(tokens)))
  tokens = tokens - granted
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {granted, tostring(tokens), redis.call('GET', KEYS[2]), unpack(values, 1, #KEYS - 2)}
"""

Counters = Sequence[tuple[str, int]]  # (Redis key of a usage counter, the quota's limit)
# allowed, tokens left, counter values, the key cache's epoch (None: no trip to Redis)
Taken = tuple[bool, float, tuple[int | None, ...], int | None]


@dataclass
class Lease:
    tokens: int  # lent to this process, not spent yet
    left: float  # what the bucket held after lending them
    values: tuple[int | None, ...]  # the counters read with the lease
    counters: tuple[str, ...]
    expires: float


class RedisBuckets:
    def __init__(self) -> None:
        self._script = None
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def take(self, key: str, limit: Limit, counters: Counters = ()) -> Taken:
        now = time.monotonic()
        names = tuple(name for name, _ in counters)
        with self._lock:
            lease = self._leases.pop(key, None)
            if lease and lease.tokens and now < lease.expires and lease.counters == names:
                lease.tokens -= 1
                self._leases[key] = lease
                unsent = redis_buffer.unsent_by_cache_key() if names else {}
                return True, lease.left + lease.tokens, _plus(lease.values, names, unsent), None
        if self._script is None:
            from django_redis import get_redis_connection

            self._script = get_redis_connection("default").register_script(TOKEN_BUCKET_LUA)
        want = max(1, limit.burst // LEASE_SHARE)
        # No send of this process's usage between reading the counters and what it has not
        # sent: each of its increments is then counted once (the quotas stop exactly).
        with redis_buffer.sends_held() if names else contextlib.nullcontext():
            granted, left, epoch, *values = self._script(
                keys=[key, EPOCH_KEY, *names],
                args=[
                    limit.per_second,
                    limit.burst,
                    want,
                    lease.tokens if lease else 0,
                    *(ceiling for _, ceiling in counters),
                ],
            )
            unsent = redis_buffer.unsent_by_cache_key() if names else {}
        granted = int(granted)
        read = tuple(_integer(value) for value in values)
        if granted > 1:
            with self._lock:
                if len(self._leases) > 10_000:
                    self._leases = {k: v for k, v in self._leases.items() if v.expires > now}
                self._leases[key] = Lease(
                    granted - 1, float(left), read, names, now + LEASE_SECONDS
                )
        return (
            granted > 0,
            float(left) + max(0, granted - 1),
            _plus(read, names, unsent),
            int(epoch or 0),
        )

    def clear(self) -> None:
        with self._lock:
            self._leases.clear()


def _plus(
    values: tuple[int | None, ...], names: tuple[str, ...], unsent: dict[str, int]
) -> tuple[int | None, ...]:
    """Counters read from Redis plus what this process has counted and not sent (None, a
    counter Redis did not have, stays None: it is seeded where it is checked)."""
    return tuple(
        None if value is None else value + unsent.get(name, 0)
        for value, name in zip(values, names, strict=True)
    )


def _integer(value: bytes | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


class LocalBuckets:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, limit: Limit, counters: Counters = ()) -> Taken:
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(limit.burst), now))
            tokens = min(limit.burst, tokens + (now - at) * limit.per_second)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            self._buckets[key] = (tokens, now)
        return allowed, tokens, (None,) * len(counters), None

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


local_buckets = LocalBuckets()
redis_buckets = RedisBuckets()


def take_token(tenant_id: str, group: str, limit: Limit, counters: Counters = ()) -> Decision:
    """Take a token from the tenant's bucket for `group`.

    `counters` names the usage counters (Redis keys, with their quota's limit) to read in the
    same round trip: the decision's `read` holds their values, and its `epoch` the key
    cache's, so the request pipeline pays one trip to Redis before the view, not three
    (while a lease lasts, none: the epoch then comes from the process's subscription).
    """
    key = f"engram:ratelimit:{tenant_id}:{group}"
    try:
        buckets = redis_buckets if settings.REDIS_URL else local_buckets
        allowed, tokens, values, epoch = buckets.take(key, limit, counters)
    except Exception:
        # Fail open: a rate limiter outage must not become an API outage.
        RATE_LIMIT_BACKEND_ERRORS.inc()
        logger.warning("rate limiter unavailable; serving without a limit", exc_info=True)
        return Decision(group, limit, allowed=True, remaining=limit.burst, retry_after=0)
    retry_after = 0 if allowed else math.ceil((1 - tokens) / limit.per_second)
    return Decision(
        group,
        limit,
        allowed,
        remaining=int(tokens),
        retry_after=retry_after,
        read=values,
        epoch=epoch,
    )
