"""Benchmarks (not tests): each script prints a table and the ratio it is judged by."""
