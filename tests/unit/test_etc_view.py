"""EtcView (bai.agent.backends.local.etc_view): the sandboxes' /etc is a copy of exactly the listed
host entries (links as links, modes kept, no special files) and the synthetic files written in,
made again when the host's entries change, the old copy left in place; and the
sandbox's command line binds it once at /etc."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bai.agent.backends.local import bwrap
from bai.agent.backends.local.etc_view import EtcView

ENTRIES = ("ld.so.cache", "ssl/certs", "localtime", "fonts", "absent", "secret-dir-not-listed", "hosts")
FILES = bwrap.etc_files()


def _host_etc(root: Path) -> Path:
    etc = root / "etc"
    (etc / "ssl" / "certs").mkdir(parents=True)
    (etc / "ssl" / "private").mkdir(mode=0o700)
    (etc / "ssl" / "private" / "key.pem").write_text("secret")
    (etc / "ssl" / "certs" / "ca.pem").write_text("cert")
    (etc / "ssl" / "certs" / "link.pem").symlink_to("/usr/share/ca-certificates/x.crt")
    (etc / "ld.so.cache").write_bytes(b"cache")
    (etc / "ld.so.cache").chmod(0o640)
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
    (etc / "fonts" / "conf.d").mkdir(parents=True)
    (etc / "fonts" / "conf.d" / "10.conf").write_text("<fontconfig/>")
    os.mkfifo(etc / "fonts" / "a-fifo")
    (etc / "shadow").write_text("root:x")
    (etc / "hosts").symlink_to("/etc/shadow")  # listed, and one of the synthetic files: theirs wins
    return etc


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            kind = "link:" + os.readlink(path) if path.is_symlink() else oct(stat.S_IMODE(info.st_mode))
            out[str(path.relative_to(root))] = kind
    return out


def test_the_copy_holds_exactly_the_listed_entries(tmp_path: Path) -> None:
    etc = _host_etc(tmp_path)
    view = EtcView(tmp_path / "views", ENTRIES, FILES, source=etc).refresh()
    assert view is not None
    assert _tree(view) == {
        "ld.so.cache": "0o640",
        "ssl": "0o755",
        "ssl/certs": oct(stat.S_IMODE((etc / "ssl" / "certs").stat().st_mode)),
        "ssl/certs/ca.pem": "0o644",
        "ssl/certs/link.pem": "link:/usr/share/ca-certificates/x.crt",
        "localtime": "link:/usr/share/zoneinfo/Etc/UTC",
        "fonts": oct(stat.S_IMODE((etc / "fonts").stat().st_mode)),
        "fonts/conf.d": oct(stat.S_IMODE((etc / "fonts" / "conf.d").stat().st_mode)),
        "fonts/conf.d/10.conf": "0o644",
        "passwd": "0o644",
        "group": "0o644",
        "hosts": "0o644",
    }  # no shadow, no ssl/private, no fifo
    assert (view / "ld.so.cache").read_bytes() == b"cache"
    assert {name: (view / name).read_bytes() for name in FILES} == FILES
    assert stat.S_IMODE(view.stat().st_mode) == 0o755


def test_a_change_on_the_host_makes_a_new_copy_and_keeps_the_old(tmp_path: Path) -> None:
    etc = _host_etc(tmp_path)
    views = EtcView(tmp_path / "views", ENTRIES, FILES, source=etc)
    first = views.refresh()
    assert first is not None
    assert views.refresh() is None  # nothing changed
    (etc / "fonts" / "conf.d" / "20.conf").write_text("<fontconfig/>")  # deep in a listed directory
    second = views.refresh()
    assert second is not None and second != first
    assert (second / "fonts" / "conf.d" / "20.conf").exists()
    assert not (first / "fonts" / "conf.d" / "20.conf").exists() and first.is_dir()  # still bound by older sandboxes
    (etc / "shadow").write_text("root:y")  # not listed: no new copy
    assert views.refresh() is None
    views.remove_all()
    assert not (tmp_path / "views").exists()


def test_the_view_is_bound_once_at_etc(tmp_path: Path) -> None:
    (tmp_path / "usr").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "mime.types").write_text("")
    layout = bwrap.host_layout(tmp_path, etc_view=tmp_path / "view")
    assert [a for a in layout if a.startswith("/etc")] == ["/etc"]
    assert layout[-3:] == ["--ro-bind", str(tmp_path / "view"), "/etc"]


def test_with_a_view_the_synthetic_files_need_no_fds(tmp_path: Path) -> None:
    def argv(*, etc_data: bool, seccomp: bool) -> list[str]:
        return bwrap.SandboxCommand(
            bwrap="/usr/bin/bwrap", layout=[], scratch=tmp_path, runner_dir=tmp_path, runner_python="/usr/bin/python3",
            engine="python", environ={}, tmp_size=1, seccomp=seccomp, etc_data=etc_data,
        ).argv()  # fmt: skip

    def binds(args: list[str]) -> list[tuple[str, str]]:
        return [(args[i + 1], args[i + 2]) for i, arg in enumerate(args) if arg == "--ro-bind-data"]

    with_fds = argv(etc_data=True, seccomp=True)
    assert binds(with_fds) == [("5", "/etc/passwd"), ("6", "/etc/group"), ("7", "/etc/hosts")]
    assert with_fds[with_fds.index("--seccomp") + 1] == str(bwrap.SECCOMP_FD) == "8"
    in_view = argv(etc_data=False, seccomp=True)
    assert binds(in_view) == []
    assert in_view[in_view.index("--seccomp") + 1] == "5"
    assert binds(argv(etc_data=False, seccomp=False)) == [] and "--seccomp" not in argv(etc_data=False, seccomp=False)
