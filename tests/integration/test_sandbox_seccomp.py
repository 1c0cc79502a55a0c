"""The syscall filter in real sandboxes: each denied call fails with EPERM, the
32-bit ABI is covered too, and ordinary programs (subprocesses, threads, file
work, gcc, multiprocessing) keep working; on both backends (``[local]``, ``[docker]``) but
for gcc (not in the python image) and the policy overlays, whose tests start local
agents of their own."""

from __future__ import annotations

import json
import platform
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_sandbox import new_session, run, running_agent, sandbox_unavailable, stderr_of, stdout_of

from bai.agent.agent import Agent
from bai.agent.backends.base import BackendUnavailable
from tests.capabilities import needs

REASON = sandbox_unavailable()
X86_64_REASON = None if platform.machine() == "x86_64" else "syscall numbers are x86-64's"
pytestmark = [pytest.mark.sandbox, needs("sandbox", REASON), needs("platform", X86_64_REASON), pytest.mark.backends]

# Each probe: a denied call with arguments that would otherwise be valid enough to
# get past the kernel's argument checks (so EPERM comes from the filter, not EFAULT).
PROBES = r"""
import ctypes, errno, fcntl, json, os, termios
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    res = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a) if isinstance(a, int) else a for a in args])
    if res == 0 and nr == 56:  # a clone that got through: leave the child at once
        os._exit(0)
    return ctypes.get_errno() if res == -1 else 'ok'
buf = ctypes.create_string_buffer(128)
out = {
    'mount': call(165, b'none', b'/tmp', b'tmpfs', 0, None),
    'umount2': call(166, b'/tmp', 0),
    'pivot_root': call(155, b'/tmp', b'/tmp'),
    'ptrace': call(101, 0, 0, 0, 0),  # PTRACE_TRACEME
    'ptrace_attach': call(101, 16, 1, 0, 0),  # PTRACE_ATTACH to PID 1, the runner
    'process_vm_readv': call(310, 1, None, 0, None, 0, 0),
    'unshare_user': call(272, 0x10000000),
    'unshare_ns': call(272, 0x00020000),
    'clone_newuser': call(56, 0x10000000 | 17, 0, 0, 0, 0),
    'setns': call(308, os.open('/proc/self/ns/uts', os.O_RDONLY), 0),
    'keyctl': call(250, 0, 2**64 - 3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring
    'add_key': call(248, b'user', b'k', b'v', 1, 2**64 - 2),
    'request_key': call(249, b'user', b'k', None, 0),
    'bpf': call(321, 0, buf, 128),
    'perf_event_open': call(298, buf, 0, -1 & 0xFFFFFFFF, -1 & 0xFFFFFFFF, 0),
    'userfaultfd': call(323, 1),  # UFFD_USER_MODE_ONLY
    'open_by_handle_at': call(304, 3, buf, 0),
    'name_to_handle_at': call(303, 0xFFFFFF9C, b'/tmp', buf, buf, 0),
    'kexec_load': call(246, 0, 0, None, 0),
    'init_module': call(175, buf, 8, b''),
    'finit_module': call(313, 0, b'', 0),
    'reboot': call(169, 0xfee1dead, 672274793, 0x4321FEDC, None),
    'swapon': call(167, b'/tmp/swap', 0),
    'settimeofday': call(164, None, None),
    'acct': call(163, None),
}
master, slave = os.openpty()
for name, request in (('ioctl_tiocsti', termios.TIOCSTI), ('ioctl_tiocsti_high_bits', termios.TIOCSTI | 2**32)):
    out[name] = call(16, slave, request, b'x')
try:
    fcntl.ioctl(slave, termios.TIOCSTI, b'x'); out['fcntl_tiocsti'] = 'ok'
except OSError as e:
    out['fcntl_tiocsti'] = e.errno
out['tcgetattr'] = 'ok' if termios.tcgetattr(slave) else 'empty'  # other ioctls still work
print(json.dumps(out))
"""

# The same calls through the i386 ABI (int 0x80): the filter must cover that arch too.
INT80 = r"""
#include <stdio.h>
static long sys32(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}
int main(void) {
    /* i386 numbers: keyctl 288, unshare 310, ptrace 26 */
    printf("%ld %ld %ld\n", sys32(288, 0, -3, 0), sys32(310, 0x10000000, 0, 0), sys32(26, 0, 0, 0));
    return 0;
}
"""


@pytest.fixture
async def agent(backend: str) -> AsyncIterator[Agent]:
    """A started agent on the test's backend (a docker one with no pool: each pooled
    container is a second start)."""
    async with running_agent(backend=backend, **({"pool_size": 0} if backend == "docker" else {})) as started:
        yield started


async def inside(agent: Agent, session_id: str, code: str) -> str:
    result = await run(agent, session_id, code)
    assert result.exit_code == 0, stderr_of(result)
    return stdout_of(result)


async def test_denied_syscalls_fail_with_eperm(agent: Agent) -> None:
    session = await new_session(agent)
    out = json.loads(await inside(agent, session, PROBES))
    assert out.pop("tcgetattr") == "ok"
    assert {name: result for name, result in out.items() if result != 1} == {}
    status = await inside(agent, session, "print(open('/proc/self/status').read())")
    assert "Seccomp:\t2" in status  # filter mode, on the runner and its children


INT80_RUN = (
    "import subprocess\n"
    f"open('/tmp/int80.c', 'w').write({INT80!r})\n"
    "subprocess.run(['gcc', '-O0', '-o', '/tmp/int80', '/tmp/int80.c'], check=True)\n"
    "print(subprocess.run(['/tmp/int80'], capture_output=True, text=True, check=True).stdout)\n"
)


async def test_the_filter_is_what_denies() -> None:
    """Without the filter the same sandbox lets keyctl and PTRACE_TRACEME through, in
    both ABIs: so the EPERMs here are the filter's, not only missing capabilities."""
    async with running_agent(seccomp=False) as unfiltered:
        out = json.loads(await inside(unfiltered, await new_session(unfiltered), PROBES))
        int80 = (await inside(unfiltered, await new_session(unfiltered), INT80_RUN)).split()
    assert out["keyctl"] == "ok"
    assert out["ptrace"] == "ok"
    assert int(int80[0]) > 0  # a keyring id


@pytest.mark.local_only(reason="compiles C with gcc, which the python image does not have")
async def test_the_32_bit_abi_is_filtered_too(agent: Agent) -> None:
    session = await new_session(agent)
    assert (await inside(agent, session, INT80_RUN)).split() == ["-1", "-1", "-1"]  # -EPERM, three times


@pytest.mark.local_only(reason="compiles C with gcc, which the python image does not have")
async def test_ordinary_programs_keep_working(agent: Agent) -> None:
    session = await new_session(agent)
    code = r"""
import concurrent.futures, multiprocessing, os, shutil, subprocess, sys, tempfile, zipfile
print(subprocess.run(['sh', '-c', 'echo sub $((6*7))'], capture_output=True, text=True, check=True).stdout.strip())
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    print('threads', sum(pool.map(lambda n: n * n, range(100))))
# pip-like file work: unpack an archive into a site dir, rename, link, chmod, copy
site = os.path.expanduser('~/.local/lib/site-packages')
os.makedirs(site, exist_ok=True)
with tempfile.TemporaryDirectory() as tmp:
    wheel = os.path.join(tmp, 'pkg.whl')
    with zipfile.ZipFile(wheel, 'w') as zf:
        zf.writestr('pkg/__init__.py', 'VALUE = 42\n')
    zipfile.ZipFile(wheel).extractall(tmp + '/unpacked')
    shutil.copytree(tmp + '/unpacked/pkg', site + '/pkg.tmp')
os.rename(site + '/pkg.tmp', site + '/pkg')
os.symlink(site + '/pkg', site + '/pkg-link')
os.chmod(site + '/pkg/__init__.py', 0o644)
sys.path.insert(0, site)
import pkg
print('pkg', pkg.VALUE)
open('/tmp/hello.c', 'w').write('#include <stdio.h>\nint main(void){printf("gcc %d\\n", 6*7);return 0;}\n')
subprocess.run(['gcc', '-o', '/tmp/hello', '/tmp/hello.c'], check=True)
print(subprocess.run(['/tmp/hello'], capture_output=True, text=True, check=True).stdout.strip())
ctx = multiprocessing.get_context('fork')
with ctx.Pool(2) as pool:
    print('mp', sum(pool.map(abs, range(-10, 10))))
q = multiprocessing.get_context('spawn').Queue()
q.put('queued'); print(q.get(timeout=5))
"""
    out = (await inside(agent, session, code)).splitlines()
    assert out == ["sub 42", "threads 328350", "pkg 42", "gcc 42", "mp 100", "queued"]


async def test_an_overlay_loosens_and_tightens(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.toml"
    overlay.write_text('allow = ["keyctl"]\n[[deny]]\nsyscall = "mincore"\nwhy = "a test"\n')
    async with running_agent(seccomp_overlay=overlay) as agent:
        code = (
            "import ctypes, mmap\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "page = mmap.mmap(-1, 4096)\n"
            "vec = ctypes.create_string_buffer(1)\n"
            "addr = ctypes.addressof(ctypes.c_char.from_buffer(page))\n"
            "print(libc.syscall(27, ctypes.c_void_p(addr), 4096, vec), ctypes.get_errno())\n"  # mincore
            "print(libc.syscall(250, 0, ctypes.c_long(-3), 0) > 0)\n"  # keyctl
        )
        out = (await inside(agent, await new_session(agent), code)).split()
    assert out == ["-1", "1", "True"]


async def test_a_bad_policy_stops_the_backend_start(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.toml"
    overlay.write_text('[[deny]]\nsyscall = "no_such_call"\n')
    with pytest.raises(BackendUnavailable, match="no_such_call"):
        async with running_agent(seccomp_overlay=overlay, data_dir=tmp_path / "agent"):  # compiled before any state
            pass


async def test_an_environments_own_overlay_applies_after_the_operators(tmp_path: Path) -> None:
    operator = tmp_path / "operator.toml"
    operator.write_text('[[deny]]\nsyscall = "mincore"\nwhy = "the operator\'s"\n')
    environments = tmp_path / "environments"
    environments.mkdir()
    (environments / "python.toml").write_text('allow = ["mincore", "keyctl"]\n')
    async with running_agent(seccomp_overlay=operator, seccomp_environment_dir=environments) as agent:
        code = (
            "import ctypes, mmap\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "page = mmap.mmap(-1, 4096)\n"
            "vec = ctypes.create_string_buffer(1)\n"
            "addr = ctypes.addressof(ctypes.c_char.from_buffer(page))\n"
            "print(libc.syscall(27, ctypes.c_void_p(addr), 4096, vec))\n"  # mincore: allowed again
            "print(libc.syscall(250, 0, ctypes.c_long(-3), 0) > 0)\n"  # keyctl
            "print(libc.syscall(165, 0, 0, 0, 0, 0), ctypes.get_errno())\n"  # mount: still denied
        )
        out = (await inside(agent, await new_session(agent), code)).split()
    assert out == ["0", "True", "-1", "1"]
