"""A simulated Asterisk 22 call centre that speaks AMI: for tests, benchmarks and demos.

    from cti.sim import SimulatedPbx, lab_config

    async with SimulatedPbx(lab_config(speed=None)) as pbx:   # manual clock, port on 127.0.0.1
        linkedid = pbx.inbound_call("+33612345678", "Jean Dupont", digits="1", talk_s=6)
        await pbx.advance(20)
        assert pbx.truth.calls[linkedid].outcome == "answered"

Modules, one job each: `clock` (simulated time), `channels`/`core` (channels, Local pairs,
bridges, hangups and their events), `devstate` (device states), `dialplan` (the lab's dialplan),
`queues`/`queueapp` (app_queue), `originate`, `transfers`, `truth` (ground-truth log), `traffic`
(random calls), `wire`/`layouts` (AMI frames), `manager`/`session`/`server` (the AMI side),
`engine`/`pbx` (wiring), `transcript` (comparing transcripts), `cli` (`cti sim`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cti.sim.config import (
    AgentSpec,
    DialplanOptions,
    MemberSpec,
    OutboundMix,
    QueueSpec,
    SimConfig,
    TrafficSpec,
    call_centre_config,
    lab_config,
)

if TYPE_CHECKING:
    from cti.sim.originate import OriginateRequest
    from cti.sim.pbx import SimulatedPbx
    from cti.sim.truth import CallTruth, Truth

__all__ = [
    "AgentSpec",
    "CallTruth",
    "DialplanOptions",
    "MemberSpec",
    "OriginateRequest",
    "OutboundMix",
    "QueueSpec",
    "SimConfig",
    "SimulatedPbx",
    "TrafficSpec",
    "Truth",
    "call_centre_config",
    "lab_config",
]

_LAZY = {
    "SimulatedPbx": "cti.sim.pbx",
    "OriginateRequest": "cti.sim.originate",
    "CallTruth": "cti.sim.truth",
    "Truth": "cti.sim.truth",
}


def __getattr__(name: str) -> Any:
    # The server side is imported on first use: `cti --help` must not load it.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)
