"""`Idempotency-Key` for POST /v1/memories and POST /v1/import.

A client that retries a write with the same `Idempotency-Key` gets the first response again
instead of a second write. One context manager serves both views:

    with idempotent(request) as idempotency:
        if idempotency.replay is not None:
            return idempotency.replay
        with transaction.atomic(using=DATA_PLANE_ALIAS):
            ...write...
            response = idempotency.complete(Response(..., status=201))
    return response

How it behaves (the records live in the tenant's own database, so keys of different tenants
never meet):

- The key is 1-255 printable ASCII characters; anything else is a 400 `validation_error`.
- The request's fingerprint is the sha256 of its method, path, query and body (canonical JSON
  for POST /v1/memories; for the import, the bytes of the export file and the form fields).
- Reserve: one short write transaction (BEGIN IMMEDIATE, so it is atomic against every other
  writer of the tenant) looks the key up and, when it is new, inserts a *pending* record.
  - A record of the last 24 hours with another fingerprint → 422 `idempotency_mismatch`.
  - A completed record with this fingerprint → its response is replayed: same status and body,
    plus `Idempotent-Replayed: true`. Nothing runs, nothing is metered as written.
  - A pending record with this fingerprint: the first request is still running → 409
    `idempotency_conflict` (retry later). Because writes of a tenant serialise, a duplicate that
    arrives while the first one holds the write transaction waits for it (busy timeout) and
    then finds the completed record, so it is replayed; a 409 is answered when the first one is
    still outside its write transaction (validating a body, staging an import file).
  - Records older than 24 hours count as absent: the key starts afresh. Each reservation also
    purges up to PURGE_BATCH expired records, oldest first, in the same transaction.
  - A pending record older than PENDING_LEASE belongs to a request that died (process killed
    between its reservation and its completion); it is taken over as if absent.
- Complete: `complete(response)` stores the status and body on the record. POST /v1/memories
  calls it inside the transaction that creates the memory, so a memory is never committed
  without its record, nor a record without its memory. The import writes in batches of their
  own short transactions (other writers are never locked out for a whole import); its record
  is completed in one short transaction right after the last batch. A replayed import imports
  nothing. Should the process die between the last batch and that transaction, the pending
  record outlives the lease and a retry runs the import again; with `skip_duplicates` (the
  default) that retry skips every memory already imported.
- Errors are not replayed (unlike Stripe, which replays them): only a 2xx response is stored.
  Every error of these endpoints (400 validation, 402 quota, 413, 5xx) writes nothing, so
  running a retry again is safe, and its answer reflects the tenant as it is now (after an
  upgrade, a freed slot, a fixed body). When the view raises or answers an error, the pending
  record is removed and the key is free again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from engram_cloud.errors import ApiError
from memories.models import IdempotencyRecord
from memories.tenant_db import DATA_PLANE_ALIAS

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
RETENTION = dt.timedelta(hours=24)
# Longer than any request may run: a pending record this old was left by a dead request.
PENDING_LEASE = dt.timedelta(minutes=10)
PURGE_BATCH = 100
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_CHUNK = 64 * 1024
_SPOOL_IN_MEMORY = 1024 * 1024

OPENAPI_PARAMETER = OpenApiParameter(
    HEADER,
    {"type": "string", "pattern": "^[\\x20-\\x7e]{1,255}$"},
    OpenApiParameter.HEADER,
    required=False,
    description=(
        "Makes a retry safe: 1-255 printable ASCII characters, unique per write (a UUID). "
        "The same key with the same request within 24 hours answers the first (successful) "
        "response again, with `Idempotent-Replayed: true`, and writes nothing; the same key "
        "with a different request is a 422 `idempotency_mismatch`; while the first request "
        "with the key is still running, a 409 `idempotency_conflict`. Errors are not stored: "
        "a request that failed can be retried with its key."
    ),
)


@dataclass
class Idempotency:
    """The state of one request's key; with no key every method is a no-op."""

    key: str | None = None
    fingerprint: str = ""
    # The body to read, for a view that streams it (the import): hashing consumed the original.
    stream: IO[bytes] | None = None
    replay: Response | None = None
    record_id: int | None = None
    completed: bool = False

    def complete(self, response: Response) -> Response:
        """Store a successful response for replay, in the current transaction if any."""
        if self.key is None or self.replay is not None:
            return response
        if not 200 <= response.status_code < 300:
            return response  # errors are not stored; the reservation is released on exit
        values = {
            "request_fingerprint": self.fingerprint,
            "status_code": response.status_code,
            "response_body": response.data,
        }
        with transaction.atomic(using=DATA_PLANE_ALIAS):
            updated = IdempotencyRecord.objects.filter(pk=self.record_id).update(**values)
            if not updated:
                # Taken over after PENDING_LEASE (or purged): the response is still recorded.
                IdempotencyRecord.objects.update_or_create(key=self.key, defaults=values)
        self.completed = True
        return response

    def release(self) -> None:
        """Forget this request's pending record, so the key can be used again. A completed
        record stays: only a record still pending is deleted."""
        if self.record_id is None:
            return
        try:
            with transaction.atomic(using=DATA_PLANE_ALIAS):
                IdempotencyRecord.objects.filter(
                    pk=self.record_id, status_code__isnull=True
                ).delete()
        except Exception:  # the request's own error matters more; the lease cleans up
            logger.exception("Could not release the idempotency key %r", self.key)


def idempotency_key(request: Request) -> str | None:
    """The request's key, or None without the header; 400 when it is malformed."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise serializers.ValidationError(
            {HEADER: ["Use 1 to 255 printable ASCII characters."]}, code="invalid"
        )
    return key


def _canonical(value: Any) -> bytes:
    if hasattr(value, "lists"):  # a QueryDict: every value of every name
        value = {name: values for name, values in value.lists()}
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode("utf-8")


def _digest_stream(stream: IO[bytes], copy: IO[bytes]) -> tuple[str, IO[bytes]]:
    """The sha256 of the stream's bytes, and a stream to read them again from: the stream
    itself rewound when it can seek (an upload), else `copy`, filled on the way (a body)."""
    digest = hashlib.sha256()
    seekable = getattr(stream, "seekable", None)
    if seekable is not None and seekable():
        start = stream.tell()
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
        stream.seek(start)
        return digest.hexdigest(), stream
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        copy.write(chunk)
    copy.seek(0)
    return digest.hexdigest(), copy


def fingerprint(request: Request, fields: Any, stream_digest: str = "") -> str:
    """sha256 of the method, path, query, canonical fields and the streamed body's digest."""
    digest = hashlib.sha256()
    for part in (
        request.method.encode("ascii"),
        request.path.encode("utf-8"),
        _canonical(request.query_params),
        _canonical(fields),
        stream_digest.encode("ascii"),
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _replay(record: IdempotencyRecord) -> Response:
    return Response(
        record.response_body, status=record.status_code, headers={REPLAYED_HEADER: "true"}
    )


def _purge(now: dt.datetime) -> None:
    expired = IdempotencyRecord.objects.filter(created_at__lt=now - RETENTION).order_by(
        "created_at"
    )
    ids = list(expired.values_list("pk", flat=True)[:PURGE_BATCH])
    if ids:
        IdempotencyRecord.objects.filter(pk__in=ids).delete()


def _reserve(idempotency: Idempotency) -> None:
    """Replay, refuse, or insert a pending record: one short write transaction."""
    now = timezone.now()
    refusal: ApiError | None = None
    with transaction.atomic(using=DATA_PLANE_ALIAS):
        _purge(now)
        record = IdempotencyRecord.objects.filter(key=idempotency.key).first()
        if record is not None and _abandoned(record, now):
            record.delete()
            record = None
        if record is None:
            record = IdempotencyRecord.objects.create(
                key=idempotency.key, request_fingerprint=idempotency.fingerprint, created_at=now
            )
            idempotency.record_id = record.pk
        elif record.request_fingerprint != idempotency.fingerprint:
            refusal = ApiError(
                422,
                "idempotency_mismatch",
                "This Idempotency-Key was used with a different request; "
                "use a new key for a new request.",
            )
        elif record.status_code is None:
            refusal = ApiError(
                409,
                "idempotency_conflict",
                "A request with this Idempotency-Key is still being processed; retry later.",
            )
        else:
            idempotency.replay = _replay(record)
    if refusal is not None:  # raised after the commit, which keeps the purge
        raise refusal


def _abandoned(record: IdempotencyRecord, now: dt.datetime) -> bool:
    if record.created_at < now - RETENTION:
        return True
    return record.status_code is None and record.created_at < now - PENDING_LEASE


@contextmanager
def idempotent(
    request: Request,
    *,
    stream: IO[bytes] | None = None,
    fields: Mapping[str, Any] | None = None,
) -> Iterator[Idempotency]:
    """Honour the request's Idempotency-Key around a write (see the module's docstring).

    Without `stream` the body is `request.data`. A view that streams its body passes the
    stream (and the form `fields` that go with it) and reads `idempotency.stream` instead.
    Raises 400 for a malformed key, 422 for a key used with another request, 409 while the
    first request with the key runs.
    """
    key = idempotency_key(request)
    if key is None:
        yield Idempotency(stream=stream)
        return
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY, prefix="engram-idem-") as spool:
        if stream is None:
            idempotency = Idempotency(key, fingerprint(request, request.data))
        else:
            digest, readable = _digest_stream(stream, spool)
            idempotency = Idempotency(key, fingerprint(request, fields or {}, digest), readable)
        _reserve(idempotency)
        if idempotency.replay is not None:
            yield idempotency
            return
        try:
            yield idempotency
        except BaseException:
            # Also after complete(): its transaction may have been rolled back since.
            idempotency.release()
            raise
        if not idempotency.completed:  # an error answered without raising
            idempotency.release()
