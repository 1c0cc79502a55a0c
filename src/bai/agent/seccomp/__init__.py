"""The sandbox's syscall policy (ARCHITECTURE.md, "The local sandbox").

A declarative deny-list (``default.toml``, modeled on Docker's default seccomp
profile: default action allow, every denial EPERM), extended or tightened by
overlays (``policy.py``), compiled once per policy at agent start to a BPF
program that bwrap loads with ``--seccomp FD`` (``bpf.py``, local backend), or
exported as a Docker seccomp profile (``docker.py``, docker backend).

Errors: ``PolicyError`` (a malformed policy file, a syscall libseccomp does not
know) is the only one raised; callers at start-up turn it into
``BackendUnavailable``.
"""

from bai.agent.seccomp.policy import (
    ArgMatch,
    Overlay,
    Policy,
    PolicyError,
    Rule,
    default_policy,
    load_overlay,
    policy_for,
)

__all__ = ["ArgMatch", "Overlay", "Policy", "PolicyError", "Rule", "default_policy", "load_overlay", "policy_for"]
