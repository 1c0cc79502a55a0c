"""The environment catalog (ARCHITECTURE.md, "Inside the agent"): what a session's
``name[:tag]`` means, whether this host can run it, and building what it lacks.

- ``catalog.toml``: the shipped catalog (a data file; docs/environments.md);
- ``catalog.py``: its model, loader and lookup, and the query / batch command plans (I/O-free);
- ``host.py``: availability on this host (binaries, Debian packages, built venvs);
- ``build.py``: ``bai env build`` (apt-get, venv + pip; idempotent, atomic);
- ``cli.py``: the ``bai env`` commands.

Errors: ``CatalogError`` (and ``UnknownEnvironment``) from the catalog, ``BuildError``
(and ``NeedsRoot``) from a build.
"""

from bai.agent.environments.catalog import (
    Catalog,
    CatalogError,
    Environment,
    Runtime,
    UnknownEnvironment,
    batch_plan,
    load_catalog,
    query_plan,
)
from bai.agent.environments.host import HostProbe, Status, host_status, venv_link

__all__ = [
    "Catalog",
    "CatalogError",
    "Environment",
    "HostProbe",
    "Runtime",
    "Status",
    "UnknownEnvironment",
    "batch_plan",
    "host_status",
    "load_catalog",
    "query_plan",
    "venv_link",
]
