"""The agent and its catalog, with real sandboxes: a venv environment runs the runner on
the venv's python with the venv bound read-only; an unavailable or unknown environment is
refused with the reason."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bai.agent.environments import load_catalog
from bai.agent.environments.build import build_environment
from bai.common.errors import InvalidRequest
from tests.agent_sandbox import new_session, run, running_agent, sandbox_unavailable, stdout_of
from tests.capabilities import needs

REASON = sandbox_unavailable()
pytestmark = [pytest.mark.sandbox, needs("sandbox", REASON)]

CATALOG = """
[[environment]]
name = "tiny"
tag = "1"
runtime = "python"
interpreter = "{venv}/bin/python"
extension = "py"
run = "{venv}/bin/python {src}"
batch = { exec = "{venv}/bin/python main.py" }
host = { binaries = ["/usr/bin/python3"], venv = { python = "/usr/bin/python3" } }

[[environment]]
name = "ghost"
tag = "0"
runtime = "compiled"
extension = "g"
compile = "ghostc {src}"
run = "./{out}"
batch = { exec = "./main" }
host = { binaries = ["/nonexistent/ghostc"] }

[[environment]]
name = "shell"
tag = "bash"
runtime = "repl"
extension = "sh"
run = "bash {src}"
batch = { exec = "bash main.sh" }
host = { binaries = ["bash"] }
repl = { command = ["bash", "--norc"], sentinel = "echo {marker}; echo {marker} >&2" }
"""


class Quiet:
    def step(self, title: str) -> None:
        pass

    def progress(self, fraction: float | None, detail: str) -> None:
        pass


async def test_a_venv_environment_runs_on_its_venv_bound_read_only(tmp_path: Path) -> None:
    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text(CATALOG)
    data_dir = Path(tempfile.mkdtemp(prefix="bai-agent-test-", dir="/tmp"))
    data_dir.chmod(0o711)
    built = build_environment(load_catalog(catalog_file).resolve("tiny"), data_dir, Quiet())
    assert built.venv_dir is not None
    async with running_agent(data_dir=data_dir, environments_base=data_dir, environment_catalog=catalog_file) as agent:
        assert agent.info().environments == ["shell", "shell:bash", "tiny", "tiny:1"]
        # what it knows but cannot start, keyed alike, with why not (the manager lists it)
        unavailable = agent.info().unavailable
        assert set(unavailable) == {"ghost", "ghost:0"} and unavailable["ghost"] == unavailable["ghost:0"]
        assert unavailable["ghost"].startswith("no /nonexistent/ghostc on PATH")
        session = await new_session(agent, environment="tiny")
        code = (
            "import sys\nprint(sys.prefix)\n"
            "try:\n    open(sys.prefix + '/x', 'w')\nexcept OSError as e:\n    print(e.strerror)\n"
        )
        result = await run(agent, session, code)
        assert stdout_of(result) == f"{built.venv_dir}\nRead-only file system\n", result

        with pytest.raises(InvalidRequest, match=r"ghost:0 is not available.*/nonexistent/ghostc") as refused:
            await new_session(agent, environment="ghost")
        assert refused.value.field == "environment"
        with pytest.raises(InvalidRequest, match="no tag '9'"):
            await new_session(agent, environment="tiny:9")
        with pytest.raises(InvalidRequest, match="unknown environment 'cobol'"):
            await new_session(agent, environment="cobol")
