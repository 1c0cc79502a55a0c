"""A session's record (decision 0010): what a restarted agent needs to take a running
container back. Pure; unit-tested without Docker."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bai.agent.cgroups import Limits
from bai.agent.scratch import Scratch
from bai.common.agent_rpc import SandboxSpec


@dataclass(frozen=True)
class SandboxRecord:
    """What a restarted agent needs to take a running container back: written when the
    container becomes a session's (created for it, or claimed from the pool), kept while it
    lives, in ``<data_dir>/docker/sessions/<session id>.json`` (root's, never bound)."""

    spec: SandboxSpec
    container_id: str
    created_as: str  # the id it was created under (a pooled one's: its pool name)
    environment: str  # the image's bai.environment label, "python:3.11"
    cpu: str  # its limits, as claimed
    mem: int
    pids: int
    socket_dir: str
    scratch: dict[str, Any]  # bai.agent.scratch.Scratch's fields
    parent_cgroup: bool  # whether it runs under a session cgroup of ours
    gpus: tuple[int, ...] = ()  # the device indexes it holds
    uid: int | None = None  # the host uid it runs as (None: the image's)
    #: the runner's host pid: on re-attach only it may connect (the user's code runs already)
    runner_pid: int | None = None
    version: int = 1

    @property
    def limits(self) -> Limits:
        return Limits(cpu=Decimal(self.cpu), mem=self.mem, pids=self.pids)

    def to_json(self) -> str:
        body = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "spec"}
        body["spec"] = self.spec.model_dump(mode="json")
        body["gpus"] = list(self.gpus)
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SandboxRecord:
        """Raises ValueError (a malformed or foreign record: the caller drops it)."""
        try:
            body = json.loads(text)
            if not isinstance(body, dict) or body.get("version") != 1:
                raise ValueError("not a version 1 record")
            spec = SandboxSpec.model_validate(body.pop("spec"))
            gpus = tuple(int(index) for index in body.pop("gpus", ()))
            record = cls(spec=spec, gpus=gpus, **body)
            if not Decimal(record.cpu).is_finite():
                raise ValueError(f"cpu {record.cpu!r}")
        except (TypeError, KeyError, ArithmeticError, ValidationError) as exc:
            raise ValueError(f"a malformed sandbox record: {exc}") from exc
        return record


def scratch_fields(scratch: Scratch) -> dict[str, Any]:
    return {
        "path": str(scratch.path),
        "kind": scratch.kind,
        "cap": scratch.cap,
        "image": str(scratch.image) if scratch.image is not None else None,
        "baseline": scratch.baseline,
    }


def scratch_from(fields: Mapping[str, Any]) -> Scratch:
    """The Scratch a record names. Raises ValueError."""
    kind = fields.get("kind")
    if kind not in ("hostfile", "memory", "hostdir"):
        raise ValueError(f"a scratch disk of kind {kind!r}")
    try:
        cap, image = fields.get("cap"), fields.get("image")
        return Scratch(
            path=Path(fields["path"]),
            kind=kind,
            cap=int(cap) if cap is not None else None,
            image=Path(image) if image is not None else None,
            baseline=int(fields.get("baseline", 0)),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"a malformed scratch record: {exc}") from exc


