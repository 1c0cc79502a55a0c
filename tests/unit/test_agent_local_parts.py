"""The local backend's pure parts: bwrap's command line, uids, scratch dirs, config."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from bai.agent.backends import BACKENDS, create_backend
from bai.agent.backends.local import bwrap
from bai.agent.backends.local.backend import LocalBackend, UidPool
from bai.agent.config import AgentConfig
from bai.agent.scratch import reachable_by_others, remove_scratch, scratch_size
from bai.common.errors import SessionCreationFailed


def command(**environ: str) -> list[str]:
    return bwrap.SandboxCommand(
        bwrap="/usr/bin/bwrap",
        layout=bwrap.host_layout(),
        scratch=Path("/data/sandbox/scratch/s1"),
        runner_dir=Path("/src/bai/runner"),
        runner_python="/usr/bin/python3",
        engine="python",
        environ=environ,
        tmp_size=64 * 2**20,
    ).argv()


def pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv) if arg == flag]


def test_namespaces_and_identity() -> None:
    argv = command()
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert "--as-pid-1" in argv
    assert "--share-net" not in argv
    assert argv[argv.index("--uid") + 1] == "1000" and argv[argv.index("--gid") + 1] == "1000"


def test_file_system_is_trimmed() -> None:
    argv = command()
    binds = dict((dest, src) for src, dest in pairs(argv, "--ro-bind"))
    assert binds["/usr"] == "/usr"
    assert binds["/opt/bai/bai/runner"] == "/src/bai/runner"
    assert pairs(argv, "--bind") == [("/data/sandbox/scratch/s1", "/home/work")]  # the only writable bind
    mounted = set(binds) | {dest for _src, dest in pairs(argv, "--symlink")}
    for forbidden in ("/", "/root", "/home", "/work", "/etc", "/etc/shadow", "/etc/ssl/private", "/var"):
        assert forbidden not in mounted
    tmpfs = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert tmpfs == ["/dev/shm", "/tmp"]
    for i, arg in enumerate(argv):
        if arg == "--tmpfs":  # every tmpfs is size-capped
            assert argv[i - 2 : i] == ["--size", str(64 * 2**20)]
    root_ro = next(i for i, a in enumerate(argv) if a == "--remount-ro" and argv[i + 1] == "/")
    assert root_ro > max(i for i, a in enumerate(argv) if a in ("--bind", "--ro-bind", "--ro-bind-data"))
    for dest in ("/etc/passwd", "/etc/group", "/etc/hosts"):
        assert dest in [d for _fd, d in pairs(argv, "--ro-bind-data")]


def test_host_symlinks_stay_symlinks(tmp_path: Path) -> None:
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "lib").symlink_to("usr/lib")
    (tmp_path / "sbin").mkdir()
    (tmp_path / "etc" / "localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
    (tmp_path / "etc" / "mime.types").write_text("")
    layout = bwrap.host_layout(tmp_path)
    assert pairs(layout, "--symlink") == [("usr/lib", "/lib"), ("/usr/share/zoneinfo/Etc/UTC", "/etc/localtime")]
    assert (str(tmp_path / "sbin"), "/sbin") in pairs(layout, "--ro-bind")
    assert (str(tmp_path / "etc" / "mime.types"), "/etc/mime.types") in pairs(layout, "--ro-bind")
    assert "/lib64" not in layout  # absent on this fake host: not made up


def test_environment_is_cleared_then_set() -> None:
    argv = command(MY_VAR="1", PATH="/custom")
    clear = argv.index("--clearenv")
    env = dict(pairs(argv[clear:], "--setenv"))
    assert env["HOME"] == "/home/work" and env["LANG"] == "C.UTF-8" and env["PYTHONUNBUFFERED"] == "1"
    assert env["MY_VAR"] == "1" and env["PATH"] == "/custom"
    assert "TERM" in env
    assert not pairs(argv[:clear], "--setenv")


def test_runner_command_line() -> None:
    argv = command()
    tail = argv[argv.index("--") + 1 :]
    assert tail[:3] == ["/usr/bin/python3", "-I", "-c"]
    assert "from bai.runner.main import main" in tail[3]
    assert tail[4:] == ["--fd", "3", "--engine", "python"]


def test_env_names_must_be_identifiers() -> None:
    assert bwrap.invalid_env_names({"OK_1": "x", "_x": "y"}) == []
    assert bwrap.invalid_env_names({"1BAD": "", "A-B": "", "A B": "", "": "", "NUL": "a\0b"}) == [
        "1BAD",
        "A-B",
        "A B",
        "",
        "NUL",
    ]


def test_passwd_names_the_sandbox_user() -> None:
    assert b"work:x:1000:1000:work:/home/work:" in bwrap.passwd_data()
    assert b"work:x:1000:" in bwrap.group_data()


def test_uid_pool_round_robin_and_exhaustion() -> None:
    pool = UidPool(1_000_000, 3)
    a, b, c = pool.acquire(), pool.acquire(), pool.acquire()
    assert (a, b, c) == (1_000_000, 1_000_001, 1_000_002)
    with pytest.raises(SessionCreationFailed):
        pool.acquire()
    pool.release(b)
    assert pool.acquire() == b
    pool.release(a)
    pool.release(c)
    assert pool.acquire() == c  # round robin: the latest-freed slot is not preferred
    assert pool.acquire() == a


def test_scratch_size_counts_links_not_their_targets(tmp_path: Path) -> None:
    host_file = tmp_path / "host.bin"
    host_file.write_bytes(b"x" * 100_000)
    scratch = tmp_path / "scratch"
    (scratch / "sub").mkdir(parents=True)
    (scratch / "a.txt").write_bytes(b"12345")
    (scratch / "sub" / "b.txt").write_bytes(b"123")
    (scratch / "link").symlink_to(host_file)
    (scratch / "dirlink").symlink_to(tmp_path)
    size = scratch_size(scratch)
    assert 8 <= size < 1000
    assert scratch_size(tmp_path / "missing") == 0


def test_remove_scratch_does_not_follow_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "to-dir").symlink_to(outside)
    (scratch / "to-file").symlink_to(outside / "keep.txt")
    locked = scratch / "locked"
    locked.mkdir()
    (locked / "f").write_text("x")
    remove_scratch(scratch)
    assert not scratch.exists()
    assert (outside / "keep.txt").read_text() == "keep"
    remove_scratch(scratch)  # idempotent


def test_reachable_by_others() -> None:
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp itself is open to all
    try:
        closed = base / "closed"
        (closed / "inner").mkdir(parents=True)
        base.chmod(0o755)
        closed.chmod(0o700)
        assert reachable_by_others(closed / "inner") == closed
        closed.chmod(0o711)  # traversable, not listable: enough for bwrap
        assert reachable_by_others(closed / "inner") is None
    finally:
        shutil.rmtree(base)


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BAI_AGENT_AGENT_ID", "node-7")
    monkeypatch.setenv("BAI_AGENT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BAI_AGENT_DEFAULT_MEM", str(2**29))
    monkeypatch.setenv("BAI_AGENT_CLUSTER_SECRET", "s3cret")
    config = AgentConfig()
    assert (config.agent_id, config.data_dir, config.default_mem) == ("node-7", tmp_path, 2**29)
    assert config.cluster_secret is not None and config.cluster_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)
    assert config.advertised_url == "inproc://node-7"
    assert AgentConfig(manager_url="http://m:1", rpc_port=7).advertised_url == "http://127.0.0.1:7"


def test_output_limit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert AgentConfig().output_limit == 8 * 2**20
    monkeypatch.setenv("BAI_AGENT_OUTPUT_LIMIT", "1024")
    assert AgentConfig().output_limit == 1024
    with pytest.raises(ValueError, match="output_limit"):
        AgentConfig(output_limit=-1)


def test_backend_registry() -> None:
    assert BACKENDS["local"] is LocalBackend
    assert isinstance(create_backend(AgentConfig(data_dir=Path("/nonexistent"))), LocalBackend)
    with pytest.raises(KeyError, match="local"):
        create_backend(AgentConfig(backend="nope"))


def test_agent_id_must_be_a_path_component() -> None:
    with pytest.raises(ValueError):
        AgentConfig(agent_id="../etc")
    assert os.sep not in AgentConfig().agent_id


def test_python_preload_is_a_list_of_module_names() -> None:
    assert AgentConfig(python_preload=" json, re ,").preload_modules == ("json", "re")
    assert AgentConfig().preload_modules == ()
    with pytest.raises(ValueError, match="not module names"):
        AgentConfig(python_preload="os;rm -rf")
