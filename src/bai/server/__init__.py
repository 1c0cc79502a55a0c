"""Embedded mode: one manager and one agent in one process, zero configuration."""
