"""The limits a tenant is held to: its plan's, with staff overrides; read on every request."""

from __future__ import annotations

import threading
import time

from billing.models import Plan
from billing.ratelimit import Limit
from tenants.authentication import TenantRef

CACHE_SECONDS = 30.0


class PlanCache:
    """Plans change rarely (staff edits); each process rereads them at most every 30 s."""

    def __init__(self) -> None:
        self._plans: dict[str, Plan] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, code: str) -> Plan:
        with self._lock:
            if time.monotonic() - self._loaded_at > CACHE_SECONDS or code not in self._plans:
                self._plans = {plan.code: plan for plan in Plan.objects.all()}
                self._loaded_at = time.monotonic()
            return self._plans[code]

    def clear(self) -> None:
        with self._lock:
            self._plans, self._loaded_at = {}, float("-inf")


plans = PlanCache()


def rate_limit_for(tenant: TenantRef) -> Limit | None:
    """None: no limit (Enterprise by default)."""
    plan = plans.get(tenant.plan_code)
    per_minute = tenant.rate_limit_per_minute or plan.requests_per_minute
    burst = tenant.rate_limit_burst or plan.burst
    if not per_minute:
        return None
    return Limit(per_minute=per_minute, burst=burst or per_minute)
