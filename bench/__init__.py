"""Benchmarks: ./dev bench."""
