import os

# One BLAS thread per process, set before numpy is first imported: the web server runs a worker
# per core already, and OpenBLAS's extra threads on the same cores spin against each other (a
# product over 100k vectors: 4 ms with one thread, 12-40 ms with two per worker under load).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from engram_cloud.memory import fix_mmap_threshold

# Every process of the service (web workers, Celery, commands) is long-lived or reads
# whole tenants: large blocks are returned to the system when freed (engram_cloud/memory.py).
fix_mmap_threshold()

from engram_cloud.celery import app as celery_app  # noqa: E402

__all__ = ["celery_app"]
