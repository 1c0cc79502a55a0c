"""The bubblewrap command line of a local sandbox (pure: builds arguments, runs nothing).

File descriptors the sandbox's first process receives (set up by
``LocalSandbox`` before exec): 3 the runner's socket, 4 bwrap's --info-fd, then
``SandboxCommand.data_fds``: where no /etc view holds them (``etc_data``), the
synthetic /etc/passwd, /etc/group and /etc/hosts on 5/6/7; then the seccomp program
(bai.agent.seccomp; absent when the agent runs without a filter), on 8, or on 5 with
an /etc view. Inside, the runner keeps only fd 3: bwrap consumes and closes the others.

What the sandbox sees: /usr read-only with the /bin /lib /lib64 /sbin links as
the host has them, a trimmed /etc (one bind of the agent's copy of ETC_ENTRIES,
bai.agent.backends.local.etc_view), fresh /proc and /dev, a private size-capped
/tmp, the session's scratch dir at /home/work (the only writable host path),
private tmpfs at /tmp and /dev/shm (memory, charged to the session's cgroup),
the runner's package read-only at /opt/bai/bai/runner. Nothing else of the host.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SOCKET_FD = 3
INFO_FD = 4
FIRST_DATA_FD = 5
SECCOMP_FD = 8  # after the three synthetic /etc files (FIRST_DATA_FD with an /etc view)
ETC_FILES = ("passwd", "group", "hosts")  # synthetic, the same in every sandbox: etc_files()

SANDBOX_UID = 1000
SANDBOX_USER = "work"
HOME = "/home/work"
HOSTNAME = "sandbox"
RUNNER_MOUNT = "/opt/bai/bai/runner"
# the collector stays off while the runner's modules load (about 1.5 ms of a start);
# main() freezes what was loaded and turns it back on before the REPL is forked
RUNNER_BOOT = "import gc, sys; gc.disable(); sys.path.insert(0, '/opt/bai'); from bai.runner.main import main; main()"

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENV = {"PATH": PATH, "HOME": HOME, "LANG": "C.UTF-8", "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}

# What of /etc programs need (dynamic linker, certificates, time zone, MIME
# types, Debian's python config...). Never shadow, pip.conf, npmrc, ssh, ssl/private.
ETC_ENTRIES = (
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates.conf",
    "localtime",
    "timezone",
    "mime.types",
    "magic",
    "magic.mime",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "protocols",
    "services",
    "os-release",
    "debian_version",
    "locale.alias",
    "terminfo",
    "inputrc",
    "bash.bashrc",
    "fonts",
    "python3",
    "python3.11",
    "python3.12",
    "python3.13",
    "java-17-openjdk",
    "R",  # Renviron, Rprofile.site (r-base-core)
    "php",  # php.ini and the extensions' conf.d (php-cli)
    "matplotlibrc",
)
TOP_LINKS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def host_layout(root: Path = Path("/"), etc_view: Path | None = None) -> list[str]:
    """The static part of the file-system arguments, from what this host has.

    Computed at backend start: a host symlink becomes a symlink (so /lib -> usr/lib
    stays a link), a directory or file a read-only bind. /etc is ``etc_view`` bound
    read-only (a copy of the ETC_ENTRIES, bai.agent.backends.local.etc_view: one bind), or
    without one each entry bound on its own."""
    args = ["--ro-bind", str(root / "usr"), "/usr"]
    for name in TOP_LINKS:
        args += _mirror(root / name, f"/{name}")
    if etc_view is not None:
        return [*args, "--ro-bind", str(etc_view), "/etc"]
    for name in ETC_ENTRIES:
        args += _mirror(root / "etc" / name, f"/etc/{name}")
    return args


def _mirror(host: Path, dest: str) -> list[str]:
    if host.is_symlink():
        return ["--symlink", os.readlink(host), dest]
    if host.exists():
        return ["--ro-bind", str(host), dest]
    return []


def passwd_data() -> bytes:
    return (
        f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
        f"{SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_UID}:{SANDBOX_USER}:{HOME}:/bin/bash\n"
        f"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    ).encode()


def group_data() -> bytes:
    return f"root:x:0:\n{SANDBOX_USER}:x:{SANDBOX_UID}:\nnogroup:x:65534:\n".encode()


def hosts_data() -> bytes:
    return f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n".encode()


def etc_files() -> dict[str, bytes]:
    """The synthetic files of every sandbox's /etc, by name: written into the /etc view
    (bai.agent.backends.local.etc_view), or bound from pipes without one."""
    return dict(zip(ETC_FILES, (passwd_data(), group_data(), hosts_data()), strict=True))


@dataclass(frozen=True)
class SandboxCommand:
    """Inputs of one sandbox's command line."""

    bwrap: str
    layout: list[str]  # from host_layout()
    scratch: Path
    runner_dir: Path
    runner_python: str
    engine: str
    environ: Mapping[str, str]
    tmp_size: int
    seccomp: bool = True  # the program comes on an fd (data_fds["seccomp"])
    preload: tuple[str, ...] = ()  # modules the runner imports before forking the REPL
    devices: tuple[str, ...] = ()  # host device nodes (its GPUs'), each bound at /dev/<its name>
    config: str = ""  # the engine's settings, JSON (the runner's --config)
    binds: tuple[Path, ...] = ()  # host paths bound read-only at the same path, if they exist (a venv)
    etc_data: bool = True  # the synthetic /etc files come on fds (False: the layout's /etc view holds them)

    @property
    def data_fds(self) -> dict[str, int]:
        """What goes on the fds after INFO_FD, in order: the names of ``etc_files()``
        where ``etc_data``, then "seccomp" where ``seccomp``."""
        names = [*(ETC_FILES if self.etc_data else ()), *(("seccomp",) if self.seccomp else ())]
        return {name: FIRST_DATA_FD + index for index, name in enumerate(names)}

    def _etc_data_binds(self) -> list[str]:
        fds = self.data_fds
        return [arg for name in ETC_FILES if name in fds for arg in ("--ro-bind-data", str(fds[name]), f"/etc/{name}")]

    def _device_binds(self) -> list[str]:
        args = []
        for node in self.devices:
            args += ["--dev-bind", node, f"/dev/{Path(node).name}"]
        return args

    def argv(self) -> list[str]:
        args = [
            self.bwrap,
            "--unshare-all", "--unshare-user", "--disable-userns",
            "--die-with-parent", "--new-session", "--as-pid-1",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", HOSTNAME,
            *self.layout,
            *self._etc_data_binds(),
            "--proc", "/proc", "--dev", "/dev",
            *self._device_binds(),
            "--size", str(self.tmp_size), "--tmpfs", "/dev/shm",
            "--remount-ro", "/dev",  # not recursive: /dev/shm and /dev/pts stay writable
            "--size", str(self.tmp_size), "--tmpfs", "/tmp",
            "--bind", str(self.scratch), HOME,
            "--ro-bind", str(self.runner_dir), RUNNER_MOUNT,
            *[arg for path in self.binds for arg in ("--ro-bind-try", str(path), str(path))],
            "--remount-ro", "/",  # the root tmpfs bwrap built (mount points, /etc) turns read-only
            "--chdir", HOME,
            "--info-fd", str(INFO_FD),
            "--clearenv",
        ]  # fmt: skip
        if self.seccomp:
            args += ["--seccomp", str(self.data_fds["seccomp"])]
        for name, value in {**BASE_ENV, **self.environ}.items():
            args += ["--setenv", name, value]
        args += ["--", self.runner_python, "-I", "-c", RUNNER_BOOT]
        args += ["--fd", str(SOCKET_FD), "--engine", self.engine]
        if self.preload:
            args += ["--preload", ",".join(self.preload)]
        if self.config:
            args += ["--config", self.config]
        return args


def invalid_env_names(environ: Mapping[str, str]) -> list[str]:
    """Names that are not shell identifiers, or values bwrap cannot pass (NUL)."""
    return [name for name, value in environ.items() if not ENV_NAME_RE.match(name) or "\0" in value]
