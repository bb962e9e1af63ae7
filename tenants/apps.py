from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"

    def ready(self) -> None:
        from engram_cloud import after_response
        from tenants.key_cache import connect_signals

        connect_signals()
        after_response.connect_signals()
