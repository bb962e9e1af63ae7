from django.db import migrations

MB = 1024 * 1024
GB = 1024 * MB

# The product's pricing (ARCHITECTURE.md §4). None means unlimited. Staff edit these in the admin.
PLANS = [
    dict(code="free", name="Free", price_cents_per_month=0, max_memories=1_000,
         max_searches_per_month=10_000, max_api_calls_per_month=50_000,
         max_storage_bytes=100 * MB, max_members=1, requests_per_minute=120, burst=30,
         sort_order=1),
    dict(code="pro", name="Pro", price_cents_per_month=2900, max_memories=50_000,
         max_searches_per_month=100_000, max_api_calls_per_month=500_000,
         max_storage_bytes=5 * GB, max_members=1, requests_per_minute=600, burst=100,
         sort_order=2),
    dict(code="team", name="Team", price_cents_per_month=9900, max_memories=500_000,
         max_searches_per_month=None, max_api_calls_per_month=None,
         max_storage_bytes=50 * GB, max_members=10, requests_per_minute=3_000, burst=300,
         sort_order=3),
    dict(code="enterprise", name="Enterprise", price_cents_per_month=None, max_memories=None,
         max_searches_per_month=None, max_api_calls_per_month=None, max_storage_bytes=None,
         max_members=None, requests_per_minute=None, burst=None, sort_order=4),
]


def seed(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    for plan in PLANS:
        Plan.objects.update_or_create(code=plan["code"], defaults=plan)


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
