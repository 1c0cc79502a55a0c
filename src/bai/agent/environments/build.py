"""``bai env build``: install what an environment needs on this host.

Debian packages go in with ``apt-get install`` (as root; otherwise ``NeedsRoot``
carries the command for the operator). A venv is built with ``python -m venv`` and
``pip install`` at its final path ``<name>-<tag>.<hash>`` (a venv holds absolute
paths), its marker is written last, and only then is the link ``<name>-<tag>``
swapped to it, so a failed or interrupted build leaves the previous one in place
and no half-built dir. A build whose spec is already built is a no-op.

The output parsers (``PipProgress``, ``apt_status``) are I/O-free; the shell
reports through a ``BuildReporter`` (the CLI draws it with rich).

Errors::

    BuildError (Exception)      a step failed; the message ends with the tool's last lines
     ├── NotInstallable         no install route (Julia on Debian 12); the reason is the catalog's
     └── NeedsRoot              Debian packages are missing and this is not root
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bai.agent.environments.catalog import Environment, Venv
from bai.agent.environments.host import (
    ENVIRONMENTS_DIR,
    MARKER,
    HostProbe,
    read_marker,
    venv_build_dir,
    venv_link,
)

_SIZE_UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9}
_TAIL_LINES = 15
_BUILD_SUFFIX = re.compile(r"\.[0-9a-f]{16}")


class BuildError(Exception):
    """A build step failed."""


class NotInstallable(BuildError):
    """The catalog knows no way to install the environment here (its ``host.unavailable``)."""


class NeedsRoot(BuildError):
    """Packages are missing and only root may install them: ``command`` does it."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)
        super().__init__(f"Debian packages are missing; as root, run: {shlex.join(self.command)}")


class BuildReporter(Protocol):
    """What a build tells its caller as it goes."""

    def step(self, title: str) -> None:
        """A new step starts (its progress restarts)."""

    def progress(self, fraction: float | None, detail: str) -> None:
        """How far the step is (None: unknown) and what it does now."""


@dataclass(frozen=True)
class BuildResult:
    env: Environment
    changed: bool
    message: str
    venv_dir: Path | None = None


def _size(text: str) -> int:
    number, _, unit = text.partition(" ")
    try:
        return int(float(number) * _SIZE_UNITS.get(unit, 1))
    except ValueError:
        return 0


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


class PipProgress:
    """Summarises ``pip install`` output lines: packages collected, bytes downloaded,
    what is being done now. ``feed`` returns the detail line to show, or None."""

    _COLLECT = re.compile(r"^Collecting (\S+)")
    _DOWNLOAD = re.compile(r"^\s*(?:Downloading|Using cached) (\S+) \(([\d.]+ [kKMG]?B)\)")
    _PROCESS = re.compile(r"^Processing (\S+)")
    _INSTALL = re.compile(r"^Installing collected packages: (.*)")
    _DONE = re.compile(r"^Successfully installed (.*)")

    def __init__(self) -> None:
        self.collected: list[str] = []
        self.downloaded = 0
        self.installing: list[str] = []
        self.installed: list[str] = []

    def feed(self, line: str) -> str | None:
        if match := self._COLLECT.match(line):
            self.collected.append(match.group(1))
            return f"collecting {match.group(1)} ({len(self.collected)} so far, {_megabytes(self.downloaded)})"
        if match := self._DOWNLOAD.match(line):
            self.downloaded += _size(match.group(2))
            name = match.group(1).rsplit("/", 1)[-1]
            return f"fetched {name} ({match.group(2)}; {_megabytes(self.downloaded)} in all)"
        if match := self._PROCESS.match(line):
            return f"using {match.group(1).rsplit('/', 1)[-1]}"
        if match := self._INSTALL.match(line):
            self.installing = [name.strip() for name in match.group(1).split(",") if name.strip()]
            return f"installing {len(self.installing)} packages ({_megabytes(self.downloaded)} fetched)"
        if match := self._DONE.match(line):
            self.installed = match.group(1).split()
            return f"installed {len(self.installed)} packages"
        return None


@dataclass(frozen=True)
class AptStatus:
    """One ``APT::Status-Fd`` line: the phase (``download`` or ``install``), how far, what."""

    phase: str
    fraction: float
    detail: str


def apt_status(line: str) -> AptStatus | None:
    """An ``APT::Status-Fd`` line (``pmstatus:pkg:percent:what`` or ``dlstatus:...``);
    None for any other line."""
    kind, _, rest = line.partition(":")
    phases = {"dlstatus": "download", "pmstatus": "install"}
    if kind not in phases:
        return None
    _, _, rest = rest.partition(":")
    percent, _, detail = rest.partition(":")
    try:
        fraction = min(max(float(percent) / 100, 0.0), 1.0)
    except ValueError:
        return None
    return AptStatus(phases[kind], fraction, detail.strip())


def _stream(
    command: Sequence[str],
    on_line: Callable[[str], None],
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> None:
    """Run ``command``, passing each output line (stdout and stderr merged) to ``on_line``;
    a non-zero exit is a ``BuildError`` ending with the last lines."""
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
            env=env,
            bufsize=1,
            pass_fds=pass_fds,
        )
    except OSError as exc:
        raise BuildError(f"cannot run {command[0]}: {exc.strerror}") from None
    assert process.stdout is not None
    with process:
        try:
            for raw in process.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                on_line(line)
        except BaseException:
            process.kill()
            raise
    if process.returncode != 0:
        details = "\n".join(f"  {line}" for line in tail)
        raise BuildError(f"{shlex.join(command)} exited with {process.returncode}:\n{details}")


# -- Debian packages --------------------------------------------------------


def apt_command(packages: Sequence[str]) -> list[str]:
    return ["apt-get", "install", "-y", "--no-install-recommends", *packages]


def _apt_install(packages: Sequence[str], reporter: BuildReporter) -> None:
    """``apt-get install`` with its status lines on a pipe of their own: on fd 1 (stdout)
    they break maintainer scripts (r-base-core's postinst fails writing to stdout)."""
    phase = ""

    def show(line: str) -> None:
        nonlocal phase
        status = apt_status(line)
        if status is None:
            return
        if status.phase != phase:  # each phase its own bar: a finished download is not a finished install
            phase = status.phase
            reporter.step(f"apt-get {phase} {' '.join(packages)}")
        reporter.progress(status.fraction, status.detail)

    def install(env: dict[str, str]) -> None:
        read_fd, write_fd = os.pipe()
        reader = threading.Thread(target=_read_lines, args=(read_fd, show), daemon=True)
        reader.start()
        command = [*apt_command(packages)[:2], "-o", f"APT::Status-Fd={write_fd}", "-o", "Dpkg::Use-Pty=0"]
        try:
            _stream([*command, *apt_command(packages)[2:]], lambda line: None, env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
            reader.join(timeout=5)

    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        install(env)
    except BuildError as exc:
        if "Unable to locate package" not in str(exc) and "no installation candidate" not in str(exc):
            raise
        reporter.step("apt-get update (the package lists are missing or old)")
        _stream(["apt-get", "update"], lambda line: reporter.progress(None, line[:80]), env)
        reporter.step(f"apt-get install {' '.join(packages)}: resolving")
        phase = ""
        install(env)


def _read_lines(fd: int, on_line: Callable[[str], None]) -> None:
    with open(fd, encoding="utf-8", errors="replace") as stream:
        for line in stream:
            on_line(line.rstrip("\n"))


def _ensure_debian(env: Environment, probe: HostProbe, reporter: BuildReporter) -> bool:
    """Install ``env``'s missing Debian packages; True when something was installed."""
    host = env.host
    missing = sorted(probe.missing_packages(host.debian) or set())
    absent = [binary for binary in host.binaries if probe.which(binary) is None]
    if not missing and not absent:
        return False
    if not host.debian:
        reason = host.unavailable or "the catalog names no Debian package for it"
        raise NotInstallable(f"{env.key} cannot be installed here (no {', '.join(absent)} on PATH): {reason}")
    packages = missing or list(host.debian)
    if os.geteuid() != 0:
        raise NeedsRoot(apt_command(packages))
    reporter.step(f"apt-get install {' '.join(packages)}: resolving")
    _apt_install(packages, reporter)
    still = [binary for binary in host.binaries if probe.which(binary) is None]
    if still:
        raise BuildError(f"{env.key}: installed {', '.join(packages)} but {', '.join(still)} is still not on PATH")
    return True


# -- virtual environments ---------------------------------------------------


@contextmanager
def _build_lock(data_dir: Path, env: Environment) -> Iterator[None]:
    """One build of an environment at a time on this host."""
    root = data_dir / ENVIRONMENTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{env.name}-{env.tag}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _pip_install(python: Path, venv: Venv, reporter: BuildReporter) -> list[str]:
    progress = PipProgress()

    def show(line: str) -> None:
        detail = progress.feed(line)
        if detail is not None:
            reporter.progress(None, detail)

    command = [
        str(python),
        "-m",
        "pip",
        "install",
        "--progress-bar",
        "off",
        "--disable-pip-version-check",
        *venv.pip_args,
        *venv.requirements,
    ]
    _stream(command, show, {**os.environ, "PIP_NO_INPUT": "1"})
    return progress.installed


def _swap_link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` in one rename; remove the builds it no longer names."""
    if link.exists() and not link.is_symlink():
        shutil.rmtree(link)
    fresh = link.with_name(f".{link.name}.new")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(target.name)
    fresh.replace(link)
    for old in link.parent.glob(f"{link.name}.*"):
        if old != target and _BUILD_SUFFIX.fullmatch(old.name[len(link.name) :]) and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)


def _build_venv(env: Environment, venv: Venv, data_dir: Path, reporter: BuildReporter) -> BuildResult:
    link = venv_link(data_dir, env)
    marker = read_marker(link)
    if marker is not None and marker.get("digest") == venv.digest() and (link / "bin" / "python").exists():
        return BuildResult(env, False, f"{env.key} is already built ({venv.digest()}): nothing to do", link.resolve())
    target = venv_build_dir(data_dir, env, venv)
    shutil.rmtree(target, ignore_errors=True)  # a crashed build's leftovers
    started = time.monotonic()
    try:
        reporter.step(f"python -m venv ({venv.python})")
        _stream([venv.python, "-m", "venv", str(target)], lambda line: reporter.progress(None, line[:80]))
        installed: list[str] = []
        if venv.requirements:
            reporter.step(f"pip install {' '.join(venv.requirements)}")
            installed = _pip_install(target / "bin" / "python", venv, reporter)
        record = {
            "name": env.name,
            "tag": env.tag,
            "digest": venv.digest(),
            "python": venv.python,
            "requirements": list(venv.requirements),
            "installed": installed,
            "built_s": round(time.monotonic() - started, 1),
        }
        (target / MARKER).write_text(json.dumps(record, indent=2))
        _swap_link(link, target)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return BuildResult(env, True, f"built {env.key} in {time.monotonic() - started:.0f} s", target)


def build_environment(
    env: Environment, data_dir: Path, reporter: BuildReporter, probe: HostProbe | None = None
) -> BuildResult:
    """Make ``env`` usable here: its Debian packages, then its venv. Idempotent."""
    probe = probe or HostProbe()
    installed = _ensure_debian(env, probe, reporter)
    if env.host.venv is None:
        message = f"installed {', '.join(env.host.debian)}" if installed else f"{env.key} is already installed"
        return BuildResult(env, installed, message)
    with _build_lock(data_dir, env):
        return _build_venv(env, env.host.venv, data_dir, reporter)
