from django.urls import path, register_converter

from memories.api import portability, search, views


class MemoryIdConverter:
    """Positive ids that fit SQLite's 64-bit integers; anything else is a plain 404."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(MemoryIdConverter, "memory_id")

urlpatterns = [
    path("memories", views.MemoryCollectionView.as_view(), name="memories"),
    path("memories/<memory_id:memory_id>", views.MemoryDetailView.as_view(), name="memory-detail"),
    path("stats", views.StatsView.as_view(), name="stats"),
    path("search", search.SearchView.as_view(), name="search"),
    path("import", portability.ImportView.as_view(), name="import"),
    path("export", portability.ExportView.as_view(), name="export"),
]
