"""Compile a policy to a classic-BPF seccomp program with libseccomp (pyseccomp).

The program is built once per policy at agent start and kept as bytes; each
sandbox gets it through a pipe on bwrap's ``--seccomp`` fd (a pipe, not a shared
memfd: bwrap reads to EOF, and a shared file offset would leave the next
sandbox an empty read).

On x86-64 the filter also covers the i386 and x32 ABIs, so a program cannot
slip past it through ``int 0x80`` or x32 syscall numbers; a syscall that does
not exist on one ABI is simply absent there.
"""

from __future__ import annotations

import errno
import os

from bai.agent.seccomp.policy import Policy, PolicyError

#: bwrap reads the program from a pipe the agent fills before exec: it must fit the buffer.
MAX_PROGRAM_BYTES = 64 * 1024


def compile_bpf(policy: Policy) -> bytes:
    """The BPF program (struct sock_filter array) for the native architecture plus its
    32-bit siblings. Raises PolicyError for a syscall libseccomp does not know, or
    where libseccomp itself is missing."""
    try:
        # imported here: pyseccomp raises at import on a host without libseccomp, and
        # that must fail the local backend's start, not every import of the agent
        import pyseccomp  # noqa: PLC0415
    except (ImportError, OSError, RuntimeError) as exc:
        raise PolicyError(f"libseccomp is not usable (apt-get install libseccomp2): {exc}") from exc
    filt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    if pyseccomp.system_arch() == pyseccomp.Arch.X86_64:
        for arch in (pyseccomp.Arch.X86, pyseccomp.Arch.X32):
            if not filt.exist_arch(arch):
                filt.add_arch(arch)
    for rule in policy.rules:
        args = [
            pyseccomp.Arg(arg.index, pyseccomp.EQ, arg.value)
            if arg.mask is None
            else pyseccomp.Arg(arg.index, pyseccomp.MASKED_EQ, arg.mask, arg.value)
            for arg in rule.args
        ]
        try:
            filt.add_rule(pyseccomp.ERRNO(errno.EPERM), rule.syscall, *args)
        except OSError as exc:
            raise PolicyError(f"libseccomp rejects the rule for {rule.syscall!r}: {exc}") from exc
    fd = os.memfd_create("bai-seccomp", os.MFD_CLOEXEC)
    try:
        with os.fdopen(fd, "w+b", closefd=False) as out:
            filt.export_bpf(out)
            out.seek(0)
            program = out.read()
    finally:
        os.close(fd)
    if len(program) > MAX_PROGRAM_BYTES:
        raise PolicyError(f"the seccomp program is {len(program)} bytes, over {MAX_PROGRAM_BYTES}")
    return program

