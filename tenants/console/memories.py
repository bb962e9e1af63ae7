"""The memory browser: list and search the workspace's memories, view one, delete one."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from memories import search as memory_search
from memories import services as memory_services
from memories.models import Memory
from memories.tenant_db import bind_tenant_database
from tenants.console.access import Workspace, render_page, workspace_view
from tenants.permissions import Scope

PAGE_SIZE = 50
MAX_QUERY_LENGTH = 500


def _page_number(request: HttpRequest) -> int:
    try:
        return max(1, min(int(request.GET.get("page", "1")), 10_000))
    except ValueError:
        return 1


@workspace_view()
def memories(request: HttpRequest, workspace: Workspace) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:MAX_QUERY_LENGTH]
    page = _page_number(request)
    with bind_tenant_database(workspace.tenant.id):
        if query:
            outcome = memory_search.search(query, limit=PAGE_SIZE)
            loaded = Memory.objects.in_bulk([hit.memory_id for hit in outcome.hits])
            found = [
                (loaded[hit.memory_id], hit.score)
                for hit in outcome.hits
                if hit.memory_id in loaded
            ]
            has_more = False
        else:
            rows = memory_services.list_memories_by_offset(
                memory_services.MemoryFilters(),
                limit=PAGE_SIZE + 1,
                offset=(page - 1) * PAGE_SIZE,
            )
            found = [(memory, None) for memory in rows[:PAGE_SIZE]]
            has_more = len(rows) > PAGE_SIZE
        total = memory_services.memory_stats()["total_memories"]
    context = {
        "results": found,
        "query": query,
        "page": page,
        "has_more": has_more,
        "total": total,
    }
    return render_page(request, workspace, "console/memories.html", context)


@workspace_view()
def memory_detail(request: HttpRequest, workspace: Workspace, memory_id: int) -> HttpResponse:
    with bind_tenant_database(workspace.tenant.id):
        try:
            memory = memory_services.get_memory(memory_id)
        except Memory.DoesNotExist:
            raise Http404("No such memory.") from None
    return render_page(request, workspace, "console/memory.html", {"memory": memory})


@require_POST
@workspace_view(Scope.MEMORIES_WRITE)
def memory_delete(request: HttpRequest, workspace: Workspace, memory_id: int) -> HttpResponse:
    with bind_tenant_database(workspace.tenant.id):
        try:
            memory_services.delete_memory(memory_id)
        except Memory.DoesNotExist:
            raise Http404("No such memory.") from None
    messages.success(request, f"Memory {memory_id} deleted.")
    return redirect("console:memories", slug=workspace.tenant.slug)
