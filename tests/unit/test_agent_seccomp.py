"""The syscall policy without a sandbox: the default file, the overlay merge, the
BPF compile, and the Docker profile's shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bai.agent.backends.local import bwrap
from bai.agent.seccomp import (
    ArgMatch,
    Overlay,
    Policy,
    PolicyError,
    Rule,
    default_policy,
    load_overlay,
    policy_for,
)
from bai.agent.seccomp.bpf import compile_bpf
from bai.agent.seccomp.docker import docker_profile
from bai.agent.seccomp.policy import parse_overlay

REQUIRED = {
    "mount", "umount2", "pivot_root", "ptrace", "process_vm_readv", "process_vm_writev", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf", "perf_event_open", "keyctl",
    "add_key", "request_key", "unshare", "setns", "userfaultfd", "open_by_handle_at", "name_to_handle_at",
    "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "iopl", "ioperm", "lookup_dcookie",
    "quotactl",
}  # fmt: skip
TIOCSTI = 0x5412


def test_default_policy_denies_the_docker_set() -> None:
    policy = default_policy()
    assert REQUIRED - set(policy.syscalls) == set()
    unconditional = {rule.syscall for rule in policy.rules if not rule.args}
    assert REQUIRED - unconditional == set()
    ioctl = [rule.args for rule in policy.rules if rule.syscall == "ioctl"]
    assert (ArgMatch(index=1, value=TIOCSTI, mask=0xFFFFFFFF),) in ioctl
    assert "ioctl" not in unconditional and "clone" not in unconditional
    assert all(rule.why for rule in policy.rules)


def test_overlay_adds_and_removes() -> None:
    base = Policy((Rule("mount"), Rule("ptrace"), Rule("ioctl", args=(ArgMatch(1, TIOCSTI),))))
    overlay = parse_overlay(
        'allow = ["ptrace"]\n'
        '[[deny]]\nsyscall = "chmod"\nwhy = "tighter"\n'
        '[[deny]]\nsyscall = "mount"\n'  # already there: not repeated
        '[[deny]]\nsyscall = "ioctl"\nargs = [{index = 1, value = 0x541C, mask = 0xFFFFFFFF}]\n',
        "overlay",
    )
    merged = base.merged(overlay)
    assert [rule.syscall for rule in merged.rules] == ["mount", "ioctl", "chmod", "ioctl"]
    assert merged.rules[3].args == (ArgMatch(1, 0x541C, 0xFFFFFFFF),)
    assert base.merged(Overlay()) == base


def test_load_overlay_file(tmp_path: Path) -> None:
    path = tmp_path / "env.toml"
    path.write_text('allow = ["personality"]\n')
    assert load_overlay(path) == Overlay(allow=frozenset({"personality"}))
    with pytest.raises(PolicyError):
        load_overlay(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "text",
    [
        "deny = 1",
        "[[deny]]\nwhy = 'no name'",
        "[[deny]]\nsyscall = 'x'\nflavour = 1",
        "[[deny]]\nsyscall = 'ioctl'\nargs = [{index = 7, value = 1}]",
        "[[deny]]\nsyscall = 'ioctl'\nargs = [{index = 1, value = 3, mask = 1}]",
        "[[deny]]\nsyscall = 'ioctl'\nargs = [{index = 1}]",
        "allow = 'mount'",
        "other = 1",
        "not toml [",
    ],
)
def test_malformed_policies_are_rejected(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_overlay(text, "bad")


def test_compile_default_and_reject_unknown_syscalls() -> None:
    program = compile_bpf(default_policy())
    assert program and len(program) % 8 == 0  # struct sock_filter is 8 bytes
    with pytest.raises(PolicyError, match="no_such_call"):
        compile_bpf(Policy((Rule("no_such_call"),)))


def test_docker_profile_shape() -> None:
    profile = json.loads(docker_profile(default_policy(), machine="x86_64").model_dump_json())
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    entries = profile["syscalls"]
    assert all(entry["action"] == "SCMP_ACT_ERRNO" and entry["errnoRet"] == 1 for entry in entries)
    names = {name for entry in entries for name in entry["names"]}
    assert REQUIRED - names == set()
    mount = next(entry for entry in entries if entry["names"] == ["mount"])
    assert mount["args"] == []
    tiocsti = [entry for entry in entries if entry["names"] == ["ioctl"] and entry["args"][0]["valueTwo"] == TIOCSTI]
    assert tiocsti[0]["args"] == [{"index": 1, "value": 0xFFFFFFFF, "valueTwo": TIOCSTI, "op": "SCMP_CMP_MASKED_EQ"}]
    exact = docker_profile(Policy((Rule("personality", args=(ArgMatch(0, 8),)),)), machine="x86_64")
    assert exact.syscalls[0].args[0].op == "SCMP_CMP_EQ"


def test_bwrap_gets_the_program_fd() -> None:
    common = {
        "bwrap": "/usr/bin/bwrap", "layout": [], "scratch": Path("/s"), "runner_dir": Path("/r"),
        "runner_python": "/usr/bin/python3", "engine": "python", "environ": {}, "tmp_size": 1,
    }  # fmt: skip
    argv = bwrap.SandboxCommand(**common).argv()  # type: ignore[arg-type]
    assert argv[argv.index("--seccomp") + 1] == str(bwrap.SECCOMP_FD)
    assert argv.index("--seccomp") < argv.index("--")
    assert "--seccomp" not in bwrap.SandboxCommand(**common, seccomp=False).argv()  # type: ignore[arg-type]


def test_policy_for_layers_the_operator_and_the_environment(tmp_path: Path) -> None:
    operator = tmp_path / "operator.toml"
    operator.write_text('[[deny]]\nsyscall = "mincore"\n')
    environments = tmp_path / "envs"
    environments.mkdir()
    (environments / "python.toml").write_text('allow = ["keyctl"]\n[[deny]]\nsyscall = "sched_setaffinity"\n')
    base = default_policy()
    assert policy_for("python") == base
    assert policy_for("python", environment_dir=environments) != base
    layered = policy_for("python:3.11", operator, environments)  # the version tag is not part of the file name
    assert "mincore" in layered.syscalls and "sched_setaffinity" in layered.syscalls
    assert "keyctl" not in layered.syscalls
    assert policy_for("r", operator, environments) == base.merged(load_overlay(operator))  # no r.toml
    for bad in ("../python", ".hidden", ""):
        with pytest.raises(PolicyError):
            policy_for(bad, environment_dir=environments)


def test_cli_shows_and_exports_the_policy(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bai.agent.cli import seccomp

    environments = tmp_path / "envs"
    environments.mkdir()
    (environments / "python.toml").write_text('allow = ["keyctl"]\n')
    runner = CliRunner()
    shown = runner.invoke(seccomp, ["show", "--json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.output)
    assert {"syscall": "mount", "when": "always"}.items() <= rows[0].items()
    assert any(row["syscall"] == "ioctl" and "0x5412" in row["when"] for row in rows)  # TIOCSTI
    table = runner.invoke(seccomp, ["show"])
    assert table.exit_code == 0 and "SYSCALL" in table.output and "EPERM" in table.output
    exported = runner.invoke(seccomp, ["export", "--environment-dir", str(environments), "--machine", "x86_64"])
    assert exported.exit_code == 0, exported.output
    profile = json.loads(exported.output)
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW" and "SCMP_ARCH_X86_64" in profile["architectures"]
    names = {name for entry in profile["syscalls"] for name in entry["names"]}
    assert "mount" in names and "keyctl" not in names
    broken = tmp_path / "broken.toml"
    broken.write_text("[[deny]]\nsyscall = 3\n")
    failed = runner.invoke(seccomp, ["show", "--overlay", str(broken)])
    assert failed.exit_code != 0 and "syscall" in failed.output
