"""Is an environment usable on this host, and if not, why.

A host-toolchain entry is usable when each of its binaries is on PATH and each of
its Debian packages is installed (checked with one ``dpkg-query`` for the whole
catalog; on a host without dpkg, the binaries decide). A venv entry is usable when
its base interpreter exists and the venv built by ``bai env build`` sits under
``<data_dir>/environments/<name>-<tag>`` with a marker holding the current spec's
hash (an older build is reported as out of date, not used).

``<name>-<tag>`` is a symbolic link to the build dir ``<name>-<tag>.<hash>``: a venv
holds absolute paths, so it is built where it stays and the link is swapped when the
build is complete (``build.py``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bai.agent.environments.catalog import Environment, Venv

#: the file in a built venv that records what it was built from
MARKER = ".bai-environment.json"
ENVIRONMENTS_DIR = "environments"


def venv_link(data_dir: Path, env: Environment) -> Path:
    """Where ``env``'s venv is found (a link to the current build)."""
    return data_dir / ENVIRONMENTS_DIR / f"{env.name}-{env.tag}"


def venv_build_dir(data_dir: Path, env: Environment, venv: Venv) -> Path:
    """Where a build of this spec lives."""
    return data_dir / ENVIRONMENTS_DIR / f"{env.name}-{env.tag}.{venv.digest()}"


def read_marker(venv_dir: Path) -> dict[str, str] | None:
    """The marker of a built venv, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((venv_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return {str(key): str(value) for key, value in data.items()} if isinstance(data, dict) else None


def _dpkg_missing(packages: Sequence[str]) -> set[str] | None:
    """Which of ``packages`` dpkg does not have installed; None when there is no dpkg."""
    dpkg = shutil.which("dpkg-query")
    if dpkg is None or not packages:
        return None if dpkg is None else set()
    result = subprocess.run(
        [dpkg, "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    installed = {line.split()[0].split(":")[0] for line in result.stdout.splitlines() if line.endswith(" installed")}
    return set(packages) - installed


@dataclass(frozen=True)
class HostProbe:
    """The host facts availability depends on; tests pass a fake PATH and package check."""

    #: the PATH to search (None: the process's)
    path: str | None = None
    #: which of the given Debian packages are not installed (None: unknown here)
    missing_packages: Callable[[Sequence[str]], set[str] | None] = _dpkg_missing

    def which(self, binary: str) -> str | None:
        return shutil.which(binary, path=self.path)


@dataclass(frozen=True)
class Status:
    """One entry's availability; ``reason`` says what is missing and how to get it."""

    env: Environment
    available: bool
    reason: str = ""
    #: the built venv's dir, for venv entries that are built
    venv_dir: Path | None = None


def _install_hint(env: Environment) -> str:
    if env.host.unavailable:
        return env.host.unavailable
    return f"run `bai env build {env.key}`"


def _venv_status(env: Environment, venv: Venv, data_dir: Path, probe: HostProbe) -> Status:
    if probe.which(venv.python) is None:
        return Status(env, False, f"base interpreter {venv.python} is missing")
    link = venv_link(data_dir, env)
    marker = read_marker(link)
    if marker is None or not (link / "bin" / "python").exists():
        return Status(env, False, f"not built: {_install_hint(env)}")
    if marker.get("digest") != venv.digest():
        return Status(env, False, f"built from another spec ({marker.get('digest')}): {_install_hint(env)}")
    return Status(env, True, "", link.resolve())


def environment_status(
    env: Environment, data_dir: Path, probe: HostProbe, missing_packages: set[str] | None = None
) -> Status:
    """``env``'s availability; ``missing_packages`` is the catalog-wide dpkg answer
    (None: not known, the binaries decide)."""
    missing_binaries = [binary for binary in env.host.binaries if probe.which(binary) is None]
    missing_debs = sorted(set(env.host.debian) & (missing_packages or set()))
    if missing_binaries or missing_debs:
        parts = [f"no {', '.join(missing_binaries)} on PATH"] if missing_binaries else []
        parts += [f"Debian package {', '.join(missing_debs)} not installed"] if missing_debs else []
        return Status(env, False, f"{'; '.join(parts)}: {_install_hint(env)}")
    if env.host.venv is not None:
        return _venv_status(env, env.host.venv, data_dir, probe)
    return Status(env, True)


def host_status(envs: Iterable[Environment], data_dir: Path, probe: HostProbe | None = None) -> list[Status]:
    """Every entry's availability, with one package query for all of them."""
    probe = probe or HostProbe()
    entries = list(envs)
    packages = sorted({package for env in entries for package in env.host.debian})
    missing = probe.missing_packages(packages)
    return [environment_status(env, data_dir, probe, missing) for env in entries]
