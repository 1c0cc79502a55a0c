"""The local backend's session and execution tests through the API, run again on an
embedded server on the docker backend (``docker_server``, one for the whole run, given
here as ``bai_server``): ``test_api_sessions`` (create, reuse, state, order of output,
exit codes, continue, input, interrupt, completion, destroy's stats, restart, enqueue,
rename), ``test_run_stats`` (each run's figures from the session's cgroup) and
``test_session_limits`` (a policy's and a request's limits reach the container and take
effect; an idle session ends). Those about the manager alone (no sandbox is made, or
only its clocks are tested) are left out, each with its reason. Skipped with the reason
where Docker or the image is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RunningServer
from docker_sandbox import docker_unavailable, share

from tests.capabilities import needs

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, needs("docker", REASON)]

MANAGER_ONLY = {
    "test_requests_beyond_the_policy_are_refused_naming_the_field": "refused by the manager: no sandbox is made",
    "test_the_total_of_a_keypairs_sessions_is_a_quota": "the manager's quota: no run in the sandbox",
    "test_a_running_session_is_not_idle": "the manager's idle clock; the backend's part is the idle test's destroy",
    "test_an_open_stream_keeps_its_session_and_input_waits_are_idle": "the manager's idle clock",
    "test_the_lifetime_limit_ends_even_a_busy_session": "the manager's lifetime clock",
    "test_policies_are_administered": "administration: no sandbox",
    "test_a_policy_in_use_or_the_default_cannot_be_deleted": "administration: no sandbox",
    "test_only_admins_administer_policies": "administration: no sandbox",
}

HERE = Path(__file__).parent
share(HERE / "test_api_sessions.py", globals(), fixtures={"session"})
share(HERE / "test_run_stats.py", globals())  # its ``session`` fixture is test_api_sessions'
share(HERE / "test_session_limits.py", globals(), local_only=MANAGER_ONLY, fixtures={"user"})


@pytest.fixture
def bai_server(docker_server: RunningServer) -> RunningServer:
    assert docker_server.server.agent.backend.name == "docker"
    return docker_server
