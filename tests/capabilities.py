"""What the suite needs of the machine, by name, and how a run demands it.

A test that needs what the machine lacks is skipped with its reason, unless the run
demands that capability: ``BAI_TEST_REQUIRE=sandbox,docker`` (or ``all``) turns such a
skip into a failure with the same reason, so that CI cannot go green having run none of
a tier. Every capability skip in the suite goes through here, tagged with one of
``CAPABILITIES``:

- ``needs(capability, reason)``: a mark (module ``pytestmark``, a test, a ``pytest.param``)
  for a probe answered at import; ``reason`` None means present.
- ``require_or_skip(capability, reason)``: the same, called where the answer is known
  only in a fixture or a test (an environment the server does not offer).

The hooks (``pytest_configure``, ``pytest_collection_modifyitems``,
``pytest_runtest_setup``) are re-exported by tests/conftest.py; a skip stays a skip mark
on its own test, so ``-ra`` shows its reason and its place as before.
"""

from __future__ import annotations

import os
from typing import Final, NoReturn

import pytest

#: the variable a run demands capabilities with (comma-separated names, or ``all``)
VARIABLE: Final = "BAI_TEST_REQUIRE"

CAPABILITIES: Final[dict[str, str]] = {
    "sandbox": "bubblewrap, root and writable cgroups (the local backend); loop devices and mkfs.ext4 (hostfile "
    "scratch disks)",
    "docker": "a Docker engine that answers, and the bai/python:3.11 image (bai image build python)",
    "toolchains": "the toolchain of each catalog language that has an install route (Julia has none: its skip is "
    "tagged platform)",
    "official_client": "the official backend.ai client in .venv-official (./dev test installs it)",
    "tensorflow": "the python-tensorflow:2.21 environment (bai env build python-tensorflow:2.21)",
    "environments": "the other built environments and kernel images (python-pytorch, python-tensorflow:2.15, "
    "bai/lua, bai/python-pytorch)",
    "interpreters": "the runner's other interpreters: Debian's /usr/bin/python3 and a Python 3.9 under pyenv",
    "compat_suite": "Backend.AI's integration suite (../shared/compat/backendai-test.sh): Python 3.13, and PyPI "
    "for its venv on first use",
    "platform": "facts of the host that no install changes: x86-64, Linux 6.12's memory-peak reset, dpkg, a "
    "Julia binary, what root may do here",
}


def required(environ: dict[str, str] | os._Environ[str] = os.environ) -> frozenset[str]:
    """The capabilities this run demands. An unknown name is a usage error, so that a typo
    in CI's list does not silently demand nothing."""
    names = {name.strip() for name in environ.get(VARIABLE, "").split(",") if name.strip()}
    if "all" in names:
        return frozenset(CAPABILITIES)
    unknown = names - CAPABILITIES.keys()
    if unknown:
        known = ", ".join([*CAPABILITIES, "all"])
        raise pytest.UsageError(f"{VARIABLE}: unknown capabilities {sorted(unknown)}; known: {known}")
    return frozenset(names)


def _known(capability: str) -> str:
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; known: {sorted(CAPABILITIES)}")
    return capability


def needs(capability: str, reason: str | None) -> pytest.MarkDecorator:
    """A mark: the test needs ``capability``, which this machine lacks for ``reason``
    (None: it has it)."""
    return pytest.mark.needs(_known(capability), reason=reason)


def _missing(capability: str, reason: str) -> str:
    return f"required capability {capability!r} ({VARIABLE}) is missing: {reason}"


def require_or_skip(capability: str, reason: str) -> NoReturn:
    """Skip the running test for ``reason``, or fail it when the run demands ``capability``."""
    __tracebackhide__ = True  # the skip is reported at the caller's line, as pytest.skip's
    if _known(capability) in required():
        pytest.fail(_missing(capability, reason), pytrace=False)
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"needs(capability, reason): needs one of {sorted(CAPABILITIES)}; reason None: present here"
    )
    required()  # an unknown name stops the run before any test


def _missing_of(item: pytest.Item) -> list[tuple[str, str]]:
    return [(mark.args[0], mark.kwargs["reason"]) for mark in item.iter_markers("needs") if mark.kwargs["reason"]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs a capability missing here and not demanded gets a plain skip mark:
    pytest reports it at the test, with its reason, as any skip."""
    demanded = required()
    for item in items:
        for capability, reason in _missing_of(item):
            if capability not in demanded:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that needs a demanded capability missing here fails before its fixtures run."""
    demanded = required()
    for capability, reason in _missing_of(item):
        if capability in demanded:
            pytest.fail(_missing(capability, reason), pytrace=False)
