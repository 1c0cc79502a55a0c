"""The local backend: bubblewrap sandboxes, forked by a spawn helper, each in its own cgroups
(ARCHITECTURE.md, "The local sandbox")."""
