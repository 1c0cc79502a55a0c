"""What every built-in command gets from the root: the environment, and the config parsed from it once.

The config is parsed on first use rather than in the root callback, so that
``bai run --help`` and ``bai version``'s client half work without BACKEND_*.
"""

from __future__ import annotations

from collections.abc import Mapping

import click

from bai.client.config import APIConfig


class CliState:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self._config: APIConfig | None = None

    @property
    def config(self) -> APIConfig:
        """The BACKEND_* settings; raises ConfigError (shown as ``error: ...``) when one is missing."""
        if self._config is None:
            self._config = APIConfig.from_env(self.environ)
        return self._config


pass_state = click.make_pass_decorator(CliState, ensure=False)
