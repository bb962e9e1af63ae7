from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from billing import webhooks  # noqa: F401  (connects the Stripe webhook handlers)
        from billing.stripe_client import configure_sdk

        configure_sdk()
