"""The kernel images an agent offers: ``bai image build``'s images, told by their labels
(docs/images.md). Pure; unit-tested without Docker."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bai.agent.backends.local.bwrap import HOME

LABEL_ENVIRONMENT = "bai.environment"  # on kernel images (bai.images)
#: the runner engines this backend starts: an image's engine and its settings come from the
#: catalog entry its bai.environment label names (bai.agent.environments.launch)
ENGINES = ("python", "repl", "command")


@dataclass(frozen=True)
class KernelImage:
    """A local image built by ``bai image build`` (its labels, docs/images.md)."""

    ref: str  # "bai/python:3.11"
    environment: str  # its bai.environment label, "python:3.11"
    engine: str  # the runner's engine, from bai.runtime
    runner_python: str
    uid: int
    gid: int
    workdir: str = HOME
    user: str = "work"  # the user's name in the image (its bai.user label)
    config: str = ""  # the runner's --config (a REPL's settings), JSON; "" for python


def image_from(ref: str, labels: Mapping[str, str]) -> KernelImage | None:
    """The kernel image described by ``labels``, or None when they are not a bai image's."""
    environment = labels.get(LABEL_ENVIRONMENT)
    runtime = labels.get("bai.runtime")
    if not environment or not runtime:
        return None
    user = labels.get("bai.user", "work:1000")
    name, _, number = user.rpartition(":")
    try:
        uid = int(number)
    except ValueError:
        return None
    if uid == 0:
        return None  # a sandbox never runs as root
    return KernelImage(
        ref=ref,
        environment=environment,
        engine=runtime,
        runner_python=labels.get("bai.runner-python", "/usr/bin/python3"),
        uid=uid,
        gid=uid,
        workdir=labels.get("bai.workdir", HOME),
        user=name or "work",
    )


def environments_of(images: Iterable[KernelImage], engines: Iterable[str]) -> dict[str, KernelImage]:
    """Environment name → image: each image under its full name ("python:3.11") and,
    for the highest tag of each name, under the bare name ("python"). Images whose
    runtime the runner has no engine for are left out."""
    known = set(engines)
    by_name: dict[str, KernelImage] = {}
    out: dict[str, KernelImage] = {}
    for image in sorted(images, key=lambda i: _version_key(i.environment)):
        if image.engine not in known:
            continue
        out[image.environment] = image
        by_name[image.environment.partition(":")[0]] = image  # the highest tag wins
    out.update(by_name)
    return out


def _version_key(environment: str) -> tuple[str, tuple[int, ...], str]:
    name, _, tag = environment.partition(":")
    numbers = tuple(int(part) for part in tag.split(".") if part.isdigit())
    return name, numbers, tag


