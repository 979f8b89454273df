"""Model-aware routing over LM Studio hosts: which hosts may serve a call for a model, best first."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from services.lmstudio.client import LMStudioClient
from services.lmstudio.hosts import HostSpec
from services.lmstudio.listing import HostState, ModelHost, ModelInfo

DOWN_S = 5.0  # a host whose call just failed goes to the back of the line for this long


@dataclass(eq=False, slots=True)
class Host:
    """One LM Studio host: its client (own breaker and retry budget) and what routing knows of it."""

    spec: HostSpec
    client: LMStudioClient
    in_flight: int = 0  # LLM calls (and open streams) now on this host
    served: float = 0.0  # calls served, divided by the weight: spreads sequential calls by weight
    models: dict[str, ModelInfo] = field(default_factory=dict)  # its last model list
    reachable: bool = True  # its last model list (or call) came back
    down_until: float = 0.0  # monotonic time until which a failed call keeps it at the back

    @property
    def name(self) -> str:
        return self.spec.name

    def admits(self) -> bool:
        """Its breaker would let a call through now."""
        return self.client.breaker is None or self.client.breaker.admits()

    def failed(self) -> None:
        self.down_until = time.monotonic() + DOWN_S

    @property
    def down(self) -> bool:
        """Seen down: its last list, ping or call did not come back, or its breaker is open."""
        return not self.reachable or not self.admits()

    def state_of(self, model: str) -> HostState:
        """`loaded`, `available` (listed, loads on demand) or `unreachable`, as /v1/models shows it."""
        if self.down:
            return "unreachable"
        return "loaded" if self.models[model].loaded else "available"


def placed(model: ModelInfo, places: tuple[ModelHost, ...]) -> ModelInfo:
    """`model` on the hosts `places`: loaded when a host has it loaded, with the smallest of their windows (a call
    may go to any host that has it loaded)."""
    windows = (p.loaded_context_length for p in places if p.state == "loaded")
    return replace(
        model,
        hosts=places,
        loaded=any(p.state == "loaded" for p in places),
        loaded_context_length=min(filter(None, windows), default=None),
    )


def as_now(models: Iterable[ModelInfo], hosts: Mapping[str, Host]) -> list[ModelInfo]:
    """A listed (maybe cached) `models` with the hosts seen down since shown `unreachable` at once."""
    out = []
    for model in models:
        places = tuple(
            ModelHost(p.name, "unreachable") if p.name in hosts and hosts[p.name].down else p for p in model.hosts
        )
        out.append(model if places == model.hosts else placed(model, places))
    return out


def rank(hosts: list[Host], model: str | None, now: float) -> list[Host]:
    """The hosts to try for `model`, best first: hosts with it loaded, then hosts that list it (JIT load);
    hosts whose breaker is open or whose last call failed go last; among equals the fewest in-flight calls
    per unit of weight, then the fewest calls served per unit of weight. Hosts whose list lacks the model
    are left out, unless no host lists it (a list may be out of date: every host is tried)."""
    if len(hosts) == 1:
        return hosts
    scored: list[tuple[int, float, float, int, Host]] = []  # the index is unique: the host is never compared
    for index, host in enumerate(hosts):
        info = host.models.get(model) if model else None
        if model and info is None:
            continue
        tier = 0 if info is None or info.loaded else 1
        if not host.reachable or host.down_until > now or not host.admits():
            tier += 2
        scored.append((tier, host.in_flight / host.spec.weight, host.served, index, host))
    if not scored:
        return list(hosts)
    scored.sort()
    return [item[4] for item in scored]
