"""/v1 memory resources: parse, call memories.services, shape the answer."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.models import Plan
from billing.quotas import require_capacity, require_storage
from memories import idempotency, services
from memories.api.cursors import decode_cursor, encode_cursor
from memories.api.fields import query_data
from memories.api.serializers import (
    MemoryListQuerySerializer,
    MemoryPageSerializer,
    MemorySerializer,
    MemoryWriteSerializer,
    memory_representation,
)
from memories.models import Memory
from memories.tenant_db import DATA_PLANE_ALIAS
from tenants.permissions import Access, Scope, declare


def _validated(serializer_class: type[serializers.Serializer], data: Any, **kwargs: Any) -> Any:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@declare(Access.API)
class MemoryCollectionView(APIView):
    required_scopes = {"GET": Scope.MEMORIES_READ, "POST": Scope.MEMORIES_WRITE}

    @extend_schema(
        parameters=[MemoryListQuerySerializer],
        responses=MemoryPageSerializer,
        operation_id="memories_list",
    )
    def get(self, request: Request) -> Response:
        query = _validated(
            MemoryListQuerySerializer, query_data(request.query_params, MemoryListQuerySerializer)
        )
        sort = query["sort"]
        after = decode_cursor(query["cursor"], sort) if "cursor" in query else None
        filters = services.MemoryFilters(
            workspace=query.get("workspace"),
            type=query.get("type"),
            tags=tuple(query.get("tag", ())),
            tier=query.get("tier"),
            created_after=query.get("created_after"),
            created_before=query.get("created_before"),
        )
        page = services.list_memories(filters, sort=sort, limit=query["limit"], after=after)
        return Response(
            {
                "data": [memory_representation(memory) for memory in page.memories],
                "next_cursor": encode_cursor(sort, page.last) if page.last else None,
            }
        )

    @extend_schema(
        parameters=[idempotency.OPENAPI_PARAMETER],
        request=MemoryWriteSerializer,
        responses={201: MemorySerializer},
        operation_id="memories_create",
    )
    def post(self, request: Request) -> Response:
        with idempotency.idempotent(request) as idempotent:
            if idempotent.replay is not None:
                return idempotent.replay
            fields = _validated(MemoryWriteSerializer, request.data)
            with transaction.atomic(using=DATA_PLANE_ALIAS):
                require_capacity(request.tenant, adding=1)
                memory = services.create_memory(**fields)
                # The key's record is stored in the transaction that stores the memory.
                response = idempotent.complete(
                    Response(memory_representation(memory), status=status.HTTP_201_CREATED)
                )
        request.usage["memories_created"] += 1
        return response


MEMORY_ID = OpenApiParameter("memory_id", int, OpenApiParameter.PATH)


@declare(Access.API)
class MemoryDetailView(APIView):
    required_scopes = {
        "GET": Scope.MEMORIES_READ,
        "PATCH": Scope.MEMORIES_WRITE,
        "DELETE": Scope.MEMORIES_WRITE,
    }

    @extend_schema(parameters=[MEMORY_ID], responses=MemorySerializer)
    def get(self, request: Request, memory_id: int) -> Response:
        try:
            memory = services.get_memory(memory_id)
        except Memory.DoesNotExist:
            raise Http404 from None
        return Response(memory_representation(memory))

    @extend_schema(
        parameters=[MEMORY_ID], request=MemoryWriteSerializer, responses=MemorySerializer
    )
    def patch(self, request: Request, memory_id: int) -> Response:
        changes = _validated(MemoryWriteSerializer, request.data, partial=True)
        require_storage(request.tenant)
        try:
            memory = services.update_memory(memory_id, changes)
        except Memory.DoesNotExist:
            raise Http404 from None
        return Response(memory_representation(memory))

    @extend_schema(parameters=[MEMORY_ID], responses={204: None})
    def delete(self, request: Request, memory_id: int) -> Response:
        try:
            services.delete_memory(memory_id)
        except Memory.DoesNotExist:
            raise Http404 from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class StatsSerializer(serializers.Serializer):
    total_memories = serializers.IntegerField()
    by_type = serializers.DictField(child=serializers.IntegerField())
    by_workspace = serializers.DictField(child=serializers.IntegerField())
    by_tier = serializers.DictField(child=serializers.IntegerField())
    storage_bytes = serializers.IntegerField()
    plan = serializers.DictField()
    usage = serializers.DictField()


@declare(Access.API)
class StatsView(APIView):
    required_scopes = {"GET": Scope.MEMORIES_READ}

    @extend_schema(responses=StatsSerializer)
    def get(self, request: Request) -> Response:
        stats = services.memory_stats()
        plan = Plan.objects.get(code=request.tenant.plan_code)
        stats["plan"] = {"code": plan.code, "name": plan.name, "limits": plan.limits()}
        stats["usage"] = {
            "memories": stats["total_memories"],
            "storage_bytes": stats["storage_bytes"],
        }
        return Response(stats)
