"""GET /v1/export and POST /v1/import: the tenant's memories as an Engram export file.

Both stream. The export is a StreamingHttpResponse whose generator binds the tenant's database
itself: the request pipeline unbinds it as soon as the view returns, before the body is sent.
The import never builds the whole file in memory: a JSON body is parsed from the request stream
and an upload from its (spooled) file, record by record (memories.portability).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import IO, Any

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.models import Plan
from billing.quotas import quota_exceeded, require_storage
from engram_cloud.errors import ApiError
from engram_cloud.parsers import BoundedJSONParser
from memories import idempotency, portability
from memories.api.fields import StrictCharField, StrictSerializer, query_data
from memories.api.serializers import workspace_validator
from memories.api.views import _validated
from memories.tenant_db import bind_tenant_database
from tenants.permissions import Access, Scope, declare


class ExportQuerySerializer(StrictSerializer):
    workspace = StrictCharField(required=False, validators=[workspace_validator])


class ImportOptionsSerializer(StrictSerializer):
    skip_duplicates = serializers.BooleanField(default=True)


ImportResultSerializer = inline_serializer(
    "ImportResult",
    {
        "imported": serializers.IntegerField(),
        "skipped": serializers.IntegerField(),
        "failed": serializers.IntegerField(),
        "errors": serializers.ListField(child=serializers.DictField()),
    },
)


def _file_error(error: portability.ExportFileError) -> ApiError:
    if error.code == "invalid_json":
        return ApiError(400, "invalid_json", error.message)
    return ApiError(400, error.code, error.message, fields={error.field: [error.message]})


def _export_of_tenant(tenant_id: uuid.UUID, workspace: str | None) -> Iterator[str]:
    with bind_tenant_database(tenant_id):
        yield from portability.export_memories(workspace)


@declare(Access.API)
class ExportView(APIView):
    required_scopes = {"GET": Scope.MEMORIES_READ}

    @extend_schema(
        parameters=[ExportQuerySerializer],
        responses={(200, "application/json"): OpenApiTypes.OBJECT},
        operation_id="export",
        description="The tenant's live memories as an Engram export file (streamed).",
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        query = _validated(
            ExportQuerySerializer, query_data(request.query_params, ExportQuerySerializer)
        )
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response = StreamingHttpResponse(
            _export_of_tenant(request.tenant.id, query.get("workspace")),
            content_type="application/json",
        )
        response["Content-Disposition"] = (
            f'attachment; filename="engram-export-{request.tenant.slug}-{stamp}.json"'
        )
        return response


@declare(Access.API)
class ImportView(APIView):
    required_scopes = {"POST": Scope.MEMORIES_WRITE}
    parser_classes = [BoundedJSONParser, MultiPartParser]

    @extend_schema(
        parameters=[ImportOptionsSerializer, idempotency.OPENAPI_PARAMETER],
        request={
            "application/json": OpenApiTypes.OBJECT,
            "multipart/form-data": inline_serializer(
                "ImportUpload",
                {"file": serializers.FileField(), "skip_duplicates": serializers.BooleanField()},
            ),
        },
        responses=ImportResultSerializer,
        operation_id="import",
        description=(
            "Import an Engram (OSS v1.0 or Cloud) export file: the JSON body itself, or a "
            "multipart `file`. Records are validated like POST /v1/memories (fields Engram "
            "Cloud has no place for are ignored); a bad record is counted in `failed` and "
            "described in `errors` (the first 1,000) with its index, and the rest are "
            "imported. With `skip_duplicates` (default true) a record whose content the "
            "tenant already holds, or that appears earlier in the file, is skipped, as is a "
            "record that has already expired. Ids are kept where the tenant does not use "
            "them. A daily memory without `expires_at` expires one daily TTL after the "
            "import. A malformed file, one that would exceed the memories quota, or an "
            "import into a workspace at its storage limit writes nothing."
        ),
    )
    def post(self, request: Request) -> Response:
        source, form = self._source(request)
        options = _validated(ImportOptionsSerializer, {**request.query_params.dict(), **form})
        plan = Plan.objects.get(code=request.tenant.plan_code)
        with idempotency.idempotent(request, stream=source, fields=form) as idempotent:
            if idempotent.replay is not None:
                return idempotent.replay  # imports nothing
            require_storage(request.tenant)
            try:
                result = portability.import_memories(
                    portability.read_export_file(idempotent.stream),
                    skip_duplicates=options["skip_duplicates"],
                    max_memories=plan.max_memories,
                )
            except portability.ExportFileError as error:
                raise _file_error(error) from None
            except portability.ImportQuotaExceeded as error:
                raise quota_exceeded(
                    request.tenant,
                    "memories",
                    error.current,
                    error.limit,
                    importing=error.importing,
                ) from None
            request.usage["memories_created"] += result.imported
            # The batches committed on their own; the key's record follows in one short
            # transaction (memories/idempotency.py).
            return idempotent.complete(Response(result.as_dict()))

    def _source(self, request: Request) -> tuple[IO[bytes], dict[str, Any]]:
        """The file to read and the form's options. A JSON body is read from the request
        stream, not through the JSON parser, which would hold the whole file in memory."""
        if request.stream is None:
            return io.BytesIO(), {}  # no body at all: "the file is empty"
        parser = request.negotiator.select_parser(request, self.get_parsers())
        if parser is None:
            raise UnsupportedMediaType(request.content_type)
        if isinstance(parser, MultiPartParser):
            upload = request.FILES.get("file")
            if upload is None:
                raise serializers.ValidationError({"file": ["Upload the export file as 'file'."]})
            upload.seek(0)
            form = {name: value for name, value in request.data.items() if name != "file"}
            return upload, form
        return request.stream, {}
