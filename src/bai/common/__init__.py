"""Shared by every other package: wire models, request signing, resource slots, the domain error tree."""
