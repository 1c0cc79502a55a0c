"""The Docker engine, through its command-line client: image inspection, ``docker
import`` and BuildKit builds with their progress streamed line by line.

Builds go through the CLI because a BuildKit build over the Engine API needs the
client's gRPC session (secrets, the Dockerfile); the agent's backend talks to the
engine through aiodocker. ``find_docker`` picks a client that can build with BuildKit:
one with the buildx plugin, or a client older than 23 (BuildKit built in).

Errors::

    DockerError (Exception)        a docker command failed; the message ends with its last lines
     └── DockerUnavailable         no usable client, or no daemon answering
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_TAIL_LINES = 20
_STEP = re.compile(r"^#(\d+) \[(?:[^\]]*\s)?(\d+)/(\d+)\] (.*)$")
_LOG = re.compile(r"^#(\d+) (?:\d+\.\d+ )?(.*)$")


class DockerError(Exception):
    """A docker command failed."""


class DockerUnavailable(DockerError):
    """No docker client that can build, or no daemon."""


@dataclass(frozen=True)
class ImageInfo:
    """One local image, from ``docker image inspect``."""

    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    size: int
    created: str

    @classmethod
    def from_inspect(cls, data: Mapping[str, object]) -> ImageInfo:
        config = data.get("Config")
        labels = config.get("Labels") if isinstance(config, dict) else None
        tags = data.get("RepoTags")
        size = data.get("Size")
        return cls(
            id=str(data.get("Id", "")),
            tags=tuple(str(tag) for tag in tags) if isinstance(tags, list) else (),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            size=size if isinstance(size, int) else 0,
            created=str(data.get("Created", "")),
        )


class BuildProgress:
    """Reads BuildKit's ``--progress=plain`` output: which step of how many, and its last line."""

    def __init__(self) -> None:
        self.tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self.cached: set[str] = set()
        self._steps: dict[str, tuple[int, int]] = {}

    def feed(self, line: str) -> tuple[float | None, str] | None:
        """The fraction done (None: unknown) and what to show, or None for a line of no interest."""
        line = line.rstrip()
        if not line:
            return None
        self.tail.append(line)
        step = _STEP.match(line)
        if step:
            vertex, index, total, what = step.groups()
            if not what.startswith("FROM "):  # the base is resolved, never "CACHED": not a build step
                self._steps[vertex] = (int(index), int(total))
            return (int(index) - 1) / int(total), f"[{index}/{total}] {what}"[:100]
        log = _LOG.match(line)
        if not log:
            return None
        vertex, text = log.groups()
        if text == "CACHED" and vertex in self._steps:
            self.cached.add(vertex)
        where = self._steps.get(vertex)
        fraction = (where[0] - 1) / where[1] if where else None
        if where and (text == "CACHED" or text.startswith("DONE")):
            fraction = where[0] / where[1]
        return fraction, text[:100]

    @property
    def steps(self) -> int:
        return len(self._steps)


def _client_major(binary: str) -> int | None:
    try:
        result = subprocess.run(
            [binary, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except OSError:
        return None
    match = re.match(r"(\d+)\.", result.stdout.strip())
    return int(match.group(1)) if match else None


def _has_buildx(binary: str) -> bool:
    try:
        result = subprocess.run([binary, "buildx", "version"], capture_output=True, timeout=20, check=False)
    except OSError:
        return False
    return result.returncode == 0


def _candidates() -> list[str]:
    found = [os.path.join(folder, "docker") for folder in os.environ.get("PATH", "").split(os.pathsep) if folder]
    found.append("/usr/bin/docker")
    real = [path for path in found if os.path.isfile(path) and os.access(path, os.X_OK)]
    return list(dict.fromkeys(os.path.realpath(path) for path in real))


def find_docker(explicit: str | None = None) -> str:
    """The docker client to use: ``explicit`` (``BAI_DOCKER``), else the first one on PATH
    that builds with BuildKit."""
    if explicit:
        path = shutil.which(explicit)
        if path is None:
            raise DockerUnavailable(f"docker client {explicit!r} not found")
        return path
    candidates = _candidates()
    for path in candidates:
        major = _client_major(path)
        if major is not None and (major < 23 or _has_buildx(path)):
            return path
    if not candidates:
        raise DockerUnavailable("no docker client on PATH (apt-get install docker.io)")
    raise DockerUnavailable(
        f"no docker client here can build with BuildKit ({', '.join(candidates)}: version 23+ without the buildx "
        "plugin); install docker.io or docker-buildx, or set BAI_DOCKER"
    )


class Docker:
    """One docker client binary; every method runs it and raises ``DockerError`` on failure."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self._env = {**os.environ, "DOCKER_BUILDKIT": "1"}

    def _run(self, args: Sequence[str], timeout: float = 120) -> str:
        try:
            result = subprocess.run(
                [self.binary, *args], capture_output=True, text=True, timeout=timeout, env=self._env, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DockerError(f"docker {args[0]}: {exc}") from exc
        if result.returncode != 0:
            raise DockerError(f"docker {' '.join(args[:2])} failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def ping(self) -> None:
        """``DockerUnavailable`` unless a daemon answers."""
        try:
            self._run(["version", "--format", "{{.Server.Version}}"], timeout=20)
        except DockerError as exc:
            raise DockerUnavailable(f"the docker daemon does not answer ({self.binary}): {exc}") from None

    def inspect(self, refs: Iterable[str]) -> list[ImageInfo]:
        """The images among ``refs`` that exist (absent ones are left out)."""
        infos = []
        for ref in refs:
            try:
                data = json.loads(self._run(["image", "inspect", ref]))
            except DockerError as exc:
                if "No such image" in str(exc):
                    continue
                raise
            infos += [ImageInfo.from_inspect(item) for item in data if isinstance(item, dict)]
        return infos

    def labels(self, ref: str) -> dict[str, str] | None:
        """The labels of image ``ref``; None when there is no such image."""
        found = self.inspect([ref])
        return dict(found[0].labels) if found else None

    def images(self, label: str) -> list[ImageInfo]:
        """Every tagged local image that carries ``label`` (an older build left untagged is not one)."""
        args = ["image", "ls", "--quiet", "--no-trunc", "--filter", f"label={label}", "--filter", "dangling=false"]
        ids = self._run(args).split()
        return self.inspect(dict.fromkeys(ids))

    def import_tarball(self, tarball: Path, ref: str, changes: Sequence[str]) -> str:
        args = ["import"]
        for change in changes:
            args += ["--change", change]
        return self._run([*args, str(tarball), ref], timeout=600).strip()

    def build(
        self,
        dockerfile: str,
        ref: str,
        context: Path,
        on_line: Callable[[str], None],
        *,
        extra_hosts: Mapping[str, str] | None = None,
        secrets: Mapping[str, Path] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """``docker build`` with BuildKit, the Dockerfile on stdin, each output line to ``on_line``."""
        args = [self.binary, "build", "--progress=plain", "--tag", ref, "--file", "-"]
        for host, address in sorted((extra_hosts or {}).items()):
            args += ["--add-host", f"{host}:{address}"]
        for name, path in sorted((secrets or {}).items()):
            args += ["--secret", f"id={name},src={path}"]
        for key, value in sorted((labels or {}).items()):
            args += ["--label", f"{key}={value}"]
        args.append(str(context))
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=self._env,
                bufsize=1,
            )
        except OSError as exc:
            raise DockerUnavailable(f"cannot run {self.binary}: {exc}") from exc
        with process:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(dockerfile)
            process.stdin.close()
            for line in process.stdout:
                tail.append(line.rstrip())
                on_line(line)
            returncode = process.wait()
        if returncode != 0:
            raise DockerError(f"docker build {ref} failed:\n" + "\n".join(tail))
