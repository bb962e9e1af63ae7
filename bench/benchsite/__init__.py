"""A settings module and URLconf for benchmarks: the product plus a bare hello-world view."""
