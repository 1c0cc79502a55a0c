"""What a kernel image is made of, from the catalog: I/O-free.

Two kinds of image:

- the **base** ``bai/base:<suite>``: a Debian made with ``debootstrap`` and imported
  (no registry is needed). ``BaseRecipe`` says how; its ``digest`` is stored in the
  image's ``bai.base-hash`` label, and an image with the same digest is reused;
- one **kernel image** per catalog entry, ``bai/<name>:<tag>``, built from a generated
  Dockerfile ``FROM`` the base. Every kernel image starts with the same layer (the
  runner's Python and the ``work`` user), so it is stored once; then the entry's Debian
  packages, its virtual environment (at ``VENV_PATH``), a check that the entry's binaries
  are there, and the labels: Backend.AI's ``ai.backend.*`` names and ours (``bai.*``).
  ``bai.catalog-hash`` is the hash of everything else in the recipe (Dockerfile and labels),
  so an image built from an older catalog entry, generator or base is recognised as stale.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bai.agent.environments.catalog import Environment, Runtime

#: bumped when what the generator writes changes (every image then counts as stale)
RECIPE_FORMAT = "1"
REPOSITORY_PREFIX = "bai/"
BASE_REPOSITORY = "bai/base"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: where a venv entry's virtual environment is built inside its image ({venv})
VENV_PATH = "/opt/bai/venv"
RUNNER_PYTHON = "/usr/bin/python3"
WORK_USER = "work"
WORK_UID = 1000
WORK_HOME = "/home/work"
#: Debian suite → Backend.AI's ``ai.backend.base-distro`` value
_DISTROS = {"bookworm": "debian12", "trixie": "debian13", "bullseye": "debian11"}
_CORECOUNT_VARS = "OPENBLAS_NUM_THREADS,OMP_NUM_THREADS,NPROC"
_APT_MOUNTS = (
    "--mount=type=cache,id=bai-apt-lists,target=/var/lib/apt/lists,sharing=locked "
    "--mount=type=cache,id=bai-apt-archives,target=/var/cache/apt,sharing=locked"
)
#: the secret a venv build reads its CA bundle from (the host's trust, never stored in a layer)
PIP_CERT_SECRET = "pip-cert"
#: the build context's dir of the host's local wheels (pip's find-links on the host), bound
#: read-only at WHEELS_MOUNT for a venv's pip: what the host's pip finds, the build finds
WHEELS_DIR = "wheels"
WHEELS_MOUNT = "/run/bai-wheels"

# label names
L_ENVIRONMENT = "bai.environment"
L_CATALOG_HASH = "bai.catalog-hash"
L_BASE_HASH = "bai.base-hash"
L_BASED_ON = "bai.based-on"


class RecipeError(ValueError):
    """A recipe that cannot be made (an entry with no install route, a Dockerfile not based on ours)."""


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BaseRecipe:
    """How the base is made: ``debootstrap --variant=<variant> <suite> DIR <mirror>``, then
    ``sources.list`` set to the suite, its updates and its security archive."""

    suite: str = "bookworm"
    mirror: str = DEFAULT_MIRROR
    variant: str = "minbase"
    #: the security archive; None: the mirror's sibling ``debian-security``
    security_mirror: str | None = None

    @property
    def ref(self) -> str:
        return f"{BASE_REPOSITORY}:{self.suite}"

    @property
    def distro(self) -> str:
        return _DISTROS.get(self.suite, f"debian-{self.suite}")

    def security(self) -> str:
        if self.security_mirror:
            return self.security_mirror
        root = self.mirror.rstrip("/")
        return f"{root}-security" if root.endswith("/debian") else f"{root}/../debian-security"

    def sources_list(self) -> str:
        return (
            f"deb {self.mirror} {self.suite} main\n"
            f"deb {self.mirror} {self.suite}-updates main\n"
            f"deb {self.security()} {self.suite}-security main\n"
        )

    def debootstrap_command(self, target: str) -> list[str]:
        return ["debootstrap", f"--variant={self.variant}", self.suite, target, self.mirror]

    def digest(self) -> str:
        """Changes whenever the base would come out different."""
        return _digest(
            {"format": RECIPE_FORMAT, "suite": self.suite, "variant": self.variant, "sources": self.sources_list()}
        )

    def labels(self) -> dict[str, str]:
        return {L_BASE_HASH: self.digest(), "ai.backend.base-distro": self.distro}

    def import_changes(self) -> list[str]:
        """``docker import --change`` instructions: what a tarball lacks of an image config."""
        changes = [f"LABEL {key}={json.dumps(value)}" for key, value in sorted(self.labels().items())]
        changes += [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            'CMD ["/bin/bash"]',
        ]
        return changes

    def hosts(self) -> set[str]:
        """The host names a build of this base (and its images' apt) reaches."""
        return {name for name in (urlsplit(self.mirror).hostname, urlsplit(self.security()).hostname) if name}


def docker_tag(tag: str) -> str:
    """A catalog tag as a Docker tag (Docker's tags have no ``+``)."""
    return tag.replace("+", "_")


def image_ref(env: Environment) -> str:
    return f"{REPOSITORY_PREFIX}{env.name}:{docker_tag(env.tag)}"


def installable(env: Environment) -> None:
    """Raise ``RecipeError`` for an entry with nothing to install and a reason why (Julia)."""
    if env.host.unavailable and not env.host.debian and env.host.venv is None:
        raise RecipeError(f"{env.key}: no install route: {env.host.unavailable}")


def runtime_path(env: Environment) -> str:
    """``ai.backend.runtime-path``: the interpreter (python), else the entry's first binary
    (the REPL or compiler), as the absolute path the image is checked to have."""
    if env.interpreter:
        return env.interpreter.format(venv=VENV_PATH)
    first = env.host.binaries[0] if env.host.binaries else (env.repl.command[0] if env.repl else "sh")
    return first if first.startswith("/") else f"/usr/bin/{first}"


def _features(env: Environment) -> str:
    features = ["batch", "query", "uid-match"]
    if env.runtime is Runtime.PYTHON:
        features.append("user-input")
    return " ".join(features)


def _labels_without_hash(env: Environment, base: BaseRecipe) -> dict[str, str]:
    labels = {
        "ai.backend.kernelspec": "1",
        "ai.backend.features": _features(env),
        "ai.backend.base-distro": base.distro,
        "ai.backend.runtime-type": "python" if env.runtime is Runtime.PYTHON else env.name,
        "ai.backend.runtime-path": runtime_path(env),
        "ai.backend.resource.min.cpu": "1",
        "ai.backend.resource.min.mem": "1g" if env.host.venv else "256m",
        "ai.backend.envs.corecount": _CORECOUNT_VARS,
        L_ENVIRONMENT: env.key,
        L_BASE_HASH: base.digest(),
        "bai.runtime": env.runtime.value,
        "bai.runner-python": runtime_path(env) if env.runtime is Runtime.PYTHON and env.host.venv else RUNNER_PYTHON,
        "bai.user": f"{WORK_USER}:{WORK_UID}",
        "bai.workdir": WORK_HOME,
    }
    if env.host.venv:
        labels["bai.venv"] = VENV_PATH
    return labels


def _apt_install(packages: list[str]) -> str:
    return (
        f"RUN {_APT_MOUNTS} \\\n"
        f"    apt-get update -qq && \\\n"
        f"    apt-get install -y -qq --no-install-recommends {shlex.join(packages)}"
    )


def _common_layer() -> str:
    """Identical in every kernel image, so built once and shared."""
    return (
        _apt_install(["python3", "ca-certificates"])
        + " && \\\n"
        + f"    useradd --uid {WORK_UID} --user-group --create-home --home-dir {WORK_HOME} \\\n"
        + f"        --shell /bin/bash {WORK_USER}"
    )


def _venv_layer(env: Environment) -> str | None:
    venv = env.host.venv
    if venv is None:
        return None
    pip = shlex.join([
        f"{VENV_PATH}/bin/pip", "install", "--no-cache-dir", "--find-links", WHEELS_MOUNT, *venv.pip_args,
        *venv.requirements,
    ])  # fmt: skip
    return (
        f"RUN --mount=type=secret,id={PIP_CERT_SECRET} \\\n"
        f"    --mount=type=bind,source={WHEELS_DIR},target={WHEELS_MOUNT} \\\n"
        f"    if [ -s /run/secrets/{PIP_CERT_SECRET} ]; then export PIP_CERT=/run/secrets/{PIP_CERT_SECRET}; fi && \\\n"
        f"    {shlex.quote(venv.python)} -m venv {VENV_PATH} && \\\n"
        f"    {pip}"
    )


def _check_layer(env: Environment) -> str:
    """Fail the build (with the name) when a binary the entry needs is missing."""
    names = [*env.host.binaries, runtime_path(env)]
    checks = " && ".join(
        f'{{ command -v {shlex.quote(name)} >/dev/null || {{ echo "missing: {name}" >&2; exit 1; }}; }}'
        for name in dict.fromkeys(names)
    )
    return f"RUN {checks}"


def _body(env: Environment, base: BaseRecipe) -> str:
    installable(env)
    lines = [f"# {env.key}: generated from the environment catalog by `bai image build`", f"FROM {base.ref}"]
    lines.append(_common_layer())
    packages = [name for name in env.host.debian if name not in {"python3", "ca-certificates"}]
    if env.host.venv and "python3-venv" not in packages:
        packages.append("python3-venv")  # Debian's python3 has no ensurepip without it
    if packages:
        lines.append(_apt_install(packages))
    venv = _venv_layer(env)
    if venv:
        lines.append(venv)
    lines.append(_check_layer(env))
    lines += [f"USER {WORK_USER}", f"WORKDIR {WORK_HOME}", "ENV LANG=C.UTF-8"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ImageRecipe:
    """A kernel image's Dockerfile and labels."""

    ref: str
    environment: str
    body: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def catalog_hash(self) -> str:
        return self.labels[L_CATALOG_HASH]

    def dockerfile(self) -> str:
        lines = [f"    {key}={json.dumps(value)}" for key, value in sorted(self.labels.items())]
        return self.body + "LABEL \\\n" + " \\\n".join(lines) + "\n"


def image_recipe(env: Environment, base: BaseRecipe) -> ImageRecipe:
    """The recipe for ``env``'s image; ``RecipeError`` when the entry cannot be installed."""
    body = _body(env, base)
    labels = _labels_without_hash(env, base)
    labels[L_CATALOG_HASH] = _digest({"format": RECIPE_FORMAT, "body": body, "labels": labels})
    return ImageRecipe(image_ref(env), env.key, body, labels)


def stale_reason(found: Mapping[str, str] | None, wanted: str, label: str = L_CATALOG_HASH) -> str | None:
    """Why an image with labels ``found`` (None: no image) must be built; None: it is current."""
    if found is None:
        return "not built"
    have = found.get(label)
    if have is None:
        return f"no {label} label (not built by bai)"
    if have != wanted:
        return f"built from another recipe ({label} {have}, now {wanted})"
    return None


_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", re.I | re.M)


def final_base(dockerfile: str) -> str:
    """The image a Dockerfile's last stage starts from, through its named stages
    (``FROM bai/python:3.11 AS deps`` ... ``FROM deps``); ``RecipeError`` when there is no FROM."""
    stages: dict[str, str] = {}
    last: str | None = None
    for match in _FROM.finditer(dockerfile):
        image, alias = match.group(1), match.group(2)
        resolved = stages.get(image.lower(), image)
        if alias:
            stages[alias.lower()] = resolved
        last = resolved
    if last is None:
        raise RecipeError("the Dockerfile has no FROM line")
    return last


def registered_labels(name: str, tag: str, parent: Mapping[str, str], dockerfile: str) -> dict[str, str]:
    """The labels of a user's image registered as ``name:tag``: the parent kernel image's
    (inherited by the build) with ours set to the new environment."""
    if L_ENVIRONMENT not in parent:
        raise RecipeError("the Dockerfile's base is not a bai kernel image (no bai.environment label)")
    return {
        L_ENVIRONMENT: f"{name}:{tag}",
        L_BASED_ON: parent[L_ENVIRONMENT],
        L_CATALOG_HASH: _digest({"format": RECIPE_FORMAT, "dockerfile": dockerfile, "parent": dict(parent)}),
    }


def parse_etc_hosts(text: str) -> dict[str, str]:
    """Host name → address from an ``/etc/hosts`` text (the first address a name has wins)."""
    hosts: dict[str, str] = {}
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        for name in fields[1:]:
            hosts.setdefault(name.lower(), fields[0])
    return hosts


_SOURCES_URI = re.compile(r"^\s*(?:deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)|URIs:\s*(\S+))", re.M)


def mirror_from_sources(texts: list[str]) -> str | None:
    """The host's Debian mirror from its apt sources (one-line or deb822 format): the first
    URI whose path ends in ``/debian`` (not ``debian-security``)."""
    for text in texts:
        for match in _SOURCES_URI.finditer(text):
            uri = (match.group(1) or match.group(3) or "").rstrip("/")
            if uri.startswith(("http://", "https://")) and uri.endswith("/debian"):
                return uri
    return None
