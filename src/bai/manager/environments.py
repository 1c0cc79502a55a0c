"""What the live agents offer: the environments each can start (``AgentInfo.environments``)
and those it knows from its catalog but cannot start (``AgentInfo.unavailable``, with why
not and the remedy). I/O-free: built from the agents' last heartbeats.

Callers: ``GET /environments`` (bai.manager.api.environments: the listing) and
``check_schedulable`` through ``AgentRegistry.environments`` (a request for an environment
no agent can start names the reason, "not built: run `bai env build ...`", rather than
calling it unknown).

Agents key environments as ``name:tag``, plus ``name`` alone for the default tag; an
agent may name some without a tag only. The listing has a row per ``name:tag``, and a
row with no tag for a name no agent lists with one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bai.common.agent_rpc import AgentInfo
from bai.common.wire import EnvironmentOffer


@dataclass(frozen=True)
class EnvironmentOffers:
    #: environment reference → the live agents that can start it
    startable: dict[str, set[str]] = field(default_factory=dict)
    #: environment reference → agent id → why that agent cannot start it
    unavailable: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, agents: Iterable[AgentInfo]) -> EnvironmentOffers:
        offers = cls()
        for info in agents:
            for ref in info.environments:
                offers.startable.setdefault(ref, set()).add(info.agent_id)
            for ref, reason in info.unavailable.items():
                offers.unavailable.setdefault(ref, {})[info.agent_id] = reason
        return offers

    def available(self) -> frozenset[str]:
        """Every reference some live agent can start."""
        return frozenset(self.startable)

    def why_not(self, image: str) -> dict[str, str]:
        """Agent id → why it cannot start ``image`` (its exact reference, else its name
        alone), for the agents that know it; empty when none does."""
        return self.unavailable.get(image) or self.unavailable.get(image.split(":", 1)[0]) or {}

    def listing(self) -> list[EnvironmentOffer]:
        refs = set(self.startable) | set(self.unavailable)
        tagged = {ref.split(":", 1)[0] for ref in refs if ":" in ref}
        rows = []
        for ref in sorted(ref for ref in refs if ":" in ref or ref not in tagged):
            name, _, tag = ref.partition(":")
            agents = sorted(self.startable.get(ref, ()))
            why = {agent: reason for agent, reason in self.unavailable.get(ref, {}).items() if agent not in agents}
            rows.append(
                EnvironmentOffer(name=name, tag=tag or None, available=bool(agents), agents=agents, unavailable=why)
            )
        return rows
