"""API versions (API.md section 1): the ones we accept and how they compare."""

from __future__ import annotations

import re
from dataclasses import dataclass

SERVER_VERSION = "v8.20240915"

ACCEPTED_VERSIONS = frozenset(
    [
        "v1.20160915", "v2.20170315", "v3.20170615", "v4.20181215", "v4.20190115", "v4.20190315",
        "v4.20190615", "v5.20191215", "v6.20200815", "v6.20210815", "v6.20220315", "v6.20220615",
        "v6.20221201", "v6.20230315", "v7.20230615", "v8.20240315", "v8.20240915", "v9.20250722",
    ]
)

_VERSION_RE = re.compile(r"^v(\d+)\.(\d{8})$")
PATH_PREFIX_RE = re.compile(r"^/v(\d+)(?=/|$)")


@dataclass(frozen=True, order=True)
class ApiVersion:
    major: int
    date: str

    @classmethod
    def parse(cls, text: str) -> ApiVersion:
        match = _VERSION_RE.match(text.strip())
        if match is None:
            raise ValueError(f"not an API version: {text!r}")
        return cls(int(match.group(1)), match.group(2))

    def __str__(self) -> str:
        return f"v{self.major}.{self.date}"

    @property
    def uses_kernel_paths(self) -> bool:
        """v1–v4 clients speak of kernels: ``/kernel/...`` and kernelId = the name."""
        return self.major <= 4
