"""The product's settings, unchanged, with a URLconf that adds the benchmark's baseline view."""

from engram_cloud.settings import *  # noqa: F403

ROOT_URLCONF = "bench.benchsite.urls"
