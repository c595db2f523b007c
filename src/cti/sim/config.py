"""What the simulated call centre is made of: queues, agents, dialplan options, traffic, outbound mix.

`lab_config()` is the lab that produced `../shared/ami-captures` (`lab/queues.conf`,
`lab/extensions.conf`); `call_centre_config()` builds a generic centre with N agents for `cti sim`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

Strategy = Literal["ringall", "rrmemory", "linear"]
OUTCOMES = ("answered", "busy", "no_answer", "congestion", "failed", "rejected")
# OriginateResponse `Reason` for each outcome (Asterisk's AST_CONTROL_* codes).
REASONS = {"answered": 4, "busy": 5, "no_answer": 3, "congestion": 8, "failed": 0, "rejected": 1}


@dataclass(frozen=True)
class MemberSpec:
    """A static queue member, as in queues.conf: `member => interface,penalty,name,state_interface`."""

    agent: str  # the agent's extension in [agents], e.g. "agent1"
    penalty: int = 0


@dataclass(frozen=True)
class QueueSpec:
    name: str
    strategy: Strategy = "rrmemory"
    timeout_s: int = 15  # member ring timeout
    retry_s: float = 1.0
    wrapuptime_s: int = 0
    servicelevel_s: int = 20
    weight: int = 0
    # Asterisk's default: a member may be rung while busy or already ringing for someone else.
    ringinuse: bool = True
    # Serve several waiting callers at once. The lab's queues did not (mixed_seed1: a caller
    # behind the head waits for its turn although an agent is free), so neither do ours.
    autofill: bool = False
    members: tuple[MemberSpec, ...] = ()


@dataclass(frozen=True)
class AgentSpec:
    """An agent's phone: `Local/<exten>@agents/n`, shown as `name` in queue events.

    It answers `ring_s` seconds after it starts ringing (drawn around `ring_s` with `ring_jitter_s`
    when the simulation draws), or never when `answers` is False. It talks for the call's `TALK`
    (set by the caller) or `talk_s`.
    """

    exten: str
    name: str
    ring_s: float = 2.0
    answers: bool = True
    talk_s: float = 5.0
    ring_jitter_s: float = 0.0
    # Probability that a ring attempt goes unanswered although the agent normally answers.
    miss_rate: float = 0.0
    # A member added with QueueAdd on some other device (PJSIP/1001...) keeps its own names.
    device: str | None = None
    state_device: str | None = None

    @property
    def interface(self) -> str:
        return self.device or f"Local/{self.exten}@agents/n"

    @property
    def state_interface(self) -> str:
        return self.state_device or self.device or f"Local/{self.exten}@agents"


@dataclass(frozen=True)
class DialplanOptions:
    """The lab dialplan changed between capture batches: these switches reproduce each version."""

    queue_options: str = ""  # "tT" in the second batch
    agi_lookup: bool = False  # the IVR's AGI(rec.agi) step, only when the caller sets AGIREC=1
    ivr_menu: dict[str, str] = field(
        default_factory=lambda: {
            "1": "support",
            "2": "sales",
            "3": "",  # informational message, then hang up
            "4": "billing",
            "5": "hotline",
            "6": "escalation",
        }
    )
    outbound_queue: str = "outbound"
    outbound_queue_timeout_s: int = 30
    queue_timeout_s: int = 60
    # Aliases in [agents] (`exten => 2003,1,Goto(agent3,1)`).
    agent_aliases: dict[str, str] = field(default_factory=lambda: {"2003": "agent3"})


@dataclass(frozen=True)
class OutboundMix:
    """Relative weights of outbound outcomes; `by_last_digit` follows the lab's fake PSTN instead
    (last digit 1 answers, 2 busy, 3 never answers, 4 congestion)."""

    answered: float = 0.6
    busy: float = 0.15
    no_answer: float = 0.15
    congestion: float = 0.05
    failed: float = 0.05
    rejected: float = 0.0
    by_last_digit: bool = False

    def weights(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in OUTCOMES}

    @classmethod
    def parse(cls, text: str) -> OutboundMix:
        """`answered=6,busy=2,no_answer=1,congestion=1,failed=0` (weights), or `lab`."""
        if text.strip() == "lab":
            return cls(by_last_digit=True)
        values: dict[str, float] = dict.fromkeys(OUTCOMES, 0.0)
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, weight = part.partition("=")
            name = name.strip().replace("-", "_")
            if name not in values:
                raise ValueError(f"unknown outbound outcome {name!r} (expected one of {', '.join(OUTCOMES)})")
            values[name] = float(weight)
        if sum(values.values()) <= 0:
            raise ValueError("outbound mix: at least one weight must be > 0")
        return cls(
            answered=values["answered"],
            busy=values["busy"],
            no_answer=values["no_answer"],
            congestion=values["congestion"],
            failed=values["failed"],
            rejected=values["rejected"],
        )


@dataclass(frozen=True)
class TrafficSpec:
    """Random traffic: Poisson arrivals and what each caller does."""

    calls_per_minute: float = 0.0
    outbound_per_minute: float = 0.0
    # IVR behaviour of inbound callers (weights).
    choice_weights: dict[str, float] = field(
        default_factory=lambda: {"1": 0.45, "2": 0.25, "4": 0.1, "5": 0.05, "3": 0.07, "9": 0.04, "": 0.04}
    )
    patience_s: tuple[float, float] = (20.0, 90.0)  # uniform range: how long a caller stays
    talk_s: tuple[float, float] = (5.0, 40.0)
    queue_timeout_s: tuple[int, int] | None = None  # QTIMEOUT drawn per call when set
    queue_timeout_rate: float = 0.0  # share of calls given a short queue timeout
    campaign: str = "c1"
    first_contact: int = 1000


@dataclass(frozen=True)
class SimConfig:
    username: str = "cti"
    secret: str = "ctisecret"
    host: str = "127.0.0.1"
    port: int = 0
    # Simulated seconds per wall second; None: the clock moves only with `advance()` (tests).
    speed: float | None = 1.0
    seed: int = 1
    start_time: float | None = None  # epoch of the simulated clock at start (default: now)
    queues: tuple[QueueSpec, ...] = ()
    agents: tuple[AgentSpec, ...] = ()
    dialplan: DialplanOptions = field(default_factory=DialplanOptions)
    traffic: TrafficSpec = field(default_factory=TrafficSpec)
    outbound_mix: OutboundMix = field(default_factory=OutboundMix)
    # Cachable device states as they were before the simulation started (an initial condition).
    initial_device_states: dict[str, str] = field(default_factory=dict)
    # Where each rrmemory queue's round robin stood (the next member position to ring).
    initial_rrpos: dict[str, int] = field(default_factory=dict)
    # Asterisk's counters when the simulation starts (a long-running PBX is mid-stream).
    first_uniqueid: int = 0
    first_local: int = 0
    uptime_s: int = 83
    version: str = "22.10.1"

    def start(self) -> float:
        # A whole second by default: Asterisk counts wrap-up and queue timeouts in whole seconds
        # of the wall clock, so the fraction the run starts at would change what happens.
        return self.start_time if self.start_time is not None else float(int(time.time()))


def _lab_agents() -> tuple[AgentSpec, ...]:
    return (
        AgentSpec("agent1", "Agent1", ring_s=2.0),
        AgentSpec("agent2", "Agent2", answers=False),
        AgentSpec("agent3", "Agent3", ring_s=1.0),
        AgentSpec("agent4", "Agent4", ring_s=3.0),
        AgentSpec("agent5", "Agent5", ring_s=2.0),
        AgentSpec("agent6", "Agent6", answers=False),
    )


def lab_queues(second_batch: bool = True) -> tuple[QueueSpec, ...]:
    """lab/queues.conf; `hotline` and `escalation` arrived with the second batch of captures."""
    queues = [
        QueueSpec(
            "support",
            "rrmemory",
            timeout_s=8,
            wrapuptime_s=3,
            ringinuse=False,
            members=(MemberSpec("agent1"), MemberSpec("agent4")),
        ),
        QueueSpec(
            "sales",
            "linear",
            timeout_s=5,
            ringinuse=False,
            members=(MemberSpec("agent2"), MemberSpec("agent3")),
        ),
        # billing and escalation leave ringinuse at Asterisk's default (yes).
        QueueSpec("billing", "ringall", timeout_s=6, members=(MemberSpec("agent2"),)),
        QueueSpec(
            "outbound",
            "rrmemory",
            timeout_s=10,
            servicelevel_s=5,
            ringinuse=False,
            members=(MemberSpec("agent3"),),
        ),
    ]
    if second_batch:
        queues += [
            QueueSpec(
                "hotline",
                "ringall",
                timeout_s=8,
                wrapuptime_s=2,
                ringinuse=False,
                members=(MemberSpec("agent1"), MemberSpec("agent3"), MemberSpec("agent4")),
            ),
            QueueSpec(
                "escalation", "ringall", timeout_s=15, members=(MemberSpec("agent2"), MemberSpec("agent6"))
            ),
        ]
    return tuple(queues)


def lab_config(second_batch: bool = True, **overrides: object) -> SimConfig:
    """The lab of the captures: its queues, its six agents, its dialplan, the lab's fake PSTN."""
    base: dict[str, object] = {
        "queues": lab_queues(second_batch),
        "agents": _lab_agents(),
        "outbound_mix": OutboundMix(by_last_digit=True),
    }
    base.update(overrides)
    return SimConfig(**base)  # type: ignore[arg-type]


def call_centre_config(agents: int = 6, **overrides: object) -> SimConfig:
    """A generic centre: agents spread over support (rrmemory), sales (linear), hotline (ringall),
    billing (ringall, short queue timeout) and outbound (rrmemory); every agent answers after a
    drawn ring delay, some rings go unanswered."""
    count = max(1, agents)
    specs = tuple(
        AgentSpec(
            f"agent{i}",
            f"Agent{i}",
            ring_s=1.0 + (i % 4),
            ring_jitter_s=1.0,
            talk_s=20.0,
            miss_rate=0.15,
        )
        for i in range(1, count + 1)
    )
    names = [a.exten for a in specs]

    def pick(offset: int, step: int) -> tuple[MemberSpec, ...]:
        chosen = names[offset::step] or names[:1]
        return tuple(MemberSpec(n) for n in chosen)

    queues = (
        QueueSpec("support", "rrmemory", timeout_s=8, wrapuptime_s=3, ringinuse=False, members=pick(0, 1)),
        QueueSpec("sales", "linear", timeout_s=5, ringinuse=False, members=pick(1, 2)),
        QueueSpec("billing", "ringall", timeout_s=6, ringinuse=False, members=pick(0, 3)),
        QueueSpec("hotline", "ringall", timeout_s=8, wrapuptime_s=2, ringinuse=False, members=pick(2, 2)),
        QueueSpec(
            "outbound", "rrmemory", timeout_s=10, servicelevel_s=5, ringinuse=False, members=pick(0, 2)
        ),
    )
    dialplan = DialplanOptions(
        ivr_menu={"1": "support", "2": "sales", "3": "", "4": "billing", "5": "hotline"}
    )
    base: dict[str, object] = {"queues": queues, "agents": specs, "dialplan": dialplan}
    base.update(overrides)
    return SimConfig(**base)  # type: ignore[arg-type]
