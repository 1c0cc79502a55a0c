"""The talk's TensorFlow eager demonstrations (examples/tensorflow-eager/), each run
through the API in a ``python-tensorflow:2.21`` session, with its output checked."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.apiclient import SignedClient, stderr_of, stdout_of
from tests.capabilities import require_or_skip

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tensorflow-eager"
ENVIRONMENT = "python-tensorflow:2.21"


def _matmul(out: str) -> None:
    assert out.strip() == "tf.Tensor([[4.]], shape=(1, 1), dtype=float32)"


def _instant_error(out: str) -> None:
    assert out.startswith("InvalidArgumentError: ")
    assert "indices = 7 is not in [0, 3)" in out


def _collatz(out: str) -> None:
    assert out.split() == ["3", "10", "5", "16", "8", "4", "2", "1"]


def _gradients(out: str) -> None:
    assert out.splitlines() == ["f(3) = 9.0", "f'(3) = 6.0", "f''(3) = 2.0"]


def _custom_gradient(out: str) -> None:
    assert out.splitlines() == [
        "naive  gradient at 0: 0.5",
        "naive  gradient at 100: nan",
        "custom gradient at 0: 0.5",
        "custom gradient at 100: 1.0",
    ]


def _device(out: str) -> None:
    lines = out.splitlines()
    assert re.fullmatch(r"CPU: /job:localhost/replica:0/task:0/device:CPU:0 \(100, 100\)", lines[0])
    assert lines[1].startswith("GPU: ")


def _dense_sgd(out: str) -> None:
    losses = [float(m) for m in re.findall(r"loss (\d+\.\d+)", out)]
    assert len(losses) == 6 and all(a > b for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.01
    assert out.strip().endswith("learned y = 3.00x + 2.00")


CHECKS: dict[str, Callable[[str], None]] = {
    "01_matmul.py": _matmul,
    "02_instant_error.py": _instant_error,
    "03_collatz.py": _collatz,
    "04_gradients.py": _gradients,
    "05_custom_gradient.py": _custom_gradient,
    "06_device_placement.py": _device,
    "07_dense_sgd.py": _dense_sgd,
}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(CHECKS)


@pytest.fixture
def tensorflow(api: SignedClient) -> str:
    agents = api.get("/admin/agents").json()["items"]
    offered = {env for agent in agents for env in agent["environments"]}
    if ENVIRONMENT not in offered:
        require_or_skip("tensorflow", f"no agent offers {ENVIRONMENT} (build it: bai env build {ENVIRONMENT})")
    return ENVIRONMENT


@pytest.mark.parametrize("example", sorted(CHECKS))
def test_example(api: SignedClient, tensorflow: str, example: str) -> None:
    name = f"tf-{uuid.uuid4().hex[:8]}"
    created = api.post("/session", {"image": tensorflow, "name": name, "config": {"resources": {"mem": "2g"}}})
    assert created.status_code == 201, created.text
    try:
        result = api.run(name, (EXAMPLES / example).read_text())
        assert result["exitCode"] == 0, stderr_of(result)
        CHECKS[example](stdout_of(result))
    finally:
        api.delete(f"/session/{name}")
