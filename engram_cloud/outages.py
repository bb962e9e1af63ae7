"""A database that cannot serve is an outage, not a bug: 503 `unavailable` with `Retry-After`.

PostgreSQL down or restarting, a tenant file that is corrupt, locked past the busy timeout or on
a full disk: the client can retry later and nothing it sent is at fault, so it gets
`503 unavailable` in the usual envelope (REST) or a JSON-RPC error (MCP), never a 500. Anything
else a database raises (a missing column, a constraint) is a bug and stays a 500.

The data plane's backend marks the errors of tenant files (memories/db_backend), so a failing
tenant file is counted in `tenant_database_errors_total` — the alert for one tenant's trouble
while every other tenant is served.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, InterfaceError, OperationalError

from engram_cloud.errors import ApiError
from engram_cloud.metrics import TENANT_DATABASE_ERRORS

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
DATA_PLANE_MARK = "engram_data_plane"

# SQLite's messages for a file that cannot serve right now (not for a bad statement).
SQLITE_OUTAGES = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "unable to open database file",
    "database or disk is full",
    "database disk image is malformed",
    "file is not a database",
    "attempt to write a readonly database",
)


def _is_outage(error: DatabaseError) -> bool:
    cause = error.__cause__
    module = type(cause).__module__ if cause is not None else ""
    if module.startswith("psycopg"):
        # psycopg's OperationalError: the server is down, restarting or unreachable.
        return isinstance(error, OperationalError | InterfaceError)
    if isinstance(error, InterfaceError):
        return True
    message = str(error).lower()
    return any(message.startswith(text) for text in SQLITE_OUTAGES)


def is_data_plane(error: BaseException) -> bool:
    return bool(
        getattr(error.__cause__, DATA_PLANE_MARK, False) or getattr(error, DATA_PLANE_MARK, False)
    )


def unavailable_error(error: BaseException | None) -> ApiError | None:
    """The 503 to answer for this exception, or None when it is not a database outage."""
    if not isinstance(error, DatabaseError) or not _is_outage(error):
        return None
    if is_data_plane(error):
        TENANT_DATABASE_ERRORS.inc()
        logger.error("tenant database unavailable: %s", error)
        message = "This workspace's data is unavailable right now; try again shortly."
    else:
        logger.error("control-plane database unavailable: %s", error)
        message = "The service is unavailable right now; try again shortly."
    return ApiError(503, "unavailable", message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
