"""The Docker backend: one container per session, through the Engine API (docs/docker-backend.md)."""
