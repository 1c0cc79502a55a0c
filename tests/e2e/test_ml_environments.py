"""The Python ML environments side by side: each session runs the framework version its
environment names (skipped, saying so, for environments no agent offers: build them with
``bai env build NAME:TAG``)."""

from __future__ import annotations

import uuid

import pytest

from tests.apiclient import SignedClient, stderr_of, stdout_of
from tests.capabilities import require_or_skip

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

TF = "import tensorflow as tf\nprint(tf.__version__)\nprint(int(tf.reduce_sum(tf.ones([3, 3]))))"
TORCH = "import torch\nprint(torch.__version__)\nprint(int(torch.ones(3, 3).sum()))"
CASES = {
    "python-tensorflow:2.21": (TF, "2.21."),
    "python-tensorflow:2.15": (TF, "2.15."),
    "python-pytorch:2.13": (TORCH, "2.13.0"),
}


@pytest.mark.parametrize("environment", sorted(CASES))
def test_each_environment_runs_its_own_version(api: SignedClient, environment: str) -> None:
    agents = api.get("/admin/agents").json()["items"]
    if not any(environment in agent["environments"] for agent in agents):
        capability = "tensorflow" if environment == "python-tensorflow:2.21" else "environments"  # CI builds 2.21
        require_or_skip(capability, f"no agent offers {environment} (build it: bai env build {environment})")
    code, version = CASES[environment]
    name = f"ml-{uuid.uuid4().hex[:8]}"
    created = api.post("/session", {"image": environment, "name": name, "config": {"resources": {"mem": "2g"}}})
    assert created.status_code == 201, created.text
    try:
        result = api.run(name, code)
        assert result["exitCode"] == 0, stderr_of(result)
        printed, total = stdout_of(result).split()
        assert printed.startswith(version) and total == "9"
    finally:
        api.delete(f"/session/{name}")
