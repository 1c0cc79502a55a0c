"""Export a policy as a Docker seccomp profile (``docker run --security-opt seccomp=...``).

The JSON shape is Docker's (moby/profiles ``seccomp.Seccomp``): ``defaultAction``
allow, one ``syscalls`` entry per rule with ``SCMP_ACT_ERRNO`` and
``errnoRet`` 1 (EPERM). For a masked match Docker's ``value`` is the mask and
``valueTwo`` the expected value, as in libseccomp's SCMP_CMP_MASKED_EQ.
"""

from __future__ import annotations

import errno
import platform

from pydantic import BaseModel, Field

from bai.agent.seccomp.policy import ArgMatch, Policy, Rule

ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


class DockerArg(BaseModel):  # field names are Docker's, camelCase and all
    index: int
    value: int
    valueTwo: int = 0
    op: str


class DockerSyscall(BaseModel):
    names: list[str]
    action: str = "SCMP_ACT_ERRNO"
    errnoRet: int = errno.EPERM
    args: list[DockerArg] = Field(default_factory=list)
    comment: str = ""


class DockerProfile(BaseModel):
    defaultAction: str = "SCMP_ACT_ALLOW"
    architectures: list[str]
    syscalls: list[DockerSyscall]


def docker_profile(policy: Policy, machine: str | None = None) -> DockerProfile:
    """The profile for ``machine`` (``platform.machine()`` by default); serialize with
    ``model_dump_json()``."""
    arches = ARCHITECTURES.get(machine or platform.machine(), [])
    return DockerProfile(architectures=arches, syscalls=[_syscall(rule) for rule in policy.rules])


def _syscall(rule: Rule) -> DockerSyscall:
    return DockerSyscall(names=[rule.syscall], args=[_arg(arg) for arg in rule.args], comment=rule.why)


def _arg(arg: ArgMatch) -> DockerArg:
    if arg.mask is None:
        return DockerArg(index=arg.index, value=arg.value, op="SCMP_CMP_EQ")
    return DockerArg(index=arg.index, value=arg.mask, valueTwo=arg.value, op="SCMP_CMP_MASKED_EQ")
